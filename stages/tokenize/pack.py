"""Phase 2 of tokenize: gather one output shard's documents from the key-sorted encode files and pack them.

Pure helpers (`bucket_bounds`, `pack`) plus `pack_shard`, the Ray task. The shard format is documented in
stages/tokenize/__init__.py. Tests: tests/stages/test_tokenize.py.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.dataset import write_arrow, write_parquet
from pipelines.io import read_table
from stages.tokenize.tables import SPLITS

SEG_FIELDS = ("doc", "row", "start", "length", "doc_offset")


def bucket_bounds(bucket: int, n: int) -> tuple[int, int | None]:
    """Key range [lo, hi) of output shard `bucket` of n: n equal ranges of the keys' top 32 bits (a key k is in
    shard ((k >> 32) * n) >> 32), monotone in the key, so a key-sorted file slices by binary search. hi is None for
    the last shard (2**64 is no uint64)."""
    def start(b: int) -> int:
        return -(-(b << 32) // n) << 32  # the smallest top-32-bit value v with v * n >= b * 2**32

    return start(bucket), (start(bucket + 1) if bucket + 1 < n else None)


def gather(paths: list[str], split: int, bucket: int, n: int) -> pa.Table:
    """The documents of (split, bucket) from every encode file, in key order. Files are memory-mapped and searched
    (two binary searches each: a task's work does not grow with the corpus, only with the number of files)."""
    lo_key, hi_key = bucket_bounds(bucket, n)
    parts = []
    for p in paths:
        t = read_table(p)
        sp = t.column("split").to_numpy()
        lo, hi = np.searchsorted(sp, split, "left"), np.searchsorted(sp, split, "right")
        keys = t.column("key").to_numpy()[lo:hi]
        blo = np.searchsorted(keys, np.uint64(lo_key), "left")
        bhi = len(keys) if hi_key is None else np.searchsorted(keys, np.uint64(hi_key), "left")
        parts.append(t.slice(lo + blo, bhi - blo))
    t = pa.concat_tables(parts)
    return t.sort_by([("key", "ascending"), ("id", "ascending")])


def pack(lengths: np.ndarray, row_len: int) -> tuple[int, dict[str, np.ndarray]]:
    """Cut documents laid end to end into rows of `row_len` tokens; the tail (< row_len) is dropped.

    Returns (rows, segments) where segments has, per (row, document) piece: doc (index), row, start (in the row),
    length, doc_offset (in the document), sorted by row then start.
    """
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    rows = int(lengths.sum()) // row_len
    end = rows * row_len
    # Every segment starts at a document start or a row start (inside the packed region).
    cuts = np.union1d(starts[(starts < end) & (lengths > 0)], np.arange(rows, dtype=np.int64) * row_len)
    nxt = np.minimum(np.append(cuts[1:], end), end)
    doc = np.searchsorted(starts, cuts, "right") - 1
    doc_end = starts[doc] + lengths[doc]
    seg_len = np.minimum(nxt, doc_end) - cuts
    return rows, {"doc": doc, "row": cuts // row_len, "start": cuts % row_len, "length": seg_len,
                  "doc_offset": cuts - starts[doc]}


def pack_group(tokens: pa.LargeListArray, idx: np.ndarray, row_len: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pack the documents `idx` (table positions, in order) into a 2-D block; segment docs are table positions."""
    lengths = np.diff(tokens.offsets.to_numpy())[idx]
    rows, seg = pack(lengths, row_len)
    flat = tokens.take(pa.array(idx)).flatten().to_numpy(zero_copy_only=False)[:rows * row_len]
    seg["doc"] = idx[seg["doc"]]
    return flat.reshape(rows, row_len), seg


def pack_sources(t: pa.Table, sources: list[str], row_len: int) -> tuple[np.ndarray, np.ndarray, pa.Table, dict]:
    """Pack each source's documents separately (rows are single-source), then interleave rows by document key.

    Returns (tokens 2-D, source_id per row, segments table sorted by row, {source: rows}).
    """
    tokens = t.column("tokens").combine_chunks()
    keys = t.column("key").to_numpy()
    names = np.array(t.column("source_name").to_pylist(), dtype=object)
    blocks, sids, row_keys, segs, counts = [], [], [], [], {}
    for sid, name in enumerate(sources):
        idx = np.flatnonzero(names == name)
        if idx.size:
            block, seg = pack_group(tokens, idx, row_len)
            seg["row"] += sum(len(b) for b in blocks)  # rows numbered across groups before the interleave
            blocks.append(block)
            sids.append(np.full(len(block), sid, np.int32))
            row_keys.append(keys[seg["doc"][seg["start"] == 0]])  # the document each row begins in
            segs.append(seg)
            counts[name] = len(block)
    if not blocks:
        empty = np.zeros(0, np.int64)
        return (np.zeros((0, row_len), tokens.type.value_type.to_pandas_dtype()), np.zeros(0, np.int32),
                _segments(t, {k: empty for k in SEG_FIELDS}), counts)
    key = np.concatenate(row_keys)
    order = np.lexsort((np.arange(key.size), key))  # by key; rows of one document stay in order
    new_row = np.empty_like(order)
    new_row[order] = np.arange(order.size)
    seg = {k: np.concatenate([s[k] for s in segs]) for k in SEG_FIELDS}
    seg["row"] = new_row[seg["row"]]
    return np.concatenate(blocks)[order], np.concatenate(sids)[order], _segments(t, seg), counts


def _segments(t: pa.Table, seg: dict[str, np.ndarray]) -> pa.Table:
    docs = pa.array(seg["doc"], pa.int64())
    s = pa.table({"row": pa.array(seg["row"], pa.int64()), "id": t.column("id").take(docs),
                  "url": t.column("url").take(docs), "source_name": t.column("source_name").take(docs),
                  "start": pa.array(seg["start"], pa.int32()), "length": pa.array(seg["length"], pa.int32()),
                  "doc_offset": pa.array(seg["doc_offset"], pa.int64()),
                  **({"source_id": t.column("source_id").take(docs)} if "source_id" in t.column_names else {})})
    return s.sort_by([("row", "ascending"), ("start", "ascending")])


def rows_table(tokens: np.ndarray, source_id: np.ndarray, sources: list[str], meta: dict[str, str]) -> pa.Table:
    """The arrow shard: fixed-size lists make the file a 2-D array when memory-mapped; the source is a
    dictionary column (int32 codes into the sorted source list, 4 bytes a row)."""
    col = pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1)), tokens.shape[1])
    src = pa.DictionaryArray.from_arrays(pa.array(source_id, pa.int32()), pa.array(sources, pa.string()))
    schema = pa.schema([("tokens", col.type), ("source_name", src.type)], metadata=meta)
    return pa.Table.from_arrays([col, src], schema=schema)


def pack_shard(split: int, bucket: int, n: int, paths: list[str], sources: list[str], meta: dict[str, str],
               out_dir: str, source_ids: bool = False) -> dict[str, Any]:
    """Ray task: write `<split>/part-<bucket>.arrow` and its lineage sidecar (with `source_ids`: each document's
    source_id, when the input documents carry the user's own ids); return their ShardInfos and counts."""
    row_len = int(meta["zhgpt.seq_len"]) + 1
    t = gather(paths, split, bucket, n)
    if not source_ids:
        t = t.drop_columns(["source_id"])
    tokens, source_id, seg, counts = pack_sources(t, sources, row_len)
    name = SPLITS[split]
    info = write_arrow(rows_table(tokens, source_id, sources, meta), out_dir, f"{name}/part-{bucket:05d}.arrow")
    seg = seg.add_column(0, "split", pa.array([name] * seg.num_rows, pa.string()))
    seg = seg.add_column(1, "shard", pa.array(np.full(seg.num_rows, bucket, np.int32)))
    side = write_parquet(seg, out_dir, f"rows/{name}-{bucket:05d}.parquet")
    doc_tokens = int(pc.sum(pc.list_value_length(t.column("tokens"))).as_py() or 0)
    return {"shard": info, "rows": side, "rows_per_source": counts, "docs": t.num_rows,
            "tail": doc_tokens - tokens.size}


def shard_meta(seq_len: int, eos_id: int, vocab_size: int, sources: list[str], digest: str) -> dict[str, str]:
    return {"zhgpt.seq_len": str(seq_len), "zhgpt.eos_id": str(eos_id), "zhgpt.vocab_size": str(vocab_size),
            "zhgpt.sources": json.dumps(sources, ensure_ascii=False), "zhgpt.tokenizer_digest": digest}

