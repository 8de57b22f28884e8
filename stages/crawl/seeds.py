"""The `seeds` source: a breadth-first crawl in rounds. The driver plans each round (frontier.plan_round, pure),
runs one Ray task per host partition (`crawl_partition`), folds the results in and checkpoints the state in
`.partial/`; a killed crawl re-plans the same round and reuses every partition that had finished.
"""
from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from pipelines.dataset import ParquetRows, ShardInfo, doc_id, table_of, write_parquet
from pipelines.faults import fault_point
from pipelines.io import read_json, write_json
from pipelines.stats import Stats
from stages.crawl.extract import process_html
from stages.crawl.fetch import Fetcher
from stages.crawl.frontier import CrawlState, Scope, advance, host_of, normalize_url, plan_round
from stages.crawl.tables import DOCS_SCHEMA, LOG_SCHEMA
from stages.crawl.warc import WarcShard


def _now(cfg) -> str:
    return cfg.fetched_at or datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Round:
    """What one partition's round produces, committed in URL order (so the files do not depend on timing)."""

    def __init__(self, src, cfg, rnd: int, out_dir: str, rel: str):
        self.src, self.cfg, self.rnd, self.rel = src, cfg, rnd, rel
        self.warc = WarcShard(out_dir, f"warc/{rel}.warc.gz", {"software": "zhgpt-crawl", "date": _now(cfg),
                                                              "format": "WARC File Format 1.1"})
        self.docs = ParquetRows(out_dir, f"docs/{rel}.parquet", DOCS_SCHEMA)
        self.logs: list[dict] = []
        self.links: dict[str, str] = {}
        self.final_urls: list[str] = []
        self.counts = Stats()  # URLs by fate

    def commit(self, url: str, referrer: str, f) -> None:
        now = _now(self.cfg)
        row = {"url": url, "source_name": self.src.name, "depth": self.rnd, "referrer": referrer, "fate": f.fate,
               "reason": f.reason, "status": f.status, "final_url": f.final_url or None, "fetched_at": now}
        if f.fate == "fetched":
            self._page(row, f, now)
        if f.final_url and f.final_url != url:
            self.final_urls.append(f.final_url)
        self.counts.add({row["fate"]: 1})
        self.logs.append(row)

    def _page(self, row: dict, f, now: str) -> None:
        ctype = dict((k.lower(), v) for k, v in f.headers).get("content-type")
        offset = self.warc.write_response(f.final_url, f.status, f.reason_phrase, f.headers, f.body, now)
        page = process_html(f.final_url, f.body, ctype, self.cfg.extract)
        row.update(fate=page.fate, reason=page.reason, bytes=len(f.body), warc_file=self.warc.rel, warc_offset=offset,
                   **page.charset_columns())
        for link in page.links:
            if link not in self.links or row["url"] < self.links[link]:
                self.links[link] = row["url"]
        if page.fate != "fetched":
            return
        row["id"] = doc_id(f.final_url, page.text)
        self.docs.add({"id": row["id"], "source_name": self.src.name, "url": f.final_url,
                       "source": f"warc:{self.warc.rel}@{offset}", "fetched_at": now, "title": page.title,
                       "text": page.text, "status": f.status, "undecodable": page.undecodable,
                       **page.charset_columns(),
                       "warc_file": self.warc.rel, "warc_offset": offset, "depth": self.rnd})

    def finish(self, out_dir: str) -> dict:
        shards = {"docs": [self.docs.close()],
                  "log": [write_parquet(table_of(self.logs, LOG_SCHEMA), out_dir, f"log/{self.rel}.parquet")],
                  "warc": [self.warc.close()]}
        return {"shards": {k: [vars(s) for s in v] for k, v in shards.items()},
                "links": [list(kv) for kv in sorted(self.links.items())], "final_urls": sorted(self.final_urls),
                "counts": self.counts, "ready": {}}


def crawl_partition(src, cfg, rnd: int, part: int, items: list[list], out_dir: str, partial: str,
                    ready: dict[str, float] | None = None) -> dict:
    """Ray task: fetch one partition's URLs for one round; write its docs, log and WARC shards."""
    rel = f"{src.name}-r{rnd:03d}-p{part:03d}"
    marker = Path(partial) / "rounds" / f"{rel}.json"
    if marker.exists():  # finished before a kill: nothing is fetched twice
        return read_json(marker)
    rnd_out = _Round(src, cfg, rnd, out_dir, rel)
    ready = asyncio.run(_fetch_all(src, cfg, items, rnd_out, Path(partial) / "robots", ready or {}))
    result = rnd_out.finish(out_dir)
    result["ready"] = ready
    write_json(marker, result)
    return result


async def _fetch_all(src, cfg, items: list[list], rnd_out: _Round, robots_dir: Path, ready: dict) -> dict:
    """Fetch with up to `concurrency` requests in flight, committing results in item order.

    The window (4 x concurrency) bounds memory: bodies wait for earlier URLs only that far ahead."""
    fetcher = Fetcher(cfg, src.allow_private, robots_dir, ready)
    pending: deque = deque()
    todo = iter(items)
    try:
        while True:
            while len(pending) < 4 * cfg.concurrency and (item := next(todo, None)) is not None:
                pending.append((item, asyncio.ensure_future(fetcher.fetch(item[0]))))
            if not pending:
                break
            (url, referrer), task = pending.popleft()
            rnd_out.commit(url, referrer, await task)
        return fetcher.ready_at()
    finally:
        await fetcher.aclose()


def _ready_for(state: CrawlState, urls: list[list]) -> dict[str, float]:
    hosts = {host_of(u) for u, _ in urls}
    return {h: t for h, t in state.host_ready.items() if h in hosts}


def run_seeds(ctx, idx: int, src) -> tuple[dict[str, list[ShardInfo]], dict[str, int]]:
    """Crawl one seeds source round by round; return its shards in round order and its counts by fate."""
    cfg, partial = ctx.cfg, ctx.partial_dir / src.name
    ckpt = partial / "state.json"
    state = CrawlState(**read_json(ckpt)) if ckpt.exists() else \
        CrawlState(candidates=[[s, ""] for s in src.seeds])
    scope = Scope.of(src, [normalize_url(s)[0] or s for s in src.seeds])
    while state.candidates:
        plan, refused = plan_round(state, scope, cfg.partitions)
        if refused:
            rows = [{**r, "source_name": src.name} for r in refused]
            rel = f"log/{src.name}-r{state.round:03d}-plan.parquet"
            info = write_parquet(table_of(rows, LOG_SCHEMA), ctx.out_dir, rel)
            state.shards["log"].append(vars(info))
            state.counts = Stats(state.counts).add(Stats.total({r["fate"]: 1} for r in refused))
        items = [(src, cfg, state.round, p, urls, str(ctx.out_dir), str(partial), _ready_for(state, urls))
                 for p, urls in plan.items()]
        n_urls = sum(len(u) for u in plan.values())
        ctx.log(f"{src.name}: round {state.round}: {n_urls} URLs in {len(items)} partition(s)")
        results = ctx.map(crawl_partition, items, rows_of=lambda r: r["shards"]["docs"][0]["rows"]) if items else []
        for res in results:
            for k, infos in res["shards"].items():
                state.shards[k].extend(infos)
        advance(state, results)
        write_json(ckpt, state.to_dict())
        fault_point("crawl.round", state.round - 1)  # test hook: after the round is checkpointed
    return {k: [ShardInfo(**d) for d in v] for k, v in state.shards.items()}, state.counts
