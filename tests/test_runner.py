"""Runner behaviour on the test-only gen -> upper -> count DAG, with real local Ray and a real MLflow sqlite store.

Cache reuse, selective reruns, determinism across worker counts, failure handling, status states.
"""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.cli import app, execute
from pipelines.config import load
from pipelines.runner import StageFailed


def digests(report) -> dict[str, dict[str, str]]:
    return {n: p.manifest.digests for n, p in report.plans.items()}


def test_second_run_reuses_everything(ray_session, kit_config):
    cfg_path = kit_config()
    first = execute(load(cfg_path))
    assert first.executed == ["gen", "upper", "count"] and first.cached == []
    second = execute(load(cfg_path))
    assert second.executed == [] and second.cached == ["gen", "upper", "count"]
    assert digests(first) == digests(second)


def test_config_change_reruns_stage_and_downstream_only(ray_session, kit_config):
    cfg_path = kit_config()
    base = execute(load(cfg_path))
    changed = execute(load(cfg_path, ["upper.suffix=！"]))
    assert changed.executed == ["upper", "count"] and changed.cached == ["gen"]
    assert digests(changed)["gen"] == digests(base)["gen"]
    assert digests(changed)["upper"] != digests(base)["upper"]
    # execution settings are not part of any key: a different worker count re-runs nothing
    again = execute(load(cfg_path, ["upper.suffix=！", "ray.workers=1", "upper.slow_ms=1"]))
    assert again.executed == []


def test_same_digests_with_one_and_two_workers(ray_session, kit_config, tmp_path):
    one = execute(load(kit_config(), ["ray.workers=1", f"work_dir={tmp_path / 'w1'}"]))
    two = execute(load(kit_config(), ["ray.workers=2", f"work_dir={tmp_path / 'w2'}"]))
    assert one.executed == two.executed == ["gen", "upper", "count"]
    assert digests(one) == digests(two)


def test_from_only_force(ray_session, kit_config):
    cfg = load(kit_config())
    execute(cfg)
    assert execute(cfg, from_="upper").executed == ["upper", "count"]
    only = execute(cfg, only="upper")
    assert only.executed == ["upper"] and "count" not in only.cached
    assert execute(cfg, force=["gen"]).executed == ["gen"]  # gen's digest is unchanged, so the rest is reused


def test_only_needs_existing_inputs(ray_session, kit_config):
    res = CliRunner().invoke(app, ["run", str(kit_config()), "--only", "upper"])
    assert res.exit_code == 2
    assert "--only upper: input stage gen has no complete output" in res.output


def test_unknown_stage_in_selection(ray_session, kit_config):
    res = CliRunner().invoke(app, ["run", str(kit_config()), "--from", "dedup"])
    assert res.exit_code == 2 and "unknown stage 'dedup'" in res.output


def test_failing_stage_marks_runs_failed_and_keeps_upstream(ray_session, kit_config, monkeypatch):
    from mlflow.tracking import MlflowClient

    cfg = load(kit_config())
    monkeypatch.setenv("ZHGPT_TEST_FAIL_COUNT", "1")
    with pytest.raises(StageFailed, match="count refused its input"):
        execute(cfg)
    res = CliRunner().invoke(app, ["status", str(kit_config()), "--json"])
    states = {r["stage"]: r for r in json.loads(res.output)["stages"]}
    assert states["gen"]["state"] == "complete" and states["upper"]["state"] == "complete"
    assert states["count"]["state"] == "failed" and "count refused" in states["count"]["error"]
    client = MlflowClient(f"sqlite:///{cfg.work_dir}/mlflow.db")
    exp = client.get_experiment_by_name("kit")
    runs = client.search_runs([exp.experiment_id], "tags.`zhgpt.stage` = 'count'")
    assert runs[0].info.status == "FAILED" and "count refused" in runs[0].data.tags["zhgpt.error"]
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED" and "count refused" in parent.data.tags["zhgpt.error"]
    monkeypatch.delenv("ZHGPT_TEST_FAIL_COUNT")
    after = execute(cfg)  # the next run resumes at the failed stage
    assert after.executed == ["count"] and after.cached == ["gen", "upper"]


def test_rerun_removes_a_dead_writers_temporary_files(ray_session, kit_config, monkeypatch):
    """A writer killed mid-write leaves its `.NAME.tmp-PID` file; the next attempt at the stage deletes such files
    before it runs (its own resumable state stays while the stage is incomplete; once complete, `.partial/` goes
    too), and the outputs are those of a clean run."""
    cfg = load(kit_config())
    monkeypatch.setenv("ZHGPT_TEST_FAIL_COUNT", "1")
    with pytest.raises(StageFailed, match="count refused its input"):
        execute(cfg)
    count = next(cfg.local_dir.glob("count/*/"))
    dead = [count / "count" / ".part-00000.parquet.tmp-999999", count / ".partial" / "x" / ".state.json.tmp-999999"]
    for f in dead:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"half a file")
    kept = count / ".partial" / "x" / "state.json"
    kept.write_text("{}")
    with pytest.raises(StageFailed, match="count refused its input"):  # the stage ran again, and failed again
        execute(cfg)
    assert not any(f.exists() for f in dead) and kept.exists()
    monkeypatch.delenv("ZHGPT_TEST_FAIL_COUNT")
    after = execute(cfg)
    assert after.executed == ["count"] and not (count / ".partial").exists()
    assert digests(after) == digests(execute(load(kit_config(), [f"work_dir={cfg.work_dir}-clean"])))


def test_status_states(ray_session, kit_config):
    cfg_path = kit_config()
    runner = CliRunner()
    fresh = json.loads(runner.invoke(app, ["status", str(cfg_path), "--json"]).output)
    assert fresh["version"] == 1
    assert [(r["stage"], r["state"]) for r in fresh["stages"]] == [("gen", "missing"), ("upper", "missing"),
                                                                   ("count", "missing")]
    assert fresh["stages"][0]["cache_key"] and fresh["stages"][1]["cache_key"] is None
    execute(load(cfg_path))
    done = json.loads(runner.invoke(app, ["status", str(cfg_path), "--json"]).output)["stages"]
    assert all(r["state"] == "complete" and r["mlflow_run_id"] for r in done)
    assert done[0]["rows"] == 120 and done[0]["outputs"]["docs"]["shards"][0].endswith("part-00000.parquet")
    stale = json.loads(runner.invoke(app, ["status", str(cfg_path), "--json", "-o", "gen.seed=5"]).output)["stages"]
    assert [r["state"] for r in stale] == ["stale", "stale", "stale"]
    table = runner.invoke(app, ["status", str(cfg_path)])
    assert table.exit_code == 0 and "complete" in table.output


def test_index_written_beside_outputs(ray_session, kit_config):
    from pipelines.dataset import StageData
    from pipelines.index import find, url_hash
    from pipelines.io import read_table

    report = execute(load(kit_config()))
    plan = report.plans["upper"]
    assert "_index" in plan.manifest.outputs and not plan.manifest.outputs["_index"].primary
    docs = read_table(plan.dir / plan.manifest.outputs["docs"].shards[3].path)
    doc = docs.slice(7, 1).to_pylist()[0]
    data = StageData(plan.dir, plan.manifest)
    hit = find(data, "by_id", doc["id"]).to_pylist()
    assert hit == [{"id": doc["id"], "output": "docs", "shard": 3, "row": 7, "url": doc["url"]}]
    by_url = find(data, "by_url", url_hash(doc["url"])).to_pylist()
    assert [(h["shard"], h["row"], h["id"]) for h in by_url] == [(3, 7, doc["id"])]
    assert find(data, "by_id", "0" * 32).num_rows == 0
    assert sorted(p.name for p in plan.dir.iterdir()) == ["_index", "docs", "manifest.json"]  # no scratch left


def test_task_error_reaches_the_user(ray_session, kit_config):
    res = CliRunner().invoke(app, ["run", str(kit_config(upper={"fail_shard": 2}))])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == \
        "error: stage upper failed: ValueError: shard 2 is unreadable (fail_shard)"


def test_code_version_covers_the_stage_package_only():
    """Each stage hashes its own package (the one its run module is in), not all of stages/: editing the train
    stage must not re-run the crawl."""
    from pipelines.runner import _module_files
    from pipelines.stage import registry

    specs = registry()
    for name, spec in specs.items():
        if name in {"crawl", "clean", "dedupe", "tokenizer", "tokenize", "train"}:
            assert spec.package() == f"stages.{name}" and not spec.code_modules, name
            files = _module_files(spec.package())
            assert files and all(f"stages/{name}/" in f.as_posix() for f in files), name
