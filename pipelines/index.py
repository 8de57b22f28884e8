"""Per-stage lookup indexes, written by the runner beside every stage's outputs (so `zhgpt trace` never scans
the corpus). Two indexes, each range-partitioned into sorted Parquet files with small row groups, so a lookup
opens one file and reads one group:

    _index/by_id/from-XXXXXX.parquet   id, output, shard, row, url             sorted by id
    _index/by_url/from-XXXXXX.parquet  url_hash, url, output, shard, row, id   sorted by url_hash (sha256(url)[:16])

File `from-B` holds the keys from B (inclusive) to the next file's bound; the first file also holds anything below
it. Bounds split the hex key space evenly (zhgpt's ids and url hashes are hex hashes); other keys still land in
exactly one file, only less evenly. The number of files follows the rows indexed (ROWS_PER_PART each on average),
never the number of workers, so the index bytes are the same whatever runs them.

Built by Ray tasks, so no process holds more than a partition (measured at 10^6 documents: the driver-side build
held the whole id/url columns, 0.5 -> 1.2 GB driver RSS from 10^5 to 10^6, 3-4.5 s per stage on one core):
    runs    one task per group of output shards: read their id/url columns, sort by key, and write one Arrow file
            per index to .partial/index/ with the offsets where each partition starts (schema metadata);
    parts   one task per partition: its slice of every run (memory-mapped), sorted, written as one Parquet file.
Every Parquet output with an `id` (or `doc_id`) or `url` column is indexed. Only those columns are read.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.dataset import Output, ShardInfo, write_parquet
from pipelines.io import atomic_path

ROW_GROUP = 4096
# Rows per partition (and at most per run task, whole shards): ~40 MB of index rows in a task, small beside a
# worker's ~450 MB baseline, so worker memory stays flat as the corpus grows.
ROWS_PER_PART = 1 << 18
BOUND_DIGITS = 6  # hex digits of a partition bound: up to 16.7M partitions
ID_COLUMNS = ("id", "doc_id")
BY_ID = pa.schema([("id", pa.string()), ("output", pa.string()), ("shard", pa.int32()), ("row", pa.int64()),
                   ("url", pa.string())])
BY_URL = pa.schema([("url_hash", pa.string()), ("url", pa.string()), ("output", pa.string()), ("shard", pa.int32()),
                    ("row", pa.int64()), ("id", pa.string())])
INDEXES = {"by_id": (BY_ID, "id"), "by_url": (BY_URL, "url_hash")}
RUNS = ".partial/index"


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def bounds(parts: int) -> list[str]:
    """Lower key bound of each partition (the first is also the catch-all for keys below it)."""
    return [f"{p * 16 ** BOUND_DIGITS // parts:0{BOUND_DIGITS}x}" for p in range(parts)]


def _entries(stage_dir: Path, name: str, si: int, rel: str) -> pa.Table | None:
    """(id, output, shard, row, url) of one shard; None when it has neither an id nor a url column."""
    path = stage_dir / rel
    names = pq.read_schema(path).names
    idc = next((c for c in ID_COLUMNS if c in names), None)
    if idc is None and "url" not in names:
        return None
    t = pq.read_table(path, columns=[c for c in (idc, "url") if c in names])
    n = t.num_rows
    return pa.table({
        "id": t.column(idc).cast(pa.string()) if idc else pa.nulls(n, pa.string()),
        "output": pa.array([name] * n, pa.string()), "shard": pa.array([si] * n, pa.int32()),
        "row": pa.array(range(n), pa.int64()),
        "url": t.column("url").cast(pa.string()) if "url" in names else pa.nulls(n, pa.string())})


def _sorted(t: pa.Table, kind: str) -> pa.Table:
    schema, key = INDEXES[kind]
    return t.sort_by([(key, "ascending"), ("output", "ascending"), ("shard", "ascending"),
                      ("row", "ascending")]).select(schema.names).cast(schema)


def index_runs(k: int, stage_dir: str, shards: list[tuple[str, int, str]], parts: int) -> list[str]:
    """Ray task: one sorted run per index for a group of shards, cut at the partition bounds; returns the outputs
    that cannot be indexed (a shard with neither id nor url: the whole output is left out, as before)."""
    tables, skip = [], []
    for name, si, rel in shards:
        t = _entries(Path(stage_dir), name, si, rel)
        if t is None:
            skip.append(name)
        else:
            tables.append(t)
    rows = pa.concat_tables(tables) if tables else BY_ID.empty_table()  # BY_ID's columns are _entries' columns
    with_id = rows.filter(pc.is_valid(rows.column("id")))
    with_url = rows.filter(pc.is_valid(rows.column("url")))
    hashes = pa.array([url_hash(u) for u in with_url.column("url").to_pylist()], pa.string())
    los = bounds(parts)
    for kind, t in (("by_id", with_id), ("by_url", with_url.append_column("url_hash", hashes))):
        t = _sorted(t, kind)
        keys = t.column(INDEXES[kind][1]).to_pylist()
        cuts = [0] + [bisect_left(keys, b) for b in los[1:]] + [len(keys)]
        _write_run(t, Path(stage_dir) / RUNS / f"{kind}-{k:05d}.arrow", cuts)
    return skip


def _write_run(t: pa.Table, path: Path, cuts: list[int]) -> None:
    t = t.replace_schema_metadata({"cuts": json.dumps(cuts)})
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t)


def index_part(kind: str, p: int, lo: str, runs: list[str], skip: list[str], stage_dir: str) -> ShardInfo:
    """Ray task: partition p of one index, from its slice of every run."""
    pieces = []
    for run in runs:
        with pa.memory_map(run) as src:
            t = pa.ipc.open_file(src).read_all()
            cuts = json.loads(t.schema.metadata[b"cuts"])
            pieces.append(t.slice(cuts[p], cuts[p + 1] - cuts[p]).replace_schema_metadata(None))
    t = _sorted(pa.concat_tables(pieces), kind)
    if skip:
        t = t.filter(pc.invert(pc.is_in(t.column("output"), pa.array(skip, pa.string()))))
    return write_parquet(t.combine_chunks(), stage_dir, f"_index/{kind}/from-{lo}.parquet", row_group_size=ROW_GROUP)


def _groups(outputs: dict[str, Output]) -> list[list[tuple[str, int, str]]]:
    """Consecutive Parquet shards (outputs by name) in groups of about ROWS_PER_PART rows."""
    groups: list[list[tuple[str, int, str]]] = [[]]
    rows = 0
    for name, out in sorted(outputs.items()):
        for si, s in enumerate(out.shards):
            if groups[-1] and rows + s.rows > ROWS_PER_PART:
                groups.append([])
                rows = 0
            groups[-1].append((name, si, s.path))
            rows += s.rows
    return groups if groups[0] else []


def build_indexes(stage_dir: Path, outputs: dict[str, Output], fan_out: Callable[[Callable, list], list]
                  ) -> dict[str, list[ShardInfo]]:
    """Index every indexable output with `fan_out(fn, items)` (the stage's ctx.map); returns {"_index": [...]}
    (empty when nothing is indexable)."""
    candidates = {n: o for n, o in outputs.items() if o.shards and all(s.path.endswith(".parquet") for s in o.shards)}
    groups = _groups(candidates)
    if not groups:
        return {}
    runs_dir = Path(stage_dir) / RUNS
    shutil.rmtree(runs_dir, ignore_errors=True)  # a killed attempt's runs: rebuilt, they are cheap
    parts = max(1, -(-sum(o.rows for o in candidates.values()) // ROWS_PER_PART))
    skip = sorted({n for s in fan_out(index_runs, [(k, str(stage_dir), g, parts) for k, g in enumerate(groups)])
                   for n in s})
    if not set(candidates) - set(skip):
        shutil.rmtree(runs_dir, ignore_errors=True)
        return {}
    jobs = [(kind, p, lo, [str(runs_dir / f"{kind}-{k:05d}.arrow") for k in range(len(groups))], skip, str(stage_dir))
            for kind in INDEXES for p, lo in enumerate(bounds(parts))]
    shards = fan_out(index_part, jobs)
    shutil.rmtree(runs_dir, ignore_errors=True)
    return {"_index": shards}


def index_file(stage_dir: Path, shards: list[str], kind: str, key: str) -> Path | None:
    """The file of index `kind` that holds `key`, from the `_index` output's shard paths (a stage indexed before
    the indexes were partitioned has one file per index)."""
    if f"_index/{kind}.parquet" in shards:
        return Path(stage_dir) / f"_index/{kind}.parquet"
    prefix = f"_index/{kind}/from-"
    los = sorted(s[len(prefix):-len(".parquet")] for s in shards if s.startswith(prefix))
    if not los:
        return None
    return Path(stage_dir) / f"{prefix}{los[max(0, bisect_right(los, key) - 1)]}.parquet"


def find(data: Any, kind: str, key: str) -> pa.Table:
    """Rows of a stage's index `kind` ("by_id" or "by_url") whose key equals `key`; `data` is a StageData."""
    out = data.manifest.outputs.get("_index")
    path = index_file(data.dir, [s.path for s in out.shards], kind, key) if out else None
    if path is None:
        return INDEXES[kind][0].empty_table()
    return lookup(path, INDEXES[kind][1], key)


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
