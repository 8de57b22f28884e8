"""Beyond one machine, for real on this one: an `mlflow server` on 127.0.0.1, a two-node Ray cluster made of
`ray start --head` + `ray start --address` with distinct node resources and token authentication on every node, and
an S3 server (moto's server mode, authentication on) holding the work_dir.

Run: `pytest -m cluster` (part of `make test`).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from pipelines.cli import execute
from pipelines.config import load
from pipelines.io import read_table

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
            proc.wait(timeout=10)
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
                             f"--temp-dir={d}", "--include-dashboard", "false",
                             f"--ray-client-server-port={free_port()}",
                             "--resources", json.dumps({"head_node": 1}), *common], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs = [head]
    try:
        address = f"127.0.0.1:{port}"
        _wait_nodes(address, env, 1)
        procs.append(subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={address}",
                                       "--resources", json.dumps({"worker_node": 1}), *common], env=env,
                                      stdout=open(d / "worker.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
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


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 with authentication on: its first 3 requests may be anonymous, and they create
    an IAM user, its access key and an s3:* policy; every later request must be signed with that key.
    Yields the AWS_* environment a client needs and an s3fs filesystem for the test's own checks."""
    import boto3
    import s3fs

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"{endpoint}/moto-api/", proc)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="zhgpt")
        key = iam.create_access_key(UserName="zhgpt")["AccessKey"]
        iam.put_user_policy(UserName="zhgpt", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1"}
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                               use_listings_cache=False, skip_instance_cache=True)
        fs.mkdir("zhgpt")
        yield env, fs
    finally:
        stop(proc)


def digests_of(status_stdout: str) -> dict[str, dict[str, str]]:
    return {r["stage"]: {n: o["digest"] for n, o in r["outputs"].items()} for r in json.loads(status_stdout)["stages"]}


def test_s3_work_dir_run_cached_rerun_and_verify(ray_session, kit_config, two_node_cluster, s3_server, tmp_path):
    """work_dir=s3://…: the run publishes every stage to S3 (manifest last), a rerun from an EMPTY scratch mirror
    reuses everything from S3, `zhgpt verify` re-hashes the stored objects and catches a damaged one."""
    address, env, _, _ = two_node_cluster
    aws, fs = s3_server
    scratch = tmp_path / "scratch"
    cfg_path = kit_config(work_dir="s3://zhgpt/kit", scratch_dir=str(scratch))
    ref = execute(load(cfg_path, [f"work_dir={tmp_path / 'ref'}"]))

    def zhgpt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*ZHGPT, *args], env={**env, **aws}, capture_output=True, text=True, timeout=300)

    out = zhgpt("run", str(cfg_path), "--ray-address", address)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "ran gen, upper, count" in out.stdout
    assert len(fs.glob("zhgpt/kit/*/*/manifest.json")) == 3

    shutil.rmtree(scratch)  # the datasets must come from S3 now
    out = zhgpt("run", str(cfg_path), "--ray-address", address)
    assert out.returncode == 0 and "ran nothing; reused gen, upper, count" in out.stdout, \
        out.stdout + out.stderr[-2000:]
    out = zhgpt("run", str(cfg_path), "--ray-address", address, "--force", "count")
    assert out.returncode == 0 and "ran count; reused gen, upper" in out.stdout, out.stdout + out.stderr[-2000:]
    upper = ref.plans["upper"]
    fetched = sorted(p.name for p in (scratch / "upper" / upper.key[:16] / "docs").iterdir())
    assert fetched == [f"part-{i:05d}.parquet" for i in range(4)]  # count's input, fetched from S3
    status = zhgpt("status", str(cfg_path), "--json")
    rows = json.loads(status.stdout)["stages"]
    assert all(r["state"] == "complete" and r["dir"].startswith("s3://zhgpt/kit/") for r in rows)
    assert digests_of(status.stdout) == {n: p.manifest.digests for n, p in ref.plans.items()}

    doc = read_table(ref.plans["gen"].dir / "docs/part-00001.parquet").to_pylist()[0]
    out = zhgpt("trace", str(cfg_path), "--doc", doc["id"], "--json")  # the run's stage dirs are S3 URLs
    assert out.returncode == 0, out.stderr
    fates = {k: v["fate"] for k, v in json.loads(out.stdout)["documents"][0]["stages"].items()}
    assert fates == {"gen": "fetched", "upper": "kept"}

    out = zhgpt("verify", str(cfg_path))
    assert out.returncode == 0 and "upper: 6 shard(s) ok" in out.stdout, out.stdout + out.stderr
    fs.pipe_file(f"zhgpt/kit/upper/{upper.key[:16]}/docs/part-00002.parquet", b"not parquet")
    out = zhgpt("verify", str(cfg_path))
    assert out.returncode == 1
    assert f"CORRUPT upper: s3://zhgpt/kit/upper/{upper.key[:16]}/docs/part-00002.parquet: sha256" in out.stdout
    assert out.stderr.strip() == "error: 1 shard(s) do not match their manifest"


def test_s3_unusable_store_is_one_line_and_writes_nothing(kit_config, s3_server, tmp_path):
    """Missing bucket, refused credentials, an endpoint that does not answer: one line, exit 2, before anything runs."""
    aws, fs = s3_server
    scratch = tmp_path / "scratch"
    bad_endpoint = f"http://127.0.0.1:{free_port()}"
    cases = [("s3://no-such-bucket/kit", {}, "bucket 'no-such-bucket' does not exist", ["run", "verify", "status"]),
             ("s3://zhgpt/bad", {"AWS_SECRET_ACCESS_KEY": "wrong"}, "access denied, check the credentials", ["run"]),
             ("s3://zhgpt/bad", {"AWS_ENDPOINT_URL": bad_endpoint}, "the store does not answer", ["run"])]
    for work_dir, env_change, message, commands in cases:
        cfg_path = kit_config(work_dir=work_dir, scratch_dir=str(scratch))
        for cmd in commands:
            out = subprocess.run([*ZHGPT, cmd, str(cfg_path)], env={**os.environ, **aws, **env_change},
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 2, (cmd, out.stdout, out.stderr)
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and message in lines[0] and work_dir in lines[0], lines
    assert not scratch.exists() and not fs.glob("zhgpt/bad*")  # nothing half-written, locally or in S3


def test_s3_storage_options_in_config_are_used_and_masked(ray_session, kit_config, s3_server, tmp_path, monkeypatch):
    """Endpoint and credentials from the config's storage_options (no AWS_* variables); the secret never reaches
    MLflow (params or the resolved config artifact)."""
    from mlflow.tracking import MlflowClient

    aws, fs = s3_server
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    opts = {"endpoint_url": aws["AWS_ENDPOINT_URL"], "key": aws["AWS_ACCESS_KEY_ID"],
            "secret": aws["AWS_SECRET_ACCESS_KEY"], "client_kwargs": {"region_name": "us-east-1"}}
    cfg = load(kit_config(work_dir="s3://zhgpt/opts", scratch_dir=str(tmp_path / "scratch"), storage_options=opts,
                          upper=None, count=None))
    report = execute(cfg)
    assert report.executed == ["gen"] and fs.exists(f"zhgpt/opts/gen/{report.plans['gen'].key[:16]}/manifest.json")
    client = MlflowClient(f"sqlite:///{tmp_path / 'scratch'}/mlflow.db")
    params = client.get_run(report.parent_run_id).data.params
    assert params["storage_options.secret"] == "***" and params["storage_options.key"] == "***"
    assert params["storage_options.endpoint_url"] == aws["AWS_ENDPOINT_URL"]
    art = client.download_artifacts(report.parent_run_id, "resolved_config.yaml", str(tmp_path))
    assert aws["AWS_SECRET_ACCESS_KEY"] not in open(art, encoding="utf-8").read()


def test_training_spreads_over_two_nodes_with_checkpoints_in_s3(e2e_run, two_node_cluster, s3_server, tmp_path):
    """The data stages of the session's e2e run, published to S3; `zhgpt run` on the two-node cluster fetches the
    tokenize output into an empty scratch, trains with 2 workers (1 CPU each, so one per node), keeps Ray Train's
    checkpoints in S3, and publishes the train stage there; `zhgpt verify` re-hashes every stage in S3."""
    address, env, _, _ = two_node_cluster
    aws, fs = s3_server
    e2e_cfg, report, _ = e2e_run
    for name, plan in report.plans.items():
        fs.put(str(plan.dir), f"zhgpt/e2e/{name}/{plan.key[:16]}", recursive=True)
    data = yaml.safe_load(e2e_cfg.read_text(encoding="utf-8"))
    data.update(work_dir="s3://zhgpt/e2e", scratch_dir=str(tmp_path / "scratch"),
                train={"model": {"n_layer": 2, "n_head": 4, "d_model": 64}, "max_steps": 4, "global_batch": 4,
                       "optim": {"warmup_steps": 1}, "eval_every": 4, "eval_tokens": 256, "checkpoint": {"every": 2},
                       "parallel": {"num_workers": 2, "torch_threads": 1}, "log_every": 2,
                       "sample": {"tokens": 8, "prompts": ["中华人民共和国的首都是"]}})
    cfg_path = tmp_path / "e2e-s3.yaml"
    cfg_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    run_env = {**env, **aws}
    out = subprocess.run([*ZHGPT, "run", str(cfg_path), "--ray-address", address], env=run_env, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ran train; reused crawl, clean, dedupe, tokenizer, tokenize" in out.stdout
    probe = ("import json,ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "from ray._private.state import actors; "
             "print(json.dumps([a['Address']['NodeID'] for a in actors().values() "
             "if a['ActorClassName'].endswith('RayTrainWorker')]))")
    probe_out = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True)
    nodes = json.loads(probe_out.stdout.strip().splitlines()[-1])
    assert len(set(nodes)) == 2, nodes  # rank 0 and rank 1 ran on different nodes
    train_dir = next(iter(fs.glob("zhgpt/e2e/train/*/manifest.json"))).rsplit("/", 1)[0]
    # Ray Train's checkpoints lived in S3 (<stage>/.partial/ray) while the stage ran; once the manifest is there the
    # runner removes that working area from the store too: the final state is the stage's `checkpoints` output
    assert not fs.exists(f"{train_dir}/.partial")
    assert fs.exists(f"{train_dir}/checkpoints/state.pt") and fs.exists(f"{train_dir}/export/config.json")
    out = subprocess.run([*ZHGPT, "verify", str(cfg_path)], env=run_env, capture_output=True, text=True)
    assert out.returncode == 0 and "train: " in out.stdout and "CORRUPT" not in out.stdout, out.stdout + out.stderr


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
