"""Behaviour cloning, and filtered BC (the same loss on the best episodes only).

BC maximises the log-likelihood of the agent's tokens given what the policy saw:
L_BC = -E[log pi(a_t | s_t)] over agent steps. Filtered BC differs only in its data:
the top fraction of episodes by return (`ReplayStore.top_fraction`), chosen when the
dataset is loaded.
"""

from __future__ import annotations

import torch

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


class BC:
    """The BC algorithm for the learner: no heads, the language model is the policy."""

    name = "bc"
    decoding = "sample"

    def __init__(self, config):
        self.config = config

    def make_heads(self, hidden_size: int, vocab_size: int):
        return None

    def loss(self, states, heads, batch):
        return bc_loss(states.logits, batch.actions, batch.action_mask, index=states.index)

    def after_update(self, heads) -> None:
        pass
