"""Beyond one machine, for real on this one: an `mlflow server` on 127.0.0.1, and a two-node Ray cluster made of
`ray start --head` + `ray start --address` with distinct node resources and token authentication on every node.

Run: `pytest -m cluster` (part of `make test`).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from pipelines.cli import execute
from pipelines.config import load

pytestmark = pytest.mark.cluster
ZHGPT = [sys.executable, "-m", "pipelines.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=3).read()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {seconds}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{d}/mlflow.db", "--artifacts-destination", str(d / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}", d / "artifacts"
    finally:
        stop(proc)


def test_pipeline_tracks_to_a_server(ray_session, kit_config, mlflow_server):
    from mlflow.tracking import MlflowClient

    uri, artifacts = mlflow_server
    cfg = load(kit_config(), [f"tracking_uri={uri}"])
    report = execute(cfg)
    assert not (cfg.work_dir / "mlflow.db").exists()  # nothing went to the local default store
    client = MlflowClient(uri)
    kids = client.search_runs([client.get_run(report.parent_run_id).info.experiment_id],
                              f"tags.mlflow.parentRunId = '{report.parent_run_id}'")
    assert sorted(r.data.tags["zhgpt.stage"] for r in kids) == ["count", "gen", "upper"]
    for r in kids:
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert "manifest.json" in [a.path for a in client.list_artifacts(r.info.run_id)]
    # the artifacts landed in the server's artifact destination
    assert len(list(artifacts.rglob("manifest.json"))) == 3


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    """A head node (1 CPU, resource head_node) and a worker node (1 CPU, resource worker_node), token auth on."""
    d = tmp_path_factory.mktemp("ray2")
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    port = free_port()
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                             f"--temp-dir={d}", "--include-dashboard", "false", f"--ray-client-server-port={free_port()}",
                             "--resources", json.dumps({"head_node": 1}), *common], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs = [head]
    try:
        address = f"127.0.0.1:{port}"
        _wait_nodes(address, env, 1)
        procs.append(subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={address}",
                                       "--resources", json.dumps({"worker_node": 1}), *common], env=env,
                                      stdout=open(d / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        nodes = _wait_nodes(address, env, 2)
        worker_id = next(n for n, res in nodes.items() if "worker_node" in res)
        yield address, env, procs[1], worker_id
    finally:
        for p in reversed(procs):
            stop(p)


def _wait_nodes(address: str, env: dict, n: int, seconds: float = 90) -> dict[str, dict]:
    """Wait for n live nodes; return {node_id: resources}."""
    probe = ("import json,ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(json.dumps({x['NodeID']: x['Resources'] for x in ray.nodes() if x['Alive']}))")
    deadline = time.time() + seconds
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True)
        if out.returncode == 0:
            nodes = json.loads(out.stdout.strip().splitlines()[-1])
            if len(nodes) == n:
                return nodes
        time.sleep(1)
    raise TimeoutError(f"Ray cluster at {address} did not reach {n} nodes")


def test_two_node_run_matches_single_node(ray_session, kit_config, two_node_cluster, tmp_path):
    address, env, _, _ = two_node_cluster
    markers = tmp_path / "markers"
    markers.mkdir()
    cfg_path = kit_config(gen={"shards": 6})
    single = execute(load(cfg_path, [f"work_dir={tmp_path / 'single'}"]))
    run_env = {**env, "ZHGPT_TEST_MARKER_DIR": str(markers)}
    out = subprocess.run([*ZHGPT, "run", str(cfg_path), "--ray-address", address, "-o", "ray.workers=2"],
                         env=run_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    nodes = {p.read_text() for p in markers.glob("done-*")}
    assert len(nodes) == 2, nodes  # upper's tasks ran on both nodes
    status = subprocess.run([*ZHGPT, "status", str(cfg_path), "--json"], capture_output=True, text=True, env=env)
    multi = {r["stage"]: {n: o["digest"] for n, o in r["outputs"].items()} for r in json.loads(status.stdout)["stages"]}
    assert multi == {n: p.manifest.digests for n, p in single.plans.items()}


def test_worker_node_killed_mid_stage(ray_session, kit_config, two_node_cluster, tmp_path):
    """SIGKILL the worker node (its raylet and workers) once it runs an `upper` task: the stage still finishes on
    the head node, with the digests of an undisturbed run. Runs last: the cluster has one node afterwards."""
    address, env, worker_proc, worker_id = two_node_cluster
    markers = tmp_path / "markers"
    markers.mkdir()
    cfg_path = kit_config(gen={"shards": 6})
    ref = execute(load(cfg_path, [f"work_dir={tmp_path / 'ref'}"]))
    run = subprocess.Popen([*ZHGPT, "run", str(cfg_path), "--ray-address", address, "-o", "ray.workers=2",
                            "-o", "upper.slow_ms=3000"], env={**env, "ZHGPT_TEST_MARKER_DIR": str(markers)},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while not list(markers.glob(f"start-*-{worker_id}")) and time.time() < deadline and run.poll() is None:
        time.sleep(0.2)
    assert list(markers.glob(f"start-*-{worker_id}")), "no upper task reached the worker node"
    os.killpg(worker_proc.pid, signal.SIGKILL)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out[-3000:]
    finished_on = {p.read_text() for p in markers.glob("done-*")}
    assert len(list(markers.glob("done-*"))) == 6 and finished_on != {worker_id}
    status = subprocess.run([*ZHGPT, "status", str(cfg_path), "--json"], capture_output=True, text=True, env=env)
    got = {r["stage"]: {n: o["digest"] for n, o in r["outputs"].items()} for r in json.loads(status.stdout)["stages"]}
    assert got == {n: p.manifest.digests for n, p in ref.plans.items()}
