"""The runner: DAG from the config, content-addressed cache keys, execution, resume after a crash.

cache key = sha256(stage name, canonical JSON of the stage's resolved config (EXEC_FIELDS left out),
                   upstream output digests, code version, digest of the external files the config names)
A stage runs when no manifest exists for its key (or it is forced). A killed stage leaves no manifest, so the
next run starts it again in the same directory, where its `.partial/` area lets it resume. Once the manifest is
written, `.partial/` and writers' temp files are removed: a complete stage directory holds its outputs, indexes
and manifest only (dedupe's working area was 4.1 GB at 10^6 documents, 45% of the work dir).
Manifests are read from the store of record (pipelines/storage.py); with a URL work_dir, stages run in the local
mirror: inputs are fetched into it first, and outputs are uploaded (manifest last) when the stage completes.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from pipelines.config import RootBase
from pipelines.dataset import ContractError, Manifest, Output, StageData
from pipelines.index import build_indexes
from pipelines.io import conform_error, schema_of
from pipelines.progress import Watch
from pipelines.runs import RunRecord
from pipelines.stage import Progress, StageContext, StageSpec, input_stages, ordered, registry
from pipelines.storage import Store


class StageFailed(RuntimeError):
    def __init__(self, stage: str, message: str):
        super().__init__(f"stage {stage} failed: {message}")
        self.stage = stage


class SelectionError(ValueError):
    """A bad --from/--only/--force selection, or --only without its inputs."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM while a stage ran: the stage is left resumable (no FAILED mark)."""

    def __init__(self, stage: str | None):
        super().__init__(f"interrupted during {stage}" if stage else "interrupted")
        self.stage = stage


def _module_files(module: str) -> list[Path]:
    spec = find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"code module {module!r} not found")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:  # a package: every .py file under it
        root = Path(list(spec.submodule_search_locations)[0])
        return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    return [origin]


# The shared layer under the stages: a change here may change any stage's output, so it is in every code version.
SHARED_MODULES = ["pipelines.dataset", "pipelines.io", "pipelines.stats", "pipelines.text"]


def code_version(spec: StageSpec) -> str:
    """Hash of the stage package's source and the shared layer, plus the versions of libraries shaping its output.
    Computed once per process and spec (a run plans every stage up to twice)."""
    memo = (spec.name, spec.run, tuple(spec.code_modules), tuple(spec.libraries))
    if memo not in _CODE_VERSIONS:
        _CODE_VERSIONS[memo] = _code_version(spec)
    return _CODE_VERSIONS[memo]


_CODE_VERSIONS: dict[tuple, str] = {}


def _code_version(spec: StageSpec) -> str:
    h = hashlib.sha256()
    for mod in sorted(set(spec.code_modules or [spec.package()])) + SHARED_MODULES:
        for f in _module_files(mod):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    for lib in sorted(spec.libraries):
        try:
            h.update(f"{lib}=={metadata.version(lib)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{lib}==absent".encode())
    return h.hexdigest()[:32]


def cache_key(name: str, key_cfg: dict, upstream: dict[str, dict[str, str]], code: str, fingerprint: str = "") -> str:
    payload = json.dumps({"stage": name, "config": key_cfg, "upstream": upstream, "code": code, "fp": fingerprint},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class StagePlan:
    name: str
    spec: StageSpec
    key: str | None = None  # None while an upstream stage is incomplete
    dir: Path | None = None  # the local directory the stage works in (the work_dir's, or the scratch mirror's)
    uri: str | Path | None = None  # the stage directory in the store of record (== dir for a local work_dir)
    manifest: Manifest | None = None
    upstream: dict[str, dict[str, str]] = field(default_factory=dict)  # by the stage that provides each input
    inputs: dict[str, str] = field(default_factory=dict)  # declared input -> the stage providing it (stand-ins)
    upstream_dirs: dict[str, str | Path] = field(default_factory=dict)  # stage -> its uri
    code: str = ""

    @property
    def complete(self) -> bool:
        return self.manifest is not None


def resolve(cfg: RootBase, plans: dict[str, StagePlan], name: str, store: Store | None = None) -> StagePlan:
    """Compute a stage's key from its config and its upstream manifests (if they are all complete)."""
    store = store or Store.of(cfg)
    spec = registry()[name]
    plan = StagePlan(name, spec, code=code_version(spec))
    plan.inputs = input_stages(name, cfg.stage_names())
    ups = [plans.get(u) for u in plan.inputs.values()]
    if all(u is not None and u.complete for u in ups):
        plan.upstream = {u.name: u.manifest.digests for u in ups}
        plan.upstream_dirs = {u.name: u.uri for u in ups}
        scfg = cfg.stage_cfg(name)
        plan.key = cache_key(name, scfg.key_dict(), plan.upstream, plan.code, scfg.external_digest())
        plan.dir = store.local_dir(name, plan.key)
        plan.uri = store.uri(name, plan.key)
        plan.manifest = store.read_manifest(name, plan.key)
    return plan


def plan_all(cfg: RootBase, store: Store | None = None) -> dict[str, StagePlan]:
    store = store or Store.of(cfg)
    plans: dict[str, StagePlan] = {}
    for name in ordered(cfg.stage_names()):
        plans[name] = resolve(cfg, plans, name, store)
    return plans


def downstream_of(cfg: RootBase, start: str) -> set[str]:
    names = ordered(cfg.stage_names())
    out = {start}
    for n in names:
        if any(u in out for u in input_stages(n, names).values()):
            out.add(n)
    return out


def selection(cfg: RootBase, from_: str | None, only: str | None, force: list[str]) -> tuple[set[str], set[str]]:
    """(stages to consider, stages to re-run regardless of cache)."""
    names = set(cfg.stage_names())
    for n in [from_, only, *force]:
        if n is not None and n not in names:
            raise SelectionError(f"unknown stage {n!r}: this config has {', '.join(ordered(list(names)))}")
    if from_ and only:
        raise SelectionError("--from and --only cannot be combined")
    forced = set(force)
    if from_:
        forced |= downstream_of(cfg, from_)
    if only:
        return {only}, forced | {only}
    return names, forced


@dataclass
class RunReport:
    parent_run_id: str | None
    run_name: str | None = None
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    plans: dict[str, StagePlan] = field(default_factory=dict)


def stage_metrics(m: Manifest, upstream: dict[str, Manifest]) -> dict[str, float]:
    """Metrics every stage run carries; a function of the manifest, so cached runs report the producer's figures."""
    prim = m.outputs[m.primary]
    rows_in = sum(u.outputs[u.primary].rows for u in upstream.values())
    out = {"rows_in": float(rows_in), "rows_out": float(prim.rows), "bytes_out": float(prim.bytes),
           "wall_seconds": round(m.wall_seconds, 3),
           "rows_per_s": round((rows_in or prim.rows) / m.wall_seconds, 3) if m.wall_seconds > 0 else 0.0}
    out.update({k: float(v) for k, v in m.stats.items() if isinstance(v, (int, float))})
    return out


class Runner:
    """Ray is started (start_ray() -> workers) when the first stage executes, never for a run whose stages are
    all cached. `label` and `tags` describe the run (its MLflow name and tags)."""

    def __init__(self, cfg: RootBase, lineage: Any, progress: Progress | None = None, fresh: bool = False,
                 start_ray: Any = None, label: str = "", tags: dict[str, str] | None = None):
        self.cfg, self.lineage, self.progress = cfg, lineage, progress or Progress()
        self.workers: int | None = None
        self.fresh, self.start_ray = fresh, start_ray
        self.label, self.tags = label, dict(tags or {})
        self.store = Store.of(cfg)

    def run(self, from_: str | None = None, only: str | None = None, force: list[str] | None = None) -> RunReport:
        todo, forced = selection(self.cfg, from_, only, force or [])
        check_only_inputs(self.cfg, only, self.store)
        self.record = RunRecord(self.cfg.local_dir, self.cfg.pipeline, self.label, {"tags": self.tags})
        self.lineage.record_path = self.record.path
        report = RunReport(parent_run_id=self.lineage.start_parent(self.cfg, self.record.name, self.tags),
                           run_name=self.record.name)
        plans: dict[str, StagePlan] = {}
        try:
            for name in ordered(self.cfg.stage_names()):
                plan = plans[name] = resolve(self.cfg, plans, name, self.store)
                if name not in todo:  # --only's inputs were checked by check_only_inputs
                    continue
                if plan.key is None:
                    raise SelectionError(f"stage {name}: an input stage is incomplete")
                if plan.complete and name not in forced:
                    self._reuse(plan, plans)
                    report.cached.append(name)
                else:
                    self._execute(plan, plans, fresh_dir=name in forced)
                    report.executed.append(name)
                self.record.stage(plan, cached=name in report.cached)
        except BaseException as exc:
            self._close_failed(exc)
            raise
        self.record.finish("finished", self.lineage.parent)  # before the lineage writer, which sets its run id
        self.lineage.finish_parent("FINISHED")
        report.plans, report.parent_run_id = plans, self.lineage.parent
        return report

    def _close_failed(self, exc: BaseException) -> None:
        """The parent run ends KILLED (interrupted) or FAILED; a broken tracking store must not hide `exc`."""
        killed = isinstance(exc, (KeyboardInterrupt, SystemExit))
        self.record.finish("killed" if killed else "failed")
        try:
            self.lineage.finish_parent("KILLED" if killed else "FAILED", error=str(exc) or type(exc).__name__)
        except Exception:  # noqa: BLE001
            pass

    def _ups(self, plan: StagePlan, plans: dict[str, StagePlan]) -> dict[str, StageData]:
        """The input stages, present in the local directory (fetched from the store of record when remote)."""
        return {u: StageData(self.store.fetch(real, plans[real].key, plans[real].manifest), plans[real].manifest)
                for u, real in plan.inputs.items()}

    def _reuse(self, plan: StagePlan, plans: dict[str, StagePlan]) -> None:
        ups = {real: plans[real].manifest for real in plan.inputs.values()}
        self.progress.log(f"[{plan.name}] cached: {plan.uri}")
        self.lineage.cached_stage(plan, stage_metrics(plan.manifest, ups))

    def _execute(self, plan: StagePlan, plans: dict[str, StagePlan], fresh_dir: bool) -> None:
        assert plan.dir is not None and plan.key is not None
        self._ensure_ray()
        work = plan.dir = self.store.prepare(plan.name, plan.key, fresh=fresh_dir)
        self.record.running(plan.name, work)
        upstream = self._ups(plan, plans)
        scfg = self.cfg.stage_cfg(plan.name)
        run_id = self.lineage.start_stage(plan, scfg)
        ctx = StageContext(name=plan.name, cfg=scfg, out_dir=plan.dir, upstream=upstream,
                           work_dir=self.cfg.local_dir, workers=self.workers, tracking_uri=self.lineage.uri,
                           mlflow_run_id=run_id, root_cfg=self.cfg, progress=self.progress, cache_key=plan.key,
                           fresh=self.fresh, store=self.store)
        self.progress.log(f"[{plan.name}] running -> {plan.uri}" + (f" (in {plan.dir})" if self.store.remote else ""))
        t0 = time.time()
        try:
            with Watch(self.progress, plan.name, work):  # the stage's progress channel (training's steps)
                result = plan.spec.run_fn()(ctx)
            outputs = declared_outputs(plan.spec, plan.dir, result)
            outputs.update(index_outputs(plan.dir, outputs, replace(ctx, name=f"{plan.name}.index").map))
            m = Manifest(stage=plan.name, cache_key=plan.key, outputs=outputs, config=scfg.model_dump(mode="json"),
                         upstream=plan.upstream, code_version=plan.code, stats=result.stats,
                         wall_seconds=time.time() - t0, mlflow_run_id=run_id,
                         created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         extra={**result.extra, **({"summary": result.summary} if result.summary else {})})
            self.store.publish(plan.name, plan.key, m, result.artifacts, work)  # the manifest last: complete now
        except BaseException as exc:
            raise self._failed(plan, plans, work, exc) from exc
        plan.dir, plan.manifest = self.store.local_dir(plan.name, plan.key), m
        self.store.drop_scratch(plan.name, plan.key)  # after the manifest: a killed stage keeps it to resume
        ups = {real: plans[real].manifest for real in plan.inputs.values()}
        self.lineage.finish_stage(plan, stage_metrics(m, ups), [plan.dir / a for a in result.artifacts])
        self.progress.log(f"[{plan.name}] done in {m.wall_seconds:.1f}s: {summary_of(m)}")

    def _ensure_ray(self) -> None:
        """Ray starts here, once per run, when the first stage executes (MLflow is imported meanwhile: the
        import is pure Python and Ray's start-up is mostly waiting for its processes)."""
        if self.workers is not None:
            return
        import importlib
        import threading

        threading.Thread(target=importlib.import_module, args=("mlflow.tracking",), daemon=True).start()
        self.workers = self.start_ray()

    def _failed(self, plan: StagePlan, plans: dict[str, StagePlan], work: Path, exc: BaseException) -> BaseException:
        """What a stage's failure becomes: Interrupted (the stage stays resumable, its run KILLED) or StageFailed
        with one line (the FAILED mark, the run FAILED). Recording is best effort: a full or read-only disk
        must not replace the stage's own error with another."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            status, msg, out = "KILLED", f"interrupted during {plan.name}", Interrupted(plan.name)
        else:
            msg = failure_line(exc, plan, plans)
            status, out = "FAILED", StageFailed(plan.name, msg) if isinstance(exc, Exception) else exc
            self.store.mark_failed(plan.name, plan.key, msg, work)
        try:
            self.lineage.fail_stage(plan, msg, status)
        except Exception:  # noqa: BLE001
            pass
        return out


def one_line(exc: BaseException) -> str:
    """An exception as one line; an OSError as `<path>: <reason>` (read-only filesystem, no space left...)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = ": ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        return f"{where}: {exc.strerror}" if where else exc.strerror
    return (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:500]


def failure_line(exc: BaseException, plan: StagePlan, plans: dict[str, StagePlan]) -> str:
    """One line for a stage failure. A read error (an OSError, a pyarrow error such as `ZSTD decompression
    failed`, a shard the reader rejects) checks the stage's input shards against their manifests: a damaged one
    is named, with the way out."""
    msg = one_line(exc)
    if not (isinstance(exc, (OSError, ContractError)) or type(exc).__module__.startswith("pyarrow")):
        return msg
    from pipelines.dataset import verify

    for real in sorted(set(plan.inputs.values())):
        up = plans[real]
        try:
            bad = verify(up.dir) if up.dir is not None else []
        except Exception:  # noqa: BLE001 - the input's manifest itself is unreadable: the original error stands
            bad = []
        if bad:
            return (f"{msg}; input {bad[0]}: run `zhgpt verify CONFIG`, then `zhgpt run CONFIG --force {real}`")
    return msg


def summary_of(m: Manifest) -> str:
    """The stage's one-line summary in words (StageResult.summary, kept in the manifest), or its rows."""
    said = m.extra.get("summary") if isinstance(m.extra, dict) else None
    if said:
        return str(said)
    return "; ".join(f"{n}: {o.rows:,} rows" for n, o in m.outputs.items() if not n.startswith("_"))


def check_only_inputs(cfg: RootBase, only: str | None, store: Store) -> None:
    """--only STAGE needs complete outputs of its inputs: checked before anything is recorded or started."""
    if only is None:
        return
    plans = plan_all(cfg, store)
    for up in sorted(set(input_stages(only, cfg.stage_names()).values())):
        if not plans[up].complete:
            raise SelectionError(f"--only {only}: input stage {up} has no complete output for the current config; "
                                 f"run `zhgpt run CONFIG --from {up}` first")


def index_outputs(stage_dir: Path, outputs: dict[str, Output], fan_out: Any) -> dict[str, Output]:
    """The `_index` output (see pipelines/index.py), built by the stage's own Ray tasks."""
    return {n: Output(kind="parquet", shards=s, schema=schema_of(stage_dir / s[0].path).to_string(
        show_schema_metadata=False)) for n, s in build_indexes(stage_dir, outputs, fan_out).items()}


def declared_outputs(spec: StageSpec, stage_dir: Path, result: Any) -> dict[str, Output]:
    """The stage's outputs as the manifest will list them, each shard checked against its declared schema."""
    kinds = {o.name: o for o in spec.outputs}
    missing = set(kinds) - set(result.outputs)
    if missing:
        raise ContractError(f"stage {spec.name} returned no shards for output(s) {sorted(missing)}")
    unknown = set(result.outputs) - set(kinds)
    if unknown:
        raise ContractError(f"stage {spec.name} returned undeclared output(s) {sorted(unknown)}")
    outputs = {}
    for name, shards in result.outputs.items():
        o = kinds[name]
        schemas = [_schema_of(stage_dir / s.path) for s in shards] if o.kind != "file" else []
        if o.schema is not None:
            for s, got in zip(shards, schemas):
                why = "not a Parquet/Arrow file" if got is None else conform_error(got, o.schema)
                if why:
                    raise ContractError(f"stage {spec.name} output {name}: {stage_dir / s.path}: {why}")
        text = schemas[0].to_string(show_schema_metadata=False) if schemas and schemas[0] is not None else None
        outputs[name] = Output(kind=o.kind, shards=shards, primary=o.primary, schema=text)
    return outputs


def _schema_of(path: Path) -> Any:
    try:
        return schema_of(path)
    except Exception:  # an opaque file with a misleading suffix: no schema to record
        return None
