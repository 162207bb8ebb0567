"""What an algorithm is to the learner: its heads, its loss, and the steps around them.

The `Learner` (learner.py) owns the model, the heads, the optimizer and the checkpoint,
and turns a batch of episodes into an update; an algorithm (one file each: bc, mc, ilql,
ppo) says what that update is. The hooks, with what the base class does:

    make_heads(hidden, vocab)  the modules on the hidden states (none)
    setup(learner, dataset)    once, when the learner is built, before any checkpoint is
                               restored (nothing)
    dataset(store)             the training episodes of an offline dataset (all of them)
    loss(states, heads, batch) (loss, metrics) of one micro-batch: the algorithm's math
    after_update(heads)        after each optimizer step, e.g. target networks (nothing)
    select(rows)               online: which of an iteration's episodes are trained on,
                               in the driver, before they are shared out (all of them)
    iteration(learner, rows)   online: one iteration on this learner's share
    state_dict()               what the algorithm keeps between updates, saved with the
                               checkpoint as JSON (nothing)
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa


class Algorithm:
    """The defaults of every hook; `config` is the algorithm's config (`learners.config`)."""

    name = ""
    decoding = "sample"
    """How its checkpoints act: "sample" from the language model, or "value-guided"."""
    frozen_model = False
    """Whether the language model stays fixed (only the heads learn)."""
    head_grad_scale = 1.0
    """The fraction of the heads' gradient that reaches the language model."""
    feature_cache_mb = 0
    """With a frozen model: MiB of its hidden states the learner may cache."""
    beta = 0.0
    """The value-guidance strength its checkpoints decode with."""

    def __init__(self, config):
        self.config = config

    def make_heads(self, hidden_size: int, vocab_size: int):
        return None

    def setup(self, learner, dataset: pa.Table | None) -> None:
        pass

    def dataset(self, store) -> pa.Table:
        return store.read()

    def loss(self, states, heads, batch):
        raise NotImplementedError

    def after_update(self, heads) -> None:
        pass

    def select(self, rows: Sequence[dict]) -> tuple[list[dict], dict[str, float]]:
        return list(rows), {}

    def iteration(self, learner, rows: Sequence[dict]) -> dict[str, float]:
        raise NotImplementedError(f"{self.name} is an offline algorithm: it has updates, not iterations")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
