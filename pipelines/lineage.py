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
    """With `deferred=True` (a `zhgpt run` from the command line), nothing touches MLflow until a stage executes:
    the parent run and the cached stage runs are kept as events, and a run where every stage was cached hands
    them to a detached writer process (a journal under the work_dir, see pipelines/journal.py). Importing MLflow
    and opening its store costs ~3 s, which a no-op run cannot afford; the first executed stage pays it anyway
    (beside Ray's start-up), so from there on everything is written here, the events first."""

    def __init__(self, uri: str, experiment: str, work_dir: Path, deferred: bool = False):
        self.uri, self.experiment, self.work_dir = uri, experiment, Path(work_dir)
        self.events: list[list[Any]] | None = [] if deferred else None
        self.parent: str | None = None
        self.headline: dict[str, float] = {}
        self.record_path: Path | None = None  # the work_dir's run record (pipelines/runs.py), set by the runner
        if not deferred:
            self.live()

    def live(self, flush: bool = True) -> None:
        """Open MLflow (once): write what pending journals and this run's deferred events hold."""
        if "client" in self.__dict__:
            return
        from mlflow.tracking import MlflowClient

        from pipelines.journal import flush_pending
        from pipelines.logfile import quiet_libraries

        quiet_libraries(self.work_dir)  # MLflow's INFO lines (store creation, migrations) to the log file
        if flush:
            flush_pending(self.work_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            self.exp_id = exp.experiment_id
        else:
            loc = None if self.uri.startswith("http") else (self.work_dir.resolve() / "mlartifacts").as_uri()
            self.exp_id = self.client.create_experiment(self.experiment, artifact_location=loc)
        events, self.events = self.events or [], None
        self.replay(events)

    def replay(self, events: list[list[Any]]) -> None:
        for op, *args in events:
            getattr(self, f"_{op}")(*args)

    def _record(self, op: str, *args: Any) -> None:
        if self.events is None:
            getattr(self, f"_{op}")(*args)
        else:
            self.events.append([op, *args])

    # -- parent -----------------------------------------------------------------------------------
    def start_parent(self, cfg: Any, name: str | None = None, tags: dict[str, str] | None = None) -> str | None:
        from pipelines.config import public_dump, resolved_yaml

        run_name = name or f"{cfg.pipeline}-{time.strftime('%Y%m%d-%H%M%S')}"
        tags = {"zhgpt.kind": "pipeline", "zhgpt.work_dir": str(cfg.work_dir), **(tags or {})}
        self._record("parent", run_name, tags, flatten(public_dump(cfg)), resolved_yaml(cfg))
        return self.parent

    def _parent(self, name: str, tags: dict[str, str], params: dict[str, str], config_yaml: str) -> None:
        run = self.client.create_run(self.exp_id, run_name=name, tags=tags)
        self.parent = run.info.run_id
        self._params(self.parent, params)
        self.client.log_text(self.parent, config_yaml, "resolved_config.yaml")

    def finish_parent(self, status: str, error: str | None = None) -> None:
        """Close the parent run; a deferred run's events go to the background writer instead (see journal.py)."""
        if self.events is not None:
            from pipelines.journal import hand_over

            if self.events:
                hand_over(self, [*self.events, ["finish", status, error, dict(self.headline)]])
            return
        self._finish(status, error, self.headline)

    def _finish(self, status: str, error: str | None, headline: dict[str, float]) -> None:
        if self.parent is None:
            return
        if error:
            self.client.set_tag(self.parent, "zhgpt.error", error[:5000])
        self._metrics(self.parent, headline)
        self.client.set_terminated(self.parent, status)

    # -- children ---------------------------------------------------------------------------------
    def _child(self, facts: dict[str, Any], extra_tags: dict[str, str]) -> str:
        tags = {"mlflow.parentRunId": self.parent, "zhgpt.stage": facts["stage"], "zhgpt.cache_key": facts["key"],
                "zhgpt.stage_dir": facts["dir"], **extra_tags}
        return self.client.create_run(self.exp_id, run_name=facts["stage"], tags=tags).info.run_id

    def facts(self, plan: Any) -> dict[str, Any]:
        """What the stage runs record of a plan, as plain data (a journal holds it as JSON)."""
        from pipelines.runs import rel_dir

        return {"stage": plan.name, "key": plan.key, "dir": rel_dir(self.work_dir, plan.uri or plan.dir),
                "inputs": dataset_inputs(plan), "manifest": plan.manifest.to_json() if plan.manifest else None}

    def start_stage(self, plan: Any, scfg: Any) -> str:
        self.live()
        facts = self.facts(plan)
        run_id = self._child(facts, {"zhgpt.cached": "false"})
        self._params(run_id, flatten(scfg.model_dump(mode="json")))
        self._inputs(run_id, facts["inputs"])
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

    def cached_stage(self, plan: Any, metrics: dict[str, float]) -> None:
        self._headline(plan, metrics)
        self._record("cached", self.facts(plan), metrics)

    def _cached(self, facts: dict[str, Any], metrics: dict[str, float]) -> None:
        from pipelines.dataset import Manifest

        m = Manifest.from_dict(json.loads(facts["manifest"]))
        run_id = self._child(facts, {"zhgpt.cached": "true", "zhgpt.producer_run_id": m.mlflow_run_id or ""})
        self._params(run_id, flatten(m.config))
        self._inputs(run_id, facts["inputs"])
        self._outputs_tags(run_id, m)
        self._metrics(run_id, {**self._producer_metrics(m.mlflow_run_id), **metrics})
        self.client.log_text(run_id, facts["manifest"], "manifest.json")
        self.client.set_terminated(run_id, "FINISHED")

    def fail_stage(self, plan: Any, message: str, status: str = "FAILED") -> None:
        """Close the stage's running child run: FAILED, or KILLED when the run was interrupted."""
        self.live()
        runs = self.client.search_runs([self.exp_id], f"tags.mlflow.parentRunId = '{self.parent}' "
                                       f"and tags.`zhgpt.stage` = '{plan.name}'")
        for r in runs:
            if r.info.status == "RUNNING":
                self.client.set_tag(r.info.run_id, "zhgpt.error", message[:5000])
                self.client.set_terminated(r.info.run_id, status)

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

    def _inputs(self, run_id: str, inputs: list[dict[str, str]]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        if inputs:
            self.client.log_inputs(run_id, datasets=[
                DatasetInput(Dataset(name=i["name"], digest=i["digest"], source_type=i["source_type"],
                                     source=i["source"]), tags=[InputTag("mlflow.data.context", i["context"])])
                for i in inputs])

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


# The MLflow dataset context of an upstream output, by output name (MLflow's own words for the splits); other
# outputs are in the context of the stage reading them.
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


def dataset_inputs(plan: Any) -> list[dict[str, str]]:
    """The stage's inputs as MLflow datasets: the upstream outputs' digests, where they live, in what context."""
    out = []
    for up, digests in sorted(plan.upstream.items()):
        up_dir = str(plan.upstream_dirs[up])
        kind = up_dir.split("://", 1)[0] if "://" in up_dir else "local"
        for name, digest in sorted(digests.items()):
            if name.startswith("_"):  # the runner's lookup indexes are not data a stage consumes
                continue
            out.append({"name": f"{up}.{name}", "digest": digest[:32], "source_type": kind,
                        "source": json.dumps({"uri": up_dir}), "context": CONTEXTS.get(name, plan.name)})
    return out
