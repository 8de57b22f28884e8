"""Streaming readers of the `files` source: a piece of a file (JSONL lines from a byte range, Parquet row groups,
one HTML/text file) in, records out, with memory bounded by one line or one record batch, never by the file.

    with open_input("big.jsonl", where) as fh:
        for line_no, line in jsonl_lines(fh, start=64 << 20, end=128 << 20, before=812345):
            ...

Compressed inputs (.gz, .zst, .bz2, .xz, by suffix, through fsspec; zstandard must be installed for .zst) are
read as one stream: a compressed file cannot be split at a byte offset, so it is one task whatever its size.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import Iterator

from stages.crawl.records import MAX_LINE

COMPRESSED = (".gz", ".zst", ".bz2", ".xz")


@dataclass(frozen=True)
class Piece:
    """What one task reads of one file: all of it, a byte range of a JSONL file (the lines that START in
    [start, end)), or row groups [start, end) of a Parquet file. `before`: newlines before `start` (JSONL) or rows
    before row group `start` (Parquet), so line and row numbers are the file's own."""

    path: str  # as the config wrote it (the documents' locators use it)
    kind: str  # jsonl | parquet | html | text
    start: int = 0
    end: int | None = None  # None: to the end of the file
    before: int = 0
    size: int = 0  # bytes this piece covers (planning only)


def kind_of(path: str) -> str | None:
    low = path.lower()
    base = low[: -len(next(s for s in COMPRESSED if low.endswith(s)))] if low.endswith(COMPRESSED) else low
    if base.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith((".html", ".htm", ".xhtml")):
        return "html"
    if low.endswith(".txt"):
        return "text"
    return None


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSED)


@contextlib.contextmanager
def open_input(where: str):
    """A binary file object: a local file through the OS (1 MiB buffer), anything else through fsspec, compressed
    files decompressed on the fly."""
    if "://" not in where and not is_compressed(where):
        with open(where, "rb", buffering=1 << 20) as fh:
            yield fh
        return
    import fsspec

    with fsspec.open(where, "rb", compression="infer") as fh:
        # zstandard's reader has no readline(): a buffer gives it one (and 1 MiB reads to the others)
        yield io.BufferedReader(fh, 1 << 20) if is_compressed(where) else fh


def _skip_line(fh) -> int:
    """Read to the end of the current line; the bytes consumed."""
    n = 0
    while chunk := fh.readline(1 << 20):
        n += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return n


def jsonl_lines(fh, start: int = 0, end: int | None = None, before: int = 0) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) of the non-blank lines that start in [start, end); a line over MAX_LINE bytes is
    (number, None), skipped without holding it. A task that starts inside a line leaves it to the previous task."""
    newlines, pos = before, start
    if start > 0:
        fh.seek(start - 1)
        if fh.read(1) != b"\n":
            pos += _skip_line(fh)
            newlines += 1
    while end is None or pos < end:
        line = fh.readline(MAX_LINE + 1)
        if not line:
            return
        pos += len(line)
        newlines += 1
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            pos += _skip_line(fh)
            yield newlines, None
        elif not line.isspace():  # isspace() does not copy the line, strip() does
            yield newlines, line


def count_newlines(where: str, start: int, end: int) -> int:
    """Newlines in bytes [start, end) of a local or fsspec file (a split JSONL file's line numbers)."""
    n = 0
    with open_input(where) as fh:
        fh.seek(start)
        left = end - start
        while left > 0 and (chunk := fh.read(min(left, 8 << 20))):
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def file_size(path: str) -> int:
    if "://" not in path:
        return os.path.getsize(path)
    import fsspec

    fs, _, (p,) = fsspec.get_fs_token_paths(path)
    return int(fs.size(p) or 0)
