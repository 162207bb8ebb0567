"""Behaviour cloning, filtered BC and online filtered BC: one loss, three choices of data.

BC maximises the log-likelihood of the agent's tokens given what the policy saw:
L_BC = -E[log pi(a_t | s_t)] over agent steps. Filtered BC differs only in its data:
the top fraction of the dataset's episodes by return (`ReplayStore.top_fraction`), chosen
when the dataset is loaded; online filtered BC takes the top fraction of each iteration's
episodes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from lmrl_ray.data.schema import RETURN
from lmrl_ray.learners.algorithm import Algorithm
from lmrl_ray.learners.ops import masked_mean, token_cross_entropy


def bc_loss(
    logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, *, index: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """logits (B, T, V) at steps t, actions (B, T) = a_t, mask (B, T) agent steps. With
    `index`, logits are (U, V), one row per distinct state, and step n reads row index[n]."""
    nll = token_cross_entropy(logits, actions, index)  # (B, T): -log pi(a_t | s_t)
    loss = masked_mean(nll, mask)
    greedy = logits.argmax(-1)
    accuracy = masked_mean(((greedy[index] if index is not None else greedy) == actions).float(), mask)
    return loss, {"bc/loss": loss.item(), "bc/accuracy": accuracy.item()}


def with_bc_term(loss: torch.Tensor, metrics: dict[str, float], states, batch, weight: float):
    """`loss + weight * L_BC` on the language model, with BC's metrics added: how ILQL and
    MC Returns keep the language model the behaviour policy their decoding reweights."""
    if not weight:
        return loss, metrics
    bc, bc_metrics = bc_loss(states.logits, batch.actions, batch.action_mask, index=states.index)
    return loss + weight * bc, {**metrics, **bc_metrics}


class BC(Algorithm):
    """Behaviour cloning: no heads, the language model is the policy."""

    name = "bc"

    def loss(self, states, heads, batch):
        return bc_loss(states.logits, batch.actions, batch.action_mask, index=states.index)


class FilteredBC(BC):
    """BC on the dataset's best `top_fraction` of episodes by return."""

    name = "filtered-bc"

    def dataset(self, store) -> pa.Table:
        return store.top_fraction(self.config.top_fraction)


class OnlineFilteredBC(BC):
    """Each iteration: BC updates on the best `top_fraction` of the iteration's episodes."""

    name = "online-filtered-bc"

    def select(self, rows: Sequence[dict]) -> tuple[list[dict], dict[str, float]]:
        kept = sorted(rows, key=lambda r: -r[RETURN])[: max(1, round(self.config.top_fraction * len(rows)))]
        return kept, {"online-filtered-bc/kept_return_mean": float(np.mean([r[RETURN] for r in kept]))}

    def iteration(self, learner, rows: Sequence[dict]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for _ in range(self.config.updates_per_iteration):
            metrics = learner.update(rows)
        return metrics
