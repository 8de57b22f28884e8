"""Phase 1 of tokenize: encode one documents shard into a key-sorted Arrow file of token lists.

Pure helpers (hash keys, batch encoding) plus `encode_shard`, the Ray task. Tests: tests/stages/test_tokenize.py.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.dataset import write_arrow
from pipelines.io import read_docs, read_json, read_table, schema_of, write_json
from stages.tokenize.tables import SPLITS, TRAIN, VAL

DOC_COLUMNS = ["id", "url", "source_name", "text"]


def order_keys(ids: list[str], seed: int) -> np.ndarray:
    """uint64 shuffle key per document: a seeded hash of its id, so order and shard do not follow the crawl."""
    key = seed.to_bytes(8, "little")
    return np.fromiter((int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "little")
                        for i in ids), dtype=np.uint64, count=len(ids))


def val_draw(doc_id: str) -> int:
    """An unseeded 64-bit hash of a document id: the document is in val when it falls below val_fraction * 2^64."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8, person=b"zhgpt.val").digest(), "little")


def split_of(ids: list[str], val_fraction: float) -> np.ndarray:
    """0 (train) or 1 (val) per document, by `val_draw`: the val set stays put when the seed changes."""
    limit = val_fraction * 2.0**64
    return np.fromiter((VAL if val_draw(i) < limit else TRAIN for i in ids), dtype=np.uint8, count=len(ids))


def first_draw(enc_t: pa.Table) -> list | None:
    """[draw, id, tokens, source] of the shard's document with the smallest val draw (ties: smallest id): the
    document the stage moves to val when no document anywhere drew val (see `move_to_val`). None when the shard
    already has a val document (then val is not empty, and its ids need no second hashing)."""
    if enc_t.num_rows == 0 or pc.any(pc.equal(enc_t.column("split"), VAL)).as_py():
        return None
    ids = enc_t.column("id").to_pylist()
    i = min(range(len(ids)), key=lambda k: (val_draw(ids[k]), ids[k]))
    tokens = pc.list_value_length(enc_t.column("tokens")).to_numpy()
    return [val_draw(ids[i]), ids[i], int(tokens[i]), enc_t.column("source_name")[i].as_py()]


def move_to_val(part: str | os.PathLike, doc_id: str) -> None:
    """Rewrite one encoded shard with `doc_id` in val (idempotent, so a resumed stage may repeat it)."""
    t = read_table(part)
    split = pc.if_else(pc.equal(t.column("id"), doc_id), pa.scalar(VAL, pa.uint8()), t.column("split"))
    t = t.set_column(0, "split", split).sort_by([("split", "ascending"), ("key", "ascending"), ("id", "ascending")])
    write_arrow(t, Path(part).parent, Path(part).name)


def byte_mask(sp: Any) -> np.ndarray:
    """True for the byte-fallback pieces <0x00>..<0xFF> (counted for the byte-fallback rate)."""
    n = sp.get_piece_size()
    return np.fromiter((sp.is_byte(i) for i in range(n)), dtype=bool, count=n)


class Encoder:
    """A SentencePiece processor loaded once per task; encodes batches of texts into one flat token array."""

    def __init__(self, model: bytes, dtype: str, threads: int = 1, is_byte: np.ndarray | None = None):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=model)
        self.dtype, self.threads = np.dtype(dtype), threads
        if self.sp.eos_id() < 0:
            raise ValueError("the tokenizer model has no EOS piece (eos_id=-1); pin a model that has </s>")
        # One Python call per piece: 0.17 s for 64k pieces, so the driver computes it once for all tasks.
        self.is_byte = byte_mask(self.sp) if is_byte is None else is_byte

    def encode(self, texts: list[str], batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(flat tokens with an EOS after each document, per-document lengths incl. that EOS)."""
        if self.threads == 1:
            # One call per document: a batch call starts threads, and in a long-lived Ray worker each batch left
            # ~16 MiB behind (glibc arenas; 140 -> 320 MiB over 12 shards); per document it stays flat, same speed.
            parts = [self.sp.encode(t, add_eos=True, out_type="numpy") for t in texts]
        else:
            parts = [ids for lo in range(0, len(texts), batch) for ids in
                     self.sp.encode(texts[lo:lo + batch], add_eos=True, out_type="numpy", num_threads=self.threads)]
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        flat = np.concatenate(parts).astype(self.dtype) if parts else np.zeros(0, self.dtype)
        return flat, lengths


def encode_input(path: str) -> pa.Table:
    """The documents tokenize encodes: the columns it needs (a one-line error for a shard that is not a documents
    table), source_name never null, empty texts left out; `source_id` (a files source's own record id) is carried
    to the lineage sidecar, null where the shard has none."""
    sid = "source_id" in schema_of(path).names
    t = read_docs(path, DOC_COLUMNS + (["source_id"] if sid else []))
    t = t.set_column(2, "source_name", pc.fill_null(t.column("source_name"), ""))
    if not sid:
        t = t.append_column("source_id", pa.nulls(t.num_rows, pa.string()))
    return t.filter(pc.greater(pc.fill_null(pc.utf8_length(t.column("text")), 0), 0))  # empty documents carry no tokens


def encoded_table(docs: pa.Table, enc: Encoder, cfg: Any) -> pa.Table:
    ids = docs.column("id").to_pylist()
    flat, lengths = enc.encode(docs.column("text").to_pylist(), cfg.batch_docs)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    t = pa.table({"split": split_of(ids, cfg.val_fraction), "key": order_keys(ids, cfg.seed), "id": docs.column("id"),
                  "url": docs.column("url"), "source_name": docs.column("source_name"),
                  "source_id": docs.column("source_id").cast(pa.string()),
                  "tokens": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))})
    return t.sort_by([("split", "ascending"), ("key", "ascending"), ("id", "ascending")])


def shard_stats(docs: pa.Table, enc_t: pa.Table, enc: Encoder) -> dict[str, Any]:
    """Counts for the manifest; plain ints and dicts so they sum across shards in any order."""
    flat = enc_t.column("tokens").combine_chunks().values.to_numpy()
    lengths = pc.list_value_length(enc_t.column("tokens")).to_numpy()
    per_source: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for split, src, n in zip(enc_t.column("split").to_numpy(), enc_t.column("source_name").to_pylist(), lengths):
        d = per_source[SPLITS[split]]
        d[src] = d.get(src, 0) + int(n)
    return {"docs": docs.num_rows, "tokens": int(flat.size),
            "chars": int(pc.sum(pc.utf8_length(docs.column("text"))).as_py() or 0),
            "bytes": int(pc.sum(pc.binary_length(docs.column("text"))).as_py() or 0),
            "byte_tokens": int(enc.is_byte[flat].sum()), "split_tokens": per_source, "first_draw": first_draw(enc_t)}


def encode_shard(i: int, path: str, model: bytes, facts: dict[str, Any], cfg: Any, part_dir: str) -> dict[str, Any]:
    """Ray task: encode input shard i into `<part_dir>/part-i.arrow`; its stats file marks it done (resume)."""
    arrow, done = Path(part_dir) / f"part-{i:05d}.arrow", Path(part_dir) / f"part-{i:05d}.json"
    if done.exists() and arrow.exists():
        return read_json(done)
    enc = Encoder(model, facts["dtype"], cfg.encode_threads, facts["is_byte"])
    docs = encode_input(path)
    t = encoded_table(docs, enc, cfg)
    write_arrow(t, part_dir, arrow.name)
    stats = shard_stats(docs, t, enc)
    write_json(done, stats)
    return stats
