"""Starting or joining Ray the same way everywhere."""

from __future__ import annotations

import logging
import os


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster when there is one, else start Ray on this machine.

    Under `ray job submit` (or with RAY_ADDRESS set) this connects to the cluster. In
    local mode the dashboard is off and the node's address is 127.0.0.1. (Ray 2.60
    still opens some of its gRPC ports on every interface; that is Ray's choice, not a
    setting we can pass.)
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
        return
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        configure_logging=True,
    )
