"""How long a `zhgpt trace` lookup takes, and how it grows with the corpus.

    .venv/bin/python bench/trace.py [CONFIG]        # default configs/quickstart.yaml (run it first: make run)

1. On CONFIG's latest finished run: median time of trace_docs() for every crawled URL (all stages' indexes), beside
   the time to read the same stages' `docs` shards whole (what a trace would cost without the indexes).
2. Growth: one id lookup in synthetic sorted indexes of 10^4, 10^5 and 10^6 documents, same row-group size.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def on_run(cfg_path: str) -> None:
    from pipelines.cli import trace_stages
    from pipelines.config import load
    from pipelines.stage import ordered
    from pipelines.trace import trace_docs

    cfg = load(cfg_path)
    _, stages = trace_stages(cfg, None)
    order = ordered(list(stages))
    crawl_docs = [p for p in (stages[order[0]][0] / "docs").glob("*.parquet")]
    urls = pq.read_table(crawl_docs[0], columns=["url"]).column("url").to_pylist()[:50]
    times = []
    for u in urls:
        t0 = time.perf_counter()
        trace_docs(stages, order, url=u)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for name in order:
        for p in (stages[name][0]).glob("docs/*.parquet"):
            pq.read_table(p)
    scan = time.perf_counter() - t0
    print(f"trace --url on {cfg.pipeline}: median {statistics.median(times) * 1e3:.1f} ms over {len(times)} URLs "
          f"({len(order)} stages); reading every stage's docs instead: {scan * 1e3:.1f} ms")


def growth() -> None:
    from pipelines.index import ROW_GROUP, lookup

    with tempfile.TemporaryDirectory() as d:
        for n in (10_000, 100_000, 1_000_000):
            ids = sorted(f"{i * 2654435761 % (1 << 61):032x}" for i in range(n))
            t = pa.table({"id": ids, "output": ["docs"] * n, "shard": pa.array([0] * n, pa.int32()),
                          "row": pa.array(range(n), pa.int64()), "url": [""] * n})
            path = Path(d) / f"idx{n}.parquet"
            pq.write_table(t, path, row_group_size=ROW_GROUP, compression="zstd")
            probe = ids[n // 3]
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                assert lookup(path, "id", probe).num_rows == 1
                times.append(time.perf_counter() - t0)
            print(f"index of {n:>9,} ids ({path.stat().st_size / 1e6:.1f} MB): one lookup "
                  f"{statistics.median(times) * 1e3:.2f} ms")


if __name__ == "__main__":
    on_run(sys.argv[1] if len(sys.argv) > 1 else "configs/quickstart.yaml")
    growth()
