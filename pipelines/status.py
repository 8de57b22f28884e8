"""`zhgpt status`: what exists for the current config, per stage.

JSON form (version 1, stable): {"version": 1, "pipeline", "work_dir", "stages": [
  {"stage", "state", "cache_key", "dir", "rows", "outputs": {name: {"digest", "rows", "shards": [paths]}},
   "mlflow_run_id", "error"}]}
state: complete (a manifest for the current key) | failed (the last attempt at the current key failed)
       | partial (work started at the current key, no manifest: a killed run) | stale (only outputs of older
       keys exist, or an upstream stage is incomplete while older outputs exist) | missing (nothing).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.config import RootBase
from pipelines.dataset import FAILED
from pipelines.runner import plan_all


def _older(work_dir: Path, stage: str) -> bool:
    root = work_dir / stage
    return root.is_dir() and any((d / "manifest.json").exists() for d in root.iterdir() if d.is_dir())


def stage_status(cfg: RootBase) -> list[dict[str, Any]]:
    rows = []
    for name, plan in plan_all(cfg).items():
        r: dict[str, Any] = {"stage": name, "state": "missing", "cache_key": plan.key,
                             "dir": str(plan.dir) if plan.dir else None, "rows": None, "outputs": {},
                             "mlflow_run_id": None, "error": None}
        m = plan.manifest
        if m is not None:
            r["state"] = "complete"
            r["rows"] = m.outputs[m.primary].rows
            r["mlflow_run_id"] = m.mlflow_run_id
            r["outputs"] = {n: {"digest": o.digest, "rows": o.rows, "shards": [str(plan.dir / s.path) for s in o.shards]}
                            for n, o in m.outputs.items()}
        elif plan.dir is not None and (plan.dir / FAILED).exists():
            r["state"] = "failed"
            r["error"] = (plan.dir / FAILED).read_text().strip()
        elif plan.dir is not None and plan.dir.exists():
            r["state"] = "partial"
        elif _older(cfg.work_dir, name):
            r["state"] = "stale"
        rows.append(r)
    return rows

