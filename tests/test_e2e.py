"""The session's small real run (tests/conftest.py e2e_run) seen through status, verify, a cached rerun and
MLflow: every stage complete, every shard intact, each stage's inputs equal to its upstream's output digests.
"""
from __future__ import annotations

import json

from typer.testing import CliRunner

from pipelines.cli import app, execute, tracking_uri_of
from pipelines.config import load

STAGES = ["crawl", "clean", "dedupe", "tokenizer", "tokenize"]


def test_status_and_verify(e2e_run):
    cfg, report, _ = e2e_run
    assert report.executed == STAGES
    status = json.loads(CliRunner().invoke(app, ["status", str(cfg), "--json"]).output)["stages"]
    assert [(r["stage"], r["state"]) for r in status] == [(s, "complete") for s in STAGES]
    assert {r["stage"]: r["mlflow_run_id"] for r in status} == \
        {s: report.plans[s].manifest.mlflow_run_id for s in STAGES}
    res = CliRunner().invoke(app, ["verify", str(cfg)])
    assert res.exit_code == 0 and "CORRUPT" not in res.output


def test_rerun_reuses_and_lineage_links(e2e_run):
    from mlflow.tracking import MlflowClient

    cfg_path, first, _ = e2e_run
    cfg = load(cfg_path)
    again = execute(cfg)
    assert again.executed == [] and again.cached == STAGES
    client = MlflowClient(tracking_uri_of(cfg))
    exp = client.get_experiment_by_name("e2e").experiment_id
    kids = {r.data.tags["zhgpt.stage"]: r for r in
            client.search_runs([exp], f"tags.mlflow.parentRunId = '{again.parent_run_id}'")}
    assert sorted(kids) == sorted(STAGES)
    for stage, run in kids.items():
        assert run.data.tags["zhgpt.cached"] == "true"
        assert run.data.tags["zhgpt.producer_run_id"] == first.plans[stage].manifest.mlflow_run_id
        ups = first.plans[stage].spec.inputs
        got = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
        want = {f"{u}.{o}": d[:32] for u in ups for o, d in first.plans[u].manifest.digests.items()
                if not o.startswith("_")}
        assert got == want
        assert run.data.metrics["rows_out"] == first.plans[stage].manifest.outputs[
            first.plans[stage].manifest.primary].rows
