"""Durable progress inside one partition's round, and the round's shards cut from it.

Each URL's Result is appended to the round's journal as soon as it is processed, in whatever order fetches finish;
every `checkpoint_pages` pages or `checkpoint_seconds` seconds, and whenever the task stops short (its driver gone,
an error), the journal is flushed and its length written to checkpoint.json (atomically). A killed task's next
attempt truncates the journal to the checkpointed length and fetches only the URLs not in it. When every URL is
in, `cut` writes the docs, log and WARC shards in URL order, so they are byte-identical whether the round ran
once, was killed mid-way, or had its pages processed on other workers. The journal is not fsynced: it survives
the death of the process (SIGKILL, OOM, a lost Ray worker), the case it is for; after a machine crash a torn tail
is dropped and those pages are fetched again.

Files in the round's work folder (under the stage's .partial/): journal.bin, checkpoint.json. An entry is a
header (struct `<QII`: URL index, WARC bytes, JSON bytes), the WARC records, then JSON {log, doc, links, kind}.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import time
from pathlib import Path

from pipelines.dataset import ParquetRows, table_of, write_parquet
from pipelines.io import read_json, write_json
from pipelines.stats import Stats
from stages.crawl.pages import Result
from stages.crawl.tables import DOCS_SCHEMA, LOG_SCHEMA
from stages.crawl.warc import WarcShard

_HEAD = struct.Struct("<QII")


def encode(res: Result) -> bytes:
    """A Result as a journal entry: encoded where it was processed (a helper task, this task's thread), so the
    fetching task only writes bytes."""
    meta = json.dumps({"log": res.log, "doc": res.doc, "links": res.links, "kind": res.kind},
                      ensure_ascii=False).encode("utf-8")
    return _HEAD.pack(res.index, len(res.warc), len(meta)) + res.warc + meta


class Journal:
    """The append-only record of one partition's round; `done` holds the URL indexes already in it."""

    def __init__(self, work: Path, urls: list[list]):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.ckpt = work / "checkpoint.json"
        # the URL list the indexes refer to: a journal of another list (never expected: same stage key, same plan)
        # is started afresh rather than misread
        self.urls = hashlib.sha256(json.dumps(urls).encode()).hexdigest()[:16]
        saved = read_json(self.ckpt) if self.ckpt.exists() else {}
        if saved.get("urls") != self.urls:
            saved = {"bytes": 0, "ready": {}}
        self.ready: dict[str, float] = saved.get("ready", {})  # per-host politeness at the checkpoint
        path = work / "journal.bin"
        self.fh = open(path, "r+b" if path.exists() else "w+b")
        size = self.fh.seek(0, 2)
        self.entries: dict[int, int] = self._scan(min(saved["bytes"], size))  # URL index -> entry offset
        self.fh.truncate(self.fh.tell())  # what came after the checkpoint is fetched again
        self.unsaved, self.saved_at = 0, time.monotonic()

    def _scan(self, limit: int) -> dict[int, int]:
        """Entries wholly within the checkpointed length (a torn tail, after a machine crash, is dropped)."""
        entries, pos = {}, 0
        self.fh.seek(0)
        while pos + _HEAD.size <= limit:
            index, nw, nj = _HEAD.unpack(self.fh.read(_HEAD.size))
            end = pos + _HEAD.size + nw + nj
            if end > limit:
                break
            entries[index] = pos
            pos = self.fh.seek(end)
        self.fh.seek(pos)
        return entries

    @property
    def done(self) -> set[int]:
        return set(self.entries)

    def append(self, index: int, entry: bytes) -> None:
        """Add one URL's `encode`d Result."""
        self.entries[index] = self.fh.seek(0, 2)  # at the end, whatever was read last
        self.fh.write(entry)
        self.unsaved += 1

    def due(self, pages: int, seconds: float) -> bool:
        return self.unsaved >= pages or (self.unsaved > 0 and time.monotonic() - self.saved_at >= seconds)

    def checkpoint(self, ready: dict[str, float]) -> None:
        self.fh.flush()
        write_json(self.ckpt, {"urls": self.urls, "bytes": self.fh.seek(0, 2), "ready": ready})
        self.unsaved, self.saved_at = 0, time.monotonic()

    def read(self, index: int) -> tuple[bytes, dict]:
        self.fh.seek(self.entries[index])
        _, nw, nj = _HEAD.unpack(self.fh.read(_HEAD.size))
        warc = self.fh.read(nw)
        return warc, json.loads(self.fh.read(nj))

    def close(self) -> None:
        self.fh.close()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.work, ignore_errors=True)


def cut(journal: Journal, n: int, out_dir: str, rel: str, warc_info: dict[str, str]) -> dict:
    """The round's docs, log and WARC shards from a complete journal (URL indexes 0..n-1), in URL order; and what
    the driver folds into the crawl state: links (each with its smallest referrer), redirect targets, counts."""
    journal.fh.flush()
    warc = WarcShard(out_dir, f"warc/{rel}.warc.gz", warc_info)
    docs = ParquetRows(out_dir, f"docs/{rel}.parquet", DOCS_SCHEMA)
    logs: list[dict] = []
    links: dict[str, str] = {}
    final_urls: list[str] = []
    counts = Stats()
    for i in range(n):
        records, entry = journal.read(i)
        row, doc = entry["log"], entry["doc"]
        if records:
            offset = warc.append(records)
            row.update(warc_file=warc.rel, warc_offset=offset)
            if doc is not None:
                docs.add({**doc, "source": f"warc:{warc.rel}@{offset}", "warc_file": warc.rel, "warc_offset": offset})
        for link in entry["links"]:
            if link not in links or row["url"] < links[link]:
                links[link] = row["url"]
        if row["final_url"] and row["final_url"] != row["url"]:
            final_urls.append(row["final_url"])
        counts.add({row["fate"]: 1, **({"errors": {entry["kind"]: 1}} if entry["kind"] else {})})
        logs.append(row)
    shards = {"docs": [docs.close()], "log": [write_parquet(table_of(logs, LOG_SCHEMA), out_dir, f"log/{rel}.parquet")],
              "warc": [warc.close()]}
    return {"shards": {k: [vars(s) for s in v] for k, v in shards.items()},
            "links": [list(kv) for kv in sorted(links.items())], "final_urls": sorted(final_urls),
            "counts": counts}
