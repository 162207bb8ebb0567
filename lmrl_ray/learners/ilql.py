"""Implicit Language Q-Learning (Snell et al., 2023, arXiv 2206.11871), at token level.

For every agent step t (state s_t = the tokens read so far, action a_t = the next token):

    y_t     = r_t + gamma * (1 - done_t) * V(s_{t+1})                    (Q target, V stop-grad)
              or, with td_lambda > 0, the TD(lambda) target along the episode
              (`ops.lambda_returns`; 0 is the paper's one-step target)
              or, with bootstrap = "turn", lambda 1 inside each agent turn: every token of
              a turn is regressed on the turn's discounted reward plus V at the first
              token of the next agent turn (utterance-level bootstrapping)
    L_Q     = E[(Q1(s_t, a_t) - y_t)^2 + (Q2(s_t, a_t) - y_t)^2]
    L_V     = E[L2^tau(Qhat(s_t, a_t) - V(s_t))],  Qhat = min(Q1', Q2')   (target heads)
    L2^tau(u) = |tau - 1(u < 0)| * u^2                                  (expectile regression)
    L_CQL   = E[-log softmax(Q1(s_t, .))[a_t] - log softmax(Q2(s_t, .))[a_t]]
    L_ILQL  = L_Q + L_V + cql_weight * L_CQL

(the paper's eq. 1-3 and its conservative term). The learner adds `bc_weight` times the
BC loss on the language model, which stays the behaviour policy pi_beta that decoding
reweights by exp(beta * (Q - V)) (trlx calls this term `awac_scale`), and moves the
target heads toward the online ones by Polyak averaging after every update.
"""

from __future__ import annotations

import torch

from lmrl_ray.learners.guided import GuidedAlgorithm
from lmrl_ray.learners.ops import (
    gather_actions,
    lambda_returns,
    masked_mean,
    next_state_values,
    token_cross_entropy,
)
from lmrl_ray.models import ILQLHeads


def expectile_loss(u: torch.Tensor, tau: float) -> torch.Tensor:
    """L2^tau(u) = |tau - 1(u < 0)| * u^2, elementwise; at tau = 0.5 it is u^2 / 2."""
    weight = torch.where(u < 0, 1.0 - tau, tau)
    return weight * u.square()


def ilql_loss(
    q1: torch.Tensor,
    q2: torch.Tensor,
    target_q1: torch.Tensor,
    target_q2: torch.Tensor,
    v: torch.Tensor,
    v_next: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    tau: float,
    cql_weight: float,
    index: torch.Tensor | None = None,
    next_step: torch.Tensor | None = None,
    td_lambda: float | torch.Tensor = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """q1, q2, target_q1, target_q2: (B, T, V) at steps t; v, v_next: (B, T) = V(s_t),
    V(s_{t+1}); actions, rewards, dones, mask: (B, T). Returns (L_ILQL, metrics).

    With `index`, the four Q tensors are (U, V), one row per distinct state, and step n
    reads row index[n] (v and v_next are per step). `td_lambda` > 0 (one number, or one
    per step) bootstraps with TD(lambda) targets along `next_step` (flat (N,) steps only)."""
    q1_a = gather_actions(q1, actions, index)  # (B, T): Q1(s_t, a_t)
    q2_a = gather_actions(q2, actions, index)
    q_hat = torch.minimum(gather_actions(target_q1, actions, index), gather_actions(target_q2, actions, index)).detach()
    if isinstance(td_lambda, torch.Tensor) or td_lambda > 0.0:
        if next_step is None:
            raise ValueError("ilql_loss: td_lambda needs next_step")
        y = lambda_returns(rewards, v_next.detach(), dones, next_step, gamma=gamma, lam=td_lambda)
    else:
        y = rewards + gamma * (1.0 - dones) * v_next.detach()  # (B, T)
    q_loss = masked_mean((q1_a - y).square() + (q2_a - y).square(), mask)
    v_loss = masked_mean(expectile_loss(q_hat - v, tau), mask)
    cql_loss = masked_mean(token_cross_entropy(q1, actions, index) + token_cross_entropy(q2, actions, index), mask)
    loss = q_loss + v_loss + cql_weight * cql_loss
    metrics = {
        "ilql/loss": loss.item(),
        "ilql/q_loss": q_loss.item(),
        "ilql/v_loss": v_loss.item(),
        "ilql/cql_loss": cql_loss.item(),
        "ilql/q_mean": masked_mean(q1_a, mask).item(),
        "ilql/v_mean": masked_mean(v, mask).item(),
        "ilql/target_q_mean": masked_mean(q_hat, mask).item(),
    }
    return loss, metrics


class ILQL(GuidedAlgorithm):
    """ILQL for the learner: `ILQLHeads` on the final hidden state; decoding is value-guided."""

    name = "ilql"

    def loss(self, states, heads, batch):
        c = self.config
        q1, q2, target_q1, target_q2, v = heads(states.hidden, states.tokens)  # (U, V) x 4, (U,): per distinct state
        v = v[states.index]  # (N,): V(s_t) per step
        v_next = next_state_values(v, batch.next_step)  # (N,): V(s_{t+1}), 0 at the end
        td_lambda = c.td_lambda
        if c.bootstrap == "turn":  # lambda 1 inside a turn, td_lambda where the turn ends
            td_lambda = torch.where(batch.turn_ends > 0, c.td_lambda, 1.0)
        loss, metrics = ilql_loss(
            q1, q2, target_q1, target_q2, v, v_next, batch.actions, batch.rewards, batch.dones, batch.action_mask,
            gamma=c.gamma, tau=c.expectile, cql_weight=c.cql_weight, index=states.index,
            next_step=batch.next_step, td_lambda=td_lambda,
        )
        return self.with_bc_term(loss, metrics, states, batch)

    def after_update(self, heads: ILQLHeads) -> None:
        heads.polyak_update(self.config.polyak)
