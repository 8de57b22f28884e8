"""Complete stages leave no scratch, and a killed stage still resumes from its working area: files -> clean ->
dedupe on real Chinese documents, the driver SIGKILLed twice inside dedupe (ZHGPT_FAULT), then run to the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines.cli import execute
from pipelines.config import load
from pipelines.testing.realtext import sample_docs
from tests.conftest import write_config

ZHGPT = [sys.executable, "-m", "pipelines.cli"]


def _config(tmp_path: Path, work: str) -> Path:
    src = tmp_path / "corpus"
    src.mkdir(exist_ok=True)
    docs = sample_docs().to_pylist()
    for k in range(3):  # 3 files, 1 per task -> 3 crawl, clean and dedupe shards -> 3 sign tasks
        with open(src / f"part-{k}.jsonl", "w", encoding="utf-8") as fh:
            for d in docs[k::3] + docs[:5] * (k == 2):  # the last file repeats 5 documents: exact duplicates
                fh.write(json.dumps({"url": d["url"], "text": d["text"]}, ensure_ascii=False) + "\n")
    return write_config(tmp_path / f"{work}.yaml", {
        "pipeline": "scratch", "work_dir": str(tmp_path / work), "ray": {"workers": 2},
        "crawl": {"sources": [{"name": "t", "type": "files", "paths": [str(src)], "files_per_task": 1}]},
        "clean": {}, "dedupe": {"partitions": 2}})


def _killed_at(cfg_path: Path, fault: str, address: str) -> None:
    env = {**os.environ, "ZHGPT_FAULT": fault}
    res = subprocess.run([*ZHGPT, "run", str(cfg_path), "--ray-address", address], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == -9 and f"ZHGPT_FAULT: kill at {fault}" in res.stdout, res.stdout + res.stderr


def hidden(stage_dir: Path) -> list[str]:
    return [p.relative_to(stage_dir).as_posix() for p in stage_dir.rglob(".*")]


def test_no_scratch_after_success_and_killed_dedupe_resumes(ray_session, tmp_path):
    ref = execute(load(_config(tmp_path, "ref")))
    for plan in ref.plans.values():
        assert hidden(plan.dir) == [], plan.name  # no .partial/, no temp files: outputs, indexes, manifest
    cfg_path = _config(tmp_path, "work")
    address = ray_session.get_runtime_context().gcs_address
    _killed_at(cfg_path, "dedupe.tasks@2", address)  # 2 of the 3 shards signed
    (dedupe_dir,) = (tmp_path / "work" / "dedupe").iterdir()
    signed = sorted((dedupe_dir / ".partial").rglob("sig/s-*.json"))
    assert len(signed) >= 2 and not (dedupe_dir / "manifest.json").exists()
    mtimes = [p.stat().st_mtime_ns for p in signed]
    _killed_at(cfg_path, "dedupe.tasks@3", address)  # the resumed run signs the third shard only, then dies
    assert [p.stat().st_mtime_ns for p in signed] == mtimes
    assert len(list((dedupe_dir / ".partial").rglob("sig/s-*.json"))) == 3
    done = execute(load(cfg_path))
    assert done.executed == ["dedupe"] and done.plans["dedupe"].dir == dedupe_dir
    assert {n: p.manifest.digests for n, p in done.plans.items()} == \
        {n: p.manifest.digests for n, p in ref.plans.items()}
    assert hidden(dedupe_dir) == [] and done.plans["dedupe"].manifest.stats["exact_dups"] > 0
