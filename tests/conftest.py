"""Fixtures shared across the suite."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """Ray in local mode (2 CPUs, dashboard off, 127.0.0.1) for a module's tests; shut
    down afterwards unless something else had started it."""
    import ray

    from lmrl_ray.cluster import init_ray

    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()
