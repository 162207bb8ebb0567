"""The rollout worker with the real tiny model on CPU: one engine call per step, batched
results equal one-at-a-time results, rerank plays only legal actions, rows fit the
schema, and Ray actors give the same episodes as the in-process worker.

Episodes are kept short (a few moves, a few tokens per turn): the untrained tiny model
rarely says a newline, so every turn runs to `max_new_tokens`."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
from lmrl_ray.actors.rollout_group import run_episodes, split_evenly
from lmrl_ray.actors.rollout_worker import (
    RolloutWorker,
    default_max_new_tokens,
    step_seed,
)
from lmrl_ray.data.schema import to_table
from lmrl_ray.engines.base import SamplingParams
from lmrl_ray.engines.hf_engine import HFEngine
from lmrl_ray.envs.maze import STARTS
from lmrl_ray.envs.play import episode_seed

GREEDY = SamplingParams(temperature=0)
SHORT_MAZE = {"max_moves": 3}
MAZE_MOVES = {"move up", "move down", "move left", "move right"}


@pytest.fixture(scope="module")
def engine():
    return HFEngine.load("tiny")


def maze_episodes(n: int) -> tuple[list[int], list[dict]]:
    return [episode_seed(0, None, i) for i in range(n)], [{"start": STARTS[(7 * i) % len(STARTS)]} for i in range(n)]


def maze_worker(engine, **kwargs) -> RolloutWorker:
    kwargs = {"sampling": GREEDY, "max_new_tokens": 4, "env_settings": SHORT_MAZE, **kwargs}
    return RolloutWorker("maze", engine, **kwargs)


def same_rows(got: list[dict], want: list[dict]) -> bool:
    """Rows equal, log-probs up to float rounding (batches pad and sum in another order)."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        for key in a:
            if key != "turns" and a[key] != b[key]:
                return False
        for s, t in zip(a["turns"], b["turns"], strict=True):
            if any(s[key] != t[key] for key in ("role", "text", "token_ids", "reward")):
                return False
            if (s["logprobs"] is None) != (t["logprobs"] is None):
                return False
            if s["logprobs"] is not None and not np.allclose(s["logprobs"], t["logprobs"], rtol=0, atol=1e-4):
                return False
    return True


def test_one_engine_call_per_step_for_every_live_episode(engine):
    seeds, options = maze_episodes(6)
    worker = maze_worker(engine, num_envs=4)
    rows = worker.run(seeds, options)
    # Every episode lasts 4 turns, 3 moves and the turn answered `Failure` (the untrained
    # model never reaches the goal in 3): episodes 0-3 take 4 batched steps, then 4-5 take 4 more.
    assert [r["length"] for r in rows] == [4] * 6
    assert worker.engine_calls == 8


def test_batched_greedy_rows_equal_one_env_at_a_time(engine):
    seeds, options = maze_episodes(5)
    batched = maze_worker(engine, num_envs=5).run(seeds, options)
    alone = maze_worker(engine, num_envs=1).run(seeds, options)
    assert same_rows(batched, alone)
    # Order-independent too: each episode is fixed by its own seed and options.
    reversed_rows = maze_worker(engine, num_envs=3).run(seeds[::-1], options[::-1])
    assert same_rows(reversed_rows[::-1], alone)


def test_rows_fit_the_schema_with_the_engines_tokens(engine):
    seeds, options = maze_episodes(3)
    rows = maze_worker(engine, num_envs=2, source="online", policy="tiny").run(seeds, options, ["a", "b", "c"])
    table = to_table(rows)
    assert table.num_rows == 3
    assert [r["episode_id"] for r in rows] == ["a", "b", "c"] and [r["seed"] for r in rows] == seeds
    for row in rows:
        assert (row["source"], row["split"], row["policy"], row["policy_version"]) == ("online", "train", "tiny", 0)
        agent = [t for t in row["turns"] if t["role"] == "agent"]
        assert len(agent) == row["length"] and row["return"] == sum(t["reward"] for t in agent)
        for turn in agent:
            assert 1 <= len(turn["token_ids"]) == len(turn["logprobs"]) <= 4
            assert all(lp <= 0 for lp in turn["logprobs"])
        assert all(t["token_ids"] is None for t in row["turns"] if t["role"] == "env")
    # The stored tokens are what was played: they decode to the agent's text.
    turn = next(t for t in rows[0]["turns"] if t["role"] == "agent")
    ids = [i for i in turn["token_ids"] if i != engine.newline_id]
    assert engine.tokenizer.decode(ids, clean_up_tokenization_spaces=False).strip() == turn["text"]


def test_seeded_sampling_is_reproducible(engine):
    seeds, options = maze_episodes(4)
    sampling = SamplingParams(temperature=1.0, seed=5)
    first = maze_worker(engine, num_envs=2, sampling=sampling).run(seeds, options)
    again = maze_worker(engine, num_envs=2, sampling=sampling).run(seeds, options)
    other = maze_worker(engine, num_envs=2, sampling=SamplingParams(temperature=1.0, seed=6)).run(seeds, options)
    assert same_rows(first, again) and not same_rows(first, other)
    assert step_seed(5, [(1, 0), (2, 0)]) != step_seed(5, [(2, 0), (1, 0)])


def test_rerank_plays_only_legal_actions(engine):
    seeds, options = maze_episodes(4)
    worker = RolloutWorker("maze", engine, decoding="rerank", num_envs=4, env_settings={"max_moves": 6})
    rows = worker.run(seeds, options)
    for row in rows:
        agent = [t for t in row["turns"] if t["role"] == "agent"]
        assert {t["text"] for t in agent} <= MAZE_MOVES
        assert all(t["reward"] in (-1.0, 0.0) for t in agent)  # never the invalid-action -4
        assert all(t["token_ids"] is None and t["logprobs"] is None for t in agent)
    to_table(rows)
    # Text-Nav's legal commands change with the state: replay each episode and check.
    nav_seeds = [episode_seed(1, None, i) for i in range(3)]
    settings = {"max_steps": 5}
    nav = RolloutWorker("text-nav", engine, decoding="rerank", num_envs=3, env_settings=settings).run(nav_seeds)
    for row in nav:
        env = envs.make("text-nav", **settings)
        env.reset(seed=row["seed"])
        for turn in (t for t in row["turns"] if t["role"] == "agent"):
            assert turn["text"] in env.legal_actions()
            env.step(turn["text"])
        assert env.done


def test_rerank_needs_a_finite_action_set(engine):
    with pytest.raises(ValueError, match="no finite action set"):
        RolloutWorker("twenty-questions", engine, decoding="rerank")
    with pytest.raises(ValueError, match="decoding"):
        RolloutWorker("maze", engine, decoding="beam")


def test_defaults_and_splits():
    assert default_max_new_tokens("maze") == 32 and default_max_new_tokens("car-dealer") == 128
    assert [list(r) for r in split_evenly(5, 2)] == [[0, 1], [2, 3, 4]]
    assert [len(r) for r in split_evenly(2, 3)] == [0, 1, 1]


def test_workers_need_an_engine_they_can_reach(engine):
    with pytest.raises(ValueError, match="EnginePool"):
        run_episodes("maze", engine, [1, 2], num_workers=2)


def test_two_ray_workers_give_the_same_episodes_as_in_process(ray_local, engine):
    seeds, options = maze_episodes(5)
    kwargs = {"sampling": GREEDY, "max_new_tokens": 4, "env_settings": SHORT_MAZE, "num_envs": 2}
    local = run_episodes("maze", engine, seeds, options, num_workers=0, **kwargs)
    factory = functools.partial(HFEngine.load, "tiny")
    remote = run_episodes("maze", factory, seeds, options, num_workers=2, num_cpus_per_worker=0.5, **kwargs)
    assert same_rows(remote, local)
    # Or sharing one engine actor through a pool.
    pool = EnginePool(factory, EnginePoolConfig(num_engines=1, num_cpus_per_engine=0.5))
    try:
        shared = run_episodes("maze", pool, seeds, options, num_workers=2, num_cpus_per_worker=0.5, **kwargs)
    finally:
        pool.shutdown()
    assert same_rows(shared, local)
