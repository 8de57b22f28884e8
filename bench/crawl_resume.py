"""A crawl killed mid-round, as issue 15 found it: how many pages its rerun fetches again, whether its outputs equal
an uninterrupted crawl's, and how long its tasks kept fetching after the driver died, beside Ray's own delay.

    .venv/bin/python bench/crawl_resume.py                 # 700 pages in one round, the driver killed at page 350
    .venv/bin/python bench/crawl_resume.py --pages 200 --kill-at 120

The site: an index linking PAGES real sample-site pages (one host, 127.0.0.1, served from this process, which
logs every request). Each crawl is a driver process of its own (a local Ray of 2 CPUs, the crawl stage with 2
workers, the default checkpoint interval): one uninterrupted; one SIGKILLed once the site has served KILL_AT pages
of round 1, then run again in the same folder. Baseline for the stop delay: a plain Ray task's, whose driver is
SIGKILLed the same way (Ray stops it when the worker notices its raylet is gone).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DRIVER = """
import json, logging, sys
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
from stages.crawl.config import CrawlConfig
from pipelines.testing.helpers import run_stage
_, out = run_stage("crawl", CrawlConfig.model_validate_json(sys.argv[1]), {}, sys.argv[2], workers=2)
print(json.dumps(out.manifest.digests))
"""
TICKER = """
import logging, sys, time
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
@ray.remote
def tick(path):
    with open(path, "a") as fh:
        while True:
            fh.write(f"{time.monotonic()}\\n"); fh.flush(); time.sleep(0.01)
tick.remote(sys.argv[1])
time.sleep(600)
"""


def site(pages: int):
    from pipelines.testing.httpsite import SiteServer
    from pipelines.testing.realtext import html_bodies

    bodies = html_bodies()
    routes = {f"/p/{i}.html": (200, {"Content-Type": "text/html; charset=utf-8"}, bodies[i % len(bodies)])
              for i in range(pages)}
    index = "".join(f'<a href="/p/{i}.html">{i}</a>' for i in range(pages))
    routes["/"] = (200, {"Content-Type": "text/html; charset=utf-8"}, f"<html><body>{index}</body></html>".encode())
    return SiteServer(routes)


def config(server):
    from stages.crawl.config import CrawlConfig

    return CrawlConfig(sources=[{"name": "b", "type": "seeds", "seeds": [server.base + "/"], "max_depth": 1,
                                 "max_pages": None, "include": [r"/(p/\d+\.html)?$"], "allow_private": ["127.0.0.1"]}],
                       min_delay=0, per_host_concurrency=4, fetched_at="2026-01-01T00:00:00Z")


def drive(cfg, out: Path, server=None, kill_at: int = 0) -> tuple[dict | None, float]:
    """Run a driver process; with kill_at, SIGKILL it once the site has served that many pages. Returns the
    digests (None when killed) and the kill time (time.monotonic, the clock the server logs with)."""
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, cfg.model_dump_json(), str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while kill_at and proc.poll() is None:
        if sum(len(ts) for p, ts in server.hits.items() if p.startswith("/p/")) >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            proc.wait()
            return None, killed
        time.sleep(0.01)
    stdout, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the crawl driver failed ({proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1]), 0.0


def ray_stop_delay(tmp: Path) -> float:
    """Seconds a plain Ray task runs on after its driver's SIGKILL (Ray's own cleanup, the baseline)."""
    ticks = tmp / "ticks"
    proc = subprocess.Popen([sys.executable, "-c", TICKER, str(ticks)], cwd=ROOT, stderr=subprocess.DEVNULL)
    while not ticks.exists() or ticks.stat().st_size < 1000:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    proc.wait()
    time.sleep(5)
    return float(ticks.read_text().split()[-1]) - killed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=700)
    ap.add_argument("--kill-at", type=int, default=350)
    a = ap.parse_args()
    server = site(a.pages)
    cfg = config(server)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            whole, _ = drive(cfg, tmp / "whole")
            server.hits.clear()
            _, killed = drive(cfg, tmp / "killed", server, a.kill_at)
            if not killed:
                raise SystemExit(f"the crawl ended before {a.kill_at} pages: nothing to resume")
            time.sleep(3)  # whatever the orphaned tasks still fetch arrives by now
            late = [t - killed for p, ts in server.hits.items() if p.startswith("/p/") for t in ts if t > killed]
            resumed, _ = drive(cfg, tmp / "killed")
            baseline = ray_stop_delay(tmp)
    finally:
        server.close()
    pages = [ts for p, ts in server.hits.items() if p.startswith("/p/")]
    refetched = sum(len(ts) - 1 for ts in pages)
    print(f"{a.pages}-page round, driver SIGKILLed after {a.kill_at} pages, then run again (2 workers, "
          f"checkpoint every {cfg.checkpoint_pages} pages / {cfg.checkpoint_seconds:g} s):")
    print(f"  refetched on resume: {refetched} pages = {refetched / a.pages:.1%} of the round (goal <= 2% + in flight)"
          f"; every page fetched: {len(pages) == a.pages}")
    print(f"  outputs equal the uninterrupted crawl's: {resumed == whole} ({json.dumps(resumed)})")
    print(f"  requests after the driver died: {len(late)}, the last {max(late, default=0):.2f} s after; a plain Ray "
          f"task ran on {baseline:.2f} s (Ray's own cleanup)")


if __name__ == "__main__":
    main()
