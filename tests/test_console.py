"""The console a user lives in: what is (not) started for a command, one line and the right exit code for every
failure, nothing complete lost, a cached run's lineage, a moved work_dir, gc, overrides, progress.

Runs go through the real CLI on the test-only gen -> upper -> count pipeline, joined to the session's Ray; the
failures are real: a SIGINT the driver sends itself at a known point (ZHGPT_FAULT=...:int), a truncated Parquet
shard, a read-only and a full tmpfs mounted in a private mount namespace (unshare, as root), a real long path.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app, execute
from pipelines.config import ConfigError, load

ZHGPT = [sys.executable, "-m", "pipelines.cli"]
# Runs the CLI in a fresh interpreter and prints which heavy libraries the command imported.
PROBE = ("import sys\nfrom pipelines.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
         "    print('exit', e.code, sorted(m for m in ('ray', 'mlflow') if m in sys.modules), file=sys.stderr)\n")


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def probe(*args: str, env: dict | None = None) -> tuple[str, str]:
    res = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    return res.stdout, res.stderr.strip().splitlines()[-1]


def status_of(cfg_path: Path) -> dict[str, str]:
    return {r["stage"]: r["state"] for r in json.loads(cli("status", cfg_path, "--json").output)["stages"]}


def mlflow_runs(cfg) -> list:
    from mlflow.tracking import MlflowClient

    from pipelines.journal import flush_pending

    flush_pending(cfg.local_dir)  # waits for a background writer, as every MLflow reader does
    client = MlflowClient(f"sqlite:///{cfg.work_dir}/mlflow.db")
    exp = client.get_experiment_by_name(cfg.pipeline).experiment_id
    return client.search_runs([exp], "", order_by=["attributes.start_time ASC"])


# -- what a command starts --------------------------------------------------------------------------------
def test_cached_run_starts_nothing_and_records_lineage_later(ray_session, kit_config):
    cfg_path = kit_config()
    cfg = load(cfg_path)
    execute(cfg)
    out, last = probe("run", cfg_path)
    assert last == "exit 0 []"  # neither Ray nor MLflow imported
    assert "done: ran nothing; reused gen, upper, count; MLflow run 'kit #2' (written in the background)" in out
    assert "upper  cached" in out and "docs: 120 rows" in out
    runs = mlflow_runs(cfg)
    parent = next(r for r in runs if r.info.run_name == "kit #2")
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.metrics["count.total"] == 120.0
    assert sorted(k.data.tags["zhgpt.stage"] for k in kids) == ["count", "gen", "upper"]
    assert all(k.data.tags["zhgpt.cached"] == "true" and k.info.status == "FINISHED" for k in kids)
    assert not list((cfg.local_dir / ".zhgpt/lineage").glob("*.json"))  # the journal is gone once written
    record = json.loads((cfg.local_dir / ".zhgpt/runs/000002.json").read_text())
    assert record["mlflow_run_id"] == parent.info.run_id and record["status"] == "finished"


@pytest.mark.parametrize("args, line", [
    (["--only", "bogus"], "error: unknown stage 'bogus': this config has gen, upper, count"),
    (["-o", "gen.shards=many"], "config error: gen.shards: Input should be a valid integer"),
    (["-o", "gne.shards=3"], "config error: gne: unknown key — did you mean gen?"),
])
def test_bad_command_lines_rejected_before_ray_and_mlflow(kit_config, args, line):
    out, last = probe("run", kit_config(), *args)
    assert last == "exit 2 []"


def test_bad_selection_is_one_line(kit_config):
    res = cli("run", kit_config(), "--only", "bogus")
    assert res.exit_code == 2 and res.output.strip() == \
        "error: unknown stage 'bogus': this config has gen, upper, count"
    res = cli("run", kit_config(), "--only", "upper")  # its input was never made
    assert res.exit_code == 2 and "--only upper: input stage gen has no complete output" in res.output


# -- failures ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # a `zhgpt run` subprocess
def test_ctrl_c_leaves_the_stage_resumable_and_the_runs_killed(ray_session, kit_config):
    cfg_path = kit_config(gen={"shards": 6})
    cfg = load(cfg_path)
    address = ray_session.get_runtime_context().gcs_address
    res = subprocess.run([*ZHGPT, "run", str(cfg_path), "--ray-address", address], capture_output=True, text=True,
                         env={**os.environ, "ZHGPT_FAULT": "upper.tasks@2:int"}, timeout=300)
    assert res.returncode == 130, res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1] == "interrupted during upper; run again to resume"
    assert "Traceback" not in res.stderr
    assert status_of(cfg_path) == {"gen": "complete", "upper": "partial", "count": "missing"}
    runs = {r.info.run_name: r for r in mlflow_runs(cfg)}
    assert runs["kit #1"].info.status == "KILLED" and runs["upper"].info.status == "KILLED"
    assert runs["gen"].info.status == "FINISHED"
    again = execute(load(cfg_path))
    assert again.cached == ["gen"] and again.executed == ["upper", "count"]


def test_forced_rerun_over_a_damaged_input_keeps_the_complete_output(ray_session, kit_config):
    cfg_path = kit_config()
    report = execute(load(cfg_path))
    upper = report.plans["upper"].dir
    before = (upper / "manifest.json").read_text()
    shard = report.plans["gen"].dir / report.plans["gen"].manifest.outputs["docs"].shards[1].path
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a truncated Parquet file
    res = cli("run", cfg_path, "--force", "upper")
    lines = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert f"input {shard}: " in lines[0]
    assert "run `zhgpt verify CONFIG`, then `zhgpt run CONFIG --force gen`" in lines[0]
    assert (upper / "manifest.json").read_text() == before  # the complete output is still there, whole
    assert cli("verify", cfg_path).output.count("upper: 6 shard(s) ok") == 1
    assert status_of(cfg_path)["upper"] == "complete"


def test_forced_rerun_replaces_the_output_when_complete(ray_session, kit_config):
    cfg_path = kit_config()
    first = execute(load(cfg_path))
    again = execute(load(cfg_path), force=["upper"])
    assert again.executed == ["upper"] and again.plans["upper"].dir == first.plans["upper"].dir
    assert again.plans["upper"].manifest.digests == first.plans["upper"].manifest.digests
    d = first.plans["upper"].dir
    assert not list(d.parent.glob("*.next")) and (d / "manifest.json").exists()


def test_file_name_too_long_is_one_line(kit_config, tmp_path):
    long = tmp_path / ("长" * 100)  # 300 bytes in UTF-8: over NAME_MAX (255)
    res = cli("run", kit_config(), "-o", f"work_dir={long}")
    assert res.exit_code == 1 and res.output.strip() == f"error: {long}: File name too long"


def test_empty_work_dir_is_a_config_error(kit_config):
    for value in ("", "''"):
        res = cli("run", kit_config(), "-o", f"work_dir={value}")
        assert res.exit_code == 2 and res.output.strip().startswith("config error: work_dir: empty")


def _unshare_ok() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mounts = pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare -m for a private tmpfs")


@needs_mounts
@pytest.mark.parametrize("kind, reason", [("ro", "Read-only file system"), ("full", "No space left on device")])
def test_read_only_or_full_stage_dir(ray_session, kit_config, kind, reason):
    """count writes in the driver: a tmpfs over its folder, read-only or full, in the run's own mount namespace."""
    cfg_path = kit_config()
    report = execute(load(cfg_path))
    count = report.plans["count"].dir
    mount = f"mount -t tmpfs -o ro,size=64k tmpfs {count.parent}" if kind == "ro" else \
        f"mount -t tmpfs -o size=16k tmpfs {count.parent} && (dd if=/dev/zero of={count.parent}/fill bs=4k " \
        f"2>/dev/null || true)"
    address = ray_session.get_runtime_context().gcs_address
    cmd = " ".join([mount, "&&", "exec", *ZHGPT, "run", str(cfg_path), "--force", "count", "--ray-address", address])
    res = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, timeout=300)
    errors = [x for x in (res.stdout + res.stderr).splitlines() if x.startswith("error:")]
    assert res.returncode == 1 and len(errors) == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert str(count.parent) in errors[0] and errors[0].endswith(reason)
    assert status_of(cfg_path) == {"gen": "complete", "upper": "complete", "count": "complete"}  # outside it


# -- a moved work_dir, gc, names ---------------------------------------------------------------------------
def test_copied_work_dir_reads_only_its_own_files(ray_session, kit_config, tmp_path):
    cfg_path = kit_config()
    report = execute(load(cfg_path))
    original = load(cfg_path).work_dir
    copy = tmp_path / "moved"
    shutil.copytree(original, copy)
    doc = pq.read_table(report.plans["gen"].dir / "docs/part-00000.parquet", columns=["id"]).column("id")[0].as_py()
    opened: list[str] = []
    sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == "open" and isinstance(args[0], str)
                     and str(original) in args[0] and "mlflow" not in args[0] else None)
    for extra in ([], ["--run", report.parent_run_id]):  # from the run records, and from MLflow's tags
        opened.clear()
        res = cli("trace", cfg_path, "-o", f"work_dir={copy}", "--doc", doc, *extra)
        assert res.exit_code == 0 and "upper      kept" in res.output, res.output
        assert not opened, opened
    rows = json.loads(cli("status", cfg_path, "-o", f"work_dir={copy}", "--json").output)["stages"]
    assert all(r["dir"].startswith(str(copy)) for r in rows)


def test_run_named_by_what_it_did(ray_session, kit_config):
    cfg_path = kit_config()
    cfg = load(cfg_path)
    execute(cfg)
    res = cli("run", cfg_path, "--force", "count", "-o", "ray.workers=1")
    assert res.exit_code == 0, res.output
    parent = next(r for r in mlflow_runs(cfg) if r.info.run_name == "kit #2 --force count ray.workers=1")
    assert parent.data.tags["zhgpt.force"] == "count" and parent.data.tags["zhgpt.overrides"] == "ray.workers=1"


def test_gc_removes_only_unreferenced_dirs(ray_session, kit_config):
    from mlflow.tracking import MlflowClient

    cfg_path = kit_config()
    cfg = load(cfg_path)
    old = execute(cfg)
    execute(load(cfg_path, ["gen.seed=1"]))  # new keys for every stage; the old ones stay referenced by MLflow
    out = cli("gc", cfg_path, "-o", "gen.seed=1", "--dry-run").output
    assert out.strip().endswith("would free 0 directories, 0.0 MB")
    client = MlflowClient(f"sqlite:///{cfg.work_dir}/mlflow.db")
    for r in mlflow_runs(cfg):
        if r.data.tags.get("mlflow.parentRunId") == old.parent_run_id or r.info.run_id == old.parent_run_id:
            client.delete_run(r.info.run_id)
    live = cfg.local_dir / "count" / "feedfacefeedface.next"  # written now by a live run (this process)
    live.mkdir()
    rec = cfg.local_dir / ".zhgpt/runs/000099.json"
    rec.write_text(json.dumps({"number": 99, "status": "running", "pid": os.getpid(), "host": os.uname().nodename,
                               "stages": {}, "running": {"stage": "count", "dir": "count/feedfacefeedface.next"}}))
    res = cli("gc", cfg_path, "-o", "gen.seed=1")
    assert res.exit_code == 0 and "freed 3 directories" in res.output, res.output
    assert all(not p.dir.exists() for p in old.plans.values()) and live.exists()


# -- config and overrides ---------------------------------------------------------------------------------
def test_overrides_by_item_name_and_did_you_mean():
    cfg = load("configs/quickstart.yaml", ["crawl.sources.debian-zh.max_pages=10",
                                           "crawl.sources.libreoffice-zh.seeds=[http://a.example/]"])
    assert cfg.crawl.sources[0].max_pages == 10 and cfg.crawl.sources[1].seeds == ["http://a.example/"]
    with pytest.raises(ConfigError, match=r"override crawl.sources.nope.max_pages: no item 'nope' \(items: "
                                          r"debian-zh, libreoffice-zh\)"):
        load("configs/quickstart.yaml", ["crawl.sources.nope.max_pages=10"])
    with pytest.raises(ConfigError, match="crawl.sources.0.seeds.max_pagez: unknown key — did you mean max_pages"):
        load("configs/quickstart.yaml", ["crawl.sources.debian-zh.max_pagez=10"])
    with pytest.raises(ConfigError, match="cleen: unknown key — did you mean clean"):
        load("configs/quickstart.yaml", ["cleen.min_chars=3"])


def test_empty_section_runs_with_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"work_dir": str(tmp_path / "w"), "plugins": ["pipelines.testing.stagekit"]})
                 + "gen:\nupper:\ncount:\n")
    cfg = load(p)
    assert cfg.stage_names() == ["gen", "upper", "count"] and cfg.gen.shards == 4
    assert load(p, ["count=null", "upper=null"]).stage_names() == ["gen"]


def test_version_and_completion():
    assert cli("--version").output.startswith("zhgpt ")
    assert "--install-completion" in cli("--help").output


# -- progress -----------------------------------------------------------------------------------------------
class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, msg: str) -> None:
        self.lines.append(msg)


def test_plain_progress_is_periodic_not_per_task():
    from pipelines.progress import PlainProgress

    p = PlainProgress()
    out = Lines()
    p.log = out.log
    p.start("dedupe", 40)
    for i in range(1, 41):
        p.advance("dedupe", i, i * 10, i * 1000)
    assert len(out.lines) == 2  # the start line and the last one (40 tasks within EVERY seconds)
    assert out.lines[-1].startswith("[dedupe] 40/40 tasks, 400 rows, ")


def test_progress_channel_shows_training_steps(tmp_path):
    from pipelines.progress import Watch, channel, describe_step

    shown: list[dict] = []

    class Steps:
        def step(self, stage: str, rec: dict) -> None:
            shown.append(rec)

    with Watch(Steps(), "train", tmp_path):
        ch = channel(tmp_path)
        for step in range(100, 120):
            ch.put(force=step == 119, step=step + 1, total=650, loss=4.0, tokens_per_s=2048.0)
    assert shown[-1]["step"] == 120 and shown[-1]["from"] == 101
    text = describe_step(shown[-1], 10.0)
    assert text.startswith("step 120/650, loss 4.000, 2,048 tokens/s, ETA ")


def test_validation_split_logged_as_validation(e2e_run):
    from pipelines.lineage import dataset_inputs
    from pipelines.runner import StagePlan
    from pipelines.stage import registry

    _, report, _ = e2e_run
    tok = report.plans["tokenize"]
    plan = StagePlan("train", registry()["train"], upstream={"tokenize": tok.manifest.digests},
                     upstream_dirs={"tokenize": tok.uri})
    contexts = {i["name"]: i["context"] for i in dataset_inputs(plan)}
    assert contexts["tokenize.val"] == "validation" and contexts["tokenize.train"] == "training"
    assert contexts["tokenize.rows"] == "train"
