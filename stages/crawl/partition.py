"""One partition's round in one Ray task (`crawl_partition`): fetch its URLs politely, process each page (pages.py)
on this task's thread and on helper tasks, journal every result (journal.py), cut the shards in URL order.

Fetching stays in this one task, so a host's politeness (delay, per-host concurrency, robots.txt) lives in one
place: frontier.partition_of never splits a host. Fetches start host by host, round-robin, at most
per_host_concurrency per host and `concurrency` in all, and only while the pages waiting for a CPU are few:
a page fetched far ahead of the CPU would only be lost to a kill.

Processing (decode, parse, extract, links, WARC gzip) is the CPU: ~18 ms a sample-site page, against ~1 ms to
fetch it from a local mirror. A round with fewer partitions than workers gives each partition `helpers`: Ray
tasks (one CPU each) that take BATCH pages at a time while this task's own thread takes one; so one large site
uses every worker. The result does not depend on where a page was processed, nor on the worker count.

Stopping: when the driver process dies, Ray's local raylet dies with it (kernel fate-sharing), but a task's
worker only learns so from its own periodic raylet check (1 s by default; ~2 s of extra fetching measured here,
where nothing reaps the dead raylet, so its pid still answers). This task watches its parent process (the raylet)
every WATCH_S and stops fetching when it is gone; the pages it already fetched are processed here and journaled
(`salvage`, ~20 ms each), so the rerun fetches again only the requests that were on the wire. A driver that
joined a running cluster is different: there the raylet lives on and kills the job's workers itself (0.06 s).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.faults import adopt, fault_point
from pipelines.io import read_json, write_json
from stages.crawl.fetch import Fetcher
from stages.crawl.frontier import host_of
from stages.crawl.journal import Journal, cut, encode
from stages.crawl.pages import RoundInfo, now_iso, result_of
from stages.crawl.robots import agent_token

BATCH = 4  # pages per helper task: a Ray task costs ~1-2 ms of CPU on both ends, 4 pages ~70 ms of work
WATCH_S = 0.1  # how often a task checks that its driver is alive


def process_batch(jobs: list[tuple], info: RoundInfo) -> list[bytes]:
    """Journal entries of (index, url, referrer, Fetched) jobs: the unit of work of this task's thread and of a
    helper task. Encoded where they are processed, so the fetching task only writes bytes."""
    return [encode(result_of(*job, info)) for job in jobs]


def helper_task(info: RoundInfo, *jobs: tuple) -> bytes | tuple[bytes, ...]:
    """process_batch as a Ray task with one argument and one return value per page: each under Ray's 100 KB
    inline limit, so none goes through the object store (1.1 vs 2.1 ms of the caller's CPU per 4-page task)."""
    out = process_batch(list(jobs), info)
    return out[0] if len(out) == 1 else tuple(out)


class Orphaned(RuntimeError):
    """The process that started this task is gone (the driver died): nobody will read what it fetches."""


def max_in_flight(cfg, hosts: int, helpers: int) -> int:
    """Pages at most between the start of their fetch and their journal entry: what a kill may cost on top of
    the pages since the last checkpoint. As many as can be fetched at once, plus twice what the processors take
    at once (a batch per helper, one page on this task's thread): one set being processed, one waiting."""
    return min(cfg.concurrency, hosts * cfg.per_host_concurrency) + 2 * (helpers * BATCH + 1)


class Processor:
    """process_batch on this task's thread and on `helpers` Ray tasks; pages are taken in arrival order."""

    def __init__(self, info: RoundInfo, helpers: int):
        self.info, self.free_helpers, self.thread_free = info, 0, True
        self.helper_pages = 0  # processed by helper tasks (reported with the round's result)
        self.queue: deque = deque()  # (job, future) waiting for a processor
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="crawl-pages")
        self.running: set[asyncio.Task] = set()
        if helpers:
            import ray

            if ray.is_initialized():  # else called outside Ray (a bench, a test): this task's thread alone
                self.free_helpers = helpers
                self.remote, self.lost = ray.remote(helper_task), ray.exceptions.RayError
                self.info_ref = ray.put(info)

    def submit(self, job: tuple) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((job, fut))
        self._pump()
        return fut

    def _pump(self) -> None:
        while self.queue and self.free_helpers:
            self.free_helpers -= 1
            self._start(self._remote, BATCH)
        if self.queue and self.thread_free:
            self.thread_free = False
            self._start(self._local, 1)

    def _start(self, runner, size: int) -> None:
        batch = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
        task = asyncio.create_task(self._run(runner, batch))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, runner, batch: list) -> None:
        try:
            results = await runner([job for job, _ in batch])
            for (_, fut), res in zip(batch, results):
                fut.set_result(res)
        except Exception as exc:  # a bug in processing: the page's own task raises it
            for _, fut in batch:
                fut.set_exception(exc)
        self._pump()

    async def _local(self, jobs: list) -> list:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.thread, process_batch, jobs, self.info)
        finally:
            self.thread_free = True

    async def _remote(self, jobs: list) -> list:
        try:
            refs = self.remote.options(num_cpus=1, num_returns=len(jobs)).remote(self.info_ref, *jobs)
            results = await asyncio.gather(*(asyncio.wrap_future(r.future())
                                             for r in (refs if len(jobs) > 1 else [refs])))
            self.helper_pages += len(results)
            return results
        except self.lost:  # the helper was lost (its worker died, Ray gave up): process the pages here instead
            return await asyncio.get_running_loop().run_in_executor(self.thread, process_batch, jobs, self.info)
        finally:
            self.free_helpers += 1

    def close(self) -> None:
        for task in self.running:
            task.cancel()
        self.thread.shutdown(wait=True, cancel_futures=True)


class RoundLoop:
    """Fetch every URL not yet in the journal, process it, journal it; checkpoint as configured."""

    def __init__(self, items: list[list], journal: Journal, fetcher: Fetcher, proc: Processor, cfg, helpers: int,
                 fault_marker: Path):
        self.items, self.journal, self.fetcher, self.proc, self.cfg = items, journal, fetcher, proc, cfg
        self.queues: dict[str, deque[int]] = {}
        for i, (url, _) in enumerate(items):
            if i not in journal.entries:
                self.queues.setdefault(host_of(url), deque()).append(i)
        self.order = deque(self.queues)  # hosts, served round-robin
        self.active: Counter = Counter()  # fetches in progress per host
        self.fetching: dict[asyncio.Task, tuple[int, str]] = {}
        self.working: set[asyncio.Task] = set()  # fetched, not yet journaled
        self.fetched: dict[int, object] = {}  # the same pages' fetch results, for `salvage`
        self.cap = max_in_flight(cfg, len(self.queues), helpers)
        self.fault_marker = fault_marker
        self.salvage = False  # set when the driver is gone: pages already fetched are processed here, not lost

    async def run(self) -> None:
        try:
            while self.queues or self.fetching or self.working:
                self._start_fetches()
                done, _ = await asyncio.wait([*self.fetching, *self.working], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in self.fetching:
                        i, host = self.fetching.pop(task)
                        self.active[host] -= 1
                        self.fetched[i] = task.result()
                        self.working.add(asyncio.create_task(self._finish(i, self.fetched[i])))
                    else:
                        self.working.discard(task)
                        task.result()  # a failure in processing or journaling ends the round
        finally:
            pending = [*self.fetching, *self.working]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if self.salvage:  # ~20 ms a page, no request: the rerun will not fetch them again
                for i, fetched in sorted(self.fetched.items()):
                    self.journal.append(i, process_batch([(i, *self.items[i], fetched)], self.proc.info)[0])
            # Every way out saves what is journaled (entries are whole: appends never straddle an await), so a
            # task stopped by its watchdog or by an error resumes from here; only a SIGKILL falls back on the
            # last periodic checkpoint.
            with contextlib.suppress(OSError):
                self.journal.checkpoint(self.fetcher.ready_at())

    def _start_fetches(self) -> None:
        while self.queues and len(self.fetching) < self.cfg.concurrency and \
                len(self.fetching) + len(self.working) < self.cap:
            host = next((h for h in self.order if self.active[h] < self.cfg.per_host_concurrency), None)
            if host is None:
                return
            self.order.remove(host)
            i = self.queues[host].popleft()
            if self.queues[host]:
                self.order.append(host)  # to the back of the round-robin
            else:
                del self.queues[host]
            self.active[host] += 1
            self.fetching[asyncio.create_task(self.fetcher.fetch(self.items[i][0]))] = (i, host)

    async def _finish(self, i: int, fetched) -> None:
        url, referrer = self.items[i]
        job = (i, url, referrer, fetched)
        entry = await self.proc.submit(job) if fetched.fate == "fetched" else encode(result_of(*job, self.proc.info))
        self.journal.append(i, entry)
        del self.fetched[i]
        if self.journal.due(self.cfg.checkpoint_pages, self.cfg.checkpoint_seconds):
            self.journal.checkpoint(self.fetcher.ready_at())
        fault_point("crawl.pages", len(self.journal.entries), self.fault_marker)  # test hook: a kill mid-round


async def _watch(parent: int) -> None:
    while True:
        await asyncio.sleep(WATCH_S)
        if os.getppid() != parent:
            raise Orphaned(f"the process that started this crawl task (pid {parent}) is gone: stopped fetching")


async def _round(src, cfg, info: RoundInfo, items: list[list], journal: Journal, partial: Path, ready: dict,
                 helpers: int) -> tuple[dict[str, float], int]:
    """Run one round's loop beside the watchdog; return each host's politeness state for the next round and the
    pages the helpers processed."""
    fetcher = Fetcher(cfg, src.allow_private, partial / "robots", ready)
    proc = Processor(info, helpers)
    watch = asyncio.create_task(_watch(os.getppid()))
    rounds = RoundLoop(items, journal, fetcher, proc, cfg, helpers, partial / "crawl.pages.fault")
    loop = asyncio.create_task(rounds.run())
    try:
        await asyncio.wait([watch, loop], return_when=asyncio.FIRST_COMPLETED)
        if watch.done():
            rounds.salvage = True
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            watch.result()  # raises Orphaned
        loop.result()
        return fetcher.ready_at(), proc.helper_pages
    finally:
        watch.cancel()
        proc.close()
        await fetcher.aclose()


def crawl_partition(src, cfg, rnd: int, part: int, items: list[list], out_dir: str, partial: str,
                    ready: dict[str, float] | None = None, helpers: int = 0, faults: str | None = None) -> dict:
    """Ray task: fetch one partition's URLs for one round (resuming from its journal after a kill); write its docs,
    log and WARC shards. `faults` is the driver's ZHGPT_FAULT ("" for none: the session's Ray workers may not have
    it, or may have an earlier task's); None (a call in-process) keeps this process's own."""
    rel, partial = f"{src.name}-r{rnd:03d}-p{part:03d}", Path(partial)
    marker, journal_dir = partial / "rounds" / f"{rel}.json", partial / "journals" / rel
    if marker.exists():  # finished before a kill: nothing is fetched twice
        shutil.rmtree(journal_dir, ignore_errors=True)
        return read_json(marker)
    if faults is not None:
        adopt(faults)
    journal = Journal(journal_dir, items)
    info = RoundInfo(src.name, rnd, cfg.extract, agent_token(cfg.user_agent), cfg.fetched_at)
    try:
        ready = {h: max(t, journal.ready.get(h, 0.0)) for h, t in {**journal.ready, **(ready or {})}.items()}
        ready, helped = asyncio.run(_round(src, cfg, info, items, journal, partial, ready, helpers))
        result = cut(journal, len(items), out_dir, rel, {"software": "zhgpt-crawl", "date": now_iso(cfg.fetched_at),
                                                         "format": "WARC File Format 1.1"})
    finally:
        journal.close()
    result.update(ready=ready, helper_pages=helped)
    write_json(marker, result)
    journal.remove()
    return result
