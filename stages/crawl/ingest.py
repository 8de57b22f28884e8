"""The Ray tasks of the `files` and `warc` sources: read pieces of files (readers.py), turn records into documents
(records.py), stream them into one docs shard and one log shard per task.

Every record that does not become a document is a row of the log (file, line or WARC offset, reason) and a count;
the driver (sources.py) fails the source when they are too many. Memory: one line or one Parquet batch, plus one
row group of each output shard, whatever the size of the file.
"""
from __future__ import annotations

import os

from pipelines.dataset import ParquetRows, doc_id
from pipelines.stats import Stats
from stages.crawl.extract import is_html_type, process_html, process_text
from stages.crawl.readers import Piece, jsonl_lines, open_input
from stages.crawl.records import BAD, MAX_LINE, describe, doc_row, jsonl_record
from stages.crawl.tables import RECORD_LOG_SCHEMA, docs_schema
from stages.crawl.warc import Corrupt, iter_records

DOC_GROUP = 1024  # documents per row group of a docs shard: ~5 MB of text for the sample site's pages
PARQUET_BATCH = 1024  # rows per record batch read from a Parquet input


class Sink:
    """One task's outputs (docs and log shards, streamed) and counts: page fates (`counts`), record reasons
    (`records`, with `read` = records seen), and the first bad record as `path:line: what (detail)`."""

    def __init__(self, src, out_dir: str, rel: str):
        self.src = src
        self.docs = ParquetRows(out_dir, f"docs/{rel}.parquet", docs_schema(src), group_rows=DOC_GROUP)
        self.log = ParquetRows(out_dir, f"log/{rel}.parquet", RECORD_LOG_SCHEMA)
        self.counts, self.records = Stats(), Stats(read=0)
        self.first_bad: str | None = None

    def record(self, path: str, line: int, got: dict | tuple[str, str], rows: int = 1) -> None:
        """A JSONL/Parquet record: a docs row, or (reason, detail) for the log (`rows`: records it stands for)."""
        self.records.add({"read": rows})
        if isinstance(got, dict):
            self.docs.add(got)
            return
        reason, detail = got
        self.bad(path, reason, detail, rows, line=line)

    def bad(self, path: str, reason: str, detail: str, rows: int = 1, line: int | None = None,
            offset: int | None = None) -> None:
        self.records.add({reason: rows})
        where = f"{path}:{line}" if line is not None else f"{path}@{offset}"
        self.log.add({"url": f"file:{where}" if line is not None else f"warc:{where}", "source_name": self.src.name,
                      "fate": reason, "reason": detail, "file": path, "line": line,
                      "warc_file": path if offset is not None else None, "warc_offset": offset})
        if reason in BAD and self.first_bad is None:
            self.first_bad = f"{where}: {describe(reason, getattr(self.src, 'text_field', 'text'))} ({detail})"

    def page(self, log: dict, row: dict | None = None) -> None:
        """An HTML/text file or WARC record: its log row (fate), and its document when it made one."""
        self.counts.add({log["fate"]: 1})
        self.log.add(log)
        if row is not None:
            self.docs.add(row)

    def close(self) -> dict:
        return {"docs": [self.docs.close()], "log": [self.log.close()], "counts": self.counts,
                "records": self.records, "first_bad": self.first_bad}


def at(path: str, cwd: str) -> str:
    """Where a task opens `path`: relative paths are the driver's (Ray workers may run elsewhere)."""
    return path if "://" in path or os.path.isabs(path) else os.path.join(cwd, path)


def files_task(src, xcfg, pieces: list[Piece], rel: str, out_dir: str, cwd: str) -> dict:
    sink = Sink(src, out_dir, rel)
    for p in pieces:
        reader = {"jsonl": read_jsonl, "parquet": read_parquet}.get(p.kind, read_page)
        reader(sink, src, xcfg, p, at(p.path, cwd))
    return sink.close()


def read_jsonl(sink: Sink, src, xcfg, p: Piece, where: str) -> None:
    with open_input(where) as fh:
        for no, line in jsonl_lines(fh, p.start, p.end, p.before):
            if line is None:
                sink.record(p.path, no, ("too_long", f"over {MAX_LINE} bytes without a newline"))
                continue
            ok, value = jsonl_record(line)
            sink.record(p.path, no, doc_row(src, p.path, no, value) if ok else value)


def read_parquet(sink: Sink, src, xcfg, p: Piece, where: str) -> None:
    """Row groups [p.start, p.end) of a Parquet file, in record batches; the log's `line` is the file's row."""
    import pyarrow.parquet as pq

    with open_input(where) as fh:
        f = pq.ParquetFile(fh)
        groups = range(p.start, f.num_row_groups if p.end is None else p.end)
        names, row = f.schema_arrow.names, p.before
        whole = _whole_file_problem(f.schema_arrow, src.text_field)
        if whole is not None:  # one log row for the piece, every row counted
            n = sum(f.metadata.row_group(g).num_rows for g in groups)
            if n:
                sink.record(p.path, row + 1, whole, rows=n)
            return
        cols = None if src.keep_fields == "all" else [c for c in names if c in _wanted(src)]
        for g in groups:
            for batch in f.iter_batches(batch_size=PARQUET_BATCH, row_groups=[g], columns=cols):
                try:
                    recs = batch.to_pylist()
                except UnicodeDecodeError:  # a string column with invalid UTF-8: find the rows, row by row
                    recs = [_row_or_bad(batch, i) for i in range(batch.num_rows)]
                for rec in recs:
                    row += 1
                    got = rec if isinstance(rec, tuple) else doc_row(src, p.path, row, rec)
                    if isinstance(got, tuple):
                        got = (got[0], f"row group {g}: {got[1]}")
                    sink.record(p.path, row, got)


def _wanted(src) -> set:
    keep = src.keep_fields if isinstance(src.keep_fields, list) else []
    return {src.text_field, src.url_field, src.title_field, src.id_field, *keep} - {None}


def _whole_file_problem(schema, text_field: str) -> tuple[str, str] | None:
    import pyarrow as pa

    if text_field not in schema.names:
        return "no_text_field", f"no column {text_field!r} (columns: {', '.join(schema.names[:8])})"
    t = schema.field(text_field).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return "text_not_string", f"column {text_field!r} is {t}"
    return None


def _row_or_bad(batch, i: int):
    try:
        return batch.slice(i, 1).to_pylist()[0]
    except UnicodeDecodeError as exc:
        return ("invalid_utf8", f"byte 0x{exc.object[exc.start]:02x} in a string column")


def read_page(sink: Sink, src, xcfg, p: Piece, where: str) -> None:
    """One HTML or plain-text file: one document (or a log row saying why not)."""
    with open_input(where) as fh:
        body = fh.read()
    url = f"file:{p.path}"
    page = process_html(url, body, None, xcfg, want_links=False) if p.kind == "html" else process_text(body, None)
    log = {"url": url, "source_name": src.name, "fate": page.fate, "reason": page.reason, "bytes": len(body),
           "file": p.path, **page.charset_columns()}
    row = None
    if page.fate == "fetched":
        locator = f"file:{p.path}:0"
        row = {"id": doc_id(locator, page.text), "source_name": src.name, "url": url, "source": locator,
               "title": page.title, "text": page.text, **page.charset_columns(), "undecodable": page.undecodable}
        log["id"] = row["id"]
    sink.page(log, row)


def warc_task(src, xcfg, path: str, rel: str, out_dir: str, cwd: str) -> dict:
    sink = Sink(src, out_dir, rel)
    for rec in iter_records(at(path, cwd), src.max_records):
        sink.records.add({"read": 1})
        if isinstance(rec, Corrupt):
            sink.bad(path, "corrupt_record", rec.detail, offset=rec.offset)
            continue
        log = {"url": rec.url, "source_name": src.name, "status": rec.status, "fetched_at": rec.date,
               "warc_file": path, "warc_offset": rec.offset, "bytes": len(rec.payload), "file": path}
        if rec.kind == "response" and not is_html_type(rec.content_type):
            sink.page({**log, "fate": "not_html", "reason": f"content-type {rec.content_type}"})
            continue
        page = (process_html(rec.url, rec.payload, rec.content_type, xcfg, want_links=False)
                if rec.kind == "response" else process_text(rec.payload, "text/plain; charset=utf-8"))
        log.update(fate=page.fate, reason=page.reason, **page.charset_columns())
        row = None
        if page.fate == "fetched":
            log["id"] = doc_id(rec.url, page.text)
            row = {"id": log["id"], "source_name": src.name, "url": rec.url, "source": f"warc:{path}@{rec.offset}",
                   "fetched_at": rec.date, "title": page.title, "text": page.text, "status": rec.status,
                   **page.charset_columns(), "undecodable": page.undecodable, "warc_file": path,
                   "warc_offset": rec.offset}
        sink.page(log, row)
    return sink.close()
