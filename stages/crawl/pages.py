"""The CPU half of a seeds crawl, one fetched URL at a time: decode, extract, links, and its WARC records.

Pure (a fetch result in, rows and record bytes out), so it runs wherever a core is free: in the fetching task's
own thread or in a Ray helper task (partition.py), with the same result either way. Where a row lands in the
round's files (the WARC offset) is decided later, when the round's shards are cut in URL order (journal.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipelines.dataset import doc_id
from stages.crawl.extract import process_html
from stages.crawl.warc import exchange


@dataclass(frozen=True)
class RoundInfo:
    """What every page of one partition's round shares."""

    source: str
    depth: int
    xcfg: object  # config.ExtractConfig
    agent: str  # the crawler's robots product token (robots.agent_token)
    fetched_at: str | None  # pinned by the config, else the time each page is processed


@dataclass
class Result:
    """One URL's contribution to the round: its log row, its document (if any), links, WARC records."""

    index: int  # the URL's place in the round's sorted list
    log: dict
    doc: dict | None = None
    links: list[str] = field(default_factory=list)
    warc: bytes = b""  # response + request records, gzipped; b"" when nothing was fetched
    kind: str = ""  # for fate `error`: stage.ERROR_WORDS


def now_iso(pinned: str | None) -> str:
    return pinned or datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def result_of(index: int, url: str, referrer: str, f, info: RoundInfo) -> Result:
    """The Result of one fetch.Fetched (any fate); the costly part only for fetched pages."""
    now = now_iso(info.fetched_at)
    row = {"url": url, "source_name": info.source, "depth": info.depth, "referrer": referrer, "fate": f.fate,
           "reason": f.reason, "status": f.status, "final_url": f.final_url or None, "fetched_at": now}
    if f.fate != "fetched":
        return Result(index, row, kind=f.kind)
    headers = [(k.lower(), v) for k, v in f.headers]
    ctype = next((v for k, v in headers if k == "content-type"), None)
    page = process_html(f.final_url, f.body, ctype, info.xcfg, robots_agent=info.agent,
                        robots_header=[v for k, v in headers if k == "x-robots-tag"])
    warc = exchange(f.final_url, now, f.status, f.reason_phrase, f.headers, f.body, f.request_headers)
    row.update(fate=page.fate, reason=page.reason, bytes=len(f.body), **page.charset_columns())
    res = Result(index, row, links=page.links, warc=warc)
    if page.fate == "fetched":
        row["id"] = doc_id(f.final_url, page.text)
        res.doc = {"id": row["id"], "source_name": info.source, "url": f.final_url, "fetched_at": now,
                   "title": page.title, "text": page.text, "status": f.status, "undecodable": page.undecodable,
                   **page.charset_columns(), "depth": info.depth}
    return res
