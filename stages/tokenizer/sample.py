"""The tokenizer's training sample, read in parallel: one Ray task per documents shard writes that shard's training
lines, then the training task streams them into SentencePiece in shard order.

Below `input_sentence_size` lines in all (the quickstart, most tests), SentencePiece gets every line in the order
one task reading the shards itself used to give them, so the model is byte-identical to that task's. Above it,
SentencePiece's own reservoir sample decides, and it ignores `set_random_generator_seed` (measured with
sentencepiece 0.2.3: three processes, same lines and seed, three different models), so the stage chose its lines
itself: each line has a seeded 64-bit hash (of its document id and its index in the document, so the sample does
not depend on the sharding), the lines under a threshold set from the exact line count are fed in stream order, and
SentencePiece is told not to shuffle. Then the trainer reads ~input_sentence_size lines, not the whole corpus
(15M lines at 10^6 documents here; ~150M at 10^7).
"""
from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io import atomic_path, iter_docs, read_json, write_json
from stages.tokenizer.train import keep_doc, train_model, training_lines, write_model

LINES_SCHEMA = pa.schema([("line", pa.large_string()), ("hash", pa.uint64())])
DOCS_PER_BATCH = 1024
LINE_PERSON = b"zhgpt.lines"  # blake2b personalisation: not the hash keep_doc uses


def corpus_docs(path: str, seed: int, fraction: float, counts: dict[str, int]) -> Iterator[tuple[str, str]]:
    """(id, text) of the shard's sampled documents, streamed, counting docs and chars."""
    for batch in iter_docs(path, ["id", "text"], DOCS_PER_BATCH):
        for doc_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            if text and keep_doc(doc_id or "", seed, fraction):
                counts["train_docs"] += 1
                counts["train_chars"] += len(text)
                yield doc_id or "", text


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a uint64 -> uint64 bijection that spreads consecutive inputs over the whole range."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _batch(docs: list[tuple[str, str]], seed: int, max_bytes: int) -> pa.RecordBatch:
    lines, doc_hash, index = [], [], []
    key = seed.to_bytes(8, "little")
    for doc_id, text in docs:
        mine = list(training_lines([text], max_bytes))
        h = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8, key=key, person=LINE_PERSON).digest()
        lines += mine
        doc_hash += [int.from_bytes(h, "little")] * len(mine)
        index += range(len(mine))
    hashes = mix64(np.array(doc_hash, np.uint64) + np.array(index, np.uint64))
    return pa.record_batch([pa.array(lines, pa.large_string()), pa.array(hashes, pa.uint64())], schema=LINES_SCHEMA)


def lines_file(lines_dir: str | Path, i: int, ext: str = "arrow") -> Path:
    """Shard i's training lines (`s-<i>.arrow`) or its counts (`s-<i>.json`) in `lines_dir`."""
    return Path(lines_dir) / f"s-{i:05d}.{ext}"


def sample_task(i: int, path: str, cfg: Any, lines_dir: str) -> dict[str, int]:
    """Ray task, one per documents shard: its training lines (sampled documents, split into lines, long ones cut)
    and their hashes, in document order, to `<lines_dir>/s-<i>.arrow` (zstd); returns its counts. A file already
    there (a resumed stage) is reused."""
    final, note = lines_file(lines_dir, i), lines_file(lines_dir, i, "json")
    if note.exists():
        return read_json(note)
    counts = {"train_docs": 0, "train_chars": 0, "train_lines": 0}
    docs = corpus_docs(path, cfg.seed, cfg.sample_fraction, counts)
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with atomic_path(final) as tmp, pa.OSFile(str(tmp), "wb") as sink, \
            pa.ipc.new_file(sink, LINES_SCHEMA, options=options) as writer:
        while chunk := list(itertools.islice(docs, DOCS_PER_BATCH)):
            batch = _batch(chunk, cfg.seed, cfg.max_sentence_bytes)
            writer.write_batch(batch)
            counts["train_lines"] += batch.num_rows
    write_json(note, counts)
    return counts


def line_threshold(cfg: Any, total_lines: int) -> int | None:
    """None: feed every line. Otherwise lines with a hash below this are fed: 4 standard deviations under
    input_sentence_size lines on average, so SentencePiece's cap (it keeps the first that many) is not reached
    but once in ~30,000 corpora."""
    k = cfg.input_sentence_size
    if k is None or total_lines <= k:
        return None
    return min(2**64 - 1, int(max(0.0, k - 4 * math.sqrt(k)) / total_lines * 2**64))


def train_task(files: list[str], cfg: Any, out_dir: str, threshold: int | None) -> tuple[list, int]:
    """One Ray task: trains in a child process (spawned, waited for), so SentencePiece's memory (~3.3 GB at the
    default 2M-line input_sentence_size, whatever the corpus) is returned to the system before the task ends,
    instead of staying with a Ray worker that goes on to the next stage's tasks. Returns the model files'
    ShardInfos and the number of lines fed."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_train, (files, cfg, out_dir, threshold))


def _train(files: list[str], cfg: Any, out_dir: str, threshold: int | None) -> tuple[list, int]:
    fed = 0

    def counted(lines: Iterator[str]) -> Iterator[str]:
        nonlocal fed
        for line in lines:
            fed += 1
            yield line

    model = train_model(counted(read_lines(files, threshold)), cfg, presampled=threshold is not None)
    return write_model(model, out_dir), fed


def read_lines(files: list[str], threshold: int | None) -> Iterator[str]:
    """The lines of sample_task's files in order (those under `threshold` if set), one record batch at a time."""
    for f in files:
        with pa.memory_map(f) as src:
            reader = pa.ipc.open_file(src)
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                if threshold is not None:
                    batch = batch.filter(pc.less(batch.column(1), pa.scalar(threshold, pa.uint64())))
                yield from batch.column(0).to_pylist()
