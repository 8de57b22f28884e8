"""infra/ checked against the installed tools: the `ray up` YAML against ray's own JSON schema, the KubeRay objects
against KubeRay's required fields and the installed ray version, the Dockerfile against the Makefile's install
recipe (the README's set-up), the MLflow deployment against the installed mlflow's CLI (parsed, nothing started).

Run: .venv/bin/python -m pytest -q tests/test_infra.py
"""
from __future__ import annotations

import importlib.metadata as md
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


# ---- ray up ----------------------------------------------------------------------------------------------------

def ray_schema() -> dict:
    import ray

    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def test_ray_up_yaml_validates_against_installed_ray_schema():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((INFRA / "ray-up" / "aws.yaml").read_text())
    jsonschema.validate(cfg, ray_schema())
    validate_config(prepare_config(cfg))  # ray's own check, after it fills in the AWS defaults
    types = cfg["available_node_types"]
    assert {"head", "cpu", "gpu"} <= set(types) and cfg["head_node_type"] == "head"
    assert "~/.ray/auth_token" in cfg["file_mounts"]  # every node gets the same token
    assert "-e RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert any("--ray-address auto" in line for line in (INFRA / "ray-up" / "aws.yaml").read_text().splitlines())


def test_ray_schema_check_rejects_a_misspelt_key():
    import jsonschema

    cfg = yaml.safe_load((INFRA / "ray-up" / "aws.yaml").read_text())
    cfg["max_worker"] = cfg.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(cfg, ray_schema())


# ---- KubeRay ---------------------------------------------------------------------------------------------------
# Required by the ray.io/v1 CRDs (raycluster_types.go: fields without omitempty) and by Kubernetes for containers.
HEAD_REQUIRED = ("rayStartParams", "template")
WORKER_REQUIRED = ("groupName", "minReplicas", "maxReplicas", "rayStartParams", "template")


def cluster_spec_problems(spec: dict) -> list[str]:
    """What a RayCluster spec lacks that KubeRay needs, or what contradicts this project's cluster shape."""
    probs = [f"headGroupSpec.{k} missing" for k in HEAD_REQUIRED if k not in spec.get("headGroupSpec", {})]
    for g in spec.get("workerGroupSpecs", []):
        probs += [f"workerGroupSpecs[{g.get('groupName')}].{k} missing" for k in WORKER_REQUIRED if k not in g]
        if not g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 0):
            probs.append(f"workerGroupSpecs[{g.get('groupName')}]: replicas outside [minReplicas, maxReplicas]")
    groups = [spec.get("headGroupSpec", {})] + spec.get("workerGroupSpecs", [])
    for g in groups:
        for c in g.get("template", {}).get("spec", {}).get("containers", []) or [{}]:
            probs += [f"container {c.get('name')}: {k} missing" for k in ("name", "image") if not c.get(k)]
    if spec.get("rayVersion") != md.version("ray"):
        probs.append(f"rayVersion {spec.get('rayVersion')!r} != installed ray {md.version('ray')}")
    if spec.get("authOptions", {}).get("mode") != "token":
        probs.append("authOptions.mode is not token")
    return probs


def kuberay_objects() -> dict[str, dict]:
    return {d["kind"]: d for name in ("raycluster.yaml", "rayjob.yaml") for d in load_all(INFRA / "k8s" / name)}


def test_raycluster_has_kuberay_fields_and_installed_ray_version():
    rc = kuberay_objects()["RayCluster"]
    assert rc["apiVersion"] == "ray.io/v1" and rc["metadata"]["name"]
    assert cluster_spec_problems(rc["spec"]) == []
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(gpu["nvidia.com/gpu"]) >= 1 and "nvidia.com/gpu" not in str(groups["cpu"])
    mounts = [m["mountPath"] for g in [rc["spec"]["headGroupSpec"], *groups.values()]
              for m in g["template"]["spec"]["containers"][0]["volumeMounts"]]
    assert mounts.count("/shared") == 3  # head and both worker groups share the work_dir volume
    claim = load_all(INFRA / "k8s" / "storage.yaml")[0]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert str(rc).count(claim["metadata"]["name"]) == 3


def test_rayjob_runs_zhgpt_on_the_same_cluster_spec():
    objs = kuberay_objects()
    job = objs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["rayClusterSpec"] == objs["RayCluster"]["spec"]
    argv = shlex.split(job["spec"]["entrypoint"].split("&&")[-1])
    assert argv[:3] == ["zhgpt", "run", "configs/quickstart.yaml"]
    assert argv[argv.index("--ray-address") + 1] == "auto"  # join KubeRay's cluster, not a private local Ray
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_cluster_spec_check_names_what_is_wrong():
    spec = json.loads(json.dumps(kuberay_objects()["RayCluster"]["spec"]))
    spec["rayVersion"] = "2.52.0"
    del spec["workerGroupSpecs"][1]["maxReplicas"]
    spec["authOptions"]["mode"] = "disabled"
    probs = cluster_spec_problems(spec)
    assert any("rayVersion '2.52.0'" in p for p in probs)
    assert "workerGroupSpecs[gpu].maxReplicas missing" in probs
    assert "authOptions.mode is not token" in probs


# ---- Dockerfile vs the Makefile's install recipe ----------------------------------------------------------------

def makefile_install_steps(text: str) -> list[str]:
    """The install recipe's pip/torch steps, written as a shell in the image would run them."""
    recipe = text.split("$(STAMP): pyproject.toml", 1)[1].split("\n\n", 1)[0]
    steps = []
    for line in recipe.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ("pip" not in line and "torch-pin" not in line):
            continue
        line = line.split("||")[-1].strip()  # "already there? || do it": the image always does it
        line = line.replace("$(BIN)/", ".venv/bin/").replace("$(VENV)", ".venv").replace("$(TORCH_SPEC)", "$TORCH_SPEC")
        steps.append(" ".join(line.split()))
    return steps


def dockerfile_runs(text: str) -> list[str]:
    text = text.replace("\\\n", " ")
    runs = [ln.strip()[4:] for ln in text.splitlines() if ln.strip().startswith("RUN ")]
    return [" ".join(r.replace("${TORCH_SPEC}", "$TORCH_SPEC").split()) for r in runs]


def install_step_problems(makefile: str, dockerfile: str) -> list[str]:
    """Each Makefile step must start one of the Dockerfile's RUN lines, in the Makefile's order."""
    runs, pos, probs = dockerfile_runs(dockerfile), 0, []
    for step in makefile_install_steps(makefile):
        hit = next((i for i in range(pos, len(runs)) if runs[i].startswith(step)), None)
        if hit is None:
            probs.append(f"Dockerfile lacks, or runs out of order, the Makefile step: {step}")
        else:
            pos = hit + 1
    return probs


def arg_default(text: str, pattern: str) -> str:
    m = re.search(pattern, text, re.M)
    assert m, pattern
    return m.group(1).strip()


def test_dockerfile_installs_as_the_makefile_does():
    make, docker = (ROOT / "Makefile").read_text(), (INFRA / "docker" / "Dockerfile").read_text()
    steps = makefile_install_steps(make)
    assert len(steps) == 4 and "$TORCH_SPEC" in steps[1] and "-e" in steps[3]  # torch, pin, then the project
    assert install_step_problems(make, docker) == []
    torch_pin = f"torch=={md.version('torch').split('+')[0]}"
    assert arg_default(make, r"^TORCH_SPEC \?= (\S+)") == torch_pin  # pinned to the installed torch
    assert arg_default(docker, r"^ARG TORCH_SPEC=(\S+)") == torch_pin
    assert re.search(r"^FROM \S*(cuda)\S*", docker.replace("${CUDA_IMAGE}", arg_default(
        docker, r"^ARG CUDA_IMAGE=(\S+)")), re.M)
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme  # the README's set-up is the Makefile's


def test_install_step_check_catches_the_project_before_torch():
    make, docker = (ROOT / "Makefile").read_text(), (INFRA / "docker" / "Dockerfile").read_text()
    lines = docker.splitlines()
    torch_i = next(i for i, ln in enumerate(lines) if '"${TORCH_SPEC}"' in ln)
    proj_i = next(i for i, ln in enumerate(lines) if "pip install -q -e" in ln)
    lines[torch_i], lines[proj_i] = lines[proj_i], lines[torch_i]
    probs = install_step_problems(make, "\n".join(lines))
    assert probs and "out of order" in probs[0]


def test_image_pins_are_the_tested_versions():
    pins = dict(ln.split("==") for ln in (INFRA / "docker" / "constraints.txt").read_text().splitlines()
                if ln and not ln.startswith("#"))
    assert pins["ray"] == md.version("ray") == kuberay_objects()["RayCluster"]["spec"]["rayVersion"]
    assert {k: md.version(k) for k in pins} == pins


# ---- MLflow server ---------------------------------------------------------------------------------------------

def mlflow_container() -> dict:
    dep = next(d for d in load_all(INFRA / "k8s" / "mlflow.yaml") if d["kind"] == "Deployment")
    return dep["spec"]["template"]["spec"]["containers"][0]


def expand_k8s_vars(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in container args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def test_mlflow_deployment_args_parse_with_installed_mlflow():
    from mlflow.cli import cli

    c = mlflow_container()
    env = {e["name"]: f"x{e['name'].lower()}" for e in c["env"]}
    args = expand_k8s_vars(c["args"], env)
    assert args[0] == "server"
    ctx = cli.commands["server"].make_context("server", args[1:])  # parses and validates; starts nothing
    p = ctx.params
    assert p["backend_store_uri"].startswith("postgresql://xdb_user:xdb_password@")
    assert p["artifacts_destination"].startswith("s3://") and p["serve_artifacts"] is True
    hosts = p["allowed_hosts"].split(",")
    assert "mlflow.mlops.svc.cluster.local:5000" in hosts and p["host"] == "0.0.0.0"
    services = [d for d in load_all(INFRA / "k8s" / "mlflow.yaml") if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"mlflow", "mlflow-postgres"}
    assert p["backend_store_uri"].split("@")[1].startswith("mlflow-postgres.mlops.svc.cluster.local:5432")


def test_mlflow_cli_rejects_a_misspelt_flag():
    import click
    from mlflow.cli import cli

    args = expand_k8s_vars(mlflow_container()["args"], {"DB_USER": "u", "DB_PASSWORD": "p"})
    args[args.index("--allowed-hosts")] = "--allowed-host"
    with pytest.raises(click.UsageError, match="allowed-host"):
        cli.commands["server"].make_context("server", args[1:])


def test_cluster_clients_use_the_allowed_host_name():
    hosts, seen = mlflow_container()["args"][-1].split(","), 0
    for name in ("raycluster.yaml", "rayjob.yaml"):
        for uri in re.findall(r"http://(mlflow[\w.-]*:\d+)", (INFRA / "k8s" / name).read_text()):
            assert uri in hosts, f"{name} uses {uri}, which the MLflow server would answer 403"
            seen += 1
    assert seen >= 2
