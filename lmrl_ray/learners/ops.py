"""Masked tensor operations the algorithms share (STYLE 9: a shared substrate, each
algorithm's math in its own file)."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over the entries where `mask` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def gather_actions(values: torch.Tensor, actions: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """The value of each step's action: values (..., V), actions (...) -> (...).

    With `index`, `values` holds one row per distinct state, (U, V), and step n reads
    row index[n]: values[index[n], actions[n]], without building an (N, V) tensor."""
    if index is not None:
        return values[index, actions]
    return values.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def token_cross_entropy(logits: torch.Tensor, actions: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """-log softmax(logits)[a] per step: logits (..., V), actions (...) -> (...); `index`
    as in `gather_actions`."""
    logits = logits.float()
    log_z = torch.logsumexp(logits, dim=-1)
    if index is not None:
        log_z = log_z[index]
    return log_z - gather_actions(logits, actions, index)


def next_state_values(v: torch.Tensor, next_step: torch.Tensor) -> torch.Tensor:
    """V(s_{t+1}) for every step: v (...), next_step (...) flat indices into v, or -1 at
    the end of an episode -> (...), 0 where there is no next state."""
    has_next = next_step >= 0
    return torch.where(has_next, v.flatten()[next_step.clamp(min=0)], torch.zeros_like(v))
