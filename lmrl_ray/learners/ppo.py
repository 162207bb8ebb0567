"""PPO for the learner (Schulman et al., 2017), at token level, from a BC checkpoint.

The math is in `ppo_math` (pure functions); this file is PPO's iteration on a learner:

    score:  log pi_old(a_t|s_t), V_old(s_t) and log pi_ref(a_t|s_t) at every agent step of
            an iteration's episodes, before any update (no gradient);
            r'_t = r_t - kl_coef * (log pi_old - log pi_ref)      (KL folded into the reward)
            A_t, R_t = GAE(r', V_old) per episode; A whitened over the iteration
    epochs: `ppo_epochs` passes of `minibatches_per_epoch` updates over random splits of
            the episodes (whole episodes), each minimising
            L_PPO(log pi(a_t|s_t), V(s_t); log pi_old, A, V_old, R)   (clipped policy and value)
            plus `offline_bc_weight` x BC on as many offline episodes
    adapt:  the KL coefficient moves toward `kl_target` (when set)

pi is the sampling distribution the engines used: the language model's logits divided by
`temperature`. The old log-probs are recomputed by the learner rather than taken from
the engine, so the first update of an iteration has ratio 1 exactly whatever numerical
differences the engine has (vLLM's kernels, bf16). The reference policy is the model
training starts from (BC), frozen; the KL coefficient is kept with the checkpoint.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch

from lmrl_ray.learners.algorithm import Algorithm
from lmrl_ray.learners.bc import bc_loss
from lmrl_ray.learners.ops import token_cross_entropy
from lmrl_ray.learners.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    kl_penalty_rewards,
    ppo_loss,
    whiten_by,
)
from lmrl_ray.models import ValueHead

# The per-step values `score` attaches to each episode (EncodedEpisode.extras).
OLD_LOGPROBS, OLD_VALUES, ADVANTAGES, RETURNS = "old_logprobs", "old_values", "advantages", "returns"


def action_logprobs(states, actions: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(a_t | s_t) per step (N,) from the distinct states' logits (U, V)."""
    return -token_cross_entropy(states.logits.float() / temperature, actions, states.index)


def kl_controller(config) -> AdaptiveKLController | FixedKLController:
    if config.kl_target > 0:
        return AdaptiveKLController(config.kl_coef, target=config.kl_target, horizon=config.kl_horizon_tokens)
    return FixedKLController(config.kl_coef)


class PPO(Algorithm):
    """PPO's value head, loss and iteration."""

    name = "ppo"

    def __init__(self, config):
        super().__init__(config)
        self.temperature = config.rollouts.temperature
        self.kl = kl_controller(config)
        self.reference = None
        self.offline_rows: list[dict] = []

    def make_heads(self, hidden_size: int, vocab_size: int) -> ValueHead:
        return ValueHead(hidden_size, width=self.config.head_width or None)

    def setup(self, learner, dataset: pa.Table | None) -> None:
        # The reference policy for the KL penalty: the model training starts from, frozen
        # (taken before any checkpoint of this run is restored).
        if self.config.kl_coef > 0 or self.config.kl_target > 0:
            self.reference = copy.deepcopy(learner.model).requires_grad_(False)
        if self.config.offline_bc_weight > 0:
            if dataset is None:
                raise ValueError("offline_bc_weight > 0 needs an offline dataset (--data)")
            self.offline_rows = dataset.to_pylist()

    def values(self, states, heads) -> torch.Tensor:
        return heads(states.hidden.float())[states.index]  # (N,): V(s_t)

    def loss(self, states, heads, batch):
        c = self.config
        x = batch.extras
        return ppo_loss(
            action_logprobs(states, batch.actions, self.temperature), x[OLD_LOGPROBS], x[ADVANTAGES],
            self.values(states, heads), x[OLD_VALUES], x[RETURNS], batch.action_mask,
            clip_ratio=c.clip_ratio, value_clip=c.value_clip, vf_coef=c.vf_coef,
        )

    def iteration(self, learner, rows: Sequence[dict]) -> dict[str, float]:
        """PPO on this learner's share of one iteration's episodes (see the module docstring)."""
        c = self.config
        episodes = learner.encode(rows)
        scored = self.score(learner, episodes)
        rng = np.random.default_rng([c.common.seed, learner.step])
        totals: dict[str, float] = defaultdict(float)
        updates = 0
        for _ in range(c.ppo_epochs):
            for part in np.array_split(rng.permutation(len(episodes)), c.minibatches_per_epoch):
                minibatch = [episodes[i] for i in part]
                learner.zero_grad()
                sums, tokens = learner.accumulate(minibatch, learner.algorithm_loss)
                if self.offline_rows:
                    picks = rng.choice(len(self.offline_rows), size=len(part), replace=len(part) > len(self.offline_rows))
                    offline = learner.encode([self.offline_rows[i] for i in picks])
                    bc_sums, _ = learner.accumulate(offline, self.offline_bc, weight=c.offline_bc_weight)
                    sums.update({f"offline_{k}": v for k, v in bc_sums.items()})
                metrics = learner.optimizer_step(learner.reduce(sums, len(minibatch), tokens))
                for key, value in metrics.items():
                    totals[key] += value
                updates += 1
        self.kl.update(scored["ppo/kl"], int(scored["ppo/agent_tokens"]))
        return {**{k: v / updates for k, v in totals.items()}, **scored, "ppo/updates": float(updates)}

    @staticmethod
    def offline_bc(states, batch):
        return bc_loss(states.logits, batch.actions, batch.action_mask, index=states.index)

    @torch.no_grad()
    def score(self, learner, episodes) -> dict[str, float]:
        """Attach to every episode its steps' old log-probs, old values, advantages and
        value targets; advantages are whitened over the whole group's batch."""
        c = self.config
        kl_coef = self.kl.value
        sums = torch.zeros(6, dtype=torch.float64)  # steps, kl, reward, value, A, A^2
        for group, batch in learner.batches(episodes):
            with learner.autocast():
                states = learner.forward(batch)
                old_logprobs = action_logprobs(states, batch.actions, self.temperature).float()
                old_values = self.values(states, learner.heads).float()
                ref_logprobs = None
                if self.reference is not None:
                    ref_states = learner.forward(batch, model=self.reference)
                    ref_logprobs = action_logprobs(ref_states, batch.actions, self.temperature).float()
            rewards, kl = batch.rewards, torch.zeros_like(batch.rewards)
            if ref_logprobs is not None:
                rewards, kl = kl_penalty_rewards(batch.rewards, old_logprobs, ref_logprobs, kl_coef=kl_coef)
            advantages, returns = gae(rewards, old_values, batch.next_step, batch.dones,
                                      gamma=c.gamma, lam=c.gae_lambda)
            for name, values in ((OLD_LOGPROBS, old_logprobs), (OLD_VALUES, old_values), (ADVANTAGES, advantages),
                                 (RETURNS, returns)):
                for episode, part in zip(group, values.cpu().split(batch.episode_steps)):
                    episode.extras[name] = part
            sums += torch.tensor([float(kl.numel()), kl.sum().item(), batch.rewards.sum().item(),
                                  old_values.sum().item(), advantages.sum().item(), advantages.square().sum().item()],
                                 dtype=torch.float64)
        steps, kl, reward, value, a_sum, a_sq = learner.all_reduce(sums).tolist()
        a_mean = a_sum / steps
        a_var = max(a_sq / steps - a_mean**2, 0.0)
        if c.whiten_advantages:
            for episode in episodes:
                episode.extras[ADVANTAGES] = whiten_by(episode.extras[ADVANTAGES], a_mean, a_var)
        return {"ppo/agent_tokens": steps, "ppo/kl": kl / steps, "ppo/kl_coef": kl_coef,
                "ppo/reward_per_token": reward / steps, "ppo/old_value_mean": value / steps,
                "ppo/advantage_mean": a_mean, "ppo/advantage_std": a_var**0.5}

    def state_dict(self) -> dict[str, Any]:
        return {"kl": self.kl.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "kl" in state:
            self.kl.load_state_dict(state["kl"])
