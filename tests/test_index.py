"""The per-stage lookup indexes (pipelines/index.py), built by tasks from real Chinese documents: the same rows and,
with one partition, the same bytes as the driver-side build they replace; partitioned, every key in exactly one
sorted file that `find` opens alone; outputs without id/url left out.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import pipelines.index as index
from pipelines.dataset import Manifest, Output, StageData, write_file, write_parquet
from pipelines.index import build_indexes, find, url_hash
from pipelines.testing.realtext import sample_docs


def serial(fn, items):
    return [fn(*item) for item in items]


@pytest.fixture
def stage(tmp_path):
    """A stage directory: `docs` in 3 shards (one empty), `rejects` (ids, no url), `notes` (neither: not
    indexed), `model` (a file)."""
    docs = sample_docs().select(["id", "url", "title"])
    rej = pa.table({"id": docs.column("id").slice(0, 20), "rule": ["min_chars"] * 20})
    outs = {"docs": [docs.slice(0, 120), docs.slice(120, 0), docs.slice(120)], "rejects": [rej],
            "notes": [pa.table({"n": [1, 2]})]}
    outputs = {name: Output("parquet", [write_parquet(t, tmp_path, f"{name}/part-{i:05d}.parquet")
                                        for i, t in enumerate(ts)]) for name, ts in outs.items()}
    outputs["model"] = Output("file", [write_file(b"x", tmp_path, "model/m.bin")])
    return tmp_path, outputs, docs, rej


def driver_side(stage_dir, outputs) -> dict[str, pa.Table]:
    """What the runner built before, in one process: every indexed row in one table, sorted."""
    parts = []
    for name in ("docs", "rejects"):
        for si, s in enumerate(outputs[name].shards):
            t = pq.read_table(stage_dir / s.path)
            n = t.num_rows
            parts.append(pa.table({"id": t.column("id"), "output": pa.array([name] * n, pa.string()),
                                   "shard": pa.array([si] * n, pa.int32()), "row": pa.array(range(n), pa.int64()),
                                   "url": t.column("url") if "url" in t.column_names else pa.nulls(n, pa.string())}))
    rows = pa.concat_tables(parts)
    order = [("output", "ascending"), ("shard", "ascending"), ("row", "ascending")]
    by_id = rows.sort_by([("id", "ascending"), *order]).cast(index.BY_ID)
    with_url = rows.filter(pc.is_valid(rows.column("url")))
    hashes = pa.array([url_hash(u) for u in with_url.column("url").to_pylist()], pa.string())
    by_url = with_url.append_column("url_hash", hashes).sort_by([("url_hash", "ascending"), *order]).select(
        index.BY_URL.names).cast(index.BY_URL)
    return {"by_id": by_id, "by_url": by_url}


def test_one_partition_is_byte_identical_to_the_driver_side_build(stage, tmp_path_factory):
    stage_dir, outputs, _, _ = stage
    (shards,) = build_indexes(stage_dir, outputs, serial).values()
    want = driver_side(stage_dir, outputs)
    ref = tmp_path_factory.mktemp("ref")
    for kind, s in zip(("by_id", "by_url"), shards):
        assert s.path == f"_index/{kind}/from-000000.parquet"
        old = write_parquet(want[kind].combine_chunks(), ref, f"{kind}.parquet", row_group_size=index.ROW_GROUP)
        assert s.sha256 == old.sha256 and s.rows == want[kind].num_rows
    assert not (stage_dir / index.RUNS).exists()  # the runs are scratch


def test_partitions_hold_each_key_once_sorted_and_find_opens_one(stage, monkeypatch):
    stage_dir, outputs, docs, rej = stage
    monkeypatch.setattr(index, "ROWS_PER_PART", 40)  # 238 rows: 6 partitions, 4 run tasks
    (shards,) = build_indexes(stage_dir, outputs, serial).values()
    want = driver_side(stage_dir, outputs)
    for kind, key in (("by_id", "id"), ("by_url", "url_hash")):
        files = sorted(s.path for s in shards if s.path.startswith(f"_index/{kind}/"))
        assert len(files) == 6
        got = pa.concat_tables([pq.read_table(stage_dir / f) for f in files])
        assert got.equals(want[kind])  # in file order, the partitions are the sorted index
        for f in files:
            keys = pq.read_table(stage_dir / f, columns=[key]).column(key).to_pylist()
            assert keys == sorted(keys)
            assert all(index.index_file(stage_dir, files, kind, k) == stage_dir / f for k in keys)
    data = StageData(stage_dir, Manifest(stage="s", cache_key="k", outputs={"_index": Output("parquet", shards)},
                                         config={}, upstream={}, code_version=""))
    doc = docs.slice(150, 1).to_pylist()[0]
    assert find(data, "by_id", doc["id"]).to_pylist() == [
        {"id": doc["id"], "output": "docs", "shard": 2, "row": 30, "url": doc["url"]}]
    first = rej.column("id")[0].as_py()
    assert [h["output"] for h in find(data, "by_id", first).to_pylist()] == ["docs", "rejects"]
    assert [h["id"] for h in find(data, "by_url", url_hash(doc["url"])).to_pylist()] == [doc["id"]]
    assert find(data, "by_id", "f" * 32).num_rows == 0 and find(data, "by_id", "not-hex").num_rows == 0


def test_nothing_to_index(tmp_path):
    outputs = {"notes": Output("parquet", [write_parquet(pa.table({"n": [1]}), tmp_path, "notes/a.parquet")]),
               "model": Output("file", [write_file(b"x", tmp_path, "model/m.bin")])}
    assert build_indexes(tmp_path, outputs, serial) == {}
    assert not (tmp_path / "_index").exists() and not (tmp_path / index.RUNS).exists()
