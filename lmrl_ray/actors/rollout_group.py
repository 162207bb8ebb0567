"""Rollout workers as a group: the one path that fans episodes out, for training and evaluation.

    rollouts = RolloutGroup("maze", pool, num_workers=2, sampling=..., num_envs=64)
    rows = rollouts.sample(seeds, episode_ids=ids)           # one row per seed, in order
    rollouts.shutdown()
    rows = run_episodes("maze", factory, seeds, options, num_workers=2)   # a group for one call

Ray is a thin shell (STYLE 4): with `num_workers=0` one `RolloutWorker` runs in this
process. The workers share one engine (an `EnginePool` whose engine actors they all
call, and to which the learners broadcast), or each builds its own from a picklable
factory (evaluation of a checkpoint).

Faults. A worker plays its share of episodes and returns their rows only when all are
finished, so a worker that dies mid-call has returned nothing: its unfinished episodes
are dropped whole. Ray restarts the actor (`max_restarts`), and its whole share is sent
again to it with the same seeds and episode ids, so the call completes with every
episode exactly once. A dead engine is the pool's business (it restarts it and re-sends
the call).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from lmrl_ray.actors.pool import EnginePool
from lmrl_ray.actors.rollout_worker import RolloutWorker
from lmrl_ray.cluster import init_ray
from lmrl_ray.engines.base import Engine

log = logging.getLogger(__name__)


def split_evenly(n: int, parts: int) -> list[range]:
    """`range(n)` cut into `parts` contiguous pieces whose sizes differ by at most one."""
    bounds = [n * k // parts for k in range(parts + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(parts)]


class RolloutGroup:
    """`num_workers` rollout-worker actors (0: one worker in this process) over `engine`.

    `engine` is an `Engine` the workers share, or a picklable factory each worker builds
    its own engine with. Workers in actors cannot reach an engine that lives in this
    process: with them, `engine` is an `EnginePool` with engine actors, or a factory.
    `worker_kwargs` go to each `RolloutWorker` (decoding, sampling, num_envs, source,
    policy, env_settings, ...).
    """

    def __init__(
        self,
        task: str,
        engine: Engine | Callable[[], Engine],
        *,
        num_workers: int = 0,
        cpus_per_worker: float = 1.0,
        max_restarts: int = 3,
        max_attempts: int = 4,
        **worker_kwargs,
    ):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if num_workers and isinstance(engine, Engine) and not (isinstance(engine, EnginePool) and engine.actors):
            raise ValueError(
                "rollout workers in Ray actors need an engine they can reach: an EnginePool with "
                "num_engines >= 1, or a factory that builds an engine in each worker"
            )
        self.task = task
        self.engine = engine
        self.max_attempts = max_attempts
        self.restarts = 0
        """Shares sent again because their worker died."""
        self.workers: list = []
        if num_workers == 0:
            self._local: RolloutWorker | None = RolloutWorker(task, engine, **worker_kwargs)
            return
        import ray

        init_ray()
        self._local = None
        remote = ray.remote(RolloutWorker).options(
            num_cpus=cpus_per_worker, max_restarts=max_restarts, max_task_retries=0,
        )
        self.workers = [remote.remote(task, engine, **worker_kwargs) for _ in range(num_workers)]

    def sample(
        self,
        seeds: Sequence[int],
        options: Sequence[dict | None] | None = None,
        episode_ids: Sequence[str] | None = None,
    ) -> list[dict]:
        """Play one episode per seed and return the rows in the order of `seeds`; worker k
        plays the k-th contiguous share."""
        seeds = [int(s) for s in seeds]
        options = list(options) if options is not None else [None] * len(seeds)
        episode_ids = list(episode_ids) if episode_ids is not None else [f"{self.task}-{s}" for s in seeds]
        if not len(seeds) == len(options) == len(episode_ids):
            raise ValueError(f"{len(seeds)} seeds, {len(options)} options and {len(episode_ids)} episode ids")
        if self._local is not None:
            return self._local.run(seeds, options, episode_ids)
        import ray

        pieces = [p for p in split_evenly(len(seeds), len(self.workers)) if len(p)]
        args = [([seeds[i] for i in p], [options[i] for i in p], [episode_ids[i] for i in p]) for p in pieces]
        results: list[list[dict] | None] = [None] * len(pieces)
        attempts = [0] * len(pieces)
        # Workers sharing a pool hold copies of it, which do not see its broadcasts.
        latest = self.engine.latest() if isinstance(self.engine, EnginePool) else None
        pending = {}
        for k, worker in enumerate(self.workers[: len(pieces)]):
            pending[worker.run.remote(*args[k], engine_latest=latest)] = (k, worker)
            attempts[k] = 1
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            k, worker = pending.pop(ready[0])
            try:
                results[k] = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                if attempts[k] >= self.max_attempts:
                    raise RuntimeError(
                        f"rollout share {k} ({len(args[k][0])} episodes) failed {attempts[k]} times; last: {err}"
                    ) from err
                # Nothing of the share was returned: send all of it again, to the restarted
                # worker (Ray restarts it; its calls wait until it is up).
                log.warning("a rollout worker died; sending its %d episodes again", len(args[k][0]))
                self.restarts += 1
                attempts[k] += 1
                time.sleep(0.1)
                pending[worker.run.remote(*args[k], engine_latest=latest)] = (k, worker)
        return [row for part in results for row in part]

    def shutdown(self) -> None:
        """Close the workers' environments and stop their actors (the engine is the caller's)."""
        if self._local is not None:
            self._local.close()
        if self.workers:
            import ray

            for worker in self.workers:
                try:
                    ray.get(worker.close.remote(), timeout=30)
                except Exception:  # a dead worker has nothing left to close
                    pass
                ray.kill(worker, no_restart=True)
            self.workers = []

    def __enter__(self) -> "RolloutGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def run_episodes(
    task: str,
    engine: Engine | Callable[[], Engine],
    seeds: Sequence[int],
    options: Sequence[dict | None] | None = None,
    episode_ids: Sequence[str] | None = None,
    *,
    num_workers: int = 0,
    num_cpus_per_worker: float = 1.0,
    **worker_kwargs,
) -> list[dict]:
    """Play the given episodes with a `RolloutGroup` of `num_workers` workers made for this
    call; rows come back in the order of `seeds`. `worker_kwargs` go to each
    `RolloutWorker` (decoding, sampling, num_envs, ...)."""
    with RolloutGroup(task, engine, num_workers=num_workers, cpus_per_worker=num_cpus_per_worker,
                      **worker_kwargs) as group:
        return group.sample(seeds, options, episode_ids)


__all__ = ["RolloutGroup", "run_episodes", "split_evenly"]
