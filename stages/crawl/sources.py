"""The `warc` and `files` sources: corpora that already exist. One Ray task per WARC file, per JSONL/Parquet file,
or per `files_per_task` HTML/text files; shards are numbered in sorted path order, so the output does not
depend on the number of workers.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from pipelines.dataset import doc_id, table_of, write_parquet
from pipelines.stats import Stats
from stages.crawl.extract import is_html_type, process_html, process_text
from stages.crawl.tables import DOCS_SCHEMA, LOG_SCHEMA
from stages.crawl.warc import iter_records

HTML_EXT = (".html", ".htm", ".xhtml")
TEXT_EXT = (".txt",)
TABLE_EXT = (".jsonl", ".parquet")


class SourceError(ValueError):
    """A source names nothing usable (no file matches, unknown file type)."""


def expand(paths: list[str], exts: tuple[str, ...] | None = None) -> list[str]:
    """Files named by paths, folders (recursive) and globs, sorted; error if one names nothing.

    Local paths stay as written (relative ones relative), so document ids do not depend on the machine."""
    out: set[str] = set()
    for p in paths:
        found = _expand_remote(p) if "://" in p else sorted(glob.glob(p, recursive=True))
        if not found:
            raise SourceError(f"{p}: matches no file")
        for f in found:
            if "://" not in f and os.path.isdir(f):
                out.update(x.as_posix() for x in Path(f).rglob("*")
                           if x.is_file() and (exts is None or x.name.lower().endswith(exts)))
            else:
                out.add(f)
    if not out:
        raise SourceError(f"{', '.join(paths)}: no files with extension {', '.join(exts or ())}")
    return sorted(out)


def _expand_remote(p: str) -> list[str]:
    import fsspec

    fs, _, found = fsspec.get_fs_token_paths(p)
    return [fs.unstrip_protocol(f) for f in found]


def _shard(rows: list[dict], logs: list[dict], out_dir: str, rel: str) -> dict:
    return {"docs": [write_parquet(table_of(rows, DOCS_SCHEMA), out_dir, f"docs/{rel}.parquet")],
            "log": [write_parquet(table_of(logs, LOG_SCHEMA), out_dir, f"log/{rel}.parquet")],
            "counts": Stats.total({r["fate"]: 1} for r in logs)}


def _at(path: str, cwd: str) -> str:
    """Where a task opens `path`: relative paths are the driver's (Ray workers may run elsewhere)."""
    return path if "://" in path or os.path.isabs(path) else os.path.join(cwd, path)


def warc_file_task(src, xcfg, path: str, rel: str, out_dir: str, cwd: str) -> dict:
    rows, logs = [], []
    for rec in iter_records(_at(path, cwd), src.max_records):
        log = {"url": rec.url, "source_name": src.name, "status": rec.status, "fetched_at": rec.date,
               "warc_file": path, "warc_offset": rec.offset, "bytes": len(rec.payload)}
        if rec.kind == "response" and not is_html_type(rec.content_type):
            logs.append({**log, "fate": "not_html", "reason": f"content-type {rec.content_type}"})
            continue
        page = (process_html(rec.url, rec.payload, rec.content_type, xcfg, want_links=False)
                if rec.kind == "response" else process_text(rec.payload, "text/plain; charset=utf-8"))
        log.update(fate=page.fate, reason=page.reason, **page.charset_columns())
        if page.fate == "fetched":
            log["id"] = doc_id(rec.url, page.text)
            rows.append({"id": log["id"], "source_name": src.name, "url": rec.url,
                         "source": f"warc:{path}@{rec.offset}", "fetched_at": rec.date, "title": page.title,
                         "text": page.text, "status": rec.status, **page.charset_columns(),
                         "undecodable": page.undecodable, "warc_file": path, "warc_offset": rec.offset})
        logs.append(log)
    return _shard(rows, logs, out_dir, rel)


def _doc(src, locator: str, url: str, title: str, text: str, page=None) -> dict:
    return {"id": doc_id(locator, text), "source_name": src.name, "url": url, "source": locator,
            "fetched_at": None, "title": title, "text": text, **(page.charset_columns() if page else {}),
            "undecodable": page.undecodable if page else None}


def files_task(src, xcfg, paths: list[str], rel: str, out_dir: str, cwd: str) -> dict:
    rows, logs = [], []
    for path in paths:
        low = path.lower()
        if low.endswith(TABLE_EXT):
            rows.extend(_table_rows(src, path, _at(path, cwd)))
            continue
        import fsspec

        with fsspec.open(_at(path, cwd), "rb") as fh:
            body = fh.read()
        url = f"file:{path}"
        page = process_html(url, body, None, xcfg, want_links=False) if low.endswith(HTML_EXT) \
            else process_text(body, None)
        log = {"url": url, "source_name": src.name, "fate": page.fate, "reason": page.reason, "bytes": len(body),
               **page.charset_columns()}
        if page.fate == "fetched":
            rows.append(_doc(src, f"file:{path}:0", url, page.title, page.text, page))
            log["id"] = rows[-1]["id"]
        logs.append(log)
    return _shard(rows, logs, out_dir, rel)


def _table_rows(src, path: str, where: str) -> list[dict]:
    """JSONL or Parquet rows with a text field; the line (row) number is the locator."""
    import fsspec

    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        with fsspec.open(where, "rb") as fh:
            records = pq.read_table(fh).to_pylist()
    else:
        with fsspec.open(where, "rt", encoding="utf-8") as fh:
            records = [json.loads(line) if line.strip() else {} for line in fh]
    out = []
    for i, rec in enumerate(records):
        text = rec.get(src.text_field) if isinstance(rec, dict) else None
        if not isinstance(text, str) or not text.strip():
            continue
        url = str(rec.get(src.url_field) or f"file:{path}") if src.url_field else f"file:{path}"
        title = str(rec.get(src.title_field) or "") if src.title_field else ""
        out.append(_doc(src, f"file:{path}:{i + 1}", url, title, text))
    return out


def plan_files(src) -> list[list[str]]:
    """Task groups: each table file alone, other files in runs of files_per_task (sorted path order)."""
    files = expand(src.paths, HTML_EXT + TEXT_EXT + TABLE_EXT)
    bad = [f for f in files if not f.lower().endswith(HTML_EXT + TEXT_EXT + TABLE_EXT)]
    if bad:
        raise SourceError(f"source {src.name}: {bad[0]}: unknown file type (use .html, .txt, .jsonl or .parquet)")
    groups: list[list[str]] = [[f] for f in files if f.lower().endswith(TABLE_EXT)]
    rest = [f for f in files if not f.lower().endswith(TABLE_EXT)]
    groups += [rest[i:i + src.files_per_task] for i in range(0, len(rest), src.files_per_task)]
    return groups


def run_sources(ctx, src) -> tuple[dict[str, list], dict[str, int]]:
    """Fan a warc or files source out over Ray; shards in task order, and counts by fate."""
    xcfg, out_dir, cwd = ctx.cfg.extract, str(ctx.out_dir), os.getcwd()
    if src.type == "warc":
        files = expand(src.paths)
        items = [(src, xcfg, f, f"{src.name}-f{i:05d}", out_dir, cwd) for i, f in enumerate(files)]
        results = ctx.map(warc_file_task, items, rows_of=lambda r: r["docs"][0].rows)
    else:
        items = [(src, xcfg, g, f"{src.name}-f{i:05d}", out_dir, cwd) for i, g in enumerate(plan_files(src))]
        results = ctx.map(files_task, items, rows_of=lambda r: r["docs"][0].rows)
    counts = Stats.total(r["counts"] for r in results)
    return {"docs": [s for r in results for s in r["docs"]], "log": [s for r in results for s in r["log"]]}, counts
