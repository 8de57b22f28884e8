"""The `zhgpt` command line as a user meets it: bad configs (one line, exit 2), verify, a SIGKILLed run that
resumes to the same digests. The crash test runs `zhgpt run` as a real subprocess joined to the session's Ray.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app, execute
from pipelines.config import load

ZHGPT = [sys.executable, "-m", "pipelines.cli"]


def one_line_error(res) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def test_unknown_key(kit_config):
    line = one_line_error(CliRunner().invoke(app, ["run", str(kit_config(upper={"sufix": "x"}))]))
    assert line == "config error: upper.sufix: unknown key — did you mean suffix?"


def test_wrong_type(kit_config):
    line = one_line_error(CliRunner().invoke(app, ["run", str(kit_config(gen={"shards": "many"}))]))
    assert line.startswith("config error: gen.shards: Input should be a valid integer") and "'many'" in line


def test_wrong_type_from_override(kit_config):
    line = one_line_error(CliRunner().invoke(app, ["status", str(kit_config()), "-o", "gen.rows_per_shard=-3"]))
    assert line.startswith("config error: gen.rows_per_shard: Input should be greater than or equal to 1")


def test_missing_file(kit_config, tmp_path):
    cfg = kit_config(upper={"suffix_file": str(tmp_path / "nope.txt")})
    line = one_line_error(CliRunner().invoke(app, ["run", str(cfg)]))
    assert line.startswith("config error: upper.suffix_file: Path does not point to a file") and "nope.txt" in line


def test_missing_config_and_bad_yaml(tmp_path):
    line = one_line_error(CliRunner().invoke(app, ["run", str(tmp_path / "absent.yaml")]))
    assert line == f"config error: {tmp_path / 'absent.yaml'}: no such config file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("gen: [1, 2\n")
    assert "not valid YAML" in one_line_error(CliRunner().invoke(app, ["run", str(bad)]))


def test_config_without_stages(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    line = one_line_error(CliRunner().invoke(app, ["run", str(empty)]))
    assert line.startswith("config error: no stage sections; add at least one of crawl, clean, dedupe")
    assert not (tmp_path / "work").exists()  # nothing was created


def test_work_dir_url_without_bucket(kit_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "s3:" must not become a local directory here
    for url in ("s3://", "s3:///"):
        line = one_line_error(CliRunner().invoke(app, ["run", str(kit_config()), "-o", f"work_dir={url}"]))
        assert line == f"config error: work_dir: {url!r} names no bucket (write s3://bucket/prefix)"
    assert not (tmp_path / "s3:").exists()


def test_external_file_content_is_in_the_key(ray_session, kit_config, tmp_path):
    suffix = tmp_path / "suffix.txt"
    suffix.write_text("～\n", encoding="utf-8")
    cfg = load(kit_config(upper={"suffix_file": str(suffix)}))
    assert execute(cfg).executed == ["gen", "upper", "count"]
    suffix.write_text("！\n", encoding="utf-8")
    assert execute(cfg).executed == ["upper", "count"]


def test_verify_names_a_flipped_byte(ray_session, kit_config):
    cfg_path = kit_config()
    report = execute(load(cfg_path))
    ok = CliRunner().invoke(app, ["verify", str(cfg_path)])
    assert ok.exit_code == 0 and "upper: 6 shard(s) ok" in ok.output  # 4 docs + 2 index shards
    shard = report.plans["upper"].dir / report.plans["upper"].manifest.outputs["docs"].shards[2].path
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    bad = CliRunner().invoke(app, ["verify", str(cfg_path)])
    assert bad.exit_code == 1
    assert f"CORRUPT upper: {shard}: sha256" in bad.output
    assert "gen: 6 shard(s) ok" in bad.output


@pytest.mark.slow  # a `zhgpt run` subprocess, killed, then two pipeline runs
def test_sigkill_mid_stage_resumes_to_same_digests(ray_session, kit_config, tmp_path):
    cfg_path = kit_config(gen={"shards": 6})
    ref = execute(load(cfg_path, [f"work_dir={tmp_path / 'ref'}"]))
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "ZHGPT_FAULT": "upper.tasks@2"}
    killed = subprocess.run([*ZHGPT, "run", str(cfg_path), "--ray-address", address], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert "ZHGPT_FAULT: kill at upper.tasks@2" in killed.stdout
    status = json.loads(CliRunner().invoke(app, ["status", str(cfg_path), "--json"]).output)["stages"]
    assert [r["state"] for r in status] == ["complete", "partial", "missing"]
    assert not (Path(status[1]["dir"]) / "manifest.json").exists()
    resumed = execute(load(cfg_path))
    assert resumed.cached == ["gen"] and resumed.executed == ["upper", "count"]
    assert {n: p.manifest.digests for n, p in resumed.plans.items()} == \
        {n: p.manifest.digests for n, p in ref.plans.items()}


@pytest.mark.slow  # starts the MLflow UI server (~15 s)
def test_ui_serves_the_store(ray_session, kit_config):
    """`zhgpt ui` starts the real MLflow UI on 127.0.0.1 and prints its URL; the runs are served."""
    import socket
    import time
    import urllib.request

    cfg_path = kit_config()
    execute(load(cfg_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*ZHGPT, "ui", str(cfg_path), "--port", str(port)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().startswith(f"MLflow UI: http://127.0.0.1:{port}")
        body, deadline = None, time.time() + 90
        while body is None and time.time() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
                                             "?experiment_name=kit")
                body = json.loads(urllib.request.urlopen(req, timeout=5).read())
            except OSError:
                time.sleep(0.5)
        assert body and body["experiment"]["name"] == "kit"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_tracking_server_unreachable_fails_fast(kit_config):
    res = CliRunner().invoke(app, ["run", str(kit_config()), "--tracking-uri", "http://127.0.0.1:9"])
    assert res.exit_code == 2 and "MLflow tracking server http://127.0.0.1:9 is unreachable" in res.output
