"""MLflow lineage after real runs: parent run, one child per stage, input digests = upstream output digests,
cached children tagged and carrying the producer's metrics. Queried with MlflowClient on the sqlite store.
"""
from __future__ import annotations

import pytest

from pipelines.cli import execute
from pipelines.config import load


@pytest.fixture
def two_runs(ray_session, kit_config):
    cfg = load(kit_config())
    first, second = execute(cfg), execute(cfg)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cfg.work_dir}/mlflow.db")
    return cfg, first, second, client


def children(client, parent_id):
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.data.tags["zhgpt.stage"]: r for r in runs}


def test_parent_and_children(two_runs):
    cfg, first, _, client = two_runs
    parent = client.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["gen.shards"] == "4"
    assert parent.data.metrics["count.total"] == 120.0 and "upper.rows_out" in parent.data.metrics
    arts = [a.path for a in client.list_artifacts(first.parent_run_id)]
    assert "resolved_config.yaml" in arts
    kids = children(client, first.parent_run_id)
    assert set(kids) == {"gen", "upper", "count"}
    for name, run in kids.items():
        m = first.plans[name].manifest
        assert run.info.status == "FINISHED" and run.data.tags["zhgpt.cached"] == "false"
        assert run.data.tags["zhgpt.output_digest"] == m.outputs[m.primary].digest
        assert run.data.tags["zhgpt.cache_key"] == first.plans[name].key
        assert m.mlflow_run_id == run.info.run_id
        assert run.data.metrics["rows_out"] == m.outputs[m.primary].rows
        assert "manifest.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
        assert run.info.artifact_uri.startswith("file:///")  # absolute, never cwd-relative


def test_inputs_are_upstream_digests(two_runs):
    _, first, _, client = two_runs
    kids = children(client, first.parent_run_id)
    for name, up in [("upper", "gen"), ("count", "upper")]:
        inputs = kids[name].inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == [f"{up}.docs"]
        assert inputs[0].dataset.digest == first.plans[up].manifest.digests["docs"][:32]
        assert inputs[0].tags[0].value == name
    assert kids["gen"].inputs.dataset_inputs == []


def test_cached_children_tagged_with_metrics(two_runs):
    _, first, second, client = two_runs
    made, reused = children(client, first.parent_run_id), children(client, second.parent_run_id)
    for name in ["gen", "upper", "count"]:
        r = reused[name]
        assert r.data.tags["zhgpt.cached"] == "true"
        assert r.data.tags["zhgpt.producer_run_id"] == made[name].info.run_id
        for k, v in made[name].data.metrics.items():
            assert r.data.metrics[k] == v, k  # the Compare view has no blanks
        assert r.inputs.dataset_inputs == made[name].inputs.dataset_inputs or name == "gen"
    assert client.get_run(second.parent_run_id).data.metrics["count.total"] == 120.0
