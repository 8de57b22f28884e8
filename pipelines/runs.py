"""The work_dir's own record of its pipeline runs: `<work_dir>/.zhgpt/runs/<number>.json`, one small JSON per
`zhgpt run`, so that `trace` and `gc` know a run's stage directories without opening MLflow (whose import and
store open cost ~3 s), and so that runs get a number (`quickstart #15`) for their MLflow name.

    {"number": 15, "name": "quickstart #15 --from dedupe train.max_steps=20", "status": "running|finished|failed|
     killed", "started_at", "ended_at", "mlflow_run_id": str|null, "pid", "host", "running": {"stage", "dir"}|null,
     "tags": {"zhgpt.from": "dedupe", ...}, "stages": {stage: {"dir": "dedupe/ab12cd34ef56ab78", "key",
     "cached": bool, "producer_run_id"}}}

Stage directories are stored relative to the work_dir (URLs as they are), so a moved or copied work_dir's
records point into itself.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from pipelines.io import read_json, write_json
from pipelines.storage import is_url

RUNS = Path(".zhgpt") / "runs"


def runs_dir(local: Path) -> Path:
    return Path(local) / RUNS


def rel_dir(local: Path, d: Any) -> str:
    """A stage directory as a run record keeps it: relative to the work_dir when it is under it."""
    if d is None or is_url(d):
        return str(d) if d is not None else ""
    try:
        return Path(d).resolve().relative_to(Path(local).resolve()).as_posix()
    except ValueError:
        return str(d)


def abs_dir(local: Path, rel: str) -> Any:
    """The stage directory a record (or an MLflow tag) names, in this work_dir. An absolute path of another copy
    of the work_dir (tags written before runs were relative) is rebased on its last two parts: <stage>/<key16>."""
    if is_url(rel):
        return rel
    p = Path(rel)
    if p.is_absolute() and not p.exists():
        return Path(local) / p.parent.name / p.name
    return p if p.is_absolute() else Path(local) / p


class RunRecord:
    def __init__(self, local: Path, pipeline: str, describe: str, extra: dict[str, Any]):
        d = runs_dir(local)
        d.mkdir(parents=True, exist_ok=True)
        self.local = Path(local)
        numbers = [int(p.stem) for p in d.glob("*.json") if p.stem.isdigit()]
        n = max(numbers, default=0) + 1
        while True:  # O_EXCL: two runs started at once take two numbers
            try:
                os.close(os.open(d / f"{n:06d}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                n += 1
        self.path = d / f"{n:06d}.json"
        self.data: dict[str, Any] = {"number": n, "name": f"{pipeline} #{n}" + (f" {describe}" if describe else ""),
                                     "status": "running", "started_at": _now(), "ended_at": None,
                                     "mlflow_run_id": None, "pid": os.getpid(), "host": socket.gethostname(),
                                     "running": None, **extra, "stages": {}}
        self.save()

    @property
    def name(self) -> str:
        return self.data["name"]

    def stage(self, plan: Any, cached: bool) -> None:
        m = plan.manifest
        self.data["stages"][plan.name] = {"dir": rel_dir(self.local, plan.uri or plan.dir), "key": plan.key,
                                          "cached": cached, "producer_run_id": m.mlflow_run_id if m else None}
        self.save()

    def running(self, stage: str, work: Path) -> None:
        """The stage executing now and the directory it writes (gc leaves both alone while this run lives)."""
        self.data["running"] = {"stage": stage, "dir": rel_dir(self.local, work)}
        self.save()

    def finish(self, status: str, mlflow_run_id: str | None = None) -> None:
        self.data.update(status=status, ended_at=_now(), running=None,
                         mlflow_run_id=mlflow_run_id or self.data["mlflow_run_id"])
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def all_runs(local: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(runs_dir(local).glob("*.json")):
        try:
            out.append(read_json(p))
        except (OSError, ValueError):  # a record being written by another run right now
            continue
    return out


def alive(rec: dict[str, Any]) -> bool:
    """Whether a run record's `zhgpt run` may still be running (another host's: assumed so)."""
    if rec.get("status") != "running":
        return False
    if rec.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(rec.get("pid") or 0), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def latest(local: Path) -> dict[str, Any] | None:
    done = [r for r in all_runs(local) if r.get("status") == "finished"]
    return done[-1] if done else None
