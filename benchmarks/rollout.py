"""Rollout throughput and the shape of an online iteration, as JSON.

The policy: a BC checkpoint on the fully observed Maze (300 behaviour episodes, 40 BC
updates of 32 episodes on the embedded tiny model), trained here in a temporary folder,
or `--model PATH` to use one already trained. Every rollout samples (temperature 1,
seeded) with the HF engine; episodes are capped at 100 agent turns, so a poor policy
makes long episodes.

1. Workers: episodes/s and agent tokens/s (the token ids of the agent turns) of
   `RolloutGroup.sample` with 1 and with 2 rollout-worker actors, each with its own
   engine actor (num_engines = workers), the same episode seeds for both. A warm-up
   call (other seeds; actor start-up and model load) is excluded; the two groups are
   timed interleaved, best of `--repeats`. The ratio is 2 workers over 1. On a 2-core
   machine the workers and the engines share the two cores, so the ratio's ceiling is
   about 2 only where nothing else runs.
2. Batching: the same batched rollout in this process (`num_workers=0`, one engine,
   `--num-envs` environments live, one engine call per step for all of them) against a
   naive loop that plays one episode at a time (`RolloutWorker(num_envs=1)` over the same
   engine) on the same seeds; interleaved, best of `--repeats`. The ratio is batched
   over naive in episodes/s. Sampled episodes depend on how they were batched (see
   `rollout_worker.py`), so the two ways' episodes are not the same ones and their
   lengths differ a little: agent turns/s is recorded beside episodes/s.
3. Online iteration: `train_online` (PPO from the BC checkpoint, in-process learner and
   engine) for `--ppo-iterations` iterations of `--ppo-episodes` episodes; the mean over
   iterations 2.. (the first pays for warm-up) of the seconds in weight sync, rollout
   (which includes writing the episodes to the replay store) and update, and each one's
   share of their sum.

    python benchmarks/rollout.py [--model PATH] [--episodes 64] [--num-envs 64] [--naive-episodes N]
                                 [--repeats 2] [--ppo-iterations 3] [--ppo-episodes 32] [--ppo-epochs E]
                                 [--threads N] [--quick] [--out FILE]

`--quick` is a smoke run of every part with small numbers (minutes on 2 cores), not a
measurement.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import torch
from report import machine, write_json

from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
from lmrl_ray.actors.rollout_group import RolloutGroup
from lmrl_ray.actors.rollout_worker import RolloutWorker
from lmrl_ray.cluster import init_ray
from lmrl_ray.data.datagen import generate
from lmrl_ray.data.schema import AGENT, LENGTH, RETURN, ROLE, SUCCESS, TOKEN_IDS, TURNS
from lmrl_ray.drivers.offline import train_offline
from lmrl_ray.drivers.online import train_online
from lmrl_ray.engines.base import SamplingParams
from lmrl_ray.engines.factory import make_engine
from lmrl_ray.learners.config import load_config
from lmrl_ray.models import load_policy

TASK = "maze"
BC_DATA_EPISODES = 300
BC_OVERRIDES = ["updates=40", "batch_episodes=32", "lr=1e-3", "checkpoint_every_updates=40"]
SEED = 0
# Ray reserves this many CPUs for each worker and each engine actor: the 1- and
# 2-worker groups (3 workers, 3 engines) live at once so that they can be timed
# interleaved, and must fit in the two CPUs Ray sees on a 2-core machine.
CPUS_PER_ACTOR = 0.25


def train_bc(root: Path) -> str:
    """A BC checkpoint on the fully observed Maze: a policy worth rolling out."""
    data = root / "data"
    generate(TASK, BC_DATA_EPISODES, str(data), seed=0, workers=0, progress=False)
    config = load_config("bc", task=TASK, overrides=BC_OVERRIDES, model="tiny")
    return train_offline(config, data=str(data), out=str(root / "bc"), progress=False)["checkpoint"]


def agent_tokens(rows: list[dict]) -> int:
    return sum(len(t[TOKEN_IDS] or ()) for r in rows for t in r[TURNS] if t[ROLE] == AGENT)


def figures(rows: list[dict], seconds: float) -> dict:
    """Rates of one timed call."""
    tokens, turns = agent_tokens(rows), sum(r[LENGTH] for r in rows)
    return {
        "episodes": len(rows),
        "agent_turns": turns,
        "agent_tokens": tokens,
        "seconds": round(seconds, 3),
        "episodes_per_s": round(len(rows) / seconds, 2),
        "agent_turns_per_s": round(turns / seconds, 1),
        "agent_tokens_per_s": round(tokens / seconds, 1),
        "mean_turns": round(turns / len(rows), 1),
        "success_rate": round(sum(r[SUCCESS] for r in rows) / len(rows), 3),
        "mean_return": round(sum(r[RETURN] for r in rows) / len(rows), 2),
    }


def timed(fn) -> tuple[list[dict], float]:
    start = time.perf_counter()
    rows = fn()
    return rows, time.perf_counter() - start


def best(runs: list[tuple[list[dict], float]]) -> dict:
    """The fastest run's figures, with every run's seconds."""
    rows, seconds = min(runs, key=lambda run: run[1])
    return {**figures(rows, seconds), "seconds_each_run": [round(s, 3) for _, s in runs]}


def seeds_of(n: int, offset: int = 0) -> list[int]:
    return list(range(offset, offset + n))


def workers_scaling(model: str, seeds: list[int], num_envs: int, repeats: int) -> dict:
    """1 against 2 rollout-worker actors, each with an engine actor; interleaved."""
    init_ray()
    factory = functools.partial(make_engine, "hf", model)
    sampling = SamplingParams(temperature=1.0, seed=SEED)
    groups, pools = {}, {}
    try:
        for workers in (1, 2):
            pools[workers] = EnginePool(factory, EnginePoolConfig(num_engines=workers, num_cpus_per_engine=CPUS_PER_ACTOR))
            groups[workers] = RolloutGroup(
                TASK, pools[workers], num_workers=workers, cpus_per_worker=CPUS_PER_ACTOR,
                sampling=sampling, num_envs=num_envs, source="online", policy="bc",
            )
        warmup = seeds_of(2 * 2, offset=10**6)
        for workers, group in groups.items():  # actor start-up, model load, first calls
            group.sample(warmup, episode_ids=[f"warmup-{s}" for s in warmup])
        runs: dict[int, list] = {1: [], 2: []}
        ids = [f"{TASK}-{s}" for s in seeds]
        for _ in range(repeats):
            for workers, group in groups.items():
                runs[workers].append(timed(lambda: group.sample(seeds, episode_ids=ids)))
                print(f"  {workers} worker(s): {runs[workers][-1][1]:.2f} s", flush=True)
    finally:
        for group in groups.values():
            group.shutdown()
        for pool in pools.values():
            pool.shutdown()
    one, two = best(runs[1]), best(runs[2])
    return {
        "settings": {"episodes": len(seeds), "num_envs_per_worker": num_envs,
                     "ray_cpus_per_worker": CPUS_PER_ACTOR, "ray_cpus_per_engine": CPUS_PER_ACTOR,
                     "actor_torch_threads": "Ray sets OMP_NUM_THREADS in an actor to max(1, floor(its CPUs)) = 1 "
                                            "unless the environment sets it"},
        "workers_1": one,
        "workers_2": two,
        "ratio_2_over_1_episodes_per_s": round(two["episodes_per_s"] / one["episodes_per_s"], 3),
        "ratio_2_over_1_agent_tokens_per_s": round(two["agent_tokens_per_s"] / one["agent_tokens_per_s"], 3),
        "note": "each group has as many engines as workers; on a 2-core machine the workers and the engines "
                "(and this process) share the two cores, so 2 workers cannot be twice as fast as 1",
    }


def batching(model: str, seeds: list[int], naive_seeds: list[int], num_envs: int, repeats: int) -> dict:
    """One in-process batched rollout against one episode at a time over the same engine."""
    sampling = SamplingParams(temperature=1.0, seed=SEED)
    engine = make_engine("hf", model)
    group = RolloutGroup(TASK, engine, num_workers=0, sampling=sampling, num_envs=num_envs, source="online", policy="bc")
    naive = RolloutWorker(TASK, engine, sampling=sampling, num_envs=1, source="online", policy="bc")
    try:
        warmup = seeds_of(2, offset=10**6)
        group.sample(warmup)
        naive.run(warmup)
        batched_runs, naive_runs = [], []
        for _ in range(repeats):
            batched_runs.append(timed(lambda: group.sample(seeds)))
            naive_runs.append(timed(lambda: naive.run(naive_seeds)))
            print(f"  batched {batched_runs[-1][1]:.2f} s ({len(seeds)} episodes), "
                  f"naive {naive_runs[-1][1]:.2f} s ({len(naive_seeds)} episodes)", flush=True)
    finally:
        naive.close()
        group.shutdown()
    b, n = best(batched_runs), best(naive_runs)
    result = {
        "settings": {"episodes_batched": len(seeds), "episodes_naive": len(naive_seeds), "num_envs_batched": num_envs,
                     "num_envs_naive": 1, "engine": "hf, in this process (num_workers=0)"},
        "batched": b,
        "naive": n,
        "ratio_batched_over_naive_episodes_per_s": round(b["episodes_per_s"] / n["episodes_per_s"], 2),
        "ratio_batched_over_naive_agent_turns_per_s": round(b["agent_turns_per_s"] / n["agent_turns_per_s"], 2),
        "ratio_batched_over_naive_agent_tokens_per_s": round(b["agent_tokens_per_s"] / n["agent_tokens_per_s"], 2),
    }
    if len(naive_seeds) < len(seeds):
        result["naive_note"] = (f"the naive loop played the first {len(naive_seeds)} of the {len(seeds)} seeds; its "
                                "rates stand for the whole set")
    return result


def online_iteration(model: str, root: Path, iterations: int, episodes: int, epochs: int | None) -> dict:
    """Seconds of sync, rollout and update in PPO iterations 2.. of `train_online`."""
    overrides = [f"iterations={iterations}", f"episodes_per_iteration={episodes}", "minibatches_per_epoch=2"]
    if epochs is not None:
        overrides.append(f"ppo_epochs={epochs}")
    config = load_config("ppo", task=TASK, model=model, overrides=overrides)
    start = time.perf_counter()
    history = train_online(config, out=root / "ppo", progress=False)["history"]
    wall = time.perf_counter() - start
    phases = ("sync", "rollout", "update")
    per_iteration = [{p: round(h[f"time/{p}_s"], 3) for p in phases} | {
        "episodes_per_s": round(h["rollout/episodes_per_s"], 2), "return_mean": round(h["rollout/return_mean"], 2)}
        for h in history]
    counted = history[1:] or history
    mean = {p: sum(h[f"time/{p}_s"] for h in counted) / len(counted) for p in phases}
    total = sum(mean.values())
    return {
        "settings": {"algo": "ppo", "iterations": iterations, "episodes_per_iteration": episodes,
                     "overrides": overrides, "envs_per_worker": config.rollouts.envs_per_worker,
                     "ppo_epochs": config.ppo_epochs, "rollout_workers": config.rollouts.num_rollout_workers,
                     "learners": config.resources.num_learners, "engine": config.rollouts.engine,
                     "counted_iterations": f"{len(history) - len(counted) + 1}..{len(history)}"},
        "per_iteration": per_iteration,
        "mean_seconds": {p: round(s, 3) for p, s in mean.items()},
        "iteration_seconds": round(total, 3),
        "shares": {p: round(s / total, 4) for p, s in mean.items()},
        "rollout_episodes_per_s": round(episodes / mean["rollout"], 2),
        "train_online_wall_seconds": round(wall, 1),
        "note": "iteration = sync + rollout + update (rollout includes the replay-store write; the final "
                "checkpoint is written outside the timed phases)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a trained checkpoint folder (default: train BC on Maze here)")
    parser.add_argument("--episodes", type=int, default=64, help="episodes per timed rollout call")
    parser.add_argument("--num-envs", type=int, default=64, help="environments live per rollout worker")
    parser.add_argument("--naive-episodes", type=int, default=None,
                        help="episodes of the one-at-a-time loop (default: --episodes), the first of the same seeds")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each way, interleaved; the best counts")
    parser.add_argument("--ppo-iterations", type=int, default=3)
    parser.add_argument("--ppo-episodes", type=int, default=32, help="episodes per PPO iteration (a multiple of 2)")
    parser.add_argument("--ppo-epochs", type=int, default=None, help="PPO epochs per iteration (default: the config's, 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads here (default: one per core)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run, not a measurement: 8 episodes, 8 envs, 4 naive, 1 repeat, "
                             "PPO with 4 episodes per iteration and 1 epoch")
    parser.add_argument("--out", default="benchmarks/results/rollout.json")
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.num_envs, args.repeats, args.ppo_episodes, args.ppo_epochs = 8, 8, 1, 4, 1
        args.naive_episodes = min(args.naive_episodes or 4, args.episodes)
    naive_episodes = min(args.naive_episodes or args.episodes, args.episodes)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.model:
            model, bc_seconds = args.model, None
        else:
            print("training the BC policy ...", flush=True)
            start = time.perf_counter()
            model = train_bc(root)
            bc_seconds = round(time.perf_counter() - start, 1)
        parameters = sum(p.numel() for p in load_policy(model)[0].parameters())
        seeds = seeds_of(args.episodes)

        print("1 against 2 rollout workers ...", flush=True)
        scaling = workers_scaling(model, seeds, args.num_envs, args.repeats)
        print(f"  x{scaling['ratio_2_over_1_episodes_per_s']} episodes/s with 2 workers", flush=True)
        print("batched against one episode at a time ...", flush=True)
        batch = batching(model, seeds, seeds[:naive_episodes], args.num_envs, args.repeats)
        print(f"  x{batch['ratio_batched_over_naive_episodes_per_s']} episodes/s batched", flush=True)
        print("online PPO iterations ...", flush=True)
        online = online_iteration(model, root, args.ppo_iterations, args.ppo_episodes, args.ppo_epochs)

    result = {
        "benchmark": "rollout",
        "machine": machine() | {
            "cpus_usable": cores,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            # Other work on the (shared) machine slows runs down: the 1-minute load
            # average before and after tells whether it was busy.
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "settings": {
            "task": TASK,
            "quick": args.quick,
            "model": args.model or f"BC on {BC_DATA_EPISODES} behaviour episodes ({', '.join(BC_OVERRIDES)}), tiny",
            "model_parameters_millions": round(parameters / 1e6, 2),
            "bc_training_seconds": bc_seconds,
            "episodes": args.episodes,
            "episode_seeds": f"{seeds[0]}..{seeds[-1]}, the same for every setting",
            "num_envs": args.num_envs,
            "naive_episodes": naive_episodes,
            "sampling": f"temperature 1.0, seed {SEED}; at most 32 new tokens per agent turn",
            "max_agent_turns": 100,
            "repeats": args.repeats,
            "timing": f"best of {args.repeats} runs of each way, interleaved; warm-up call excluded",
        },
        "workers": scaling,
        "batching": batch,
        "online_iteration": online,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    write_json(result, args.out)
    w, o = scaling, online
    print(f"\nrollout on {cores} cores (load {result['machine']['load_average_1min']}):")
    print(f"  1 worker  {w['workers_1']['episodes_per_s']:7.2f} episodes/s {w['workers_1']['agent_tokens_per_s']:8.1f} "
          f"agent tokens/s")
    print(f"  2 workers {w['workers_2']['episodes_per_s']:7.2f} episodes/s {w['workers_2']['agent_tokens_per_s']:8.1f} "
          f"agent tokens/s  (x{w['ratio_2_over_1_episodes_per_s']}; workers and engines share the cores)")
    print(f"  batched   {batch['batched']['episodes_per_s']:7.2f} episodes/s, one at a time "
          f"{batch['naive']['episodes_per_s']:.2f}: x{batch['ratio_batched_over_naive_episodes_per_s']}")
    shares = ", ".join(f"{p} {o['mean_seconds'][p]:.2f} s ({100 * s:.1f}%)" for p, s in o["shares"].items())
    print(f"  PPO iteration {o['iteration_seconds']:.2f} s: {shares}")
    print(f"  total {result['seconds_total']} s")


if __name__ == "__main__":
    main()
