"""One large site (one host) crawled the three ways issue 15 asks for, on real HTTP and the session's Ray:
by one worker; by two (the second core processes pages through helper tasks); by two with the crawl task killed
(SIGKILL) mid-round and resumed by Ray's retry. Same digests all three ways; the kill costs at most the pages
since the last checkpoint plus those in flight. And a crawl task whose driver died stops fetching by itself.

    .venv/bin/python -m pytest -q tests/stages/test_crawl_bigsite.py     (~25 s on an idle 2-core machine)
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from pipelines.testing.helpers import run_stage
from pipelines.testing.httpsite import SiteServer
from pipelines.testing.realtext import html_bodies
from stages.crawl.config import CrawlConfig
from stages.crawl.partition import max_in_flight
from tests.stages.test_crawl_http import crawl_cfg

PAGES = 48


@pytest.fixture(scope="module")
def big_site():
    """An index linking PAGES real sample-site pages (under 64 KB, as the bench serves), one host."""
    bodies = html_bodies()[:PAGES]
    index = "".join(f'<a href="/p/{i}.html">第{i}页</a>' for i in range(len(bodies)))
    routes = {f"/p/{i}.html": (200, {"Content-Type": "text/html; charset=utf-8"}, b) for i, b in enumerate(bodies)}
    routes["/"] = (200, {"Content-Type": "text/html; charset=utf-8"},
                   f"<html><head><title>目录</title></head><body>{index}</body></html>".encode())
    server = SiteServer(routes)
    yield server
    server.close()


def big_cfg(site, **kw) -> CrawlConfig:
    return crawl_cfg([site.base + "/"], max_depth=1, read_timeout=30, total_timeout=60, max_bytes=1 << 20,
                     concurrency=4, per_host_concurrency=2, **kw)


def helper_pages(out_dir) -> int:
    return sum(json.loads(p.read_text())["helper_pages"] for p in out_dir.glob(".partial/t/rounds/*.json"))


@pytest.fixture(scope="module")
def one_worker(big_site, ray_session, tmp_path_factory):
    _, out = run_stage("crawl", big_cfg(big_site), {}, tmp_path_factory.mktemp("w1") / "crawl", workers=1)
    assert out.manifest.outputs["docs"].rows == PAGES + 1 and helper_pages(out.dir) == 0
    return out.manifest.digests


def test_two_workers_share_one_host_and_give_the_same_outputs(big_site, one_worker, ray_session, tmp_path):
    _, out = run_stage("crawl", big_cfg(big_site), {}, tmp_path / "crawl", workers=2)
    assert out.manifest.digests == one_worker
    assert helper_pages(out.dir) > 0  # the second worker processed pages of the one host
    assert not list(out.dir.glob(".partial/t/journals/*"))  # each round's journal is gone once its shards are cut


def test_kill_mid_round_resumes_with_few_refetches(big_site, one_worker, ray_session, tmp_path, monkeypatch):
    """SIGKILL the crawl task right after its 13th page of round 1 is journaled (checkpoints every 5 pages, none by
    time): Ray retries the task, which fetches again only pages 11-13 and those that were in flight."""
    big_site.hits.clear()
    leftover = tmp_path / "crawl/docs/.t-r001-p000.parquet.tmp-4242"  # a writer that died in an earlier run
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"PAR1")
    monkeypatch.setenv("ZHGPT_FAULT", "crawl.pages@13")
    cfg = big_cfg(big_site, checkpoint_pages=5, checkpoint_seconds=3600)
    _, out = run_stage("crawl", cfg, {}, tmp_path / "crawl", workers=2)
    assert (out.dir / ".partial/t/crawl.pages.fault").exists(), "the kill did not happen"
    assert out.manifest.digests == one_worker  # the outputs are those of an uninterrupted crawl
    refetched = sum(len(ts) - 1 for path, ts in big_site.hits.items() if path.startswith("/p/"))
    bound = 3 + max_in_flight(cfg, hosts=1, helpers=1)
    assert 3 <= refetched <= bound, f"{refetched} pages fetched twice; at most {bound} expected"
    assert not [p for p in out.dir.rglob("*") if ".tmp-" in p.name]  # no dead writer's file is left behind


CHILD = """
import json, sys
from stages.crawl.config import CrawlConfig
from stages.crawl.partition import crawl_partition
cfg = CrawlConfig.model_validate_json(sys.argv[1])
crawl_partition(cfg.sources[0], cfg, 0, 0, json.loads(sys.argv[2]), sys.argv[3], sys.argv[3] + "/.partial")
"""
PARENT = "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True); p.wait()"


def test_task_stops_fetching_when_its_driver_dies(tmp_path):
    """A crawl task whose parent (in Ray: the raylet, which dies with the driver) is SIGKILLed stops by itself: it
    sends no request after the kill and exits, although its server never answers (without the watchdog it would
    wait out its 60 s read timeout, then fetch the next URLs); the pages it had fetched are in its journal."""
    from stages.crawl.journal import Journal

    held = {f"/hold/{i}": lambda s: (s.release.wait(120), (200, {}, b""))[1] for i in range(8)}
    fast = {f"/fast/{i}": (200, {"Content-Type": "text/html"}, f"<p>第{i}页</p>".encode()) for i in range(2)}
    server = SiteServer({"/robots.txt": (404, {}, b""), **fast, **held})
    try:
        cfg = crawl_cfg([server.base + "/"], concurrency=2, per_host_concurrency=2, read_timeout=60)
        urls = [[server.base + p, ""] for p in sorted(fast) + sorted(held)]  # the fast pages first
        parent = subprocess.Popen([sys.executable, "-c", PARENT, sys.executable, "-c", CHILD, cfg.model_dump_json(),
                                   json.dumps(urls), str(tmp_path)], stdout=subprocess.PIPE, text=True)
        child = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 60
        while sum(len(v) for p, v in server.hits.items() if p.startswith("/hold/")) < 2:  # both requests are held
            assert time.monotonic() < deadline and child.is_running(), "the crawl task never sent its requests"
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while _alive(child):
            assert time.monotonic() < deadline, "the orphaned crawl task is still running"
            time.sleep(0.05)
        assert sum(len(v) for p, v in server.hits.items() if p.startswith("/hold/")) == 2
    finally:
        server.close()
    assert Journal(tmp_path / ".partial/journals/t-r000-p000", urls).done == {0, 1}  # saved before it stopped


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE  # an exited process nobody reaped is a zombie
    except psutil.NoSuchProcess:
        return False
