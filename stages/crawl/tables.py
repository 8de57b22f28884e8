"""The crawl's two tables: `docs` (the dataset contract's columns plus where each page came from) and `log`
(every URL's fate, keyed by url; `id` is set only when the URL produced a document).

The `files` and `warc` sources add columns only where they are used, so a seeds crawl's shards keep their bytes:
docs get `source_id` (the user's id, with `id_field`) and `meta` (the kept fields as a JSON object, with
`keep_fields`); their log shards get `file` and `line` (the record's line, or row for Parquet) for the records
that did not become documents."""
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
    ("fate", pa.string()),  # fetched | no_text | not_text | not_html | undecodable | robots | robots_meta | ...
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


SOURCE_ID = pa.field("source_id", pa.string())  # the record's own id (the source's `id_field`), as a string
META = pa.field("meta", pa.string())  # the source's `keep_fields` of the record: a JSON object (see records.py)
RECORD_LOG_SCHEMA = pa.schema(list(LOG_SCHEMA) + [("file", pa.string()), ("line", pa.int64())])


def docs_schema(src) -> pa.Schema:
    """The docs shards' schema of a source: DOCS_SCHEMA, plus source_id / meta when the source asks for them."""
    extra = ([SOURCE_ID] if getattr(src, "id_field", None) else []) + \
        ([META] if getattr(src, "keep_fields", None) is not None else [])
    return pa.schema(list(DOCS_SCHEMA) + extra)
