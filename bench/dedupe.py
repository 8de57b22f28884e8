"""Benchmark of the dedupe stage on real Chinese text, each figure beside a baseline measured in the same run.

1. Signatures per CPU-second (docs/s, MB/s of normalised UTF-8) on the sample site's documents: the numba kernel
   (xxh32 default, and sha1 = datasketch's default hash) vs datasketch `MinHash.update_batch` per document with its
   default hash (the baseline). Goal: >= 10x per core.
2. End-to-end stage on 10k and 100k documents made of real paragraphs (random runs of 3-8 paragraphs of the
   sample site, plus 2% exact and 2% near copies): docs/s with 1 and 2 Ray workers (goal: >= 1.8x), and the peak
   RSS of any Ray worker (VmHWM) at 10k vs 100k (goal: <= 2x).
   Each run starts a fresh local Ray, outside the clock. The 1 vs 2 workers ratio is printed twice:
   cold = the run's worker processes start inside the clock (each pays its one-time imports and numba cache
   loads, about 1 CPU-s); warm = steady state: before the clock, an untimed run of the same stage with 2 workers on
   1,000 documents starts and warms both worker processes, for the 1-worker run as for the 2-worker run.

Run: `.venv/bin/python bench/dedupe.py [--docs 100000]` (~5 min on 2 idle cores; the sample site is fetched by
scripts/fetch_sample_site.sh when missing). Wall-clock ratios need an otherwise idle machine.
"""
from __future__ import annotations

import sys

# bench/ holds scripts named like stdlib modules (bench/tokenize.py): keep it off the import path.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("bench")]

import argparse  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.dataset import DOC_SCHEMA, doc_id  # noqa: E402
from stages.dedupe import DedupeConfig  # noqa: E402
from stages.dedupe.minhash import shingles, sign_batch  # noqa: E402
from stages.dedupe.normalise import normalise  # noqa: E402
from tests.helpers import make_stage_data, run_stage  # noqa: E402
from tests.realtext import sample_docs  # noqa: E402


def bench_signatures(texts: list[str]) -> None:
    from datasketch import MinHash

    mb = sum(len(t.encode()) for t in texts) / 1e6
    sign_batch(texts[:2]), sign_batch(texts[:2], hashfunc="sha1")  # compile outside the clock
    ours = {}
    for hf in ("xxh32", "sha1"):
        t0 = time.process_time()
        sign_batch(texts, hashfunc=hf)
        ours[hf] = time.process_time() - t0
    sub = texts[: max(20, len(texts) // 4)]
    t0 = time.process_time()
    for t in sub:
        m = MinHash(num_perm=128)
        m.update_batch([g.encode("utf-8") for g in shingles(t, 5)])
    base = (time.process_time() - t0) * len(texts) / len(sub)
    print(f"signatures, {len(texts)} sample-site docs ({mb:.1f} MB normalised, 128 perms, 5-grams), per CPU-second:")
    print(f"  baseline datasketch MinHash.update_batch (sha1): {len(texts) / base:9.0f} docs/s {mb / base:6.2f} MB/s")
    for hf, sec in ours.items():
        print(f"  zhgpt numba kernel ({hf:5}):                  {len(texts) / sec:9.0f} docs/s {mb / sec:6.2f} MB/s"
              f"   {base / sec:5.1f}x baseline")


def paragraph_docs(texts: list[str], n: int, seed: int = 7) -> pa.Table:
    """n documents of 3-8 random real paragraphs; 2% exact copies (extra spaces) and 2% near copies (cut 5%)."""
    paras = [p.strip() for t in texts for p in t.split("\n") if len(p.strip()) >= 20]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = rng.random()
        if i > 10 and r < 0.02:
            text = out[int(rng.integers(i))].replace("。", "。 ")
        elif i > 10 and r < 0.04:
            src = out[int(rng.integers(i))]
            text = src[: int(len(src) * 0.95)]
        else:
            text = "\n".join(paras[int(k)] for k in rng.integers(0, len(paras), int(rng.integers(3, 9))))
        out.append(text)
    rows = {"id": [doc_id(f"bench://{i}", t) for i, t in enumerate(out)], "source_name": ["bench"] * n,
            "url": [f"bench://{i}" for i in range(n)], "source": ["bench"] * n, "fetched_at": [""] * n,
            "title": [""] * n, "text": out}
    return pa.table(rows, schema=DOC_SCHEMA)


def worker_peak_rss_mb() -> float:
    """Largest VmHWM among this machine's Ray worker processes (the bench's own Ray, started fresh)."""
    import psutil

    peak = 0
    for p in psutil.process_iter(["cmdline", "pid"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "default_worker.py" in cmd or cmd.startswith("ray::"):
            try:
                for line in Path(f"/proc/{p.info['pid']}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                continue
    return peak / 1024


def warm_worker_count() -> int:
    """Ray worker processes of this machine that have numba loaded (i.e. have run a dedupe task)."""
    import psutil

    n = 0
    for p in psutil.process_iter(["cmdline", "pid"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "default_worker.py" in cmd or cmd.startswith("ray::"):
            try:
                n += "/numba/" in Path(f"/proc/{p.info['pid']}/maps").read_text()
            except OSError:
                continue
    return n


def run_once(table: pa.Table, shard_rows: int, workers: int, tmp: Path, warm: bool = False
             ) -> tuple[float, float, dict]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    try:
        if warm:  # untimed: start and warm both worker processes (4 shards of 250, 2 tasks at once)
            tiny = [table.slice(i, 250) for i in range(0, 1000, 250)]
            up = make_stage_data(tmp / "w", "clean", {"docs": tiny})
            run_stage("dedupe", DedupeConfig(partitions=8), {"clean": up}, tmp / "w-dedupe", workers=2)
            print(f"      warm-up: {warm_worker_count()} Ray worker processes warm before the clock")
        shards = [table.slice(i, shard_rows) for i in range(0, table.num_rows, shard_rows)]
        up = make_stage_data(tmp / "clean", "clean", {"docs": shards})
        t0 = time.perf_counter()
        result, _ = run_stage("dedupe", DedupeConfig(partitions=8), {"clean": up}, tmp / "dedupe", workers=workers)
        wall = time.perf_counter() - t0
        return wall, worker_peak_rss_mb(), result.stats
    finally:
        ray.shutdown()


def bench_stage(texts: list[str], n_big: int) -> None:
    big = paragraph_docs(texts, n_big)
    small = big.slice(0, n_big // 10)
    runs = {}
    for label, table, workers, warm in (("10k", small, 2, False), ("100k", big, 1, False), ("100k", big, 2, False),
                                        ("100k", big, 1, True), ("100k", big, 2, True)):
        with tempfile.TemporaryDirectory() as d:
            runs[(label, workers, warm)] = run_once(table, 2500, workers, Path(d), warm)
        wall, rss, st = runs[(label, workers, warm)]
        print(f"  {table.num_rows:>7} docs, {workers} worker(s), {'warm' if warm else 'cold'}: {wall:6.1f} s, "
              f"{table.num_rows / wall:7.0f} docs/s, "
              f"peak worker RSS {rss:6.0f} MB; exact {st['exact_dups']}, near {st['near_dups']}, "
              f"clusters {st['clusters']}, largest {st['largest_cluster']}, drift {st['chain_drift']:.3f}")
        print("      phases (wall s): " + ", ".join(f"{k[8:]} {v:.1f}" for k, v in st.items() if k.startswith("seconds_")))
    r10, r100 = runs[("10k", 2, False)][1], runs[("100k", 2, False)][1]
    for warm, what in ((False, "cold: worker start-up inside the clock"),
                       (True, "warm: steady state, both workers warmed")):
        w1, w2 = runs[("100k", 1, warm)][0], runs[("100k", 2, warm)][0]
        print(f"  2 workers vs 1 (baseline) at {big.num_rows} docs, {what}: {w1 / w2:.2f}x (goal >= 1.8x)")
    print(f"  peak worker RSS at {big.num_rows} vs {small.num_rows} docs (baseline): {r100 / r10:.2f}x (goal <= 2x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--skip-stage", action="store_true")
    args = ap.parse_args()
    raw = sample_docs().column("text").to_pylist()
    bench_signatures([normalise(t) for t in raw])
    if not args.skip_stage:
        print("end-to-end dedupe stage (paragraph-window documents, 2,500 per shard, 8 partitions):")
        bench_stage(raw, args.docs)


if __name__ == "__main__":
    main()
