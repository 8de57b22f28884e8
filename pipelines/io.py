"""The one place files are written and documents are read (every stage and the runner use it).

Writes are atomic: a file is written under a temporary name beside its final path and renamed into place when
complete, so a reader (or a resumed run) sees either the whole file or none of it. A writer killed mid-write
leaves only its `.NAME.tmp-PID` file, which `remove_temps` deletes before a stage runs again.

Reads go through `read_table` (Parquet or Arrow IPC, one shard) and `read_docs` / `iter_docs` (a documents shard:
the columns a reader asks for are checked against the dataset contract's types first, and a shard without them is
one line naming the shard and the missing columns).

    with atomic_path(out / "docs/part-00000.parquet") as tmp:
        pq.write_table(table, tmp)
    docs = read_docs(path, ["id", "text"])
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARK = ".tmp-"

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


class ContractError(ValueError):
    """A dataset does not satisfy the contract (missing manifest, bad shard, wrong schema): bad input, one line."""


def temp_path(final: str | os.PathLike) -> Path:
    """The temporary name a writer uses for `final` (hidden, and tagged with the writer's pid)."""
    final = Path(final)
    return final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}")


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `final` when the block completes, delete it if it raises."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        named = _named(exc, final)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _named(exc: OSError, final: Path) -> OSError:
    """An OSError that names the file: pyarrow's writers raise `Error writing bytes to file. Detail: [errno 28]
    No space left on device` without one; the console prints `<path>: No space left on device`."""
    if exc.filename is not None:
        return exc
    code = exc.errno or next((int(m) for m in re.findall(r"\[errno (\d+)\]", str(exc))), None)
    return OSError(code, os.strerror(code), str(final)) if code else exc


def write_ipc(table: pa.Table, path: str | os.PathLike, max_chunksize: int | None = None) -> None:
    """An uncompressed Arrow IPC file (Feather v2), atomically: readers memory-map it."""
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max_chunksize)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any, **kw) -> None:
    """Small state files (checkpointed progress, caches): JSON, atomically."""
    write_bytes(path, json.dumps(obj, ensure_ascii=False, **kw).encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def remove_temps(root: str | os.PathLike) -> int:
    """Delete writers' leftover temporary files under `root` (a killed task's `.NAME.tmp-PID`); return how many."""
    n = 0
    for p in Path(root).rglob(f".*{TMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """One Parquet or Arrow IPC shard. ParquetFile.read rather than pq.read_table: the latter imports pandas
    (~0.45 CPU-s in every fresh Ray worker)."""
    path = str(path)
    if path.endswith(".arrow"):
        with pa.memory_map(path) as src:
            t = pa.ipc.open_file(src).read_all()
        return t.select(columns) if columns else t
    with pq.ParquetFile(path) as f:
        return f.read(columns=columns)


def schema_of(path: str | os.PathLike) -> pa.Schema | None:
    """The schema of a Parquet or Arrow IPC shard; None for any other file."""
    path = str(path)
    if path.endswith(".parquet"):
        return pq.read_schema(path)
    if path.endswith(".arrow"):
        with pa.memory_map(path) as src:
            return pa.ipc.open_file(src).schema
    return None


def conform_error(schema: pa.Schema, required: pa.Schema) -> str:
    """"" when `schema` has every field of `required` with its type (a required type of null means any type);
    else what is wrong, in a few words."""
    missing = [f.name for f in required if f.name not in schema.names]
    if missing:
        return f"lacks column(s) {missing}"
    for f in required:
        got = schema.field(f.name).type
        if not pa.types.is_null(f.type) and got != f.type:
            return f"column {f.name!r} is {got}, expected {f.type}"
    return ""


def _check_docs(path: str | os.PathLike, columns: list[str] | None) -> None:
    """Raise ContractError unless the shard has `columns` (all of DOC_SCHEMA when None) with the contract's types;
    a column outside DOC_SCHEMA (one a stage added) may have any type."""
    try:
        schema = pq.read_schema(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise ContractError(f"{path}: not a readable Parquet documents shard ({exc})") from None
    if columns is None:
        required = DOC_SCHEMA
    else:
        required = pa.schema([DOC_SCHEMA.field(c) if c in DOC_SCHEMA.names else pa.field(c, pa.null())
                              for c in columns])
    why = conform_error(schema, required)
    if why:
        raise ContractError(f"{path}: documents shard {why}")


def read_docs(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """A documents shard (every column, or `columns`), checked against the dataset contract's DOC_SCHEMA."""
    _check_docs(path, columns)
    return read_table(path, columns)


def iter_docs(path: str | os.PathLike, columns: list[str], batch_rows: int = 1024) -> Iterator[pa.RecordBatch]:
    """A documents shard's columns in record batches (bounded memory). The schema is checked when this is called,
    not at the first batch: SentencePiece's trainer, which consumes the batches, would turn the error into its own
    "INTERNAL: ..." RuntimeError."""
    _check_docs(path, columns)
    return _batches(str(path), columns, batch_rows)


def _batches(path: str, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    with pq.ParquetFile(path) as f:
        yield from f.iter_batches(batch_size=batch_rows, columns=columns)
