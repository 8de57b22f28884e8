"""WARC/1.1 in and out with warcio: the crawl's raw responses (so pages can be re-extracted without re-crawling)
and the `warc` source's reader (Common Crawl WARC and WET files, local or through fsspec).

Records are gzipped one by one, so a document's (file, offset) is a random-access address:
    from warcio.archiveiterator import ArchiveIterator
    with open(path, "rb") as f:
        f.seek(offset)
        print(next(iter(ArchiveIterator(f))).rec_headers)
Record ids are uuid5 of (record type, URL, date, block digest) and gzip headers carry no mtime, so equal crawls give
byte-identical files. Each fetch is a `response` record and its `request` record (`exchange`), built wherever the
page is processed and appended in URL order by `WarcShard`.
"""
from __future__ import annotations

import hashlib
import io
import os
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from pipelines.dataset import ShardInfo
from pipelines.io import atomic_path

# Transfer-level headers describe bytes that are no longer in the record (the payload is stored decoded, as
# Common Crawl does); they are kept under these names for the record's sake.
_RENAMED = {"content-encoding": "X-Crawler-Content-Encoding", "transfer-encoding": "X-Crawler-Transfer-Encoding",
            "content-length": "X-Crawler-Content-Length"}


def record_id(kind: str, url: str, date: str, block: bytes) -> str:
    key = f"{kind}\n{url}\n{date}\n{hashlib.sha1(block).hexdigest()}"
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def _writer(buf: io.BytesIO):
    from warcio.warcwriter import WARCWriter

    return WARCWriter(buf, gzip=True, warc_version="1.1")


def warcinfo(rel: str, info: dict[str, str]) -> bytes:
    """The `warcinfo` record that opens a WARC file (gzipped, as every record here)."""
    body = "".join(f"{k}: {v}\r\n" for k, v in info.items()).encode()
    date = info.get("date", "")
    headers = {"WARC-Record-ID": record_id("warcinfo", rel, date, body), "WARC-Date": date,
               "WARC-Filename": Path(rel).name}
    buf = io.BytesIO()
    w = _writer(buf)
    w.write_record(w.create_warc_record("", "warcinfo", payload=io.BytesIO(body), length=len(body),
                                        warc_headers_dict=headers, warc_content_type="application/warc-fields"))
    return buf.getvalue()


def exchange(url: str, date: str, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
             request_headers: list[tuple[str, str]]) -> bytes:
    """One fetch as WARC records, the way Heritrix and warcio pair them: the `response`, then the `request` that
    asked for it with `WARC-Concurrent-To: <the response's id>` (a GET has no body). The response comes first, so
    a document's warc_offset (the start of these bytes) is its response record."""
    from warcio.statusandheaders import StatusAndHeaders

    kept = [(_RENAMED.get(k.lower(), k), v) for k, v in headers]
    kept.append(("Content-Length", str(len(body))))
    http = StatusAndHeaders(f"{status} {reason or 'OK'}", kept, protocol="HTTP/1.1")
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    sent = StatusAndHeaders(f"GET {target or '/'} HTTP/1.1", request_headers, is_http_request=True)
    buf = io.BytesIO()
    w = _writer(buf)
    resp = w.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http,
                                warc_headers_dict={"WARC-Record-ID": record_id("response", url, date, body),
                                                   "WARC-Date": date})
    block = sent.to_bytes()
    req = w.create_warc_record(url, "request", payload=io.BytesIO(b""), length=0, http_headers=sent,
                               warc_headers_dict={"WARC-Record-ID": record_id("request", url, date, block),
                                                  "WARC-Date": date})
    w.write_request_response_pair(req, resp)
    return buf.getvalue()


class WarcShard:
    """A WARC/1.1 gz file assembled from records written elsewhere (`exchange`), in the order given: written under
    a temporary name and renamed into place by `close()`."""

    def __init__(self, stage_dir: str | os.PathLike, rel: str, info: dict[str, str]):
        self.stage_dir, self.rel = Path(stage_dir), rel
        self._file = ExitStack()  # holds the file's atomic_path open; close() exits it, renaming the file into place
        tmp = self._file.enter_context(atomic_path(self.stage_dir / rel))
        self.fh = self._file.enter_context(open(tmp, "wb"))
        self.fh.write(warcinfo(rel, info))
        self.records = 0  # responses

    def append(self, records: bytes) -> int:
        """Append one fetch's records; return their offset (that of the response record)."""
        offset = self.fh.tell()
        self.fh.write(records)
        self.records += 1
        return offset

    def close(self) -> ShardInfo:
        self._file.close()  # the file handle first, then the rename
        return ShardInfo.of(self.stage_dir, self.rel, self.records)


@dataclass
class Record:
    offset: int
    kind: str | None  # response | conversion | resource (None: another record type, skipped)
    url: str
    date: str
    status: int | None
    content_type: str
    payload: bytes


@dataclass
class Corrupt:
    """A stretch of a WARC file that could not be read as records: from `offset` to the next readable record."""

    offset: int
    detail: str


WARC_TYPES = {"warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation"}
GZIP_MAGIC, WARC_MAGIC = b"\x1f\x8b\x08", b"WARC/1."


def iter_records(path: str, max_records: int | None = None) -> Iterator[Record | Corrupt]:
    """Response, resource and conversion (WET) records of a WARC/WET file, local or fsspec (s3://, https://).

    A record that cannot be read (a corrupt or truncated gzip member, a broken header) is yielded as a `Corrupt`
    with its offset, and reading goes on at the next record: warcio's iterator stops at the first error, so a new
    one is started at the next gzip member header (1f 8b 08) after the bad offset (for an uncompressed file, the
    next `WARC/1.` line). What is lost is the bad record and any bytes up to that header; a false header inside
    the damaged bytes only fails again and the search moves on (one Corrupt per damaged stretch). warcio ends a
    file whose last member is truncated without an error: that tail is reported too."""
    import fsspec

    n = 0
    with fsspec.open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        magic = GZIP_MAGIC if fh.read(3) == GZIP_MAGIC else WARC_MAGIC
        pos, damaged = 0, False
        while pos is not None:
            for item in _records_from(fh, pos, size):
                if isinstance(item, Corrupt):
                    if not damaged:
                        yield item
                    damaged, pos = True, _next_header(fh, item.offset + 1, magic)
                    break
                damaged = False
                if item.kind is not None:
                    yield item
                    n += 1
                    if max_records is not None and n >= max_records:
                        return
            else:
                pos = None


def _records_from(fh, pos: int, size: int) -> Iterator[Record | Corrupt]:
    """Records from offset `pos` until the end of the file (a Record with kind None: a record skipped on purpose),
    or until the first one that cannot be read (a Corrupt, last)."""
    from warcio.archiveiterator import ArchiveIterator

    fh.seek(pos)
    it = ArchiveIterator(fh)
    try:
        for rec in it:
            start = it.offset
            if rec.rec_type not in WARC_TYPES:
                yield Corrupt(start, f"unknown WARC-Type {rec.rec_type!r}")
                return
            yield _record(rec, start) if rec.rec_type in ("response", "conversion", "resource") else \
                Record(start, None, "", "", None, "", b"")
    except Exception as exc:  # warcio raises ArchiveLoadFailed, zlib.error, EOFError, ValueError... on bad bytes
        msg = str(exc).split(", first line")[0][:120].encode("ascii", "backslashreplace").decode()
        yield Corrupt(it.offset, f"{type(exc).__name__}: {msg}")
        return
    if it.offset < size:
        yield Corrupt(it.offset, f"truncated: {size - it.offset} bytes after the last complete record")


def _record(rec, start: int) -> Record:
    status, ctype = None, rec.rec_headers.get_header("Content-Type") or ""
    if rec.http_headers is not None and rec.rec_type == "response":
        status = int(rec.http_headers.get_statuscode() or 0)
        ctype = rec.http_headers.get_header("Content-Type") or ""
    payload = rec.content_stream().read()
    return Record(start, rec.rec_type, rec.rec_headers.get_header("WARC-Target-URI") or "",
                  rec.rec_headers.get_header("WARC-Date") or "", status, ctype, payload)


def _next_header(fh, start: int, magic: bytes, block: int = 1 << 20) -> int | None:
    """Offset of the next `magic` at or after `start`, or None."""
    fh.seek(start)
    carry = b""
    while chunk := fh.read(block):
        buf = carry + chunk
        k = buf.find(magic)
        if k >= 0:
            return start - len(carry) + k
        carry = buf[-(len(magic) - 1):]
        start += len(chunk)
    return None
