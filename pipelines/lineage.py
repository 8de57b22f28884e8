"""MLflow lineage, kept in the runner (stages never call MLflow, except training's per-step metrics on rank 0).

One experiment per pipeline name; one parent run per `zhgpt run`; one child run per stage, executed or reused.
Children log params (the flattened stage config), metrics, inputs (`log_inputs` with the upstream manifest
digests), tags (`zhgpt.stage`, `zhgpt.cache_key`, `zhgpt.output_digest`) and the manifest as an artifact.
Everything goes through MlflowClient with explicit run ids: no global "active run", no cwd-relative defaults.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

PARAM_LIMIT = 6000
BATCH = 100


def default_uri(work_dir: Path) -> str:
    return f"sqlite:///{Path(work_dir).resolve()}/mlflow.db"


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        text = json.dumps(d, ensure_ascii=False) if not isinstance(d, str) else d
        out[prefix[:-1]] = text[:PARAM_LIMIT]
    return out


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when a tracking server does not answer, so nothing runs half-tracked."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except OSError as exc:
        raise ConnectionError(f"MLflow tracking server {uri} is unreachable ({exc})") from exc


class Lineage:
    def __init__(self, uri: str, experiment: str, work_dir: Path):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is not None:
            self.exp_id = exp.experiment_id
        else:
            loc = None if uri.startswith("http") else (Path(work_dir).resolve() / "mlartifacts").as_uri()
            self.exp_id = self.client.create_experiment(experiment, artifact_location=loc)
        self.parent: str | None = None
        self.headline: dict[str, float] = {}

    # -- parent -----------------------------------------------------------------------------------
    def start_parent(self, cfg: Any) -> str:
        from pipelines.config import public_dump, resolved_yaml

        run = self.client.create_run(self.exp_id, run_name=f"{cfg.pipeline}-{time.strftime('%Y%m%d-%H%M%S')}",
                                     tags={"zhgpt.kind": "pipeline", "zhgpt.work_dir": str(cfg.work_dir)})
        self.parent = run.info.run_id
        self._params(self.parent, flatten(public_dump(cfg)))
        self.client.log_text(self.parent, resolved_yaml(cfg), "resolved_config.yaml")
        return self.parent

    def finish_parent(self, status: str, error: str | None = None) -> None:
        if self.parent is None:
            return
        if error:
            self.client.set_tag(self.parent, "zhgpt.error", error[:5000])
        self._metrics(self.parent, self.headline)
        self.client.set_terminated(self.parent, status)

    # -- children ---------------------------------------------------------------------------------
    def _child(self, plan: Any, extra_tags: dict[str, str]) -> str:
        tags = {"mlflow.parentRunId": self.parent, "zhgpt.stage": plan.name, "zhgpt.cache_key": plan.key,
                "zhgpt.stage_dir": str(plan.uri or plan.dir), **extra_tags}
        return self.client.create_run(self.exp_id, run_name=plan.name, tags=tags).info.run_id

    def start_stage(self, plan: Any, scfg: Any) -> str:
        run_id = self._child(plan, {"zhgpt.cached": "false"})
        self._params(run_id, flatten(scfg.model_dump(mode="json")))
        self._inputs(run_id, plan)
        return run_id

    def finish_stage(self, plan: Any, metrics: dict[str, float], artifacts: list[Path]) -> None:
        m = plan.manifest
        run_id = m.mlflow_run_id
        self._outputs_tags(run_id, m)
        self._metrics(run_id, metrics)
        self._headline(plan, metrics)
        self.client.log_text(run_id, m.to_json(), "manifest.json")
        for a in artifacts:
            if a.is_dir():
                self.client.log_artifacts(run_id, str(a), a.name)
            elif a.exists():
                self.client.log_artifact(run_id, str(a))
        self.client.set_terminated(run_id, "FINISHED")

    def cached_stage(self, plan: Any, metrics: dict[str, float]) -> str:
        m = plan.manifest
        run_id = self._child(plan, {"zhgpt.cached": "true", "zhgpt.producer_run_id": m.mlflow_run_id or ""})
        self._params(run_id, flatten(m.config))
        self._inputs(run_id, plan)
        self._outputs_tags(run_id, m)
        self._metrics(run_id, {**self._producer_metrics(m.mlflow_run_id), **metrics})
        self._headline(plan, metrics)
        self.client.log_text(run_id, m.to_json(), "manifest.json")
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def fail_stage(self, plan: Any, message: str) -> None:
        runs = self.client.search_runs([self.exp_id], f"tags.mlflow.parentRunId = '{self.parent}' "
                                       f"and tags.`zhgpt.stage` = '{plan.name}'")
        for r in runs:
            if r.info.status == "RUNNING":
                self.client.set_tag(r.info.run_id, "zhgpt.error", message[:5000])
                self.client.set_terminated(r.info.run_id, "FAILED")

    # -- helpers ----------------------------------------------------------------------------------
    def _producer_metrics(self, run_id: str | None) -> dict[str, float]:
        """The producer's final metric values (training curves included), when its run is in this store."""
        if not run_id:
            return {}
        try:
            return dict(self.client.get_run(run_id).data.metrics)
        except Exception:  # the producer lives in another tracking store: the manifest's figures suffice
            return {}

    def _headline(self, plan: Any, metrics: dict[str, float]) -> None:
        keys = ["rows_out", "wall_seconds", *plan.spec.headline]
        self.headline.update({f"{plan.name}.{k}": metrics[k] for k in keys if k in metrics})

    def _outputs_tags(self, run_id: str, m: Any) -> None:
        self.client.set_tag(run_id, "zhgpt.output_digest", m.outputs[m.primary].digest)
        for name, o in m.outputs.items():
            self.client.set_tag(run_id, f"zhgpt.output.{name}.digest", o.digest)

    def _inputs(self, run_id: str, plan: Any) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for up, digests in sorted(plan.upstream.items()):
            up_dir = str(plan.upstream_dirs[up])
            kind = up_dir.split("://", 1)[0] if "://" in up_dir else "local"
            for out, digest in sorted(digests.items()):
                if out.startswith("_"):  # the runner's lookup indexes are not data a stage consumes
                    continue
                ds = Dataset(name=f"{up}.{out}", digest=digest[:32], source_type=kind,
                             source=json.dumps({"uri": up_dir}))
                inputs.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", plan.name)]))
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def _params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], v) for k, v in sorted(params.items())]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, params=items[i:i + BATCH])

    def _metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k[:250], float(v), now, 0) for k, v in sorted(metrics.items())]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, metrics=items[i:i + BATCH])

