"""Scripted play: every episode has its own seed, and a run replays from its seed."""

from __future__ import annotations

from lmrl_ray.envs.play import episode_seed, rollout


def test_episode_seeds_are_distinct_and_runs_reproducible():
    assert len({episode_seed(0, None, i) for i in range(1000)}) == 1000
    a = [e.transcript for e in rollout("maze", "behaviour", 5, seed=7)]
    b = [e.transcript for e in rollout("maze", "behaviour", 5, seed=7)]
    c = [e.transcript for e in rollout("maze", "behaviour", 5, seed=8)]
    assert a == b and a != c
