"""Simulator replicas: an LM simulator served by engine actors that every rollout worker shares.

    replicas = serve_simulator("sims/tq", 2)                 # an EnginePool over the simulator
    settings = simulator_settings(task, {"simulator": "lm", "simulator_model": "sims/tq"}, engine=replicas)

A replica is an `EnginePool` engine over the simulator's model whose weights never
change (`set_weights` is never called): routing, placement and restarts are what
replicas need too, so there is no class of their own.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
from lmrl_ray.cluster import init_ray
from lmrl_ray.engines.factory import make_engine


def serve_simulator(folder: str | os.PathLike, replicas: int, *, engine: str = "hf", cpus_per_replica: float = 1.0,
                    gpus_per_replica: float = 0.0) -> EnginePool:
    """An `EnginePool` of `replicas` (>= 1) engine actors over the LM simulator in
    `folder`; the caller shuts it down."""
    if replicas < 1:
        raise ValueError(f"simulator_replicas must be at least 1 to serve a simulator, got {replicas}")
    if not folder or not Path(folder).is_dir():
        raise FileNotFoundError(f"simulator_model {str(folder)!r} is not a folder (the simulator's weights)")
    init_ray()
    factory = functools.partial(make_engine, engine, str(Path(folder).resolve()),
                                device=None if gpus_per_replica > 0 else "cpu")
    return EnginePool(factory, EnginePoolConfig(num_engines=replicas, num_cpus_per_engine=cpus_per_replica,
                                                num_gpus_per_engine=gpus_per_replica))
