"""The inference-engine interface: prompts in, completions with token ids and log-probs out.

An engine acts; it never learns (STYLE 3): it holds a policy and its version, generates,
scores candidate actions, and takes new weights. It holds no optimizer and no loss.
Back ends: `HFEngine` (Hugging Face transformers, CPU or GPU, value-guided decoding) in
`hf_engine.py`; `VLLMEngine` (vLLM, CUDA) in `vllm_engine.py`. Engines are plain classes; the engine pools wrap
them in Ray actors.

Conventions every engine keeps:

- **Utterances end at a newline.** A prompt is `render_prompt(view)` (each turn followed
  by "\\n") and the policy's turn is the text up to the next newline. Generation always
  stops when the newline token is produced; that token is part of `token_ids` (and has a
  log-prob) but not of `text`.
- **Log-probs.** `Completion.logprobs[i]` is log pi(token_i | prompt, token_<i) under the
  policy model's own next-token distribution: the log-softmax of its logits at
  temperature 1, before top-p and before any value guidance, whatever `SamplingParams`
  was used to *pick* the token. That is the behaviour log-prob a PPO ratio compares the
  learner's fresh log-probs against (the learner recomputes the same quantity from the
  same token ids), so a sampling knob never changes what is recorded.
- **Versions.** Weights arrive with a policy version. An engine refuses a version older
  than the one it holds (`StaleWeightsError`); the same version is accepted and loaded
  again, so a learner that restarts and re-broadcasts its current weights is harmless.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. Generation always stops at the newline token."""

    max_new_tokens: int = 32
    """At most this many tokens are generated per prompt (the newline included)."""
    temperature: float = 1.0
    """Divides the logits before sampling. 0 means greedy (argmax): the one switch for
    greedy decoding, as in vLLM, so there is no separate flag to contradict it."""
    top_p: float = 1.0
    """Nucleus sampling: sample among the most likely tokens whose probabilities sum to at
    least `top_p` (1.0 keeps all). Ignored when greedy."""
    seed: int | None = None
    """Seeds the sampling generator: the same prompts, in the same order, with the same
    seed and weights give the same completions. None draws a fresh seed."""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    """One generated utterance."""

    text: str
    """The decoded tokens, without the final newline."""
    token_ids: list[int]
    """The generated token ids, exactly as produced (the newline included when generation
    stopped there): what the trajectory schema stores for the agent turn."""
    logprobs: list[float]
    """One per token id: log pi(token | prefix) at temperature 1 (see the module docstring)."""
    finish_reason: FinishReason
    """"stop": ended at the newline; "length": hit `max_new_tokens` first."""
    prompt_truncated: bool = False
    """True when the prompt was longer than the context allows and lost its oldest tokens."""

    def __post_init__(self):
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(f"{len(self.token_ids)} token ids but {len(self.logprobs)} log-probs")


class StaleWeightsError(ValueError):
    """Weights older than the engine's current policy version were offered."""


def check_version(current: int, offered: int) -> None:
    """Refuse weights whose version is older than the engine's; equal is accepted."""
    if offered < current:
        raise StaleWeightsError(
            f"refusing weights of policy version {offered}: the engine already holds version {current}"
        )


class Engine(ABC):
    """What rollout workers and evaluators call. Implementations: `HFEngine` (hf_engine.py)."""

    @property
    @abstractmethod
    def version(self) -> int:
        """The policy version of the weights in use (0 for the initial weights)."""

    @abstractmethod
    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[Completion]:
        """One completion per prompt, in order, each ending at the newline or at the length cap."""

    @abstractmethod
    def choose(self, prompts: list[str], candidates: list[list[str]]) -> list[int]:
        """The constrained mode: for each prompt, the index of the candidate with the highest
        log-likelihood of `candidate + "\\n"` given the prompt (e.g. over `legal_actions()`).
        Ties go to the first candidate."""

    @abstractmethod
    def set_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Load a learner's weights as policy `version` (see `check_version`)."""


__all__ = [
    "Completion",
    "Engine",
    "FinishReason",
    "SamplingParams",
    "StaleWeightsError",
    "check_version",
]


def encode_prompts(tokenizer, prompts: Sequence[str], context: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each prompt, cut from the left to at most `context` tokens, and
    whether each was cut. Every engine encodes prompts here, so the ids a rollout stores
    are the same whichever back end produced them (the task's view keeps what matters
    last, so the oldest tokens go first)."""
    encoded = tokenizer(list(prompts))["input_ids"]
    ids, truncated = [], []
    for i, seq in enumerate(encoded):
        if not seq:
            raise ValueError(f"prompt {i} is empty: a prompt needs at least one token to condition on")
        truncated.append(len(seq) > context)
        ids.append(seq[-context:])
    return ids, truncated


def candidate_sequences(
    tokenizer, prompts: Sequence[str], candidates: Sequence[Sequence[str]], context: int
) -> tuple[list[list[int]], list[int]]:
    """For `choose`: one token sequence per (prompt, candidate) pair, the candidate as an
    engine would emit it (its tokens, then the newline) after as much of the prompt as
    fits in `context`; and each candidate's token count (newline included)."""
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    prompt_ids, _ = encode_prompts(tokenizer, prompts, context)
    sequences, action_lengths = [], []
    for i, (prompt, actions) in enumerate(zip(prompt_ids, candidates)):
        if not actions:
            raise ValueError(f"prompt {i} has no candidates to choose from")
        for action in actions:
            action_ids = tokenizer.encode(action + "\n", add_special_tokens=False)
            room = context - len(action_ids)
            if room < 1:
                raise ValueError(f"candidate {action!r} alone fills the context of {context} tokens")
            sequences.append(prompt[-room:] + action_ids)
            action_lengths.append(len(action_ids))
    return sequences, action_lengths
