"""Online RL: the PPO learner, rollout workers as a group (with a worker killed
mid-iteration), the online driver and its resume, and the command line."""

from __future__ import annotations

import functools
import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from lmrl_ray import cli
from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
from lmrl_ray.actors.rollout_group import RolloutGroup
from lmrl_ray.data.datagen import generate
from lmrl_ray.data.schema import EPISODE_ID, POLICY_VERSION
from lmrl_ray.data.store import ReplayStore
from lmrl_ray.drivers.offline import train_offline
from lmrl_ray.drivers.online import episode_seeds, train_online
from lmrl_ray.engines.base import SamplingParams
from lmrl_ray.engines.factory import make_engine
from lmrl_ray.learners.checkpoint import list_checkpoints
from lmrl_ray.learners.config import load_config
from lmrl_ray.learners.learner import Learner
from lmrl_ray.learners.ppo import ADVANTAGES, OLD_LOGPROBS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def maze_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("online") / "maze-data"
    generate("maze", 300, str(path), seed=0, workers=0, progress=False)
    return path


@pytest.fixture(scope="module")
def bc_checkpoint(maze_data, tmp_path_factory):
    """A BC policy on fully observed Maze: where the paper starts PPO."""
    out = tmp_path_factory.mktemp("online") / "bc"
    config = load_config("bc", task="maze", overrides=["updates=30", "batch_episodes=32", "lr=1e-3",
                                                       "checkpoint_every_updates=30"])
    return train_offline(config, data=maze_data, out=out, progress=False)["checkpoint"]


def test_first_ppo_update_on_fresh_episodes_has_ratio_one_and_no_clipping(maze_data):
    from lmrl_ray.data.store import ReplayStore

    rows = ReplayStore(maze_data).read().slice(0, 8).to_pylist()
    config = load_config("ppo", task="maze", overrides=["ppo_epochs=1", "minibatches_per_epoch=1",
                                                        "episodes_per_iteration=8", "warmup_updates=0"])
    learner = Learner(config)
    before = [p.detach().clone() for p in learner.model.parameters()]
    metrics = learner.algo.iteration(learner, rows)
    assert metrics["ppo/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["ppo/clipfrac"] == 0.0
    assert metrics["ppo/approx_kl"] == pytest.approx(0.0, abs=1e-7)
    # The reference is the starting model: no KL before the first update.
    assert metrics["ppo/kl"] == pytest.approx(0.0, abs=1e-6)
    assert learner.step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
    assert all(np.isfinite(v) for v in metrics.values())


def test_ppo_adds_the_offline_bc_term_only_when_weighted(maze_data):
    from lmrl_ray.data.store import ReplayStore

    table = ReplayStore(maze_data).read()
    rows, offline = table.slice(0, 4).to_pylist(), table.slice(100, 20)
    overrides = ["ppo_epochs=1", "minibatches_per_epoch=1", "episodes_per_iteration=4", "warmup_updates=0",
                 "kl_coef=0"]
    plain = Learner(load_config("ppo", task="maze", overrides=overrides), dataset=offline)
    with_bc = Learner(load_config("ppo", task="maze", overrides=overrides + ["offline_bc_weight=0.5"]), dataset=offline)
    a = plain.algo.iteration(plain, rows)
    b = with_bc.algo.iteration(with_bc, rows)
    assert "offline_bc/loss" not in a and b["offline_bc/loss"] > 0
    assert a["ppo/loss"] == pytest.approx(b["ppo/loss"], rel=1e-6)  # same start, same PPO loss
    assert a["learner/grad_norm"] != pytest.approx(b["learner/grad_norm"], rel=1e-3)  # plus BC's gradient


def test_score_whitens_advantages_over_the_batch(maze_data):
    from lmrl_ray.data.store import ReplayStore

    rows = ReplayStore(maze_data).read().slice(0, 6).to_pylist()
    learner = Learner(load_config("ppo", task="maze", overrides=["episodes_per_iteration=6",
                                                                 "minibatches_per_epoch=1"]))
    episodes = learner.encode(rows)
    learner.algo.score(learner, episodes)
    advantages = torch.cat([e.extras[ADVANTAGES] for e in episodes])
    assert advantages.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert advantages.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)
    assert all(e.extras[OLD_LOGPROBS].shape == (e.num_agent_tokens,) for e in episodes)


def test_ppo_from_bc_improves_fully_observed_maze(bc_checkpoint, tmp_path):
    config = load_config("ppo", task="maze", model=bc_checkpoint, overrides=[
        "iterations=4", "episodes_per_iteration=32", "minibatches_per_epoch=2", "lr=3e-4",
        "checkpoint_every_updates=4",
    ])
    history = train_online(config, out=tmp_path / "ppo", progress=False)["history"]
    first = history[0]
    last = history[-2:]
    success_after = np.mean([h["rollout/success_rate"] for h in last])
    return_after = np.mean([h["rollout/return_mean"] for h in last])
    assert success_after >= first["rollout/success_rate"] + 0.15, [h["rollout/success_rate"] for h in history]
    assert return_after > first["rollout/return_mean"], [h["rollout/return_mean"] for h in history]
    assert all(h["rollout/policy_lag"] == 0 for h in history)
    assert all(h["time/rollout_s"] > 0 and h["time/update_s"] > 0 for h in history)


def test_a_rollout_worker_killed_mid_iteration_loses_and_duplicates_nothing(bc_checkpoint, ray_local, tmp_path):
    import ray

    engines = EnginePool(functools.partial(make_engine, "hf", bc_checkpoint),
                         EnginePoolConfig(num_engines=2, num_cpus_per_engine=0.25))
    rollouts = RolloutGroup("maze", engines, num_workers=2, cpus_per_worker=0.25,
                            sampling=SamplingParams(temperature=1.0, seed=0), num_envs=16, source="online")
    try:
        seeds = list(range(1000, 1048))
        ids = [f"maze-kill-{s}" for s in seeds]
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(rows=rollouts.sample(seeds, episode_ids=ids)))
        thread.start()
        deadline = time.monotonic() + 60
        while sum(s["requests_served"] for s in engines.engine_stats()) < 10:
            assert time.monotonic() < deadline, "the engines never started serving"
            time.sleep(0.05)
        ray.kill(rollouts.workers[0], no_restart=False)  # Ray restarts it
        thread.join(timeout=300)
        assert not thread.is_alive()
        rows = result["rows"]
        assert rollouts.restarts >= 1
        assert [r[EPISODE_ID] for r in rows] == ids
        store = ReplayStore.create(tmp_path / "store")
        from lmrl_ray.data.schema import to_table

        store.append(to_table(rows), producer="online", sequence=0)
        store.append(to_table(rows), producer="online", sequence=0)  # idempotent: written once
        assert store.num_rows == len(seeds)
        assert len(set(store.read()[EPISODE_ID].to_pylist())) == len(seeds)
    finally:
        rollouts.shutdown()
        engines.shutdown()


def test_online_run_resumes_without_writing_an_iteration_twice(bc_checkpoint, tmp_path):
    overrides = ["iterations=2", "episodes_per_iteration=8", "minibatches_per_epoch=2", "ppo_epochs=1",
                 "checkpoint_every_updates=1", "keep_checkpoints=3"]
    config = load_config("ppo", task="maze", model=bc_checkpoint, overrides=overrides)
    out = tmp_path / "run"
    first = train_online(config, out=out, progress=False)
    store = ReplayStore(out / "trajectories")
    assert [s.sequence for s in store.shards()] == [0, 1] and store.num_rows == 16
    # Killed after iteration 2's episodes were stored but before its checkpoint:
    shutil.rmtree(list_checkpoints(out)[-1])
    resumed = train_online(config, out=out, resume=True, progress=False)
    store = ReplayStore(out / "trajectories")
    assert [s.sequence for s in store.shards()] == [0, 1] and store.num_rows == 16
    assert len(resumed["history"]) == 1  # only iteration 2 ran again, on its stored episodes
    assert resumed["history"][0]["rollout/return_mean"] == pytest.approx(first["history"][1]["rollout/return_mean"])
    assert set(store.read()[POLICY_VERSION].to_pylist()) == {1, 2}
    with pytest.raises(Exception, match="already holds checkpoints"):
        train_online(config, out=out, progress=False)


def test_episode_seeds_depend_only_on_seed_and_iteration():
    config = load_config("ppo", task="maze", overrides=["episodes_per_iteration=8", "minibatches_per_epoch=2"])
    assert episode_seeds(config, 3) == episode_seeds(config, 3)
    assert episode_seeds(config, 3) != episode_seeds(config, 4)


def test_cli_trains_ppo_and_online_filtered_bc(bc_checkpoint, tmp_path, capsys):
    own = {"ppo": ["minibatches_per_epoch=2", "--ppo_epochs", "1"],
           "online-filtered-bc": ["top_fraction=0.25", "--updates-per-iteration", "2"]}
    for algo in ("ppo", "online-filtered-bc"):
        out = tmp_path / algo
        code = cli.main(["train", "maze", "--algo", algo, "--init", bc_checkpoint, "--out", str(out), "--json",
                         "iterations=1", "episodes_per_iteration=8", *own[algo], "eval_episodes=5"])
        assert code == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["iterations"] == 1 and list_checkpoints(out)
        assert np.isfinite(result["metrics"]["eval/return_mean"])
        assert ReplayStore(out / "trajectories").num_rows == 8
    filtered = result["metrics"]
    assert "online-filtered-bc/kept_return_mean" in filtered and "bc/loss" in filtered


def test_cli_rejects_inconsistent_online_arguments(bc_checkpoint, maze_data, tmp_path, capsys):
    assert cli.main(["train", "maze", "--algo", "bc", "--out", str(tmp_path / "a")]) != 0
    assert "--data" in capsys.readouterr().err
    assert cli.main(["train", "maze", "--algo", "ilql", "--data", str(maze_data), "--init", bc_checkpoint]) != 0
    assert "--init" in capsys.readouterr().err
    assert cli.main(["train", "maze", "--algo", "ppo", "--init", bc_checkpoint, "--out", str(tmp_path / "b"),
                     "episodes_per_iteration=10", "minibatches_per_epoch=4"]) != 0
    assert "multiple of" in capsys.readouterr().err
    assert cli.main(["train", "maze", "--algo", "ppo", "--init", bc_checkpoint, "--out", str(tmp_path / "c"),
                     "offline_bc_weight=0.5"]) != 0
    assert "--data" in capsys.readouterr().err


def test_two_ppo_learners_stay_identical(maze_data, ray_local):
    from lmrl_ray.learners.group import LearnerGroup

    rows = ReplayStore(maze_data).read().slice(0, 8).to_pylist()
    config = load_config("ppo", task="maze", overrides=["num_learners=2", "cpus_per_learner=0.5",
                                                        "episodes_per_iteration=8", "minibatches_per_epoch=2",
                                                        "ppo_epochs=1", "warmup_updates=0"])
    group = LearnerGroup(config, None)
    try:
        before = group.parameters_checksums()
        metrics = group.iteration(rows)
        after = group.parameters_checksums()
        assert after[0] == pytest.approx(after[1], rel=1e-9) and after[0] != before[0]
        learner = Learner(config)  # the whole batch's agent tokens, counted in this process
        assert metrics["ppo/agent_tokens"] == sum(learner.collator.encode(r).num_agent_tokens for r in rows)
        assert metrics["learner/episodes"] == 4  # each update: 4 of the 8 episodes, across both learners
    finally:
        group.shutdown()


def test_online_run_with_rollout_worker_and_learner_actors(bc_checkpoint, ray_local, tmp_path):
    config = load_config("ppo", task="maze", model=bc_checkpoint, overrides=[
        "iterations=1", "episodes_per_iteration=8", "minibatches_per_epoch=2", "ppo_epochs=1",
        "num_learners=1", "num_rollout_workers=2", "num_engines=1", "cpus_per_learner=0.5",
        "cpus_per_rollout_worker=0.25", "cpus_per_engine=0.25", "eval_episodes=4",
    ])
    result = train_online(config, out=tmp_path / "scaled", progress=False)
    m = result["metrics"]
    assert m["rollout/episodes"] == 8 and np.isfinite(m["ppo/loss"]) and np.isfinite(m["eval/return_mean"])
    rows = ReplayStore(tmp_path / "scaled" / "trajectories").read().to_pylist()
    assert {r[POLICY_VERSION] for r in rows} == {1}
    assert all(t["token_ids"] for r in rows for t in r["turns"] if t["role"] == "agent")


def test_an_engine_killed_mid_iteration_is_restarted_at_the_latest_version(bc_checkpoint, ray_local):
    import ray

    from lmrl_ray.models import load_policy

    engines = EnginePool(functools.partial(make_engine, "hf", bc_checkpoint),
                         EnginePoolConfig(num_engines=2, num_cpus_per_engine=0.25))
    rollouts = RolloutGroup("maze", engines, num_workers=1, cpus_per_worker=0.25,
                            sampling=SamplingParams(temperature=1.0, seed=0), num_envs=8, source="online")
    try:
        model, _ = load_policy(bc_checkpoint)
        engines.set_weights(model.state_dict(), version=5)
        seeds = list(range(2000, 2024))
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(rows=rollouts.sample(seeds)))
        thread.start()
        deadline = time.monotonic() + 60
        while sum(s["requests_served"] for s in engines.engine_stats()) < 10:
            assert time.monotonic() < deadline, "the engines never started serving"
            time.sleep(0.05)
        ray.kill(engines.actors[0], no_restart=False)  # Ray restarts it at version 0
        thread.join(timeout=300)
        assert not thread.is_alive()
        rows = result["rows"]
        assert len(rows) == len(seeds) and len({r[EPISODE_ID] for r in rows}) == len(seeds)
        # Every turn was served at version 5: the restarted engine caught up before serving.
        assert {r[POLICY_VERSION] for r in rows} == {5}
        assert {s["version"] for s in engines.engine_stats()} == {5}
    finally:
        rollouts.shutdown()
        engines.shutdown()
