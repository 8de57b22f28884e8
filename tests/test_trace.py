"""`zhgpt trace` on the session's small real run (tests/conftest.py e2e_run): a page rejected by a clean rule,
a page removed as a duplicate, a kept page followed into its token rows and back, a URL never seen.
"""
from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from pipelines.cli import app


def trace(cfg_path, *args):
    return CliRunner().invoke(app, ["trace", str(cfg_path), *args])


def trace_json(cfg_path, *args) -> dict:
    res = trace(cfg_path, *args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_rejected_page_names_rule_and_value(e2e_run):
    cfg, _, site = e2e_run
    out = trace_json(cfg, "--url", f"{site['base']}/short.html")
    (doc,) = out["documents"]
    crawl, clean = doc["stages"]["crawl"], doc["stages"]["clean"]
    assert crawl["fate"] == "fetched" and crawl["records"][0]["status"] == 200
    assert clean["fate"] == "rejected"
    rec = clean["records"][0]
    assert rec["rule"] == "min_chars" and rec["value"] < rec["threshold"]
    assert doc["stages"]["dedupe"]["fate"] == "absent"
    text = trace(cfg, "--url", f"{site['base']}/short.html").output
    assert "rejected" in text and "rule=min_chars" in text


def test_duplicate_page_names_kept_document(e2e_run):
    cfg, report, site = e2e_run
    fates = {}
    for page in ["kernel.html", "kernel-copy.html"]:
        (doc,) = trace_json(cfg, "--url", f"{site['base']}/{page}")["documents"]
        fates[page] = doc
    removed = [d for d in fates.values() if d["stages"]["dedupe"]["fate"] == "removed as duplicate"]
    kept = [d for d in fates.values() if d["stages"]["dedupe"]["fate"] == "kept"]
    assert len(removed) == 1 and len(kept) == 1
    dup = removed[0]["stages"]["dedupe"]["records"][0]
    assert dup["kept_id"] == kept[0]["id"] and dup["jaccard_to_kept"] == pytest.approx(1.0)
    from mlflow.tracking import MlflowClient

    from pipelines.cli import tracking_uri_of
    from pipelines.config import load

    run = MlflowClient(tracking_uri_of(load(cfg))).get_run(removed[0]["stages"]["dedupe"]["run_id"])
    m = report.plans["dedupe"].manifest
    assert run.data.tags["zhgpt.stage"] == "dedupe" and run.data.tags["zhgpt.output_digest"] == m.outputs["docs"].digest


def test_kept_page_into_rows_and_back(e2e_run):
    cfg, _, site = e2e_run
    url = f"{site['base']}/basic-defs.html"
    (doc,) = trace_json(cfg, "--url", url)["documents"]
    assert doc["stages"]["clean"]["fate"] == "kept" and doc["stages"]["dedupe"]["fate"] == "kept"
    rows = doc["stages"]["tokenize"]["records"]
    assert rows and all(r["id"] == doc["id"] for r in rows)
    seg = rows[len(rows) // 2]
    back = trace_json(cfg, "--row", f"{seg['split']}:{seg['shard']}:{seg['row']}")
    assert doc["id"] in [d["id"] for d in back["documents"]]
    mine = next(d for d in back["documents"] if d["id"] == doc["id"])
    assert mine["url"] == url and mine["start"] == seg["start"] and mine["length"] == seg["length"]
    assert back["tokens"] == 65 and sum(d["length"] for d in back["documents"]) == 65
    assert mine["text"] and mine["text"] in back["text"]
    human = trace(cfg, "--row", f"{seg['split']}:{seg['shard']}:{seg['row']}").output
    assert url in human and "--- decoded row ---" in human


def test_lookup_opens_only_indexes_and_needed_shards(e2e_run):
    """Python audit hooks see every file the trace opens: indexes, manifests, and the one shard per hit."""
    from mlflow.tracking import MlflowClient

    from pipelines.cli import tracking_uri_of
    from pipelines.config import load
    from pipelines.stage import ordered
    from pipelines.trace import rebase, run_stage_dirs, trace_docs

    cfg_path, report, site = e2e_run
    cfg = load(cfg_path)
    _, stages = run_stage_dirs(MlflowClient(tracking_uri_of(cfg)), cfg.pipeline, None)
    stages = rebase(stages, cfg.local_dir)  # the tags are relative to the work_dir
    opened: list[str] = []
    work = str(cfg.work_dir)
    sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == "open" and str(args[0]).startswith(work)
                     else None)
    out = trace_docs(stages, ordered(list(stages)), url=f"{site['base']}/choosing.html")
    data_files = {p for p in opened if not p.endswith("manifest.json") and "/_index/" not in p}
    needed = {str(stages[s][0] / r["file"]) for d in out["documents"] for s, st in d["stages"].items()
              for r in st["records"]}
    assert data_files == needed
    corpus = {str(p) for s in ("crawl", "clean", "dedupe") for p in report.plans[s].dir.glob("docs/*.parquet")}
    assert len(corpus - data_files) >= 3  # the other document shards were never opened


def test_unknown_url_and_bad_row(e2e_run):
    cfg, _, site = e2e_run
    res = trace(cfg, "--url", f"{site['base']}/never.html")
    assert res.exit_code == 1 and f"url {site['base']}/never.html was never seen by this pipeline run" in res.output
    assert trace(cfg, "--row", "train:0").exit_code == 1
    assert "no train shard 99" in trace(cfg, "--row", "train:99:0").output
    assert trace(cfg, "--url", "x", "--doc", "y").exit_code == 2
