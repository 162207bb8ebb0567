"""The online training driver: PPO and online filtered BC.

    result = train_online(config, out="runs/maze-ppo")     # config.model: the BC checkpoint

Each iteration reads like the algorithm (STYLE 1):

    sync     the learners' weights go to every engine as policy version v
    collect  the rollout workers play `episodes_per_iteration` episodes with version v
    store    the episodes go to the replay store (OUT/trajectories), one shard per iteration
    update   PPO (score, advantages, epochs of minibatches) or filtered BC on the best
    log      returns, losses, policy lag, seconds in sync / rollout / update, episodes/s

Checkpoints every `checkpoint_every_updates` iterations, evaluation every
`eval_every_iterations` (the policy as it acts: sampled at `temperature`, seeded, on the
task's evaluation episodes). A resumed run restarts from the newest checkpoint; an iteration
whose episodes are already in the store reads them back instead of playing them again,
so nothing is written twice.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from lmrl_ray.actors.engine import SamplingParams
from lmrl_ray.actors.factory import make_engine
from lmrl_ray.actors.rollout_group import RolloutGroup
from lmrl_ray.data.schema import POLICY_VERSION, RETURN, SUCCESS, to_table
from lmrl_ray.data.store import ReplayStore
from lmrl_ray.learners.checkpoint import CheckpointError, list_checkpoints, read_meta, step_dir
from lmrl_ray.learners.config import TrainConfig
from lmrl_ray.learners.group import LearnerGroup
from lmrl_ray.learners.ppo_math import AdaptiveKLController, FixedKLController
from lmrl_ray.rollout import summarize
from lmrl_ray.train import _log, _prune

log = logging.getLogger(__name__)

PRODUCER = "online"


class Timer:
    """Seconds spent in each named phase of an iteration."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def kl_controller(config: TrainConfig):
    if config.kl_target > 0:
        return AdaptiveKLController(config.kl_coef, target=config.kl_target, horizon=config.kl_horizon_tokens)
    return FixedKLController(config.kl_coef)


def episode_seeds(config: TrainConfig, iteration: int) -> list[int]:
    """The seeds of an iteration's episodes: a function of (seed, iteration)."""
    rng = np.random.default_rng([config.seed, 7919, iteration])
    return rng.integers(0, 2**31 - 1, size=config.episodes_per_iteration).tolist()


def make_rollouts(config: TrainConfig) -> RolloutGroup:
    factory = functools.partial(make_engine, config.engine, config.model)
    return RolloutGroup(
        config.task, factory,
        num_workers=config.num_rollout_workers, num_engines=config.num_engines,
        cpus_per_worker=config.cpus_per_rollout_worker, cpus_per_engine=config.cpus_per_engine,
        gpus_per_engine=config.gpus_per_engine,
        # On a cluster, the GPU engines are reserved together (gang scheduling), as the learners are.
        engine_placement="PACK" if config.gpus_per_engine > 0 else None,
        sampling=SamplingParams(temperature=config.temperature, seed=config.seed), num_envs=config.envs_per_worker,
        source="online", policy=config.algo,
        env_settings=config.env_settings, simulator_replicas=config.simulator_replicas,
    )


def collect(rollouts: RolloutGroup, store: ReplayStore, config: TrainConfig, iteration: int) -> list[dict]:
    """The iteration's episodes: from the store when a previous run already played them,
    else played now and committed as the iteration's shard."""
    committed = store.find(PRODUCER, iteration)
    if committed is not None:
        return store.read_shard(committed).to_pylist()
    seeds = episode_seeds(config, iteration)
    rows = rollouts.sample(seeds, episode_ids=[f"{config.task}-it{iteration}-{k}" for k in range(len(seeds))])
    store.append(to_table(rows), producer=PRODUCER, sequence=iteration)
    return rows


def update(learners: LearnerGroup, kl, config: TrainConfig, rows: list[dict]) -> dict[str, float]:
    """PPO on all of the episodes, or BC on the best `top_fraction` of them."""
    if config.algo == "ppo":
        metrics = learners.ppo_iteration(rows, kl.value)
        kl.update(metrics["ppo/kl"], int(metrics["ppo/agent_tokens"]))
        return metrics
    kept = sorted(rows, key=lambda r: -r[RETURN])[: max(1, round(config.top_fraction * len(rows)))]
    metrics: dict[str, float] = {}
    for _ in range(config.updates_per_iteration):
        metrics = learners.update_rows(kept)
    metrics["online-filtered-bc/kept_return_mean"] = float(np.mean([r[RETURN] for r in kept]))
    return metrics


def rollout_metrics(rows: list[dict], version: int, timer: Timer) -> dict[str, float]:
    returns = [r[RETURN] for r in rows]
    seconds = timer.seconds
    return {
        "rollout/return_mean": float(np.mean(returns)),
        "rollout/success_rate": float(np.mean([r[SUCCESS] for r in rows])),
        "rollout/episodes": float(len(rows)),
        "rollout/policy_lag": float(version - min(r[POLICY_VERSION] for r in rows)),
        "rollout/episodes_per_s": len(rows) / max(seconds.get("rollout", 0.0), 1e-9),
        **{f"time/{name}_s": s for name, s in seconds.items()},
    }


def evaluate(rollouts: RolloutGroup, config: TrainConfig) -> dict[str, float]:
    from lmrl_ray.evaluation import evaluation_options

    seeds, options = evaluation_options(config.task, config.eval_episodes, config.seed)
    sampling = SamplingParams(temperature=config.temperature, seed=config.seed)
    rows = rollouts.evaluate(seeds, options, sampling, num_envs=min(config.envs_per_worker, len(seeds)))
    s = summarize([r[RETURN] for r in rows], [r[SUCCESS] for r in rows], [r["length"] for r in rows])
    return {"eval/return_mean": s.mean_return, "eval/return_ci95": s.ci95, "eval/success_rate": s.success_rate}


def train_online(config: TrainConfig, *, out: str | os.PathLike, data: str | os.PathLike | None = None,
                 resume: bool = False, progress: bool = True) -> dict:
    """Run `config.iterations` online iterations of `config.algo` from `config.model`,
    writing checkpoints, trajectories and TensorBoard scalars under `out`; `data` is an
    offline dataset for PPO's optional BC term. Returns {"checkpoint", "iterations",
    "metrics": the last iteration's, "history": every iteration's}."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out = Path(out)
    existing = list_checkpoints(out)
    if existing and not resume:
        raise CheckpointError(f"{out} already holds checkpoints; pass --resume to continue it, or choose another --out")
    if data is None and config.offline_bc_weight > 0:
        raise ValueError("offline_bc_weight > 0 needs an offline dataset (--data)")
    store = ReplayStore.create(out / "trajectories")
    learners = LearnerGroup(config, data)
    rollouts = None
    try:
        rollouts = make_rollouts(config)
        kl = kl_controller(config)
        start = 0
        if resume and existing:
            read_meta(existing[-1])
            driver = learners.restore(existing[-1])
            start = int(driver.get("iteration", 0))
            kl.load_state_dict(driver.get("kl", {"value": kl.value}))
            log.info("resumed %s at iteration %d", existing[-1], start)
        writer = SummaryWriter(str(out / "tensorboard"))
        history: list[dict[str, float]] = []
        bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, desc=config.algo,
                   unit="iteration", disable=not progress)
        for iteration in bar:
            timer, version = Timer(), iteration + 1
            with timer("sync"):
                learners.broadcast(rollouts.engines, version)
            with timer("rollout"):
                rows = collect(rollouts, store, config, iteration)
            with timer("update"):
                metrics = update(learners, kl, config, rows)
            metrics.update(rollout_metrics(rows, version, timer))
            done = iteration + 1
            if config.eval_episodes and ((config.eval_every_iterations and done % config.eval_every_iterations == 0)
                                         or done == config.iterations):
                learners.broadcast(rollouts.engines, version + 1)  # the updated policy
                metrics.update(evaluate(rollouts, config))
            history.append(metrics)
            _log(writer, metrics, done)
            bar.set_postfix({"return": f"{metrics['rollout/return_mean']:.3g}"})
            if done % config.checkpoint_every_updates == 0 or done == config.iterations:
                learners.save(step_dir(out, done), driver_state={"iteration": done, "kl": kl.state_dict()})
                _prune(out, config.keep_checkpoints)
        writer.close()
        final = list_checkpoints(out)
        return {"checkpoint": str(final[-1]) if final else None, "iterations": config.iterations,
                "metrics": history[-1] if history else {}, "history": history}
    finally:
        if rollouts is not None:
            rollouts.shutdown()
        learners.shutdown()
