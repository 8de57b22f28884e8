"""A user's own ids and fields, from their JSONL / Parquet files to the token rows (issue 16): `source_id` and
`meta` through clean and dedupe, both ids in a duplicates row, `source_id` in tokenize's lineage sidecar, and
`zhgpt trace --source-id`. One small real pipeline run (files -> clean -> dedupe -> tokenizer -> tokenize).

    .venv/bin/python -m pytest -q tests/test_ingest_lineage.py     (~25 s on 2 cores)
"""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.cli import app, execute
from pipelines.config import load
from pipelines.dataset import StageData
from pipelines.testing.realtext import sample_docs
from tests.conftest import write_config


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    d = tmp_path_factory.mktemp("ingest")
    texts = sample_docs().column("text").to_pylist()[:60]
    recs = [{"doc_id": f"rec-{i}", "text": t, "license": "GFDL", "crawl": {"year": 2026}} for i, t in enumerate(texts)]
    recs.append({"doc_id": "rec-copy", "text": texts[3], "license": "GFDL"})  # an exact copy of rec-3
    (d / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n", encoding="utf-8")
    more = sample_docs().column("text").to_pylist()[60:80]
    pq.write_table(pa.table({"key": list(range(20)), "text": more, "site": ["debian"] * 20}), d / "b.parquet")
    cfg = {"pipeline": "ingest", "work_dir": str(d / "work"), "ray": {"workers": 2},
           "crawl": {"sources": [
               {"name": "mine", "type": "files", "paths": [str(d / "a.jsonl")], "id_field": "doc_id",
                "keep_fields": ["license", "crawl"]},
               {"name": "pq", "type": "files", "paths": [str(d / "b.parquet")], "id_field": "key",
                "keep_fields": "all"}]},
           "clean": {}, "dedupe": {"partitions": 2}, "tokenizer": {"vocab_size": 2000, "num_threads": 2},
           "tokenize": {"seq_len": 64, "val_fraction": 0.2, "tokens_per_shard": 8192}}
    path = write_config(d / "ingest.yaml", cfg)
    report = execute(load(path))
    return path, {name: StageData.open(plan.dir) for name, plan in report.plans.items()}


def test_ids_and_fields_reach_the_token_rows(run):
    _, st = run
    crawl = {r["id"]: r for r in st["crawl"].read_table("docs").to_pylist()}
    mine = [r for r in crawl.values() if r["source_name"] == "mine"]
    assert sorted(r["source_id"] for r in mine) == sorted([f"rec-{i}" for i in range(60)] + ["rec-copy"])
    assert all(json.loads(r["meta"]) == {"license": "GFDL", "crawl": {"year": 2026}} for r in mine
               if r["source_id"] != "rec-copy")
    pq_docs = [r for r in crawl.values() if r["source_name"] == "pq"]
    assert {r["source_id"] for r in pq_docs} == {str(i) for i in range(20)}
    assert {r["meta"] for r in pq_docs} == {'{"site":"debian"}'}
    for stage in ("clean", "dedupe"):
        kept = st[stage].read_table("docs", columns=["id", "source_id", "meta"]).to_pylist()
        assert kept and all((r["source_id"], r["meta"]) == (crawl[r["id"]]["source_id"], crawl[r["id"]]["meta"])
                            for r in kept)
    dups = st["dedupe"].read_table("duplicates").to_pylist()  # the sample site has near copies of its own too
    assert all(crawl[d["id"]]["source_id"] == d["source_id"] and crawl[d["kept_id"]]["source_id"] ==
               d["kept_source_id"] for d in dups)
    (dup,) = [d for d in dups if "rec-copy" in (d["source_id"], d["kept_source_id"])]
    assert {dup["source_id"], dup["kept_source_id"]} == {"rec-3", "rec-copy"} and dup["kind"] == "exact"
    rows = st["tokenize"].read_table("rows", columns=["id", "source_id"]).to_pylist()
    assert rows and all(r["source_id"] == crawl[r["id"]]["source_id"] for r in rows)


def test_trace_by_source_id(run):
    path, st = run
    packed = sorted({r["source_id"] for r in st["tokenize"].read_table("rows", columns=["source_id"]).to_pylist()})
    res = CliRunner().invoke(app, ["trace", str(path), "--source-id", packed[0], "--json"])
    assert res.exit_code == 0, res.output
    (doc,) = json.loads(res.output)["documents"]
    assert doc["stages"]["crawl"]["records"][0]["source_id"] == packed[0]
    assert doc["stages"]["tokenize"]["fate"] == "packed into token rows"
    res = CliRunner().invoke(app, ["trace", str(path), "--source-id", "rec-copy", "--json"])
    fates = {d["stages"]["dedupe"]["fate"] for d in json.loads(res.output)["documents"]}
    assert res.exit_code == 0 and fates <= {"kept", "removed as duplicate"} and len(fates) == 1
    res = CliRunner().invoke(app, ["trace", str(path), "--source-id", "nope"])
    assert res.exit_code == 1 and res.output.strip() == "error: source id nope was never seen by this pipeline run"


def test_a_source_without_documents_fails_the_run_in_one_line(ray_session, tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"\n")
    cfg = write_config(tmp_path / "c.yaml", {"pipeline": "empty", "work_dir": str(tmp_path / "work"),
                                             "ray": {"workers": 2}, "crawl": {"sources": [
                                                 {"name": "mine", "type": "files",
                                                  "paths": [str(tmp_path / "empty.jsonl")]}]}})
    res = CliRunner().invoke(app, ["run", str(cfg)])
    lines = [x for x in res.output.splitlines() if x.startswith("error")]
    assert res.exit_code == 1 and lines == ["error: stage crawl failed: SourceError: source mine: 0 documents from "
                                            "1 file"]
