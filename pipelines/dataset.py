"""The dataset contract: the one interface between stages (see shared architecture.md).

A stage's output directory `<work_dir>/<stage>/<cache_key[:16]>/` holds named outputs, each a list of shards.
`manifest.json` is written last; its presence means the stage is complete. Work in progress lives in `.partial/`.

Everything here is importable from Ray workers: shard writers return `ShardInfo`s that the runner
gathers into the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
PARTIAL = ".partial"
FAILED = "FAILED"
CHUNK = 1 << 20

# Every documents table carries at least these columns (stages add columns, never drop them).
DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source_name", pa.string()),
        ("url", pa.string()),
        ("source", pa.string()),  # "warc:<file>@<offset>" or "file:<path>:<line>"
        ("fetched_at", pa.string()),  # ISO 8601 UTC
        ("title", pa.string()),
        ("text", pa.string()),
    ]
)


class ContractError(RuntimeError):
    """A dataset does not satisfy the contract (missing manifest, bad shard, wrong schema)."""


def doc_id(locator: str, text: str) -> str:
    """The stable document id: a hash of the source locator (URL, or file + line) and the content.

    32 hex characters (128 bits) keep collisions out of reach at 10^12 documents.
    """
    h = hashlib.sha256()
    h.update(locator.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_of(shard_digests: list[str]) -> str:
    """An output's digest: sha256 over its ordered shard digests."""
    return hashlib.sha256("\n".join(shard_digests).encode()).hexdigest()


@dataclass
class ShardInfo:
    path: str  # relative to the stage directory
    rows: int
    bytes: int
    sha256: str

    @classmethod
    def of(cls, stage_dir: str | os.PathLike, rel: str, rows: int) -> "ShardInfo":
        p = Path(stage_dir) / rel
        return cls(path=rel, rows=rows, bytes=p.stat().st_size, sha256=sha256_file(p))


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_parquet(table: pa.Table, stage_dir: str | os.PathLike, rel: str, row_group_size: int | None = None
                  ) -> ShardInfo:
    """Write one Parquet shard (zstd) atomically and describe it. Deterministic bytes for equal tables."""
    final = Path(stage_dir) / rel
    tmp = _atomic_target(final)
    pq.write_table(table, tmp, compression="zstd", write_statistics=True, store_schema=True,
                   row_group_size=row_group_size)
    os.replace(tmp, final)
    return ShardInfo.of(stage_dir, rel, table.num_rows)


def write_arrow(table: pa.Table, stage_dir: str | os.PathLike, rel: str, max_chunksize: int | None = None) -> ShardInfo:
    """Write one uncompressed Arrow IPC (Feather v2) shard atomically, so readers can memory-map it."""
    final = Path(stage_dir) / rel
    tmp = _atomic_target(final)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max_chunksize)
    os.replace(tmp, final)
    return ShardInfo.of(stage_dir, rel, table.num_rows)


def write_file(data: bytes, stage_dir: str | os.PathLike, rel: str, rows: int = 0) -> ShardInfo:
    """Write an opaque file shard (a model, a WARC file) atomically."""
    final = Path(stage_dir) / rel
    tmp = _atomic_target(final)
    tmp.write_bytes(data)
    os.replace(tmp, final)
    return ShardInfo.of(stage_dir, rel, rows)


def adopt_file(stage_dir: str | os.PathLike, rel: str, rows: int = 0) -> ShardInfo:
    """Describe a file a stage wrote itself (it must already be complete at `rel`)."""
    return ShardInfo.of(stage_dir, rel, rows)


@dataclass
class Output:
    kind: str  # "parquet" | "arrow" | "file"
    shards: list[ShardInfo]
    primary: bool = False
    schema: str | None = None
    digest: str = ""
    rows: int = 0
    bytes: int = 0

    def __post_init__(self) -> None:
        self.shards = [s if isinstance(s, ShardInfo) else ShardInfo(**s) for s in self.shards]
        self.digest = digest_of([s.sha256 for s in self.shards])
        self.rows = sum(s.rows for s in self.shards)
        self.bytes = sum(s.bytes for s in self.shards)


@dataclass
class Manifest:
    stage: str
    cache_key: str
    outputs: dict[str, Output]
    config: dict[str, Any]
    upstream: dict[str, dict[str, str]]  # stage -> output name -> digest
    code_version: str
    stats: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    mlflow_run_id: str | None = None
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # stage facts (e.g. special token ids)

    @property
    def primary(self) -> str:
        return next(name for name, o in self.outputs.items() if o.primary)

    @property
    def digests(self) -> dict[str, str]:
        return {name: o.digest for name, o in self.outputs.items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        d = dict(d)
        d["outputs"] = {k: Output(**v) for k, v in d["outputs"].items()}
        return cls(**d)


class StageData:
    """A complete stage output as seen by a downstream stage (or by status/verify/trace)."""

    def __init__(self, stage_dir: str | os.PathLike, manifest: Manifest):
        self.dir = Path(stage_dir)
        self.manifest = manifest

    @classmethod
    def open(cls, stage_dir: str | os.PathLike) -> "StageData":
        m = read_manifest(stage_dir)
        if m is None:
            raise ContractError(f"{stage_dir}: no {MANIFEST}; the stage is not complete")
        return cls(stage_dir, m)

    def paths(self, output: str | None = None) -> list[Path]:
        """Absolute paths of an output's shards, in manifest order (the primary output by default)."""
        name = output or self.manifest.primary
        if name not in self.manifest.outputs:
            raise ContractError(f"{self.dir}: stage {self.manifest.stage} has no output {name!r}")
        return [self.dir / s.path for s in self.manifest.outputs[name].shards]

    def read_table(self, output: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """The whole output as one table (small outputs only; stages read shard by shard)."""
        tables = [read_shard(p, columns) for p in self.paths(output)]
        if not tables:
            raise ContractError(f"{self.dir}: output {output or self.manifest.primary!r} has no shards")
        return pa.concat_tables(tables)


def read_shard(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    path = str(path)
    if path.endswith(".arrow"):
        with pa.memory_map(path) as src:
            t = pa.ipc.open_file(src).read_all()
        return t.select(columns) if columns else t
    return pq.read_table(path, columns=columns)


def read_manifest(stage_dir: str | os.PathLike) -> Manifest | None:
    p = Path(stage_dir) / MANIFEST
    if not p.exists():
        return None
    try:
        return Manifest.from_dict(json.loads(p.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ContractError(f"{p}: unreadable manifest ({exc})") from exc


def write_manifest(stage_dir: str | os.PathLike, manifest: Manifest) -> None:
    """Write the manifest last and atomically: from now on the stage is complete."""
    final = Path(stage_dir) / MANIFEST
    tmp = _atomic_target(final)
    tmp.write_text(manifest.to_json())
    os.replace(tmp, final)


def verify(stage_dir: str | os.PathLike) -> list[str]:
    """Re-hash every shard against the manifest; return one problem line per bad shard."""
    data = StageData.open(stage_dir)
    problems = []
    for name, out in data.manifest.outputs.items():
        for s in out.shards:
            p = data.dir / s.path
            if not p.exists():
                problems.append(f"{p}: missing (output {name})")
            elif (got := sha256_file(p)) != s.sha256:
                problems.append(f"{p}: sha256 {got[:16]}… != manifest {s.sha256[:16]}… (output {name})")
    return problems
