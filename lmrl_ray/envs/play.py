"""Scripted play: a scripted policy's episodes of a task, and the seed of every episode.

    for episode in rollout("maze", "expert", 25, seed=0): ...
    summary = scripted_summary("wordle", "behaviour", 1000)     # mean return ± 95% CI

An episode is fixed by its seed (`episode_seed`), which also seeds the policy, so a run
is reproducible and any one episode can be replayed alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from lmrl_ray import envs
from lmrl_ray.envs.base import ScriptedPolicy, TextEnv, Turn
from lmrl_ray.stats import Summary, summarize

SPLITS = ("train", "eval")
"""The datasets' seed streams: training data, and the evaluation episodes it never draws."""
_SPLIT_CODE = {split: code for code, split in enumerate(SPLITS)}


def episode_seed(seed: int, split: str | None, index: int) -> int:
    """The environment seed of episode `index` of a run seeded with `seed`: a function of
    these alone. `split` is the stream: "train" (offline data) or "eval" (evaluation
    episodes), which never share a seed, or None: scripted rollouts (`lmrl-ray rollout`,
    and the normalisation constants measured with them)."""
    if split is None:
        return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return int(np.random.SeedSequence([seed, _SPLIT_CODE[split], index]).generate_state(1)[0])


@dataclass
class Episode:
    """A finished episode: the transcript and the reward of every agent turn."""

    task: str
    seed: int
    transcript: list[Turn]
    rewards: list[float] = field(default_factory=list)
    success: bool = False

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))

    @property
    def agent_turns(self) -> int:
        return len(self.rewards)


def play_episode(env: TextEnv, policy: ScriptedPolicy, seed: int, options: dict | None = None) -> Episode:
    """One episode of `policy` in `env`; the seed fixes both the episode and the policy."""
    env.reset(seed=seed, options=options)
    rng = np.random.default_rng([seed, 1])
    policy.reset(env, rng)
    rewards, info = [], {}
    while not env.done:
        _, reward, _, _, info = env.step(policy.act(env, rng))
        rewards.append(reward)
    return Episode(env.task, seed, list(env.transcript), rewards, bool(info.get("success", False)))


def rollout(
    task: str,
    policy_kind: str,
    episodes: int,
    *,
    seed: int = 0,
    progress: bool = False,
    env_settings: dict | None = None,
) -> Iterable[Episode]:
    """Yield `episodes` episodes of a scripted policy; the environment is closed at the end."""
    env = envs.make(task, **(env_settings or {}))
    policy = envs.policy(task, policy_kind)
    indices: Iterable[int] = range(episodes)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"{task}/{policy_kind}", unit="ep", leave=False)
    try:
        for i in indices:
            yield play_episode(env, policy, episode_seed(seed, None, i))
    finally:
        env.close()


def scripted_summary(task: str, policy_kind: str, episodes: int, *, seed: int = 0, progress: bool = False) -> Summary:
    """The mean return (95% CI), success rate and turns of a scripted policy's episodes."""
    eps = list(rollout(task, policy_kind, episodes, seed=seed, progress=progress))
    return summarize([e.episode_return for e in eps], [e.success for e in eps], [e.agent_turns for e in eps])
