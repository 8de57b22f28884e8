"""How long the `zhgpt` commands a user types all day take, beside `python -c pass` measured in the same run.

    .venv/bin/python bench/cli.py [--repo PATH] [--repeat N]

On the test-only gen -> upper -> count pipeline (pipelines/testing/stagekit.py) in a temp work_dir: one full run
first (not timed), then the median of N runs of each command as a subprocess, the way a shell starts it:

    run (cached)      every stage reused; lineage recorded                     goal <= 2 s
    status            the stage table                                          goal <= 1.5 s
    trace --doc       one document through every stage                         goal <= 1.5 s
    config error      -o gen.shards=many                                       goal <= 1.5 s
    cli error         run --only bogus                                         goal <= 1.5 s
    run --force x2    --force upper --force count: two stages re-run; how many times Ray started
--repo runs another checkout's code (e.g. main's) with this script, for a before/after table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

GOALS = {"run (cached)": 2.0, "status": 1.5, "trace --doc": 1.5, "config error": 1.5, "cli error": 1.5}


def timed(cmd: list[str], env: dict, repeat: int, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        out = res.stdout + res.stderr
        if res.returncode not in ok:
            raise SystemExit(f"{' '.join(cmd[2:])}: exit {res.returncode}\n{out[-3000:]}")
    return statistics.median(times), out


def first_doc_id(work: Path) -> str:
    import pyarrow.parquet as pq

    shard = sorted((work / "gen").glob("*/docs/part-00000.parquet"))[0]
    return pq.read_table(shard, columns=["id"]).column("id")[0].as_py()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    repo = Path(args.repo).resolve()
    env = {**os.environ, "PYTHONPATH": str(repo), "RAY_DEDUP_LOGS": "0"}
    zhgpt = [sys.executable, "-m", "pipelines.cli"]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d) / "work"
        cfg = Path(d) / "kit.yaml"
        cfg.write_text(yaml.safe_dump({"pipeline": "kit", "work_dir": str(work),
                                       "plugins": ["pipelines.testing.stagekit"], "ray": {"num_cpus": 2},
                                       "gen": {"shards": 4, "rows_per_shard": 30}, "upper": {}, "count": {}}))
        subprocess.run([*zhgpt, "run", str(cfg)], env=env, cwd=repo, check=True, capture_output=True)
        base, _ = timed([sys.executable, "-c", "pass"], env, args.repeat)
        rows = [("python -c pass", base, "")]
        doc = first_doc_id(work)
        cases = [("run (cached)", ["run", str(cfg)], (0,)), ("status", ["status", str(cfg)], (0,)),
                 ("trace --doc", ["trace", str(cfg), "--doc", doc], (0,)),
                 ("config error", ["run", str(cfg), "-o", "gen.shards=many"], (2,)),
                 ("cli error", ["run", str(cfg), "--only", "bogus"], (2,))]
        for name, argv, ok in cases:
            t, _ = timed([*zhgpt, *argv], env, args.repeat, ok)
            rows.append((name, t, f"goal <= {GOALS[name]:.1f} s: {'met' if t <= GOALS[name] else 'MISSED'}"))
        t, out = timed([*zhgpt, "run", str(cfg), "--force", "upper", "--force", "count"], env, 1)
        starts = out.count("ray: started")
        rows.append(("run --force x2", t, f"Ray started {starts} time(s)" if starts else "Ray start not reported"))
    print(f"zhgpt commands ({repo.name}, median of {args.repeat}; wall seconds)")
    for name, t, note in rows:
        print(f"  {name:<16} {t:6.2f} s  {t / base:6.1f}x python -c pass  {note}")


if __name__ == "__main__":
    main()
