"""Scale benchmark: every data stage with default settings on a realistic Chinese corpus of N documents, per stage
what it cost (wall, CPU of every process, memory, disk), and how that grows from one size to the next.

    PYTHONPATH=$PWD .venv/bin/python bench/scale.py --docs 100000,1000000      (under the heavy lock on a shared box)

1. The corpus (pipelines/testing/corpus.py): the sample site's real paragraphs recombined into documents of
   web-like length, 3% exact and 3% near copies planted, JSONL files of --per-file documents, written once under
   --root and reused.
2. The pipeline: a config with a `files` source and default clean, dedupe, tokenizer and tokenize sections, run as
   a user runs it (`python -m pipelines.cli run CONFIG`, a fresh local Ray on all cores) from the code tree --code
   (default: this checkout; `git archive main | tar -x -C DIR` gives a baseline to run the same bench on).
3. Per stage, between the runner's "[stage] running" and "[stage] done" lines (so the `_index` build and the MLflow
   logging count): wall seconds; CPU seconds of the driver, the Ray workers and Ray's daemons
   (pipelines/testing/procs.py);
   busy = CPU / (wall x cores); documents and MB (of input text) per CPU-second; peak RSS of the driver and of the
   largest worker during the stage (VmHWM), and the largest worker's anonymous memory (sampled every 0.5 s: RSS
   less memory-mapped file pages, which the kernel reclaims); output MB (manifest shards), index MB, and scratch
   MB left in the stage directory after success (hidden files not in the manifest: `.partial/` working areas,
   writers' temp files).
4. Dedupe's recall on the planted copies: a planted pair counts as found when copy and original both survived clean
   and dedupe did not keep both; "other removed" are removals outside the planted pairs.
5. With several sizes, the growth of each figure from each size to the next (goals at 10^6 vs 10^5: CPU per
   document <= 1.0x, driver RSS <= 1.2x, worker RSS <= 1.3x, no scratch). Worker RSS means anonymous memory:
   resident pages of memory-mapped files (dedupe's signatures, read by every verify task) are page cache the kernel
   drops under pressure, and VmHWM counts them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from pipelines.gc import size_of
from pipelines.testing.corpus import generate, url_of
from pipelines.testing.procs import TreeMonitor

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["crawl", "clean", "dedupe", "tokenizer", "tokenize"]
INPUT_OF = {"clean": "crawl", "dedupe": "clean", "tokenizer": "dedupe", "tokenize": "dedupe"}


def write_config(run_dir: Path, corpus: Path, workers: int | None) -> Path:
    cfg = {"pipeline": "scale", "work_dir": str(run_dir / "work"),
           "crawl": {"sources": [{"name": "bench", "type": "files", "paths": [str(corpus / "jsonl")]}]},
           "clean": {}, "dedupe": {}, "tokenizer": {}, "tokenize": {}}
    if workers:
        cfg["ray"] = {"workers": workers}
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_pipeline(config: Path, code: Path, log: Path, verbose: bool) -> tuple[dict, dict]:
    """Run the CLI in a child process; returns ({stage: figures}, {"wall", "cpu"} of the whole run)."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config)], cwd=code, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mon = TreeMonitor(proc.pid, timeline=True)
    stages, start, final, lines = {}, None, None, []
    with open(log, "w") as out:
        for line in proc.stdout:
            out.write(line)
            out.flush()
            lines.append((time.perf_counter(), line.rstrip()[:200]))
            if verbose:
                print("    " + line, end="", flush=True)
            name = line[1:].split("]", 1)[0] if line.startswith("[") else None
            if name in STAGES and "] running" in line:
                mon.reset_peaks()
                start = mon.mark()
            elif name in STAGES and "] done in" in line and start is not None:
                end, peaks = mon.mark(), mon.peaks()
                stages[name] = {"wall": end.t - start.t, "cpu": end.cpu - start.cpu,
                                **{f"cpu_{r}": end.by_role[r] - start.by_role[r] for r in end.by_role},
                                "rss_driver": peaks["driver"], "rss_worker": peaks["workers"],
                                "anon_worker": peaks["workers_anon"]}
                start = None
            if line.startswith("done:"):
                final = mon.mark()
    rc = proc.wait()
    mon.close()
    write_timeline(log.with_suffix(".mem.tsv"), mon.timeline, lines, t0)
    if rc != 0:
        raise SystemExit(f"pipeline failed (exit {rc}); see {log}")
    return stages, {"wall": time.perf_counter() - t0, "cpu": final.cpu if final else float("nan")}


def write_timeline(path: Path, samples: list, lines: list, t0: float) -> None:
    """Seconds, driver and largest worker resident MB, largest worker anonymous MB (resident minus mapped files),
    and the log lines between samples: where memory goes."""
    with open(path, "w") as fh:
        k = 0
        for t, drv, wrk, anon in samples:
            said = []
            while k < len(lines) and lines[k][0] <= t:
                said.append(lines[k][1])
                k += 1
            fh.write(f"{t - t0:.1f}\t{drv:.0f}\t{wrk:.0f}\t{anon:.0f}\t{' | '.join(said)}\n")


def _manifest(work: Path, stage: str) -> tuple[Path, dict]:
    (d,) = [p.parent for p in (work / stage).glob("*/manifest.json")]
    return d, json.loads((d / "manifest.json").read_text())


def text_mb(stage_dir: Path, manifest: dict) -> float:
    """Uncompressed MB of the primary output's text column (from the Parquet footers)."""
    total = 0
    for s in manifest["outputs"][next(n for n, o in manifest["outputs"].items() if o["primary"])]["shards"]:
        meta = pq.ParquetFile(stage_dir / s["path"]).metadata
        ci = meta.schema.to_arrow_schema().get_field_index("text")
        total += sum(meta.row_group(g).column(ci).total_uncompressed_size for g in range(meta.num_row_groups))
    return total / 1e6


def disk(stage_dir: Path, manifest: dict) -> dict:
    listed = {s["path"]: s["bytes"] for o in manifest["outputs"].values() for s in o["shards"]}
    index = sum(b for p, b in listed.items() if p.startswith("_index/"))
    scratch = 0  # working areas and temp files are hidden (.partial/, .NAME.tmp-PID); artifacts are not
    for f in stage_dir.rglob("*"):
        rel = f.relative_to(stage_dir).as_posix()
        if f.is_file() and rel not in listed and any(part.startswith(".") for part in rel.split("/")):
            scratch += f.stat().st_size
    return {"out_mb": (sum(listed.values()) - index) / 1e6, "index_mb": index / 1e6, "scratch_mb": scratch / 1e6}


def describe(work: Path, corpus: Path, stages: dict) -> dict:
    dirs = {s: _manifest(work, s) for s in STAGES}
    jsonl_mb = sum(f.stat().st_size for f in (corpus / "jsonl").glob("*.jsonl")) / 1e6
    for s, (d, m) in dirs.items():
        up = INPUT_OF.get(s)
        prim = lambda mm: next(o for o in mm["outputs"].values() if o["primary"])  # noqa: E731
        stages[s].update(docs_in=prim(dirs[up][1])["rows"] if up else prim(m)["rows"],
                         mb_in=text_mb(*dirs[up]) if up else jsonl_mb, **disk(d, m),
                         digests={k: o["digest"] for k, o in sorted(m["outputs"].items()) if k != "_index"})
    return dirs


def recall(corpus: Path, dirs: dict) -> dict:
    planted = pq.read_table(corpus / "planted.parquet").to_pylist()
    cleaned = set()
    for p in dirs["clean"][0].glob("docs/*.parquet"):
        cleaned.update(pq.read_table(p, columns=["url"]).column("url").to_pylist())
    removed = set()
    for p in dirs["dedupe"][0].glob("duplicates/*.parquet"):
        removed.update(pq.read_table(p, columns=["url"]).column("url").to_pylist())
    out, involved = {}, set()
    for kind in ("exact", "near"):
        pairs = [(url_of(r["copy"]), url_of(r["original"])) for r in planted if r["kind"] == kind]
        pairs = [p for p in pairs if p[0] in cleaned and p[1] in cleaned]
        involved.update(u for p in pairs for u in p)
        out[kind] = (sum(1 for a, b in pairs if a in removed or b in removed), len(pairs))
    out["other_removed"] = len(removed - involved)
    return out


def measure(args, n: int) -> dict:
    corpus = generate(args.root, n, args.per_file, args.seed, 0.03, 0.03, os.cpu_count() or 1)
    run_dir = args.root / f"run-{n}-{hashlib.sha256(str(args.code).encode()).hexdigest()[:8]}-w{args.workers or 0}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    print(f"{n} documents: corpus {corpus}, work dir {run_dir / 'work'}, code {args.code}", flush=True)
    stages, total = run_pipeline(write_config(run_dir, corpus, args.workers), args.code, run_dir / "run.log",
                                 args.verbose)
    dirs = describe(run_dir / "work", corpus, stages)
    result = {"docs": n, "code": str(args.code), "cores": os.cpu_count(), "total": total, "stages": stages,
              "recall": recall(corpus, dirs), "work_mb": size_of(run_dir / "work") / 1e6}
    for f in ("run.log", "run.mem.tsv"):  # kept beside the corpora: the pipeline's log, memory over time
        shutil.copy(run_dir / f, args.root / f"{run_dir.name}.{f}")
    if not args.keep:
        shutil.rmtree(run_dir)
    return result


def table(r: dict) -> str:
    cores = r["cores"]
    head = (f"{'stage':<10}{'wall s':>8}{'CPU s':>8}{'drv':>6}{'wrk':>8}{'ray':>6}{'busy':>6}{'docs/CPU-s':>11}"
            f"{'MB/CPU-s':>9}{'drv MB':>8}{'wrk MB':>8}{'anon':>6}{'out MB':>9}{'idx MB':>8}{'scratch MB':>11}")
    lines = [head]
    for s in STAGES:
        x = r["stages"][s]
        lines.append(f"{s:<10}{x['wall']:>8.1f}{x['cpu']:>8.1f}{x['cpu_driver']:>6.1f}{x['cpu_workers']:>8.1f}"
                     f"{x['cpu_ray']:>6.1f}{x['cpu'] / x['wall'] / cores:>6.0%}{x['docs_in'] / x['cpu']:>11.0f}"
                     f"{x['mb_in'] / x['cpu']:>9.2f}{x['rss_driver']:>8.0f}{x['rss_worker']:>8.0f}"
                     f"{x['anon_worker']:>6.0f}"
                     f"{x['out_mb']:>9.1f}{x['index_mb']:>8.1f}{x['scratch_mb']:>11.1f}")
    rc = r["recall"]
    lines.append(f"whole run: {r['total']['wall']:.0f} s wall, {r['total']['cpu']:.0f} CPU-s (Ray start-up included); "
                 f"work dir {r['work_mb'] / 1e3:.2f} GB")
    lines.append(f"dedupe recall on planted copies: exact {rc['exact'][0]}/{rc['exact'][1]} "
                 f"({rc['exact'][0] / max(1, rc['exact'][1]):.2%}), near {rc['near'][0]}/{rc['near'][1]} "
                 f"({rc['near'][0] / max(1, rc['near'][1]):.2%}); other documents removed: {rc['other_removed']}")
    digests = [f"{s} " + ",".join(f"{k}={d[:12]}" for k, d in r["stages"][s]["digests"].items()) for s in STAGES]
    lines.append("digests: " + "; ".join(digests))
    return "\n".join(lines)


def growth(a: dict, b: dict) -> str:
    k = b["docs"] / a["docs"]
    lines = [f"growth {b['docs']} vs {a['docs']} documents ({k:g}x): CPU per document (goal <= 1.0x), driver peak "
             f"RSS (goal <= 1.2x), largest worker peak RSS and its anonymous part (goal <= 1.3x: the anonymous part, "
             f"what the kernel cannot reclaim), scratch MB (goal 0)",
             f"{'stage':<10}{'CPU/doc':>9}{'drv RSS':>9}{'wrk RSS':>9}{'wrk anon':>9}{'scratch MB':>16}"]
    for s in STAGES:
        x, y = a["stages"][s], b["stages"][s]
        lines.append(f"{s:<10}{(y['cpu'] / y['docs_in']) / (x['cpu'] / x['docs_in']):>8.2f}x"
                     f"{y['rss_driver'] / x['rss_driver']:>8.2f}x{y['rss_worker'] / max(1, x['rss_worker']):>8.2f}x"
                     f"{y['anon_worker'] / max(1, x['anon_worker']):>8.2f}x"
                     f"{x['scratch_mb']:>8.0f} ->{y['scratch_mb']:>5.0f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", default="100000", help="comma-separated sizes, e.g. 100000,1000000")
    ap.add_argument("--per-file", type=int, default=50_000, help="documents per JSONL file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "zhgpt-scale",
                    help="where corpora and work dirs go (outside the repository)")
    ap.add_argument("--code", type=Path, default=ROOT, help="the zhgpt code tree to run (a baseline's, say)")
    ap.add_argument("--workers", type=int, default=None, help="ray.workers (default: one per core)")
    ap.add_argument("--keep", action="store_true", help="keep the work dirs (default: removed after measuring)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--verbose", action="store_true", help="echo the pipeline's log")
    args = ap.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    args.code = args.code.resolve()
    results = []
    for n in [int(x) for x in args.docs.split(",")]:
        results.append(measure(args, n))
        print(table(results[-1]), flush=True)
    for a, b in zip(results, results[1:]):  # each size against the one before: does the growth hold?
        print(growth(a, b))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
