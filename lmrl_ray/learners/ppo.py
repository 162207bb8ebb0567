"""PPO for the learner (Schulman et al., 2017), at token level, from a BC checkpoint.

The math is in `ppo_math` (pure functions); this file wires it to the model:

    score:  log pi_old(a_t|s_t), V_old(s_t) and log pi_ref(a_t|s_t) at every agent step of
            an iteration's episodes, before any update (no gradient);
            r'_t = r_t - kl_coef * (log pi_old - log pi_ref)      (KL folded into the reward)
            A_t, R_t = GAE(r', V_old) per episode; A whitened over the iteration
    loss:   L_PPO(log pi(a_t|s_t), V(s_t); log pi_old, A, V_old, R)   (clipped policy and value)

pi is the sampling distribution the engines used: the language model's logits divided by
`temperature`. The old log-probs are recomputed by the learner rather than taken from
the engine, so the first update of an iteration has ratio 1 exactly whatever numerical
differences the engine has (vLLM's kernels, bf16).
"""

from __future__ import annotations

import torch

from lmrl_ray.learners.ops import token_cross_entropy
from lmrl_ray.learners.ppo_math import gae, kl_penalty_rewards, ppo_loss
from lmrl_ray.models import ValueHead

# The per-step values `score` attaches to each episode (EncodedEpisode.extras).
OLD_LOGPROBS, OLD_VALUES, ADVANTAGES, RETURNS = "old_logprobs", "old_values", "advantages", "returns"


def action_logprobs(states, actions: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(a_t | s_t) per step (N,) from the distinct states' logits (U, V)."""
    return -token_cross_entropy(states.logits.float() / temperature, actions, states.index)


class PPO:
    """PPO's value head and loss; the learner runs the iteration (score, epochs, minibatches)."""

    name = "ppo"
    decoding = "sample"

    def __init__(self, config):
        self.config = config

    def make_heads(self, hidden_size: int, vocab_size: int) -> ValueHead:
        return ValueHead(hidden_size, width=self.config.head_width or None)

    def values(self, states, heads) -> torch.Tensor:
        return heads(states.hidden.float())[states.index]  # (N,): V(s_t)

    def advantages(self, batch, old_logprobs, ref_logprobs, old_values, kl_coef: float):
        """(A, R, kl) per step (N,) of a batch of whole episodes."""
        rewards, kl = batch.rewards, torch.zeros_like(batch.rewards)
        if ref_logprobs is not None:
            rewards, kl = kl_penalty_rewards(batch.rewards, old_logprobs, ref_logprobs, kl_coef=kl_coef)
        advantages, returns = gae(rewards, old_values, batch.next_step, batch.dones,
                                  gamma=self.config.gamma, lam=self.config.gae_lambda)
        return advantages, returns, kl

    def loss(self, states, heads, batch):
        c = self.config
        x = batch.extras
        return ppo_loss(
            action_logprobs(states, batch.actions, c.temperature), x[OLD_LOGPROBS], x[ADVANTAGES],
            self.values(states, heads), x[OLD_VALUES], x[RETURNS], batch.action_mask,
            clip_ratio=c.clip_ratio, value_clip=c.value_clip, vf_coef=c.vf_coef,
        )

    def after_update(self, heads) -> None:
        pass
