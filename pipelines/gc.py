"""`zhgpt gc CONFIG [--dry-run]`: remove the stage directories nothing refers to any more.

A directory `<work_dir>/<stage>/<key16>` (or a `.next` / `.old` one beside it) is kept when
- it is a stage of the current config at its current key (complete, or partial: a killed run resumes there);
- a kept MLflow run (any experiment in the tracking store; deleted runs do not count) names it in its
  `zhgpt.stage_dir` tag: what an ablation variant, an older config or a colleague's run still shows in the UI;
- a `zhgpt run` that is still alive (its run record says running and its process exists; one on another host
  is assumed alive) has it among its stages or is writing it now.
Everything else under a stage's folder is removed, largest first reported.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipelines.runs import abs_dir, alive, all_runs


def referenced(cfg: Any, uri: str) -> set[Path]:
    from pipelines.runner import plan_all

    local = cfg.local_dir
    keep = {Path(p.dir).resolve() for p in plan_all(cfg).values() if p.dir is not None}
    for rec in all_runs(local):
        if alive(rec):
            keep |= {Path(abs_dir(local, s["dir"])).resolve() for s in rec["stages"].values()}
            if rec.get("running"):
                keep.add(Path(abs_dir(local, rec["running"]["dir"])).resolve())
    return keep | mlflow_dirs(local, uri)


def mlflow_dirs(local: Path, uri: str) -> set[Path]:
    """Stage dirs named by the kept (not deleted) runs of every experiment in the tracking store."""
    from pipelines.journal import mlflow_client

    client = mlflow_client(local, uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    out: set[Path] = set()
    for i in range(0, len(exps), 100):
        token = None
        while True:
            page = client.search_runs(exps[i:i + 100], "", max_results=5000, page_token=token)
            out |= {Path(abs_dir(local, r.data.tags["zhgpt.stage_dir"])).resolve() for r in page
                    if "zhgpt.stage_dir" in r.data.tags and "://" not in r.data.tags["zhgpt.stage_dir"]}
            token = page.token
            if not token:
                break
    return out


def candidates(cfg: Any) -> list[Path]:
    """Every stage directory under the work_dir: `<stage>/<key16>[.next|.old]` for the registered stages."""
    from pipelines.stage import registry

    local = Path(cfg.local_dir)
    out = []
    for name in registry():
        root = local / name
        if root.is_dir():
            out += [d.resolve() for d in root.iterdir() if d.is_dir()]
    return sorted(out)


def size_of(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink())


def collect(cfg: Any, keep: set[Path], dry_run: bool) -> list[tuple[Path, int]]:
    """Remove (or with dry_run only list) the unreferenced directories; return them with their sizes."""
    gone = []
    for d in candidates(cfg):
        if d in keep:  # a `.next` / `.old` beside a kept directory only when a live run is writing it
            continue
        gone.append((d, size_of(d)))
        if not dry_run:
            shutil.rmtree(d)
    return sorted(gone, key=lambda x: -x[1])
