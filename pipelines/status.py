"""`zhgpt status`: what exists for the current config, per stage.

JSON form (version 1, stable): {"version": 1, "pipeline", "work_dir", "stages": [
  {"stage", "state", "cache_key", "dir", "rows", "outputs": {name: {"digest", "rows", "shards": [paths]}},
   "mlflow_run_id", "error"}]}
state: complete (a manifest for the current key) | failed (the last attempt at the current key failed)
       | partial (work started at the current key, no manifest: a killed run) | stale (only outputs of older
       keys exist, or an upstream stage is incomplete while older outputs exist) | missing (nothing).
"""
from __future__ import annotations

from typing import Any

from pipelines.config import RootBase
from pipelines.runner import plan_all
from pipelines.storage import Store


def stage_status(cfg: RootBase) -> list[dict[str, Any]]:
    """Read from the store of record (a URL work_dir's manifests, not the local mirror)."""
    store = Store.of(cfg)
    store.check()
    rows = []
    for name, plan in plan_all(cfg, store).items():
        r: dict[str, Any] = {"stage": name, "state": "missing", "cache_key": plan.key,
                             "dir": str(plan.uri) if plan.uri else None, "rows": None, "outputs": {},
                             "mlflow_run_id": None, "error": None}
        m = plan.manifest
        if m is not None:
            r["state"] = "complete"
            r["rows"] = m.outputs[m.primary].rows
            r["mlflow_run_id"] = m.mlflow_run_id
            r["outputs"] = {n: {"digest": o.digest, "rows": o.rows,
                                "shards": [f"{plan.uri}/{s.path}" for s in o.shards]} for n, o in m.outputs.items()}
        elif plan.key is not None and (err := store.failure(name, plan.key)) is not None:
            r["state"] = "failed"
            r["error"] = err
        elif plan.key is not None and store.started(name, plan.key):
            r["state"] = "partial"
        elif store.has_older(name):
            r["state"] = "stale"
        rows.append(r)
    return rows
