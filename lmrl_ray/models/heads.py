"""Small heads on the language model's hidden states: a value head, and ILQL's Q and V heads.

Time alignment, for every head: the hidden state h_t at position t has read tokens
0..t (the state s_t). A value head gives V(s_t) at position t; a Q head gives, for every
vocabulary entry a, Q(s_t, a): the value of emitting a as token t+1. A learner gathers
the taken action's Q as q[:, t, input_ids[:, t + 1]].

Each head is its own small module, composed by the learner that needs it: PPO takes a
`ValueHead`; ILQL takes `ILQLHeads`. They are saved as safetensors (`save_heads`), in a
checkpoint as `heads.safetensors` beside the model's weights.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lmrl_ray.io import write_atomically

HEADS_FILE = "heads.safetensors"


def mlp(in_features: int, out_features: int, width: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear: the two-layer head of ILQL's reference implementation."""
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, out_features))


class ValueHead(nn.Module):
    """V(s_t) from h_t: one value per token. `width` (the MLP's inner size) defaults to
    `hidden_size`."""

    def __init__(self, hidden_size: int, *, width: int | None = None):
        super().__init__()
        self.width = width or hidden_size
        self.mlp = mlp(hidden_size, 1, self.width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlp(hidden).squeeze(-1)  # (B, T, H) -> (B, T)


class TokenNorm(nn.Module):
    """Standardises each hidden state by the mean and standard deviation of the states
    that read the same last token (fitted once, on a frozen model's states; identity
    until then, and for tokens it was not fitted on).

    At a given token, a small model's final hidden states differ by little against their
    norm, in directions of tiny variance: on the Maze, states after "move" in the 25
    cells lie 1.6 apart against a norm of 16.8. Heads trained by TD on them learn a V
    that is the same in every cell; standardised per last token, the same heads learn
    one graded by the distance to the goal. The buffers resize to what a saved file
    holds, so a fitted norm loads into fresh heads.
    """

    def __init__(self, vocab_size: int, hidden_size: int):
        super().__init__()
        self.register_buffer("rows", torch.zeros(vocab_size, dtype=torch.long))  # token -> row; row 0 is identity
        self.register_buffer("mean", torch.zeros(1, hidden_size))
        self.register_buffer("std", torch.ones(1, hidden_size))

    @property
    def fitted(self) -> bool:
        return self.mean.shape[0] > 1

    @torch.no_grad()
    def fit(self, hidden: torch.Tensor, tokens: torch.Tensor, *, min_states: int = 8, eps: float = 1e-2) -> None:
        """hidden (N, H), tokens (N,): the last token each state read. Tokens read by
        fewer than `min_states` states stay unnormalised."""
        kept = [t for t, n in zip(*tokens.unique(return_counts=True)) if n >= min_states]
        self.rows.zero_()
        means, stds = [torch.zeros_like(self.mean[0])], [torch.ones_like(self.std[0])]
        for row, token in enumerate(kept, start=1):
            states = hidden[tokens == token].float()
            means.append(states.mean(0))
            stds.append(states.std(0) + eps)
            self.rows[token] = row
        self.mean, self.std = torch.stack(means), torch.stack(stds)

    def forward(self, hidden: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """hidden (..., H), tokens (...): the token each state read last."""
        if not self.fitted:
            return hidden
        if tokens is None:
            raise ValueError("these heads standardise by the last token read; pass the tokens")
        rows = self.rows[tokens]
        return ((hidden - self.mean[rows]) / self.std[rows]).to(hidden.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("mean", "std"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.rows.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ILQLOutput(NamedTuple):
    """ILQL's heads on one batch of hidden states (B, T, H)."""

    q1: torch.Tensor
    """(B, T, V): Q1(s_t, a) for every next token a."""
    q2: torch.Tensor
    """(B, T, V): Q2(s_t, a)."""
    target_q1: torch.Tensor
    """(B, T, V): the target copy of Q1; computed without gradients."""
    target_q2: torch.Tensor
    """(B, T, V): the target copy of Q2; computed without gradients."""
    v: torch.Tensor
    """(B, T): V(s_t)."""


class ILQLHeads(nn.Module):
    """ILQL's heads (Snell et al., 2023): twin Q heads `q1`, `q2` (hidden -> vocabulary),
    their frozen target copies `target_q1`, `target_q2`, and a value head `v`, all reading
    the hidden state through `input_norm` (a `TokenNorm`, identity unless fitted).

    The targets start equal to the online heads, never take gradients
    (`requires_grad=False`, computed under `no_grad`), and move toward the online heads
    only through `polyak_update`. `width` (the MLPs' inner size) defaults to `hidden_size`.
    """

    def __init__(self, hidden_size: int, vocab_size: int, *, width: int | None = None):
        super().__init__()
        self.width = width = width or hidden_size
        self.q1 = mlp(hidden_size, vocab_size, width)
        self.q2 = mlp(hidden_size, vocab_size, width)
        self.target_q1 = copy.deepcopy(self.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.q2).requires_grad_(False)
        self.v = ValueHead(hidden_size, width=width)
        self.input_norm = TokenNorm(vocab_size, hidden_size)  # identity unless fitted (`head_input_norm`)

    def forward(self, hidden: torch.Tensor, tokens: torch.Tensor | None = None) -> ILQLOutput:
        """hidden (B, T, H); tokens (B, T): the last token each state read (needed once
        `input_norm` is fitted)."""
        hidden = self.input_norm(hidden, tokens)
        with torch.no_grad():
            target_q1 = self.target_q1(hidden)  # (B, T, V)
            target_q2 = self.target_q2(hidden)  # (B, T, V)
        return ILQLOutput(self.q1(hidden), self.q2(hidden), target_q1, target_q2, self.v(hidden))

    @torch.no_grad()
    def polyak_update(self, tau: float) -> None:
        """target <- tau * online + (1 - tau) * target, for both Q heads.

        `tau` is the step the targets take toward the online heads: 1 copies them, 0
        leaves the targets unchanged; ILQL uses small values (trlx's `alpha`, e.g. 0.001
        every step, or 1 every N steps).
        """
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"polyak_update: tau must be in [0, 1], got {tau}")
        for online, target in ((self.q1, self.target_q1), (self.q2, self.target_q2)):
            for p, p_target in zip(online.parameters(), target.parameters()):
                p_target.lerp_(p, tau)


def save_heads(heads: nn.Module, path: str | os.PathLike) -> Path:
    """Write the state of `heads` to the safetensors file `path` (atomically: a temporary
    file renamed into place); the module's class name goes in the file's metadata."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in heads.state_dict().items()}
    return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata={"class": type(heads).__name__}))


def load_heads(path: str | os.PathLike, heads: nn.Module) -> nn.Module:
    """Load the safetensors file `path` into `heads`, a module built with the same
    sizes (e.g. `ILQLHeads(hidden_size, vocab_size)`); returns `heads`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"heads file {str(path)!r} does not exist")
    tensors = load_file(path)
    try:
        missing, unexpected = heads.load_state_dict(tensors, strict=False)
        # Files written before `TokenNorm` existed lack its buffers: it stays the identity.
        missing = [k for k in missing if not k.startswith("input_norm.")]
        if missing or unexpected:
            raise RuntimeError(f"missing keys {missing}, unexpected keys {unexpected}")
    except RuntimeError as err:
        with safe_open(path, "pt") as handle:
            written_by = (handle.metadata() or {}).get("class", "an unknown module")
        raise ValueError(
            f"heads file {str(path)!r} (saved from {written_by}) does not fit this {type(heads).__name__}: {err}"
        ) from err
    return heads
