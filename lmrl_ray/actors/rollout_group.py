"""Rollout workers as a group: W `RolloutWorker` actors sharing an engine pool, with restarts.

    rollouts = RolloutGroup("maze", factory, num_workers=2, num_engines=2)
    rollouts.engines.set_weights(state_dict, version=3)      # or LearnerGroup.broadcast
    rows = rollouts.sample(seeds, episode_ids=ids)           # one row per seed, in order
    rollouts.shutdown()

Ray is a thin shell (STYLE 4): with `num_workers=0` one `RolloutWorker` runs in this
process over the pool (itself in-process with `num_engines=0`).

Faults. A worker plays its share of episodes and returns their rows only when all are
finished, so a worker that dies mid-iteration has written nothing: its unfinished
episodes are dropped whole. Ray restarts the actor (`max_restarts`), and its whole share
is sent again to it with the same seeds and episode ids, so the iteration completes with
every episode exactly once. A dead engine is the pool's
business (it restarts it and re-sends the call).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from lmrl_ray.actors.engine import Engine, SamplingParams
from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
from lmrl_ray.actors.rollout_worker import RolloutWorker, split_evenly

log = logging.getLogger(__name__)


class RolloutGroup:
    """`num_workers` rollout-worker actors over an `EnginePool` of `num_engines` engines.

    Workers in actors need engines they can reach: `num_engines=0` with workers starts
    one engine actor per worker. `engine_placement` reserves the engines in one placement
    group with that strategy (`EnginePoolConfig.placement_strategy`). `worker_kwargs` go
    to each `RolloutWorker` (sampling, num_envs, source, policy, env_settings, ...). With
    an LM simulator in `env_settings`, `simulator_replicas` >= 1 serves it from that many
    engine actors that every worker shares (`simulators.serve_simulator`; each reserves
    `cpus_per_engine` CPUs).
    """

    def __init__(
        self,
        task: str,
        engine_factory: Callable[[], Engine],
        *,
        num_workers: int = 0,
        num_engines: int = 0,
        cpus_per_worker: float = 1.0,
        cpus_per_engine: float = 1.0,
        gpus_per_engine: float = 0.0,
        engine_placement: str | None = None,
        max_restarts: int = 3,
        max_attempts: int = 4,
        simulator_replicas: int = 0,
        **worker_kwargs,
    ):
        if num_workers < 0 or num_engines < 0:
            raise ValueError(f"num_workers and num_engines must be >= 0, got {num_workers}, {num_engines}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if num_workers and not num_engines:
            num_engines = num_workers
        if num_engines or num_workers:
            from lmrl_ray.ray_utils import init_ray

            init_ray()
        self.task = task
        self.max_attempts = max_attempts
        self.engines = EnginePool(engine_factory, EnginePoolConfig(
            num_engines=num_engines, num_cpus_per_engine=cpus_per_engine, num_gpus_per_engine=gpus_per_engine,
            placement_strategy=engine_placement if num_engines else None, max_restarts=max_restarts,
        ))
        self.simulators = None
        if simulator_replicas:
            from lmrl_ray.simulators import serve_simulator

            settings, self.simulators = serve_simulator(worker_kwargs.get("env_settings"), simulator_replicas,
                                                        cpus_per_replica=cpus_per_engine)
            worker_kwargs = {**worker_kwargs, "env_settings": settings}
        self.worker_kwargs = worker_kwargs
        self.restarts = 0
        """Shares sent again because their worker died."""
        if num_workers == 0:
            self._local: RolloutWorker | None = RolloutWorker(task, self.engines, **worker_kwargs)
            self.workers: list = []
            return
        import ray

        self._local = None
        remote = ray.remote(RolloutWorker).options(
            num_cpus=cpus_per_worker, max_restarts=max_restarts, max_task_retries=0,
        )
        self.workers = [remote.remote(task, self.engines, **worker_kwargs) for _ in range(num_workers)]

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
        if self._local is not None:
            return self._local.run(seeds, options, episode_ids)
        import ray

        pieces = [p for p in split_evenly(len(seeds), len(self.workers)) if len(p)]
        args = [([seeds[i] for i in p], [options[i] for i in p], [episode_ids[i] for i in p]) for p in pieces]
        results: list[list[dict] | None] = [None] * len(pieces)
        attempts = [0] * len(pieces)
        # The workers hold copies of the engine pool, which do not see its broadcasts.
        latest = self.engines.latest()
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

    def evaluate(self, seeds: Sequence[int], options: Sequence[dict | None], sampling: SamplingParams, *,
                 num_envs: int = 64) -> list[dict]:
        """Evaluation episodes against the same engines, in this process, sampled with
        `sampling` (temperature 0: greedy)."""
        worker = RolloutWorker(
            self.task, self.engines, sampling=sampling, num_envs=num_envs,
            source="evaluation", policy=self.worker_kwargs.get("policy", ""),
            env_settings=self.worker_kwargs.get("env_settings"),
        )
        try:
            return worker.run(list(seeds), list(options), [f"{self.task}-eval-{s}" for s in seeds])
        finally:
            worker.close()

    def shutdown(self) -> None:
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
        self.engines.shutdown()
        if self.simulators is not None:
            self.simulators.shutdown()


__all__ = ["RolloutGroup"]
