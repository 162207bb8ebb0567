"""Training the symbolic Maze baseline with RLlib 2.60 (new API stack), and its benchmark row:

    row = run_symbolic_cell("cql", seed=0, data="data/maze", eval_episodes=100, out="runs/sym")

DQN trains online on `SymbolicMazeEnv`; discrete CQL (`cql.py`), MARWIL and BC train
offline on a converted text Maze store (`data.py`). The result is the greedy policy as a
table over the open cells (`policy.py`), evaluated like a text checkpoint.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ray.rllib.algorithms.bc import BCConfig
from ray.rllib.algorithms.dqn import DQNConfig
from ray.rllib.algorithms.marwil import MARWILConfig
from ray.rllib.core import DEFAULT_MODULE_ID

from lmrl_ray.baselines.symbolic_maze.cql import DiscreteCQLConfig
from lmrl_ray.baselines.symbolic_maze.data import (
    SymbolicData,
    convert_store,
    open_symbolic,
)
from lmrl_ray.baselines.symbolic_maze.env import NUM_CELLS, TASK_NAME, SymbolicMazeEnv
from lmrl_ray.baselines.symbolic_maze.policy import GreedyPolicy, evaluate_symbolic
from lmrl_ray.cluster import init_ray
from lmrl_ray.envs.maze import MAX_MOVES, OPEN
from lmrl_ray.io import write_atomically

SYMBOLIC_ALGOS = ("dqn", "cql", "marwil", "bc")
SYMBOLIC_OFFLINE_ALGOS = ("cql", "marwil", "bc")

MARWIL_NOTE = (
    "RLlib 2.60's MARWIL computes its value targets once, in the OfflinePreLearner, with the module "
    "as it was when the data were first mapped (the mapped data are materialised and never "
    "recomputed), on one-step episodes (one per transition row): r + gamma * V_0(s') with V_0 the "
    "initial network. Its advantages are divided by the root of a moving average of their squares "
    "that starts at 100 and moves at rate 1e-8 (RLlib's defaults), so exp(beta * A / 10) is close to "
    "1: on this data MARWIL behaves like behaviour cloning and cannot stitch trajectories."
)


@dataclass(frozen=True)
class SymbolicConfig:
    """Knobs of `train_symbolic`; the defaults fit a 2-core laptop (about a minute each)."""

    env_steps_per_iteration: int = 1000
    """DQN: environment steps sampled per iteration."""
    rollout_fragment_steps: int = 8
    """DQN: environment steps sampled between two gradient updates."""
    epsilon_decay_steps: int = 3000
    """DQN: environment steps over which epsilon falls linearly from 1 to `epsilon_final`."""
    epsilon_final: float = 0.05
    """DQN: exploration rate after `epsilon_decay_steps` (training only; evaluation is greedy)."""
    warmup_steps: int = 256
    """DQN: environment steps sampled before the first update."""
    target_tau: float = 0.1
    """DQN: soft target update after every gradient update (Polyak weight of the online net)."""
    updates_per_iteration: int = 50
    """Offline: gradient updates per iteration (RLlib's `dataset_num_iters_per_learner`);
    CQL syncs its target network (hard) once per iteration."""
    batch_size: int = 128
    """Transitions per gradient update."""
    lr: float = 3e-3
    """Adam learning rate of every network."""
    gamma: float = 0.95
    """Discount. Any gamma < 1 makes the shortest path the optimal policy (-1 per move)."""
    hidden_units: int = 64
    """One hidden layer (ReLU) in every network."""
    cql_alpha: float = 0.03
    """CQL: weight of the conservative term (Kumar et al.'s alpha). On 1,240 datagen
    episodes (seed 0) 0.03 and 0 reach the shortest paths within 20 iterations; 0.1
    stalls near -40 and 1.0 stays at behaviour cloning's -72.68: at the junction cells
    the move out of a branch is rare in the data, and a strong penalty keeps it down."""
    marwil_beta: float = 1.0
    """MARWIL: advantage temperature beta (0 is behaviour cloning)."""

    def __post_init__(self):
        for name in ("env_steps_per_iteration", "rollout_fragment_steps", "epsilon_decay_steps",
                     "warmup_steps", "updates_per_iteration", "batch_size", "hidden_units"):
            if getattr(self, name) < (0 if name == "warmup_steps" else 1):
                raise ValueError(f"SymbolicConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.gamma < 1 or not 0 < self.target_tau <= 1 or not 0 <= self.marwil_beta <= 1:
            raise ValueError("SymbolicConfig: need 0 < gamma < 1, 0 < target_tau <= 1 and 0 <= marwil_beta <= 1")


# `Algorithm.train()` calls by default: DQN 8,000 environment steps; offline 50 updates each.
DEFAULT_ITERATIONS = {"dqn": 8, "cql": 40, "marwil": 30, "bc": 30}


@dataclass(frozen=True)
class TrainedSymbolic:
    """What `train_symbolic` returns."""

    algo: str
    policy: GreedyPolicy
    checkpoint: str
    """The greedy table (`out/greedy_policy.json`), or "" without `out`."""
    iterations: int
    seconds: float
    metrics: dict[str, float]
    """The last iteration's learner results for the module (RLlib's names, e.g.
    `policy_loss`, `qf_loss`; `cql/td_loss`, `cql/gap`, `cql/q_mean` for CQL)."""


def symbolic_config(**knobs) -> SymbolicConfig:
    """A `SymbolicConfig` with `knobs` set; an unknown knob is an error listing the valid ones."""
    valid = [f.name for f in dataclasses.fields(SymbolicConfig)]
    unknown = sorted(set(knobs) - set(valid))
    if unknown:
        raise ValueError(f"unknown symbolic knob(s) {', '.join(unknown)}; valid knobs: {', '.join(valid)}")
    return SymbolicConfig(**knobs)


def rllib_config(algo: str, config: SymbolicConfig, *, seed: int, data: SymbolicData | None = None):
    """The RLlib AlgorithmConfig of `algo`: new API stack, torch, the EnvRunner (DQN) and
    the Learner in this process; offline data through one Ray Data pre-learner actor."""
    env = SymbolicMazeEnv()
    model = {"fcnet_hiddens": [config.hidden_units], "fcnet_activation": "relu"}
    if algo == "dqn":
        return (
            DQNConfig()
            .environment(SymbolicMazeEnv, env_config={"max_moves": MAX_MOVES})
            .env_runners(num_env_runners=0, rollout_fragment_length=config.rollout_fragment_steps)
            .training(
                lr=config.lr, gamma=config.gamma, train_batch_size_per_learner=config.batch_size,
                num_steps_sampled_before_learning_starts=config.warmup_steps,
                # tau after every update (frequency 0 env steps) rather than hard copies.
                target_network_update_freq=0, tau=config.target_tau,
                replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 50_000},
                epsilon=[(0, 1.0), (config.epsilon_decay_steps, config.epsilon_final)],
                double_q=True, dueling=False,
            )
            .rl_module(model_config={**model, "head_fcnet_hiddens": []})
            .reporting(min_sample_timesteps_per_iteration=config.env_steps_per_iteration)
            .debugging(seed=seed)
        )
    if data is None:
        raise ValueError(f"{algo} trains offline: pass data (a folder made by convert_store)")
    if algo == "cql":
        builder = DiscreteCQLConfig().training(
            cql_alpha=config.cql_alpha, target_network_update_freq=0, tau=1.0, double_q=True, dueling=False,
        )
        model = {**model, "head_fcnet_hiddens": []}
    elif algo == "marwil":
        builder = MARWILConfig().training(beta=config.marwil_beta)
    elif algo == "bc":
        builder = BCConfig()
    else:
        raise ValueError(f"unknown symbolic algorithm {algo!r}; valid: {', '.join(SYMBOLIC_ALGOS)}")
    return (
        builder.environment(observation_space=env.observation_space, action_space=env.action_space)
        .training(lr=config.lr, gamma=config.gamma, train_batch_size_per_learner=config.batch_size)
        .offline_data(
            input_=[data.file],
            dataset_num_iters_per_learner=config.updates_per_iteration,
            # One pre-learner actor that holds no CPU: inside a 1-CPU benchmark cell it must
            # not wait for a core the cell itself holds.
            map_batches_kwargs={"concurrency": 1, "num_cpus": 0},
        )
        .rl_module(model_config=model)
        .debugging(seed=seed)
    )


def module_policy(module) -> GreedyPolicy:
    """The greedy table of an RLlib RLModule: its inference actions (DQN: argmax Q), or
    the argmax of its action logits (BC, MARWIL), as RLlib's deterministic sampling does."""
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.eye(NUM_CELLS)})  # (NUM_CELLS, ...)
    actions = out["actions"] if "actions" in out else torch.argmax(out["action_dist_inputs"], dim=-1)
    return GreedyPolicy(tuple(int(a) for a in actions))


def greedy_policy(algorithm) -> GreedyPolicy:
    """The greedy table of a built RLlib Algorithm's (local) learner module: the trained
    weights themselves, which offline algorithms (without EnvRunners) have only there."""
    results = algorithm.learner_group.foreach_learner(
        lambda learner: module_policy(learner.module[DEFAULT_MODULE_ID])
    )
    return next(iter(results)).get()


def train_symbolic(
    algo: str,
    *,
    data: str | os.PathLike | SymbolicData | None = None,
    seed: int = 0,
    iterations: int | None = None,
    out: str | os.PathLike | None = None,
    **knobs,
) -> TrainedSymbolic:
    """Train `algo` on the symbolic Maze with RLlib and return its greedy policy.

    "dqn": online on `SymbolicMazeEnv`; "cql", "marwil", "bc": offline on `data`, a
    folder made by `convert_store`. `iterations`: `Algorithm.train()` calls (None: the
    algorithm's `DEFAULT_ITERATIONS`); `knobs` set `SymbolicConfig` fields. Ray is joined
    or started (`cluster.init_ray`); everything runs in this process but the offline
    data's pre-learner actor. With `out`, the greedy table (the whole policy) goes to
    `out/greedy_policy.json` (no RLlib checkpoint: those pickle the weights).
    """
    if algo not in SYMBOLIC_ALGOS:
        raise ValueError(f"unknown symbolic algorithm {algo!r}; valid: {', '.join(SYMBOLIC_ALGOS)}")
    if algo == "dqn" and data is not None:
        raise ValueError("dqn trains online on SymbolicMazeEnv; it takes no data")
    if algo in SYMBOLIC_OFFLINE_ALGOS and data is None:
        raise ValueError(f"{algo} trains offline: pass data (a folder made by convert_store)")
    config = symbolic_config(**knobs)
    iterations = DEFAULT_ITERATIONS[algo] if iterations is None else iterations
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    dataset = open_symbolic(data) if data is not None else None
    started = time.perf_counter()
    init_ray()
    algorithm = rllib_config(algo, config, seed=seed, data=dataset).build_algo()
    try:
        for _ in range(iterations):
            result = algorithm.train()  # sample (online) or read (offline) -> update -> sync
        policy = greedy_policy(algorithm)
        learned = result.get("learners", {}).get(DEFAULT_MODULE_ID, {})
        metrics = {k: float(v) for k, v in learned.items() if isinstance(v, (int, float, np.number))}
        checkpoint = ""
        if out is not None:
            folder = Path(out)
            folder.mkdir(parents=True, exist_ok=True)
            # The greedy table is the whole policy. RLlib's own checkpoints pickle the
            # module's state; weights here are never pickled, so none is written.
            checkpoint = folder / "greedy_policy.json"
            record = {"algo": algo, "seed": seed, "iterations": iterations, "actions": list(policy.actions),
                      "cells": [list(c) for c in OPEN], "config": dataclasses.asdict(config)}
            write_atomically(checkpoint, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    finally:
        algorithm.stop()
        # RLlib's learner keeps a suspended Ray Data iterator, inside reference cycles:
        # collect it while Ray is up, or it reports errors when the interpreter exits.
        del algorithm
        gc.collect()
    return TrainedSymbolic(algo, policy, str(checkpoint), iterations, time.perf_counter() - started, metrics)


def run_symbolic_cell(
    algo: str,
    seed: int,
    *,
    data: str | os.PathLike | None,
    eval_episodes: int,
    out: str | os.PathLike | None,
    **knobs,
) -> dict:
    """Train `algo` and evaluate its greedy policy: one row of the benchmark table.

    `data`: the text Maze replay store (datagen's) for the offline algorithms, converted
    to `out/symbolic-maze` (a temporary folder without `out`), or a folder `convert_store`
    already made; DQN ignores it. Evaluation: `eval_episodes` episodes from
    `evaluation_options("maze", eval_episodes, seed)`. The row's task is "maze" (whose
    normalisation it uses) and its algo "symbolic-<algo>".
    """
    started = time.perf_counter()
    scratch = None
    try:
        dataset = None
        if algo in SYMBOLIC_OFFLINE_ALGOS:
            if data is None:
                raise ValueError(f"{algo} trains offline: pass data (a text Maze replay store)")
            if (Path(data) / "manifest.json").exists():
                target = Path(out) if out is not None else Path(scratch := tempfile.mkdtemp(prefix="symbolic-maze-"))
                dataset = convert_store(data, target)
            else:
                dataset = open_symbolic(data)
        checkpoint_dir = Path(out) / f"symbolic-{algo}-seed{seed}" if out is not None else None
        trained = train_symbolic(algo, data=dataset, seed=seed, out=checkpoint_dir, **knobs)
        result = evaluate_symbolic(trained.policy, eval_episodes, seed)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "task": TASK_NAME, "algo": f"symbolic-{algo}", "seed": seed,
        **{k: result[k] for k in ("mean_return", "ci95", "success_rate", "mean_turns", "normalised_paper",
                                  "normalised_ours", "episodes", "move_accuracy")},
        "decoding": "greedy", "checkpoint": trained.checkpoint, "seconds": time.perf_counter() - started,
    }
