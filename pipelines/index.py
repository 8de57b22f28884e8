"""Per-stage lookup indexes, written by the runner beside every stage's outputs (so `zhgpt trace` never scans
the corpus). Two small Parquet files, sorted, with small row groups so a lookup reads one group:

    _index/by_id.parquet   id, output, shard, row, url        sorted by id
    _index/by_url.parquet  url_hash, url, output, shard, row, id   sorted by url_hash (sha256(url)[:16])

Every Parquet output with an `id` (or `doc_id`) or `url` column is indexed. Only those columns are read.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.dataset import Output, ShardInfo, write_parquet

ROW_GROUP = 4096
ID_COLUMNS = ("id", "doc_id")
BY_ID = pa.schema([("id", pa.string()), ("output", pa.string()), ("shard", pa.int32()), ("row", pa.int64()),
                   ("url", pa.string())])
BY_URL = pa.schema([("url_hash", pa.string()), ("url", pa.string()), ("output", pa.string()), ("shard", pa.int32()),
                    ("row", pa.int64()), ("id", pa.string())])


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _entries(stage_dir: Path, name: str, out: Output) -> pa.Table | None:
    tables = []
    for si, shard in enumerate(out.shards):
        path = stage_dir / shard.path
        if not shard.path.endswith(".parquet"):
            return None
        names = pq.read_schema(path).names
        idc = next((c for c in ID_COLUMNS if c in names), None)
        if idc is None and "url" not in names:
            return None
        t = pq.read_table(path, columns=[c for c in (idc, "url") if c])
        n = t.num_rows
        tables.append(pa.table({
            "id": t.column(idc).cast(pa.string()) if idc else pa.nulls(n, pa.string()),
            "output": pa.array([name] * n, pa.string()), "shard": pa.array([si] * n, pa.int32()),
            "row": pa.array(range(n), pa.int64()),
            "url": t.column("url").cast(pa.string()) if "url" in names else pa.nulls(n, pa.string())}))
    return pa.concat_tables(tables) if tables else None


def build_indexes(stage_dir: Path, outputs: dict[str, Output]) -> dict[str, list[ShardInfo]]:
    """Index every indexable output; returns {"_index": [by_id, by_url]} (empty when nothing is indexable)."""
    parts = [t for name, out in sorted(outputs.items()) if (t := _entries(stage_dir, name, out)) is not None]
    if not parts:
        return {}
    allrows = pa.concat_tables(parts)
    with_id = allrows.filter(pc.is_valid(allrows.column("id")))
    by_id = with_id.sort_by([("id", "ascending"), ("output", "ascending"), ("shard", "ascending"),
                             ("row", "ascending")]).select(BY_ID.names).cast(BY_ID)
    with_url = allrows.filter(pc.is_valid(allrows.column("url")))
    hashes = pa.array([url_hash(u) for u in with_url.column("url").to_pylist()], pa.string())
    by_url = with_url.append_column("url_hash", hashes).sort_by(
        [("url_hash", "ascending"), ("output", "ascending"), ("shard", "ascending"), ("row", "ascending")]
    ).select(BY_URL.names).cast(BY_URL)
    return {"_index": [_write(by_id, stage_dir, "_index/by_id.parquet"),
                       _write(by_url, stage_dir, "_index/by_url.parquet")]}


def _write(t: pa.Table, stage_dir: Path, rel: str) -> ShardInfo:
    return write_parquet(t.combine_chunks(), stage_dir, rel, row_group_size=ROW_GROUP)


def lookup(index_path: Path, column: str, value: str) -> pa.Table:
    """Rows of a sorted index whose `column` equals value; row-group statistics skip all other groups.

    Files are opened with Python's open() (not pyarrow's own), so audit hooks see exactly what a lookup reads."""
    with open(index_path, "rb") as fh:
        f = pq.ParquetFile(fh)
        ci = f.schema_arrow.get_field_index(column)
        hits = []
        for g in range(f.num_row_groups):
            st = f.metadata.row_group(g).column(ci).statistics
            if st is not None and st.has_min_max and not (st.min <= value <= st.max):
                continue
            t = f.read_row_group(g)
            hits.append(t.filter(pc.equal(t.column(column), value)))
        return pa.concat_tables(hits) if hits else f.schema_arrow.empty_table()
