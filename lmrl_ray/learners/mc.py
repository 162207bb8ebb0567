"""Monte Carlo Returns (LMRL-Gym's "MC Returns"): Q and V regressed on the discounted
return-to-go of the behaviour data, with the same conservative term as ILQL.

For every agent step t with return-to-go G_t = sum_k gamma^k r_{t+k} (`ops.return_to_go`):

    L_Q   = E[(Q1(s_t, a_t) - G_t)^2 + (Q2(s_t, a_t) - G_t)^2]
    L_V   = E[(V(s_t) - G_t)^2]
    L_CQL = E[-log softmax(Q1(s_t, .))[a_t] - log softmax(Q2(s_t, .))[a_t]]
    L_MC  = L_Q + L_V + cql_weight * L_CQL

Q estimates the behaviour policy's value (no bootstrapping, so no stitching); the policy
decodes like ILQL's, pi_beta * exp(beta * (Q - V)). It uses ILQL's heads, with the
target heads kept equal to the online ones (the decoder reads the targets).
"""

from __future__ import annotations

import torch

from lmrl_ray.learners.guided import GuidedAlgorithm
from lmrl_ray.learners.ops import (
    gather_actions,
    masked_mean,
    return_to_go,
    token_cross_entropy,
)
from lmrl_ray.models import ILQLHeads


def mc_loss(
    q1: torch.Tensor,
    q2: torch.Tensor,
    v: torch.Tensor,
    returns: torch.Tensor,
    actions: torch.Tensor,
    mask: torch.Tensor,
    *,
    cql_weight: float,
    index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """q1, q2: (B, T, V) at steps t; v, returns (G_t), actions, mask: (B, T). With
    `index`, q1 and q2 are (U, V), one row per distinct state, read by step n at index[n]."""
    q1_a = gather_actions(q1, actions, index)  # (B, T): Q1(s_t, a_t)
    q2_a = gather_actions(q2, actions, index)
    q_loss = masked_mean((q1_a - returns).square() + (q2_a - returns).square(), mask)
    v_loss = masked_mean((v - returns).square(), mask)
    cql_loss = masked_mean(token_cross_entropy(q1, actions, index) + token_cross_entropy(q2, actions, index), mask)
    loss = q_loss + v_loss + cql_weight * cql_loss
    metrics = {
        "mc/loss": loss.item(),
        "mc/q_loss": q_loss.item(),
        "mc/v_loss": v_loss.item(),
        "mc/cql_loss": cql_loss.item(),
        "mc/q_mean": masked_mean(q1_a, mask).item(),
        "mc/return_mean": masked_mean(returns, mask).item(),
    }
    return loss, metrics


class MCReturns(GuidedAlgorithm):
    name = "mc"

    def loss(self, states, heads, batch):
        c = self.config
        returns = return_to_go(batch.rewards, batch.dones, batch.next_step, gamma=c.gamma)  # (N,): G_t
        # The online heads only: MC never reads the targets while learning.
        h = heads.input_norm(states.hidden, states.tokens)  # (U, H): per distinct state
        q1, q2, v = heads.q1(h), heads.q2(h), heads.v(h)  # (U, V), (U, V), (U,)
        loss, metrics = mc_loss(
            q1, q2, v[states.index], returns, batch.actions, batch.action_mask,
            cql_weight=c.cql_weight, index=states.index,
        )
        return self.with_bc_term(loss, metrics, states, batch)

    def after_update(self, heads: ILQLHeads) -> None:
        heads.polyak_update(1.0)  # the decoder reads the target heads: keep them equal
