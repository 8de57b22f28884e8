"""The `warc` and `files` sources: corpora that already exist, planned in the driver and read by Ray tasks
(stages/crawl/ingest.py).

The plan (sorted path order, a function of the files and the config only, so the shards and the document order do
not depend on the number of workers): small files are grouped, up to `files_per_task` files or `task_bytes` bytes
per task; an uncompressed JSONL file over `task_bytes` is split into byte ranges of `task_bytes` (a task reads the
lines that START in its range; a first round of tasks counts each range's newlines so that line numbers are the
file's own); a Parquet file over it into runs of row groups; a compressed file is one task (a gzip or zstd stream
cannot be entered at an offset). One task per WARC file. Shards are `<source>-f<task>` in plan order.

Paths are checked when the config loads (`check_paths`): a local pattern that matches nothing is a config error
naming the directory it was resolved against (the current directory). For URLs only the scheme is checked then
(its filesystem must be installed); listing a bucket needs the network and credentials, so it waits for the stage.
"""
from __future__ import annotations

import glob
import os
from dataclasses import replace
from pathlib import Path

from pipelines.stats import Stats
from stages.crawl.ingest import at, files_task, warc_task
from stages.crawl.readers import Piece, count_newlines, file_size, is_compressed, kind_of
from stages.crawl.records import BAD, REASONS, describe

KNOWN = ".html, .htm, .xhtml, .txt, .jsonl (also .jsonl.gz, .jsonl.zst, .jsonl.bz2, .jsonl.xz) or .parquet"


class SourceError(ValueError):
    """A source names nothing usable (no file matches, unknown file type), or read too many bad records."""


def _match(p: str) -> list[str]:
    if "://" in p:
        import fsspec

        fs, _, found = fsspec.get_fs_token_paths(p)
        return [fs.unstrip_protocol(f) for f in found]
    return sorted(glob.glob(p, recursive=True))


def _no_match(src, p: str) -> SourceError:
    where = os.path.abspath(p) if "://" not in p else p
    return SourceError(f"source {src.name}: paths entry {p!r} matches no file (resolved against {os.getcwd()}: "
                       f"{where})")


def expand(src) -> list[str]:
    """Files named by the source's paths, folders (recursive) and globs, sorted. Local paths stay as written
    (relative ones relative), so document ids do not depend on the machine. Folders give only the files the
    source reads; a file named directly must be one of them."""
    out: set[str] = set()
    for p in src.paths:
        found = _match(p)
        if not found:
            raise _no_match(src, p)
        for f in found:
            if "://" not in f and os.path.isdir(f):
                out.update(Path(root, n).as_posix() for root, _, names in os.walk(f) for n in names
                           if _readable(src, n))
            elif not _readable(src, f):
                raise SourceError(f"source {src.name}: {f}: unknown file type (use {KNOWN})")
            else:
                out.add(f)
    if not out:
        raise SourceError(f"source {src.name}: {', '.join(src.paths)}: no files this source reads ({KNOWN})")
    return sorted(out)


def _readable(src, name: str) -> bool:
    return src.type == "warc" or kind_of(name) is not None


def check_paths(src) -> None:
    """The config-time check: local entries must match a file this source reads, URL schemes a filesystem."""
    for p in src.paths:
        if "://" in p:
            import fsspec

            try:
                fsspec.get_filesystem_class(p.split("://", 1)[0])
            except (ValueError, ImportError) as exc:
                raise SourceError(f"source {src.name}: paths entry {p!r}: {exc}") from None
        elif not (found := _match(p)):
            raise _no_match(src, p)
        else:  # enough to find one readable file per entry: 10^5 files took 3.8 s to list whole, at every load
            for f in found:
                if os.path.isdir(f):
                    if not any(_readable(src, n) for _, _, names in os.walk(f) for n in names):
                        raise SourceError(f"source {src.name}: {f}: no files this source reads ({KNOWN})")
                elif not _readable(src, f):
                    raise SourceError(f"source {src.name}: {f}: unknown file type (use {KNOWN})")


def plan_files(src) -> list[list[Piece]]:
    """Task groups of pieces, in sorted path order (see the module docstring)."""
    groups: list[list[Piece]] = []
    cur: list[Piece] = []
    for f in expand(src):
        kind, size = kind_of(f), file_size(f)
        if size > src.task_bytes and (kind == "parquet" or (kind == "jsonl" and not is_compressed(f))):
            groups += [[p] for p in (_row_groups(f, src.task_bytes) if kind == "parquet"
                                     else _byte_ranges(f, size, src.task_bytes))]
            continue
        if cur and (len(cur) >= src.files_per_task or sum(p.size for p in cur) + size > src.task_bytes):
            groups.append(cur)
            cur = []
        cur.append(Piece(f, kind, size=size))
    return groups + ([cur] if cur else [])


def _byte_ranges(path: str, size: int, step: int) -> list[Piece]:
    return [Piece(path, "jsonl", s, min(s + step, size), size=min(step, size - s)) for s in range(0, size, step)]


def _row_groups(path: str, limit: int) -> list[Piece]:
    """Runs of consecutive row groups of about `limit` compressed bytes (a row group is never split)."""
    import pyarrow.parquet as pq

    from stages.crawl.readers import open_input

    with open_input(path) as fh:
        meta = pq.ParquetFile(fh).metadata
    pieces, start, rows, size, before = [], 0, 0, 0, 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        size += sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
        rows += rg.num_rows
        if size >= limit or g == meta.num_row_groups - 1:
            pieces.append(Piece(path, "parquet", start, g + 1, before, size))
            start, before, size = g + 1, before + rows, 0
            rows = 0
    return pieces or [Piece(path, "parquet", 0, None)]


def number_lines(ctx, groups: list[list[Piece]], cwd: str) -> list[list[Piece]]:
    """Give each byte range of a split JSONL file the count of newlines before it (one task per range)."""
    split = [(i, g[0]) for i, g in enumerate(groups) if g[0].kind == "jsonl" and g[0].end is not None]
    if not split:
        return groups
    counts = ctx.map(count_newlines, [(at(p.path, cwd), p.start, p.end) for _, p in split])
    seen: dict[str, int] = {}
    for (i, p), n in zip(split, counts):
        groups[i] = [replace(p, before=seen.get(p.path, 0))]
        seen[p.path] = seen.get(p.path, 0) + n
    return groups


def run_sources(ctx, src) -> tuple[dict[str, list], Stats, str]:
    """Fan a warc or files source out over Ray; its shards in plan order, its counts (page fates, plus the record
    reasons under `records`) and its summary line. Fails (one line) when the source is unusable (`check_read`)."""
    xcfg, out_dir, cwd = ctx.cfg.extract, str(ctx.out_dir), os.getcwd()
    if src.type == "warc":
        files = expand(src)
        results = ctx.map(warc_task, [(src, xcfg, f, f"{src.name}-f{i:05d}", out_dir, cwd)
                                      for i, f in enumerate(files)], rows_of=lambda r: r["docs"][0].rows)
        kinds = {"warc"}
    else:
        groups = number_lines(ctx, plan_files(src), cwd)
        files = sorted({p.path for g in groups for p in g})
        kinds = {p.kind for g in groups for p in g}
        results = ctx.map(files_task, [(src, xcfg, g, f"{src.name}-f{i:05d}", out_dir, cwd)
                                       for i, g in enumerate(groups)], rows_of=lambda r: r["docs"][0].rows)
    counts = Stats.total(r["counts"] for r in results)
    records = Stats.total((r["records"] for r in results), read=0)
    docs = sum(r["docs"][0].rows for r in results)
    check_read(src, docs, len(files), kinds, counts, records, next((r["first_bad"] for r in results
                                                                    if r["first_bad"]), None))
    line = summary(src, docs, len(files), kinds, counts, records)
    counts["records"] = records
    return ({"docs": [s for r in results for s in r["docs"]], "log": [s for r in results for s in r["log"]]},
            counts, line)


def summary(src, docs: int, files: int, kinds: set, counts: Stats, records: Stats) -> str:
    """`source mine: 0 documents from 3 files (120 lines: 120 without field 'text')`."""
    tf = getattr(src, "text_field", "text")
    parts = []
    if records["read"]:
        unit = "lines" if kinds == {"jsonl"} else "records"
        why = ", ".join(f"{records[r]} {describe(r, tf)}" for r in REASONS if records.get(r))
        parts.append(f"{records['read']} {unit}" + (f": {why}" if why else ""))
    pages = {k: v for k, v in sorted(counts.items()) if k != "fetched"}
    if pages:
        parts.append(", ".join(f"{v} {k}" for k, v in pages.items()))
    more = f" ({'; '.join(parts)})" if parts else ""
    return f"source {src.name}: {docs} documents from {files} file{'s' * (files != 1)}{more}"


def check_read(src, docs: int, files: int, kinds: set, counts: Stats, records: Stats, first_bad: str | None) -> None:
    line = summary(src, docs, files, kinds, counts, records)
    if docs == 0:
        raise SourceError(line + (f"; first bad: {first_bad}" if first_bad else ""))
    bad = sum(records.get(r, 0) for r in BAD)
    if records["read"] and bad / records["read"] > src.max_bad_fraction:
        raise SourceError(f"source {src.name}: {bad} of {records['read']} records are bad "
                          f"({bad / records['read']:.1%} > max_bad_fraction {src.max_bad_fraction}); first: "
                          f"{first_bad}; all are in the crawl's log")
