"""What a stage is, to the runner: a spec (name, inputs, config model, outputs, run function) and a context.

Every stage package has the same shape: `stages/<name>/__init__.py` holds `SPEC = StageSpec(...)` only;
`config.py` the typed config (pydantic only, cheap to import); `stage.py` the `run(ctx)` entry point (the Ray
fan-out); everything else pure modules. The spec names its run function by import string, so importing a stage
package costs only its config, and the code version hashes exactly that package (plus the shared layer).
Stages never import each other; they import the shared layer (`pipelines.dataset`, `.io`, `.text`, `.stats`,
`.stage`, `.faults`) only.

    # stages/clean/stage.py
    def run(ctx: StageContext) -> StageResult:
        shards = ctx.upstream["crawl"].paths("docs")
        infos = ctx.map(clean_shard, [(i, str(p), ctx.cfg, str(ctx.out_dir)) for i, p in enumerate(shards)])
        return StageResult(outputs={"docs": [...], "rejects": [...]}, stats={...})
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterable, Iterator, Sequence

from pydantic import AfterValidator, BaseModel, ConfigDict, FilePath

from pipelines.dataset import MANIFEST, PARTIAL, ShardInfo, StageData, sha256_file
from pipelines.faults import fault_point

# Stages shipped with zhgpt, in pipeline order. A missing package is simply not offered.
BUILTIN = ["crawl", "clean", "dedupe", "quality", "tokenizer", "tokenize", "train"]


class StageConfig(BaseModel):
    """Base for every stage's config: unknown keys are errors; EXEC_FIELDS stay out of the cache key. A config may
    define `check_root(root)`: checks that need other stages' sections (pipelines.config calls it at load time;
    a ValueError is the config error)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    EXEC_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def key_dict(self) -> dict[str, Any]:
        """The part of the config that shapes the output (what the cache key hashes). An EXEC_FIELDS entry names
        a field, or a field of a section as "section.field"."""
        exclude: dict[str, Any] = {}
        for name in self.EXEC_FIELDS:
            *sections, leaf = name.split(".")
            node = exclude
            for sec in sections:
                node = node.setdefault(sec, {})
            node[leaf] = True
        return self.model_dump(mode="json", exclude=exclude)

    def external_digest(self) -> str:
        """A digest of the content of every external file the config names (`ExternalFile` / `ExternalPath`
        fields, at any depth): part of the cache key, so a changed file re-runs the stage though no field did."""
        h = hashlib.sha256()
        for where, path in sorted(_external_paths(self, "")):
            h.update(f"{where}\0{content_digest(path)}\n".encode())
        return h.hexdigest()


class HashedPath(type(Path())):  # type: ignore[misc]  # a concrete Path subclass (PosixPath here)
    """A path whose content joins the stage's cache key (see StageConfig.external_digest)."""


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes; for a directory, of its manifest.json (a stage output) or meta.json (a training
    checkpoint: its weights may be GBs, and meta.json names the step and run), else of every file in it."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    for marker in (MANIFEST, "meta.json"):
        if (path / marker).is_file():
            return sha256_file(path / marker)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _external_paths(value: Any, where: str) -> Iterator[tuple[str, Path]]:
    if isinstance(value, HashedPath):
        yield where, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _external_paths(getattr(value, name), f"{where}.{name}" if where else name)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _external_paths(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _external_paths(v, f"{where}.{i}")


# Config field types for files outside the pipeline: their content (not their path) is part of the cache key.
def _hashed(p: Path) -> HashedPath:
    return HashedPath(p)


ExternalFile = Annotated[FilePath, AfterValidator(_hashed)]  # an existing file
ExternalPath = Annotated[Path, AfterValidator(_hashed)]  # a file or a directory: the config checks what it needs


@dataclass
class OutputSpec:
    name: str
    kind: str  # "parquet" | "arrow" | "file"
    primary: bool = False
    # Columns every shard must have (a field typed pa.null() may have any type); checked by the runner before
    # the manifest is published, so a stage cannot complete with an output its readers would reject.
    schema: Any = None  # pyarrow.Schema | None


@dataclass
class StageSpec:
    name: str
    inputs: list[str]  # upstream stage names
    config_model: type[StageConfig]
    outputs: list[OutputSpec]
    run: str  # "package.module:function", imported only when the stage runs
    # Modules whose source is hashed into the code version (default: the package holding the run module).
    code_modules: list[str] = field(default_factory=list)
    # Distributions whose versions shape the output (e.g. "sentencepiece").
    libraries: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)  # stats copied into the parent run as <stage>.<stat>
    # "package.module:function" adding the stage's own commands to the CLI: function(app: typer.Typer)
    commands: str | None = None
    # An optional stage in a chain (a filter): when its section is present, every other stage that names
    # `stands_in_for` among its inputs reads this stage instead, under the name it declared. quality stands in
    # for dedupe, so tokenizer and tokenize read quality's `docs` (as ctx.upstream["dedupe"]) when the config has
    # a `quality:` section, and dedupe's otherwise. Its outputs must include what those stages read.
    stands_in_for: str | None = None

    def run_fn(self) -> Callable[["StageContext"], "StageResult"]:
        return load_object(self.run)

    def package(self) -> str:
        """The package whose source is the stage's code: the run module's parent package."""
        module = self.run.split(":", 1)[0]
        return module.rsplit(".", 1)[0] if "." in module else module


def load_object(ref: str) -> Any:
    """The object named by "package.module:attribute"."""
    module, _, attr = ref.partition(":")
    if not attr:
        raise ValueError(f"{ref!r} is not an import string of the form 'package.module:function'")
    return getattr(importlib.import_module(module), attr)


@dataclass
class StageResult:
    outputs: dict[str, list[ShardInfo]]
    stats: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # facts for the manifest (not metrics)
    artifacts: list[str] = field(default_factory=list)  # paths (relative to out_dir) logged to MLflow
    # What the stage did, in words, on one line (`clean: kept 477 of 1,082 (rejected: min_cjk_ratio 297, ...)`
    # without the stage name): printed when it ends and in the run's summary table, kept in manifest.extra.
    # A stage may also put it in extra["summary"]; without either the console shows its outputs' rows.
    summary: str = ""


class Progress:
    """Progress sink; the runner passes a rich bar on a TTY and plain log lines otherwise."""

    def start(self, stage: str, total: int) -> None: ...
    def advance(self, stage: str, done: int, rows: int, nbytes: int = 0) -> None: ...
    def finish(self, stage: str) -> None: ...
    def log(self, msg: str) -> None:
        print(msg, flush=True)


@dataclass
class StageContext:
    name: str
    cfg: Any  # the stage's StageConfig
    out_dir: Path  # <work_dir>/<stage>/<key16>
    upstream: dict[str, StageData]  # keyed by the inputs the spec declares (a stand-in's data under its target's name)
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

    def map(self, fn: Callable, items: Sequence[Any], *, num_cpus: float = 1,
            rows_of: Callable[[Any], int] | None = None, max_retries: int = 3) -> list[Any]:
        """Run fn(*item) as one Ray task per item, at most `workers` at once; results in item order.

        Tasks are retried on worker death (max_retries). Output must not depend on the number of workers.
        """
        import ray

        remote = ray.remote(fn).options(num_cpus=num_cpus, max_retries=max_retries)
        items = list(items)
        results: list[Any] = [None] * len(items)
        pending: dict[Any, int] = {}
        nxt = done = rows = nbytes = 0
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
                except ray.exceptions.RayTaskError as exc:
                    raise task_error(exc) from None
                done += 1
                r, b = shard_sizes(results[i])
                rows, nbytes = rows + (rows_of(results[i]) if rows_of else r), nbytes + b
                self.progress.advance(self.name, done, rows, nbytes)
                fault_point(f"{self.name}.tasks", done)
        self.progress.finish(self.name)
        return results


def shard_sizes(result: Any) -> tuple[int, int]:
    """(rows, bytes) of the shards a task returned (a ShardInfo, or a dict / list / tuple holding some)."""
    if isinstance(result, ShardInfo):
        return result.rows, result.bytes
    parts = result.values() if isinstance(result, dict) else result if isinstance(result, (list, tuple)) else []
    sizes = [shard_sizes(p) for p in parts]
    return sum(r for r, _ in sizes), sum(b for _, b in sizes)


def task_error(exc: BaseException) -> BaseException:
    """The exception a Ray task (or Ray Train worker) raised, not Ray's wrapper, whose first line names the task
    instead of the reason. Anything else is returned as it is."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


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


def input_stages(name: str, present: Iterable[str]) -> dict[str, str]:
    """{input as stage `name` declares it: the stage that provides it in a config whose stages are `present`}.

    A declared input is replaced by the present stage standing in for it (StageSpec.stands_in_for), and that
    one by its own stand-in, and so on: the nearest stage of the chain present in the config. A stand-in never
    stands in for its own inputs. Two present stages standing in for the same stage are an error."""
    reg, present = registry(), set(present)
    subs: dict[str, str] = {}
    for n in sorted(present):
        target = reg[n].stands_in_for if n in reg else None
        if target is not None:
            if target in subs:
                raise ValueError(f"stages {subs[target]} and {n} both stand in for {target}: keep one of them")
            subs[target] = n
    out = {}
    for up in reg[name].inputs:
        real, seen = up, {name}
        while real in subs and subs[real] not in seen:
            seen.add(real)
            real = subs[real]
        out[up] = real
    return out


def ordered(names: list[str]) -> list[str]:
    """Topological order of the given stages; built-ins first in pipeline order, then plugins by name."""
    order: list[str] = []
    rank = {n: i for i, n in enumerate(BUILTIN)}

    def visit(n: str, path: tuple[str, ...]) -> None:
        if n in order:
            return
        if n in path:
            raise ValueError(f"stage cycle: {' -> '.join(path + (n,))}")
        for up in input_stages(n, names).values():
            if up in names:
                visit(up, path + (n,))
        order.append(n)

    for n in sorted(names, key=lambda n: (rank.get(n, len(BUILTIN)), n)):
        visit(n, ())
    return order


def stage_dir_of(work_dir: Path, stage: str, key: str) -> Path:
    return Path(work_dir) / stage / key[:16]
