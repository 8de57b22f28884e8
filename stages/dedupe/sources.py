"""Where dedupe's documents come from: the input shards, and `against:` sources (earlier dedupe outputs,
evaluation corpora as .jsonl/.parquet files). Each becomes a list of `Source`s read as (id, url, text) tables:
documents shards through the shared documents reader, evaluation files as the user wrote them.

Documents get a global id `gid = source index << 32 | row` (inputs first, then against sources), so every
task names a document the same way whatever the number of workers.

Run: through the stage; `against:` is tested by `.venv/bin/python -m pytest -q tests/stages/test_dedupe_stage.py`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipelines.dataset import ContractError, StageData, doc_id
from pipelines.io import read_docs, read_table, schema_of

ROW_BITS = 32


@dataclass(frozen=True)
class Source:
    path: str
    against: bool = False
    name: str = ""  # the against entry it came from (for per-source counts)
    text_column: str = "text"
    docs: bool = True  # a documents shard (input, or an earlier dedupe output); False: a user's evaluation file


def gid_source(gids):
    return gids >> ROW_BITS


def gid_row(gids):
    return gids & ((1 << ROW_BITS) - 1)


def input_sources(data: StageData) -> list[Source]:
    return [Source(str(p)) for p in data.paths("docs")]


def against_sources(paths: list[Path], text_column: str) -> list[Source]:
    out = []
    for p in paths:
        if p.is_dir():
            out += [Source(str(s), True, p.name) for s in StageData.open(p).paths()]
        else:
            out.append(Source(str(p), True, p.name, text_column, docs=False))
    return out


def check_source(src: Source) -> None:
    """Fail early, in one line, when an against file lacks its text column (before any task runs)."""
    if src.docs:
        return
    if src.path.endswith(".jsonl"):
        with open(src.path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), None)
        try:
            cols = list(json.loads(first)) if first else [src.text_column]
        except json.JSONDecodeError as exc:
            raise ContractError(f"{src.path}: first line is not valid JSON ({exc.msg})") from exc
    else:
        import pyarrow.parquet as pq

        cols = pq.read_schema(src.path).names
    if src.text_column not in cols:
        raise ContractError(f"{src.path}: no {src.text_column!r} column (has {', '.join(cols)}); "
                            f"set dedupe.against_text_column")


def read_source(src: Source, columns: list[str] | None = None) -> pa.Table:
    """(id, url, text, source_id) of a source, in row order; eval corpora without id/url get them from file and
    line. `source_id` (a files source's own record id, see stages/crawl) is null where the documents have none."""
    if src.docs:
        table = read_docs(src.path, ["id", "url", "text"] + (["source_id"] if has_source_id(src.path) else []))
    elif src.path.endswith(".jsonl"):
        rows = _read_jsonl(Path(src.path))
        table = pa.Table.from_pylist(rows) if rows else pa.table({src.text_column: pa.array([], pa.string())})
    else:
        table = read_table(src.path)
    if src.text_column not in table.column_names:
        raise ContractError(f"{src.path}: no {src.text_column!r} column (has {', '.join(table.column_names)}); "
                            f"set dedupe.against_text_column")
    texts = table.column(src.text_column).cast(pa.string())
    texts = texts.fill_null("") if texts.null_count else texts  # fill_null("") imports pandas (pa.scalar)
    n = table.num_rows
    urls = (table.column("url").cast(pa.string()) if "url" in table.column_names
            else pa.array([f"file:{Path(src.path).name}:{i + 1}" for i in range(n)]))
    if "id" in table.column_names:
        ids = table.column("id").cast(pa.string())
    else:
        ids = pa.array([doc_id(u, t) for u, t in zip(urls.to_pylist(), texts.to_pylist())])
    sids = table.column("source_id").cast(pa.string()) if src.docs and "source_id" in table.column_names \
        else pa.nulls(n, pa.string())
    out = pa.table({"id": ids, "url": urls, "text": texts, "source_id": sids})
    return out.select(columns) if columns else out


def has_source_id(path: str) -> bool:
    """Whether a documents shard carries the `source_id` column (only the files source's `id_field` adds it)."""
    return "source_id" in schema_of(path).names


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ContractError(f"{path}:{i}: not valid JSON ({exc.msg})") from exc
    return rows
