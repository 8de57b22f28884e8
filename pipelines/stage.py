"""What a stage is, to the runner: a spec (name, inputs, config model, outputs, run function) and a context.

A stage package `stages/<name>/__init__.py` exposes `SPEC = StageSpec(...)`. Importing it must be cheap:
heavy libraries are imported inside `run`. Stages never import each other; they import `pipelines.dataset`
and `pipelines.stage` only.

    def run(ctx: StageContext) -> StageResult:
        shards = ctx.upstream["clean"].paths("docs")
        infos = ctx.map(clean_shard, [(str(p), i, ctx.cfg, str(ctx.out_dir)) for i, p in enumerate(shards)])
        return StageResult(outputs={"docs": [...], "rejects": [...]}, stats={...})
"""
from __future__ import annotations

import importlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict

from pipelines.dataset import PARTIAL, ShardInfo, StageData

# Stages shipped with zhgpt, in pipeline order. A missing package is simply not offered.
BUILTIN = ["crawl", "clean", "dedupe", "tokenizer", "tokenize", "train"]


class StageConfig(BaseModel):
    """Base for every stage's config: unknown keys are errors; EXEC_FIELDS stay out of the cache key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    EXEC_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def key_dict(self) -> dict[str, Any]:
        """The part of the config that shapes the output (what the cache key hashes)."""
        return self.model_dump(mode="json", exclude=set(self.EXEC_FIELDS))


@dataclass
class OutputSpec:
    name: str
    kind: str  # "parquet" | "arrow" | "file"
    primary: bool = False


@dataclass
class StageSpec:
    name: str
    inputs: list[str]  # upstream stage names
    config_model: type[StageConfig]
    outputs: list[OutputSpec]
    run: Callable[["StageContext"], "StageResult"]
    # Modules whose source is hashed into the code version (default: the stage's own package).
    code_modules: list[str] = field(default_factory=list)
    # Distributions whose versions shape the output (e.g. "sentencepiece").
    libraries: list[str] = field(default_factory=list)
    # Optional: a digest of external inputs named in the config (local files), part of the cache key.
    fingerprint: Callable[[Any], str] | None = None
    headline: list[str] = field(default_factory=list)  # stats copied into the parent run as <stage>.<stat>


@dataclass
class StageResult:
    outputs: dict[str, list[ShardInfo]]
    stats: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # facts for the manifest (not metrics)
    artifacts: list[str] = field(default_factory=list)  # paths (relative to out_dir) logged to MLflow


class Progress:
    """Progress sink; the runner passes a rich bar on a TTY and plain log lines otherwise."""

    def start(self, stage: str, total: int) -> None: ...
    def advance(self, stage: str, done: int, rows: int) -> None: ...
    def finish(self, stage: str) -> None: ...
    def log(self, msg: str) -> None:
        print(msg, flush=True)


@dataclass
class StageContext:
    name: str
    cfg: Any  # the stage's StageConfig
    out_dir: Path  # <work_dir>/<stage>/<key16>
    upstream: dict[str, StageData]
    work_dir: Path
    workers: int  # max concurrent Ray tasks
    tracking_uri: str
    mlflow_run_id: str | None
    root_cfg: Any = None
    progress: Progress = field(default_factory=Progress)
    cache_key: str = ""
    fresh: bool = False  # `zhgpt run --fresh`: a stage with resumable state starts over instead of refusing
    store: Any = None  # pipelines.storage.Store: where durable state goes (Ray Train checkpoints); None = out_dir

    @property
    def partial_dir(self) -> Path:
        p = self.out_dir / PARTIAL
        p.mkdir(parents=True, exist_ok=True)
        return p

    def log(self, msg: str) -> None:
        self.progress.log(f"[{self.name}] {msg}")

    def map(self, fn: Callable, items: Sequence[Any], *, num_cpus: float = 1, rows_of: Callable[[Any], int] | None = None,
            max_retries: int = 3) -> list[Any]:
        """Run fn(*item) as one Ray task per item, at most `workers` at once; results in item order.

        Tasks are retried on worker death (max_retries). Output must not depend on the number of workers.
        """
        import ray

        remote = ray.remote(fn).options(num_cpus=num_cpus, max_retries=max_retries)
        items = list(items)
        results: list[Any] = [None] * len(items)
        pending: dict[Any, int] = {}
        nxt = done = rows = 0
        self.progress.start(self.name, len(items))
        while done < len(items):
            while nxt < len(items) and len(pending) < max(1, self.workers):
                args = items[nxt] if isinstance(items[nxt], tuple) else (items[nxt],)
                pending[remote.remote(*args)] = nxt
                nxt += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the task's own error, not Ray's wrapper
                    cause = exc.cause if isinstance(exc.cause, Exception) else exc
                    raise cause from None
                done += 1
                rows += rows_of(results[i]) if rows_of else 0
                self.progress.advance(self.name, done, rows)
                _fault_point(self.name, done)
        self.progress.finish(self.name)
        return results


def _fault_point(stage: str, done: int) -> None:
    """Test hook: ZHGPT_FAULT_KILL=<stage>:<n> SIGKILLs this process once n tasks of <stage> are done."""
    spec = os.environ.get("ZHGPT_FAULT_KILL", "")
    if spec and spec == f"{stage}:{done}":
        print(f"ZHGPT_FAULT_KILL: killing the driver after {done} task(s) of {stage}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


_REGISTRY: dict[str, StageSpec] = {}


def register(spec: StageSpec) -> StageSpec:
    """Register a stage (built-ins register on import; plugins and tests call this too)."""
    _REGISTRY[spec.name] = spec
    return spec


def load_builtin() -> None:
    for name in BUILTIN:
        if name in _REGISTRY:
            continue
        try:
            mod = importlib.import_module(f"stages.{name}")
        except ModuleNotFoundError as exc:
            if exc.name in (f"stages.{name}",):
                continue
            raise
        if getattr(mod, "SPEC", None) is not None:  # a package still without a SPEC offers no stage
            register(mod.SPEC)


def load_plugins(modules: list[str]) -> None:
    for m in modules:
        importlib.import_module(m)  # the module calls register()


def registry() -> dict[str, StageSpec]:
    load_builtin()
    return _REGISTRY


def ordered(names: list[str]) -> list[str]:
    """Topological order of the given stages; built-ins first in pipeline order, then plugins by name."""
    reg = registry()
    order: list[str] = []
    rank = {n: i for i, n in enumerate(BUILTIN)}

    def visit(n: str, path: tuple[str, ...]) -> None:
        if n in order:
            return
        if n in path:
            raise ValueError(f"stage cycle: {' -> '.join(path + (n,))}")
        for up in reg[n].inputs:
            if up in names:
                visit(up, path + (n,))
        order.append(n)

    for n in sorted(names, key=lambda n: (rank.get(n, len(BUILTIN)), n)):
        visit(n, ())
    return order


def stage_dir_of(work_dir: Path, stage: str, key: str) -> Path:
    return Path(work_dir) / stage / key[:16]
