"""Ray: local Ray by default (ray.num_cpus from config), `--ray-address` joins an existing cluster."""
from __future__ import annotations

import logging
import os

from pipelines.config import RayConfig


def init_ray(rc: RayConfig) -> int:
    """Start or join Ray once per process; return the default number of concurrent tasks per stage."""
    import ray

    if not ray.is_initialized():
        # what workers on other nodes need: test hooks, the tracking store, and (AWS_*) the store of record
        env = {k: v for k, v in os.environ.items() if k.startswith(("ZHGPT_", "MLFLOW_", "AWS_"))}
        if rc.address:
            ray.init(address=rc.address, logging_level=logging.WARNING, runtime_env={"env_vars": env} if env else None)
        else:
            # "local" never silently joins a cluster left running by someone else. The dashboard serves Ray's state
            # API, which Ray Train's placement-group cleaner polls every second: without it each poll fails and
            # prints a warning (~280 lines in a quickstart). It costs ~2 CPU-s at start-up.
            ray.init(address="local", num_cpus=rc.num_cpus, include_dashboard=True, logging_level=logging.WARNING,
                     log_to_driver=True)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return rc.workers or cpus
