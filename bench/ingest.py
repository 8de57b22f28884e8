"""Reading a corpus you already have (the crawl's `files` source) on JSONL built from real Chinese text, beside
baselines measured in the same run.

1. MB per CPU-second of the source's reading (lines -> records -> checked documents with ids, source_id and meta,
   in one process, no shard written) and of a whole reading task (the same plus its docs and log shards, zstd
   Parquet), against a plain read of the same file: `orjson.loads` per line, and `pyarrow.json.read_json`.
   Goal: the source's reading >= 70% of the orjson read.
2. Peak RSS of the Ray workers reading a 0.2 GB and a 2 GB JSONL file through the crawl stage (each in a fresh
   local Ray, sampled every 50 ms). Goal: ratio <= 1.2 (the file is split into `task_bytes` ranges, so a task's
   memory does not follow the file's size).
3. Wall time of the crawl stage over the 2 GB file with 1 worker vs 2 (the file is split, so both cores read it).

Corpus: the sample site's pages (pipelines/testing/realtext.sample_docs), one record per page per copy, with an
id, a url and two extra fields, repeated with distinct ids up to the size asked; written under --dir (default:
the temp dir) and deleted at the end.

    flock /tmp/zhgpt-heavy.lock .venv/bin/python bench/ingest.py [--small-gb 0.2] [--big-gb 2] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil

from pipelines.testing.helpers import run_stage
from pipelines.testing.realtext import sample_docs
from stages.crawl.config import CrawlConfig


def write_corpus(path: Path, gb: float) -> int:
    """JSONL of the sample site's pages repeated up to `gb` GB; the number of records."""
    docs = sample_docs().select(["url", "title", "text"]).to_pylist()
    n, size, target = 0, 0, int(gb * 1e9)
    with open(path, "wb", buffering=8 << 20) as fh:
        while size < target:
            d = docs[n % len(docs)]
            line = orjson.dumps({"doc_id": f"r{n:09d}", "url": f"{d['url']}?copy={n // len(docs)}",
                                 "title": d["title"], "text": d["text"], "license": "GFDL-1.3",
                                 "lang": "zh"}) + b"\n"
            fh.write(line)
            size += len(line)
            n += 1
    return n


def source(path: Path, **kw) -> dict:
    return {"name": "mine", "type": "files", "paths": [str(path)], "id_field": "doc_id",
            "keep_fields": ["license", "lang"], **kw}


def cpu(fn, *args, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - t0)
    return best


def plain_orjson(path: Path) -> None:
    with open(path, "rb", buffering=1 << 20) as fh:
        for line in fh:
            orjson.loads(line)


def orjson_and_ids(path: Path) -> None:
    from pipelines.dataset import doc_id

    with open(path, "rb", buffering=1 << 20) as fh:
        for no, line in enumerate(fh, 1):
            doc_id(f"file:{path}:{no}", orjson.loads(line)["text"])


def plain_arrow(path: Path) -> None:
    import pyarrow.json as pj

    pj.read_json(path)


def source_reading(path: Path, src) -> None:
    """What a task does before writing: every line through the reader, the record checks and the docs row."""
    from stages.crawl.readers import jsonl_lines, open_input
    from stages.crawl.records import doc_row, jsonl_record

    with open_input(str(path)) as fh:
        for no, line in jsonl_lines(fh):
            ok, value = jsonl_record(line)
            doc_row(src, str(path), no, value) if ok else value


def reading_task(path: Path, src, out: Path) -> None:
    from stages.crawl.ingest import files_task
    from stages.crawl.readers import Piece

    files_task(src, None, [Piece(str(path), "jsonl")], "bench", str(out), "")


def throughput(path: Path, tmp: Path) -> None:
    src = CrawlConfig(sources=[source(path)]).sources[0]
    mb = path.stat().st_size / 1e6
    plain_orjson(path)  # page cache warm for every reader
    base = cpu(plain_orjson, path)
    arrow = cpu(plain_arrow, path)
    ids = cpu(orjson_and_ids, path)
    reading = cpu(source_reading, path, src)
    task = cpu(reading_task, path, src, tmp / "task")
    print(f"{path.name}: {mb:.0f} MB of JSONL")
    print(f"  plain orjson.loads per line : {mb / base:7.1f} MB/CPU-s")
    print(f"  plain pyarrow.json.read_json: {mb / arrow:7.1f} MB/CPU-s (all its threads' CPU)")
    print(f"  orjson + the contract's ids : {mb / ids:7.1f} MB/CPU-s = {base / ids:.0%} of orjson (sha256 of "
          "locator and UTF-8 text: the floor under any reader of this stage)")
    print(f"  files source, reading       : {mb / reading:7.1f} MB/CPU-s = {base / reading:.0%} of orjson "
          "(goal >= 70%)")
    print(f"  files source, whole task    : {mb / task:7.1f} MB/CPU-s = {base / task:.0%} of orjson "
          "(+ ids' sha256, docs and log shards written as zstd Parquet)")


class WorkerRSS:
    """Peak RSS of this process's Ray workers, sampled every 50 ms while a stage runs."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in psutil.Process().children(recursive=True):  # this local Ray's, not another user's
                try:
                    if " ".join(p.cmdline()).startswith("ray::"):  # workers rename themselves ray::<task>
                        self.peak = max(self.peak, p.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.05)

    def __enter__(self) -> "WorkerRSS":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def stage_run(path: Path, out: Path, workers: int) -> tuple[float, int, int]:
    """(wall seconds, peak worker RSS, documents) of the crawl stage over one file in a fresh local Ray."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        cfg = CrawlConfig(sources=[source(path)])
        with WorkerRSS() as rss:
            t0 = time.perf_counter()
            result, _ = run_stage("crawl", cfg, {}, out, workers=workers)
            wall = time.perf_counter() - t0
        return wall, rss.peak, int(result.stats["docs"])
    finally:
        ray.shutdown()
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-gb", type=float, default=0.2)
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zhgpt-bench-ingest-", dir=args.dir))
    try:
        small, big = root / "small.jsonl", root / "big.jsonl"
        print(f"corpus: {write_corpus(small, args.small_gb)} and {write_corpus(big, args.big_gb)} records")
        throughput(small, root)
        runs = {}
        for name, path, workers in (("small", small, 2), ("big", big, 2), ("big", big, 1)):
            runs[name, workers] = stage_run(path, root / f"out-{name}-{workers}", workers)
            wall, peak, docs = runs[name, workers]
            print(f"crawl stage, {path.stat().st_size / 1e9:.1f} GB, {workers} worker(s): {docs} docs, "
                  f"wall {wall:.1f} s, worker peak RSS {peak / 2**20:.0f} MiB")
        ratio = runs["big", 2][1] / runs["small", 2][1]
        print(f"worker peak RSS, {args.big_gb:g} GB vs {args.small_gb:g} GB: {ratio:.2f}x (goal <= 1.2)")
        print(f"{args.big_gb:g} GB, 1 worker vs 2: {runs['big', 1][0] / runs['big', 2][0]:.2f}x faster with 2 "
              "(2 cores)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
