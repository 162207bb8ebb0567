"""The online driver: the training loop of PPO and online filtered BC.

    result = train_online(config, out="runs/maze-ppo")     # config.common.model: the BC checkpoint

Each iteration reads like the algorithm (STYLE 1):

    sync     the learners' weights go to every engine as policy version v
    collect  the rollout workers play `episodes_per_iteration` episodes with version v
    store    the episodes go to the replay store (OUT/trajectories), one shard per iteration
    update   the algorithm's iteration on them (`LearnerGroup.iteration`: PPO's scoring,
             advantages and epochs of minibatches; or filtered BC on the best)
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
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
from lmrl_ray.actors.rollout_group import RolloutGroup
from lmrl_ray.cluster import init_ray
from lmrl_ray.data.schema import POLICY_VERSION, RETURN, SUCCESS, to_table
from lmrl_ray.data.store import ReplayStore
from lmrl_ray.drivers.evaluation import play_evaluation, simulator_served
from lmrl_ray.drivers.offline import log_scalars, resume_point, save_and_prune
from lmrl_ray.engines.base import SamplingParams
from lmrl_ray.engines.factory import make_engine
from lmrl_ray.learners.checkpoint import list_checkpoints
from lmrl_ray.learners.config import OnlineConfig
from lmrl_ray.learners.group import LearnerGroup
from lmrl_ray.stats import summarize

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


def episode_seeds(config: OnlineConfig, iteration: int) -> list[int]:
    """The seeds of an iteration's episodes: a function of (seed, iteration)."""
    rng = np.random.default_rng([config.common.seed, 7919, iteration])
    return rng.integers(0, 2**31 - 1, size=config.rollouts.episodes_per_iteration).tolist()


def sampling(config: OnlineConfig) -> SamplingParams:
    """How the rollouts sample (seeded per step from the run's seed, see `RolloutWorker`)."""
    return SamplingParams(temperature=config.rollouts.temperature, seed=config.common.seed)


def engine_pool(config: OnlineConfig) -> EnginePool:
    """The engines the learners broadcast to and the rollout workers share: one per worker
    when `num_engines` is 0 and there are workers (a worker actor cannot reach an engine in
    this process), in this process when there are neither."""
    r = config.rollouts
    num_engines = r.num_engines or r.num_rollout_workers
    if num_engines:
        init_ray()
    return EnginePool(functools.partial(make_engine, r.engine, config.common.model), EnginePoolConfig(
        num_engines=num_engines, num_cpus_per_engine=r.cpus_per_engine, num_gpus_per_engine=r.gpus_per_engine,
        # On a cluster, the GPU engines are reserved together (gang scheduling), as the learners are.
        placement_strategy="PACK" if num_engines and r.gpus_per_engine > 0 else None,
    ))


def collect(rollouts: RolloutGroup, store: ReplayStore, config: OnlineConfig, iteration: int) -> list[dict]:
    """The iteration's episodes: from the store when a previous run already played them,
    else played now and committed as the iteration's shard."""
    committed = store.find(PRODUCER, iteration)
    if committed is not None:
        return store.read_shard(committed).to_pylist()
    seeds = episode_seeds(config, iteration)
    task = config.common.task
    rows = rollouts.sample(seeds, episode_ids=[f"{task}-it{iteration}-{k}" for k in range(len(seeds))])
    store.append(to_table(rows), producer=PRODUCER, sequence=iteration)
    return rows


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


def evaluation_metrics(engines: EnginePool, env_settings: dict, config: OnlineConfig) -> dict[str, float]:
    """The policy as it acts, on the task's evaluation episodes, against the same engines."""
    n = config.common.eval_episodes
    rows = play_evaluation(config.common.task, engines, n, seed=config.common.seed, sampling=sampling(config),
                           num_envs=min(config.rollouts.envs_per_worker, n), policy=config.name,
                           env_settings=env_settings)
    s = summarize([r[RETURN] for r in rows], [r[SUCCESS] for r in rows], [r["length"] for r in rows])
    return {"eval/return_mean": s.mean_return, "eval/return_ci95": s.ci95, "eval/success_rate": s.success_rate}


def train_online(config: OnlineConfig, *, out: str | os.PathLike, data: str | os.PathLike | None = None,
                 resume: bool = False, progress: bool = True) -> dict:
    """Run `config.iterations` online iterations of `config.name` from `config.common.model`,
    writing checkpoints, trajectories and TensorBoard scalars under `out`; `data` is an
    offline dataset for PPO's optional BC term. Returns {"checkpoint", "iterations",
    "metrics": the last iteration's, "history": every iteration's}."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out = Path(out)
    checkpoint = resume_point(out, resume)
    c, r = config.common, config.rollouts
    store = ReplayStore.create(out / "trajectories")
    with ExitStack() as stack:
        learners = LearnerGroup(config, data)
        stack.callback(learners.shutdown)
        engines = engine_pool(config)
        stack.callback(engines.shutdown)
        settings = stack.enter_context(simulator_served(c.task, c.env_settings, c.simulator_replicas,
                                                        cpus_per_replica=r.cpus_per_engine))
        rollouts = stack.enter_context(RolloutGroup(
            c.task, engines, num_workers=r.num_rollout_workers, cpus_per_worker=r.cpus_per_rollout_worker,
            sampling=sampling(config), num_envs=r.envs_per_worker, source="online", policy=config.name,
            env_settings=settings,
        ))
        first = 0
        if checkpoint is not None:
            first = int(learners.restore(checkpoint).get("iteration", 0))
            log.info("resumed %s at iteration %d", checkpoint, first)
        writer = SummaryWriter(str(out / "tensorboard"))
        history: list[dict[str, float]] = []
        bar = tqdm(range(first, config.iterations), initial=first, total=config.iterations, desc=config.name,
                   unit="iteration", disable=not progress)
        for iteration in bar:
            timer, version = Timer(), iteration + 1
            with timer("sync"):
                learners.broadcast(engines, version)
            with timer("rollout"):
                rows = collect(rollouts, store, config, iteration)
            with timer("update"):
                metrics = learners.iteration(rows)
            metrics.update(rollout_metrics(rows, version, timer))
            done = iteration + 1
            if c.eval_episodes and ((config.eval_every_iterations and done % config.eval_every_iterations == 0)
                                    or done == config.iterations):
                learners.broadcast(engines, version + 1)  # the updated policy
                metrics.update(evaluation_metrics(engines, settings, config))
            history.append(metrics)
            log_scalars(writer, metrics, done)
            bar.set_postfix({"return": f"{metrics['rollout/return_mean']:.3g}"})
            if done % c.checkpoint_every_updates == 0 or done == config.iterations:
                save_and_prune(learners, out, done, {"iteration": done}, c.keep_checkpoints)
        writer.close()
    final = list_checkpoints(out)
    return {"checkpoint": str(final[-1]) if final else None, "iterations": config.iterations,
            "metrics": history[-1] if history else {}, "history": history}
