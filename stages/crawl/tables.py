"""The crawl's two tables: `docs` (the dataset contract's columns plus where each page came from) and `log`
(every URL's fate, keyed by url; `id` is set only when the URL produced a document)."""
from __future__ import annotations

import pyarrow as pa

from pipelines.dataset import DOC_SCHEMA

DOCS_SCHEMA = pa.schema(list(DOC_SCHEMA) + [
    ("status", pa.int32()),  # HTTP status (null for files)
    ("encoding", pa.string()),  # the codec that decoded the page
    ("charset_source", pa.string()),  # bom | header | meta | detected
    ("charset_confidence", pa.float32()),  # when detected: the codec's share of the candidates' likelihood
    ("charset_declared", pa.string()),  # the codec the page declared, when detection overruled it
    ("undecodable", pa.int32()),  # U+FFFD in the text (at most 0.1%: more is fate `undecodable`, no document)
    ("warc_file", pa.string()),  # relative to the stage directory (crawl) or the WARC source path
    ("warc_offset", pa.int64()),
    ("depth", pa.int32()),
])

LOG_SCHEMA = pa.schema([
    ("url", pa.string()),
    ("id", pa.string()),
    ("source_name", pa.string()),
    ("depth", pa.int32()),
    ("referrer", pa.string()),
    ("fate", pa.string()),  # fetched | no_text | not_text | not_html | undecodable | robots | blocked | error | ...
    ("reason", pa.string()),
    ("status", pa.int32()),
    ("final_url", pa.string()),
    ("encoding", pa.string()),
    ("charset_source", pa.string()),
    ("charset_confidence", pa.float32()),
    ("charset_declared", pa.string()),
    ("bytes", pa.int64()),
    ("fetched_at", pa.string()),
    ("warc_file", pa.string()),
    ("warc_offset", pa.int64()),
])


def table_of(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows sorted as given; missing keys become nulls."""
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


class ParquetRows:
    """Rows streamed to one Parquet shard in fixed-size row groups, so a task's memory does not grow with its
    page count (10k pages of text would otherwise sit in a list until the end). Same codec as write_parquet;
    renamed into place by `close()`, and byte-identical for identical rows (row groups are cut by count)."""

    def __init__(self, stage_dir, rel: str, schema: pa.Schema, group_rows: int = 256):
        import os
        from pathlib import Path

        import pyarrow.parquet as pq

        self.stage_dir, self.rel, self.schema, self.group_rows = stage_dir, rel, schema, group_rows
        self.final = Path(stage_dir) / rel
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".{self.final.name}.tmp-{os.getpid()}")
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", write_statistics=True, store_schema=True)
        self.buf: list[dict] = []
        self.rows = 0

    def add(self, row: dict) -> None:
        self.buf.append(row)
        if len(self.buf) >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.buf:
            self.writer.write_table(table_of(self.buf, self.schema))
            self.rows += len(self.buf)
            self.buf = []

    def close(self):
        import os

        from pipelines.dataset import adopt_file

        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.final)
        return adopt_file(self.stage_dir, self.rel, self.rows)
