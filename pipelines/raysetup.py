"""Ray: local Ray by default (ray.num_cpus from config), `--ray-address` joins an existing cluster.

Started by the runner when the first stage executes (never for a run whose stages are all cached). What Ray,
Ray Train and MLflow say for themselves (Ray's auth-token warning, Ray Train's checkpoint lines and its
PreemptionWatcher / placement-group cleaner errors, MLflow's INFO lines) goes to `<work_dir>/.zhgpt/zhgpt.log`,
whose path is printed once; the console keeps the stages' own lines and progress.
"""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from pipelines.config import RayConfig
from pipelines.logfile import quiet_libraries


def init_ray(rc: RayConfig, work_dir: Path, progress: Any) -> int:
    """Start or join Ray once per process; return the default number of concurrent tasks per stage."""
    import ray

    started = not ray.is_initialized()
    if started:
        log = quiet_libraries(work_dir)
        # what workers on other nodes need: test hooks, the tracking store, and (AWS_*) the store of record
        env = {k: v for k, v in os.environ.items() if k.startswith(("ZHGPT_", "MLFLOW_", "AWS_"))}
        # Worker output (Ray Train's controller and workers included) stays in Ray's session logs rather than
        # streaming to this console: stages report through ctx.log and the progress channel.
        if rc.address:
            ray.init(address=rc.address, logging_level=logging.WARNING, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        else:
            # "local" never silently joins a cluster left running by someone else. The dashboard serves Ray's state
            # API, which Ray Train's placement-group cleaner polls every second: without it each poll fails and
            # prints a warning (~280 lines in a quickstart). It costs ~2 CPU-s at start-up.
            ray.init(address="local", num_cpus=rc.num_cpus, include_dashboard=True, logging_level=logging.WARNING,
                     log_to_driver=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stays a KeyboardInterrupt here
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if started:
        what = f"joined Ray at {rc.address}" if rc.address else "started local Ray"
        progress.log(f"ray: {what} ({cpus} CPUs); library messages: {log}, Ray's own logs: {_session_dir()}")
    return rc.workers or cpus


def _session_dir() -> str:
    try:
        from ray._private.worker import _global_node

        return str(Path(_global_node.get_session_dir_path()) / "logs")
    except Exception:  # noqa: BLE001 - a private API: the path is a courtesy
        return "(Ray's session directory)"
