"""Scripted rollouts: play a policy against a task and summarise the returns.

Each episode's seed is derived from (seed, episode index), so a run is reproducible and
any one episode can be replayed alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from lmrl_ray import envs
from lmrl_ray.envs.base import ScriptedPolicy, TextEnv, Turn

# Student's t 0.975 quantiles for 1..30 degrees of freedom (standard tables).
_T975 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]


def t975(dof: int) -> float:
    """The two-sided 95% critical value of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    # Cornish-Fisher expansion around the normal quantile; error < 1e-4 for dof > 30.
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


@dataclass(frozen=True)
class Summary:
    """Mean return with its 95% confidence interval, and the success rate."""

    episodes: int
    mean_return: float
    ci95: float
    """Half-width of the 95% confidence interval of the mean (Student's t)."""
    std_return: float
    success_rate: float
    mean_turns: float


def summarize(returns: Sequence[float], successes: Sequence[bool], turns: Sequence[int]) -> Summary:
    n = len(returns)
    if n == 0:
        raise ValueError("summarize: no episodes")
    r = np.asarray(returns, dtype=float)
    std = float(r.std(ddof=1)) if n > 1 else math.nan
    ci = t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return Summary(n, float(r.mean()), ci, std, float(np.mean(successes)), float(np.mean(turns)))


def normalised_score(x: float, m: float | None, d: float | None, M: float | None) -> float | None:
    """The paper's normalised score (appendix E): 0 = the task minimum m, 50 = the offline
    dataset's average d, 100 = the expert maximum M; clipped below at 0. None where a
    constant is unpublished."""
    if m is None or d is None or M is None:
        return None
    score = 50 * (x - m) / (d - m) if x < d else 50 + 50 * (x - d) / (M - d)
    return max(0.0, score)


def scores(task: str, summary: Summary) -> dict:
    """An evaluation's figures: the summary's fields and the normalised scores of `task`
    with the paper's constants and with ours."""
    spec = envs.spec(task)
    return {
        "episodes": summary.episodes,
        "mean_return": summary.mean_return,
        "ci95": summary.ci95,
        "std_return": summary.std_return,
        "success_rate": summary.success_rate,
        "mean_turns": summary.mean_turns,
        "normalised_paper": normalised_score(summary.mean_return, spec.paper_min, spec.paper_avg, spec.paper_max),
        "normalised_ours": normalised_score(summary.mean_return, spec.paper_min, spec.our_avg, spec.our_max),
    }


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


def episode_seed(seed: int, index: int) -> int:
    """The seed of episode `index` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


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
            yield play_episode(env, policy, episode_seed(seed, i))
    finally:
        env.close()


def evaluate(task: str, policy_kind: str, episodes: int, *, seed: int = 0, progress: bool = False) -> Summary:
    eps = list(rollout(task, policy_kind, episodes, seed=seed, progress=progress))
    return summarize([e.episode_return for e in eps], [e.success for e in eps], [e.agent_turns for e in eps])
