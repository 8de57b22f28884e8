"""`zhgpt ablate` on the session's small real run (tests/conftest.py e2e_run) plus a train section of 3 steps:
two variants (no quality stage / quality keeping 70% per source), the MLflow structure (ablation -> variant
pipeline runs -> stage runs), the stages shared with the e2e run reused, tokenizer and tokenize reading quality's
documents in the second variant, a quality drop traced like a clean drop, the dry run, refused --vary keys.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.testing.realtext import sample_docs

VARY = "quality=null,{keep_fraction: 0.7}"


@pytest.fixture(scope="module")
def ablation_config(e2e_run, tmp_path_factory):
    """The e2e config (same work_dir, so its data stages are reused), another pipeline name (its own MLflow
    experiment), a quality section and a train section of 3 steps on a fixed eval set."""
    e2e_cfg, _, _ = e2e_run
    d = tmp_path_factory.mktemp("ablate")
    docs = sample_docs()
    urls = docs.column("url").to_pylist()
    pq.write_table(docs.filter(pa.array(["debian-reference" in u for u in urls])), d / "positives.parquet")
    pq.write_table(docs.filter(pa.array(["lilypond" in u for u in urls])).slice(0, 40), d / "negatives.parquet")
    (d / "eval.txt").write_text(docs.column("text")[3].as_py()[:2000], encoding="utf-8")
    data = yaml.safe_load(e2e_cfg.read_text(encoding="utf-8"))
    data["pipeline"] = "e2e-ablate"
    data["quality"] = {"positives": [str(d / "positives.parquet")], "negatives": [str(d / "negatives.parquet")],
                       "keep_fraction": 0.5}
    data["train"] = {"preset": "tiny", "max_steps": 3, "global_batch": 4, "seed": 1, "optim": {"lr": 3e-3},
                     "eval_sets": {"faq": str(d / "eval.txt")}}
    path = d / "ablation.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def ablate(*args):
    return CliRunner().invoke(app, ["ablate", *map(str, args)])


def test_dry_run_lists_what_each_variant_would_run(ablation_config):
    res = ablate(ablation_config, "--vary", VARY, "--dry-run")
    assert res.exit_code == 0, res.output
    blocks = res.output.split("v2: ")
    assert blocks[0].startswith("v1: quality=null") and "quality" not in blocks[0].split("\n", 1)[1]
    for stage in ("crawl", "clean", "dedupe", "tokenizer", "tokenize"):  # the e2e run made them
        assert f"{stage:<10} reuse\n" in blocks[0]
    assert f"{'train':<10} run\n" in blocks[0]
    assert "{keep_fraction: 0.7}" in blocks[1] and f"{'dedupe':<10} reuse\n" in blocks[1]
    for stage in ("quality", "tokenizer", "tokenize", "train"):  # downstream of quality: keys of their own
        assert f"{stage:<10} run\n" in blocks[1]


def test_refuses_a_vary_that_changes_what_is_compared(ablation_config):
    for key in ("train.seed=1,2", "train.max_steps=3,6", "train.eval_sets={}", "tokenize.seq_len=32,64"):
        res = ablate(ablation_config, "--vary", key)
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
        assert "which every variant must share" in res.output
    res = ablate(ablation_config, "--vary", "train={max_steps: 5}")
    assert res.exit_code == 2 and "which every variant must share" in res.output
    res = ablate(ablation_config, "--vary", "train.optim.lr=0.001,0.002", "-o", "train.seed=1", "--vary", "quality=")
    assert res.exit_code == 2 and "--vary 'quality='" in res.output and len(res.output.strip().splitlines()) == 1


def test_ablate_runs_variants_under_one_parent_and_reuses_shared_stages(ablation_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipelines.cli import tracking_uri_of
    from pipelines.config import load

    res = ablate(ablation_config, "--vary", VARY)
    assert res.exit_code == 0, res.output
    client = MlflowClient(tracking_uri_of(load(ablation_config)))
    exp = client.get_experiment_by_name("e2e-ablate")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`zhgpt.kind` = 'ablation'")
    assert parent.info.status == "FINISHED"
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              order_by=["attributes.start_time ASC"])
    assert [k.data.tags["zhgpt.variant"] for k in kids] == ["v1: quality=null", "v2: quality={keep_fraction: 0.7}"]
    stages = {}
    for k in kids:
        assert k.data.tags["zhgpt.kind"] == "pipeline" and k.info.status == "FINISHED"
        runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{k.info.run_id}'")
        stages[k.data.tags["zhgpt.variant"][:2]] = {r.data.tags["zhgpt.stage"]: r for r in runs}
    v1, v2 = stages["v1"], stages["v2"]
    assert set(v1) == {"crawl", "clean", "dedupe", "tokenizer", "tokenize", "train"}
    assert set(v2) == set(v1) | {"quality"}
    for name in ("crawl", "clean", "dedupe"):  # shared with the e2e run and between the variants
        assert v1[name].data.tags["zhgpt.cached"] == v2[name].data.tags["zhgpt.cached"] == "true"
        assert v1[name].data.tags["zhgpt.cache_key"] == v2[name].data.tags["zhgpt.cache_key"]
    for name in ("quality", "tokenizer", "tokenize", "train"):
        assert v2[name].data.tags["zhgpt.cached"] == "false"
    # tokenizer and tokenize read quality's documents in v2 (lineage names the real input), dedupe's in v1
    names = lambda run: {i.dataset.name for i in run.inputs.dataset_inputs}  # noqa: E731
    assert "dedupe.docs" in names(v1["tokenizer"]) and "quality.docs" in names(v2["tokenizer"])
    assert not any(n.startswith("dedupe.") for run in (v2["tokenizer"], v2["tokenize"]) for n in names(run))
    assert "quality.docs" in names(v2["tokenize"])
    assert v1["tokenizer"].data.tags["zhgpt.cache_key"] != v2["tokenizer"].data.tags["zhgpt.cache_key"]
    quality = v2["quality"].data
    assert quality.metrics["docs_kept"] < quality.metrics["docs_in"] and "classifier.roc_auc" in quality.metrics
    # the report: a row per variant, the same eval set and token budget for both, fewer documents after quality
    local = client.download_artifacts(parent.info.run_id, "ablation.csv", str(tmp_path))
    rows = list(csv.DictReader(open(local, encoding="utf-8")))
    assert [r["variant"] for r in rows] == ["v1", "v2"]
    assert all(float(r["eval/faq/bpb"]) > 0 and float(r["val/bpb"]) > 0 for r in rows)
    assert rows[0]["tokens"] == rows[1]["tokens"]
    assert int(rows[1]["docs.quality"]) < int(rows[1]["docs.dedupe"]) == int(rows[0]["docs.dedupe"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"ablation.csv", "ablation.md",
                                                                          "ablation.png"}
    # a document the quality stage dropped is traced like a clean drop
    reject = _rows(v2["quality"], "rejects", yaml.safe_load(ablation_config.read_text())["work_dir"])[0]
    out = CliRunner().invoke(app, ["trace", str(ablation_config), "--doc", reject["id"], "--run",
                                   v2["quality"].data.tags["mlflow.parentRunId"], "--json"])
    assert out.exit_code == 0, out.output
    fate = json.loads(out.output)["documents"][0]["stages"]
    assert fate["dedupe"]["fate"] == "kept" and fate["quality"]["fate"] == "rejected"
    rec = next(r for r in fate["quality"]["records"] if r["output"] == "rejects")
    assert rec["rule"] == "fasttext" and rec["value"] < rec["threshold"]
    assert fate["tokenize"]["fate"] == "absent"
    again = ablate(ablation_config, "--vary", VARY, "--dry-run")
    assert " run\n" not in again.output  # everything is cached now


def _rows(run, output: str, work_dir: str) -> list[dict]:
    d = Path(work_dir) / run.data.tags["zhgpt.stage_dir"]  # relative to the work_dir
    return [r for p in sorted(d.glob(f"{output}/*.parquet")) for r in pq.read_table(p).to_pylist()]
