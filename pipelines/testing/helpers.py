"""Harness for one stage: build upstream datasets from tables, run a stage's `run()` in-process on the
current real Ray (tests: the session's), read its outputs. No MLflow here (the runner tests cover lineage).

    up = make_stage_data(tmp_path / "crawl", "crawl", {"docs": [table1, table2]})
    result, out = run_stage("clean", CleanConfig(...), {"crawl": up}, tmp_path / "clean", workers=2)
    kept = out.read_table("docs")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.dataset import DOC_SCHEMA, Manifest, Output, StageData, doc_id, write_manifest, write_parquet
from pipelines.io import remove_temps
from pipelines.runner import declared_outputs
from pipelines.stage import StageContext, StageResult, registry


def docs_table(texts: list[str | None], source_name: str = "test", url: str | None = None) -> pa.Table:
    """A documents table (the dataset contract's columns) with one row per text, at `<url>/<i>`."""
    url = url or f"test://{source_name}"
    rows = [{"id": doc_id(f"{url}/{i}", t or ""), "source_name": source_name, "url": f"{url}/{i}",
             "source": f"test:{i}", "fetched_at": "2026-01-01T00:00:00Z", "title": "", "text": t}
            for i, t in enumerate(texts)]
    return pa.Table.from_pylist(rows, schema=DOC_SCHEMA)


def make_stage_data(stage_dir: Path, stage: str, outputs: dict[str, list[pa.Table]], primary: str | None = None
                    ) -> StageData:
    stage_dir = Path(stage_dir)
    outs = {}
    for name, tables in outputs.items():
        shards = [write_parquet(t, stage_dir, f"{name}/part-{i:05d}.parquet") for i, t in enumerate(tables)]
        outs[name] = Output(kind="parquet", shards=shards, primary=name == (primary or next(iter(outputs))))
    m = Manifest(stage=stage, cache_key="test" * 16, outputs=outs, config={}, upstream={}, code_version="test")
    write_manifest(stage_dir, m)
    return StageData(stage_dir, m)


def run_stage(name: str, cfg: Any, upstream: dict[str, StageData], out_dir: Path, workers: int = 2,
              **ctx_kw) -> tuple[StageResult, StageData]:
    """Run a registered stage's run() and wrap its result as a StageData (manifest written), its outputs checked
    against their declared schemas as the runner checks them."""
    spec = registry()[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(name=name, cfg=cfg, out_dir=out_dir, upstream=upstream, work_dir=out_dir.parent,
                       workers=workers, tracking_uri="", mlflow_run_id=None, **ctx_kw)
    result = spec.run_fn()(ctx)
    remove_temps(out_dir)  # as the runner's Store does: writers killed mid-file (a task Ray retried) leave temps
    outs = declared_outputs(spec, out_dir, result)
    m = Manifest(stage=name, cache_key="run" * 16, outputs=outs, config={}, upstream={}, code_version="test",
                 stats=result.stats, extra=result.extra)
    write_manifest(out_dir, m)
    return result, StageData(out_dir, m)
