"""WARC/1.1 in and out with warcio: the crawl's raw responses (so pages can be re-extracted without re-crawling)
and the `warc` source's reader (Common Crawl WARC and WET files, local or through fsspec).

Records are gzipped one by one, so a document's (file, offset) is a random-access address:
    from warcio.archiveiterator import ArchiveIterator
    with open(path, "rb") as f:
        f.seek(offset)
        print(next(iter(ArchiveIterator(f))).rec_headers)
Record ids are uuid5 of (URL, date, payload digest) and gzip headers carry no mtime, so equal crawls give
byte-identical files.
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

from pipelines.dataset import ShardInfo
from pipelines.io import atomic_path

# Transfer-level headers describe bytes that are no longer in the record (the payload is stored decoded, as
# Common Crawl does); they are kept under these names for the record's sake.
_RENAMED = {"content-encoding": "X-Crawler-Content-Encoding", "transfer-encoding": "X-Crawler-Transfer-Encoding",
            "content-length": "X-Crawler-Content-Length"}


def record_id(url: str, date: str, body: bytes) -> str:
    key = f"{url}\n{date}\n{hashlib.sha1(body).hexdigest()}"
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


class WarcShard:
    """An append-only WARC/1.1 gz file written under a temporary name and renamed into place by `close()`."""

    def __init__(self, stage_dir: str | os.PathLike, rel: str, info: dict[str, str]):
        from warcio.warcwriter import WARCWriter

        self.stage_dir, self.rel = Path(stage_dir), rel
        self._file = ExitStack()  # holds the file's atomic_path open; close() exits it, renaming the file into place
        tmp = self._file.enter_context(atomic_path(self.stage_dir / rel))
        self.fh = self._file.enter_context(open(tmp, "wb"))
        self.writer = WARCWriter(self.fh, gzip=True, warc_version="1.1")
        self.records = 0
        body = "".join(f"{k}: {v}\r\n" for k, v in info.items()).encode()
        self._write(f"warcinfo:{rel}", "warcinfo", body, info.get("date", ""), None, "application/warc-fields")

    def _write(self, url: str, kind: str, body: bytes, date: str, http_headers, ctype: str = "") -> int:
        offset = self.fh.tell()
        headers = {"WARC-Record-ID": record_id(url, date, body), "WARC-Date": date}
        if kind == "warcinfo":
            headers["WARC-Filename"] = Path(self.rel).name
        rec = self.writer.create_warc_record("" if kind == "warcinfo" else url, kind, payload=io.BytesIO(body),
                                             length=len(body), warc_headers_dict=headers,
                                             http_headers=http_headers, warc_content_type=ctype)
        self.writer.write_record(rec)
        return offset

    def write_response(self, url: str, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
                       date: str) -> int:
        """Append one HTTP response; return its offset in the file."""
        from warcio.statusandheaders import StatusAndHeaders

        kept = [(_RENAMED.get(k.lower(), k), v) for k, v in headers]
        kept.append(("Content-Length", str(len(body))))
        http = StatusAndHeaders(f"{status} {reason or 'OK'}", kept, protocol="HTTP/1.1")
        self.records += 1
        return self._write(url, "response", body, date, http)

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
