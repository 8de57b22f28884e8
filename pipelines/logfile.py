"""The work_dir's log file, `<work_dir>/.zhgpt/zhgpt.log`: what Ray, Ray Train and MLflow say for themselves
(Ray's auth-token warning, MLflow's INFO lines on opening a store, warnings), and the background lineage
writer's output. Kept out of the console, not lost: `zhgpt run` prints the path once."""
from __future__ import annotations

import logging
from pathlib import Path

LOG = Path(".zhgpt") / "zhgpt.log"
NOISY = ["ray", "mlflow", "alembic", "urllib3", "filelock", "py.warnings"]
_HANDLERS: dict[Path, logging.Handler] = {}


def quiet_libraries(work_dir: Path) -> Path:
    """Route the libraries' Python logging and warnings to the log file. Idempotent; call it again after
    importing a library that installs its own console handler on import (MLflow does)."""
    path = (Path(work_dir) / LOG).resolve()
    if path not in _HANDLERS:
        path.parent.mkdir(parents=True, exist_ok=True)
        h = _HANDLERS[path] = logging.FileHandler(path, encoding="utf-8", delay=True)
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.captureWarnings(True)
    for name in NOISY:
        log = logging.getLogger(name)
        for h in list(log.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                log.removeHandler(h)
        if _HANDLERS[path] not in log.handlers:
            log.addHandler(_HANDLERS[path])
        log.propagate = False
    return path
