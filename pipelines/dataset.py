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
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io import DOC_SCHEMA, ContractError, atomic_path, read_table, write_ipc  # noqa: F401 (re-exported)

MANIFEST = "manifest.json"
PARTIAL = ".partial"
FAILED = "FAILED"
CHUNK = 1 << 20


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
        """Describe a complete file at `rel` (one a writer here produced, or one a stage wrote itself)."""
        p = Path(stage_dir) / rel
        return cls(path=rel, rows=rows, bytes=p.stat().st_size, sha256=sha256_file(p))


def write_parquet(table: pa.Table, stage_dir: str | os.PathLike, rel: str, row_group_size: int | None = None
                  ) -> ShardInfo:
    """Write one Parquet shard (zstd) atomically and describe it. Deterministic bytes for equal tables."""
    with atomic_path(Path(stage_dir) / rel) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True, store_schema=True,
                       row_group_size=row_group_size)
    return ShardInfo.of(stage_dir, rel, table.num_rows)


def write_arrow(table: pa.Table, stage_dir: str | os.PathLike, rel: str, max_chunksize: int | None = None) -> ShardInfo:
    """Write one uncompressed Arrow IPC (Feather v2) shard atomically, so readers can memory-map it."""
    write_ipc(table, Path(stage_dir) / rel, max_chunksize)
    return ShardInfo.of(stage_dir, rel, table.num_rows)


def write_file(data: bytes, stage_dir: str | os.PathLike, rel: str, rows: int = 0) -> ShardInfo:
    """Write an opaque file shard (a model, a WARC file) atomically."""
    with atomic_path(Path(stage_dir) / rel) as tmp:
        tmp.write_bytes(data)
    return ShardInfo.of(stage_dir, rel, rows)


class ParquetRows:
    """Rows streamed to one Parquet shard in fixed-size row groups, so a task's memory does not grow with its row
    count (10k pages of text would otherwise sit in a list until the end). Same codec as write_parquet; renamed
    into place by `close()`, and byte-identical for identical rows (row groups are cut by count)."""

    def __init__(self, stage_dir: str | os.PathLike, rel: str, schema: pa.Schema, group_rows: int = 256):
        self.stage_dir, self.rel, self.schema, self.group_rows = stage_dir, rel, schema, group_rows
        self._file = ExitStack()  # holds the shard's atomic_path open; close() exits it, renaming the file into place
        tmp = self._file.enter_context(atomic_path(Path(stage_dir) / rel))
        self.writer = pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=True, store_schema=True)
        self.buf: list[dict] = []
        self.rows = 0

    def add(self, row: dict) -> None:
        self.buf.append(row)
        if len(self.buf) >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.buf:
            self.writer.write_table(table_of(self.buf, self.schema))
            self.rows += len(self.buf)
            self.buf = []

    def close(self) -> ShardInfo:
        self._flush()
        self.writer.close()
        self._file.close()
        return ShardInfo.of(self.stage_dir, self.rel, self.rows)


def table_of(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows in the order given as a table of `schema`; missing keys become nulls. Built column by column: 7 us a
    row for the crawl's 16-column docs rows, where Table.from_pylist took 105 us (the same table)."""
    return pa.table([pa.array([r.get(f.name) for r in rows], f.type) for f in schema], schema=schema)


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
        tables = [read_table(p, columns) for p in self.paths(output)]
        if not tables:
            raise ContractError(f"{self.dir}: output {output or self.manifest.primary!r} has no shards")
        return pa.concat_tables(tables, promote_options="default")  # shards of some sources have extra columns


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
    with atomic_path(Path(stage_dir) / MANIFEST) as tmp:
        tmp.write_text(manifest.to_json())


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
