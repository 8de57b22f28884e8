"""JSONL and Parquet records -> documents, one record at a time; a record that cannot be a document gets a reason.

Pure functions over already-read bytes and values; the readers (stages/crawl/readers.py) stream records to them.

    ok, got = jsonl_record(b'{"text": "中文"}\\n')       # (True, {...}) or (False, (reason, detail))
    row = doc_row(src, "a.jsonl", 21, record)            # a docs row, or (reason, detail)

Reasons (the `fate` of a record's row in the crawl's `log`, and the stats' `records_<reason>` counts):
invalid_json, invalid_utf8, too_long, not_object, no_text_field, text_not_string (and a WARC's corrupt_record)
count as BAD records
(against `max_bad_fraction`); empty_text (the text is empty or whitespace) is logged and counted but is not bad:
dumps often hold empty documents on purpose, and they are not a sign of a broken file. A blank line is no record.
"""
from __future__ import annotations

from typing import Any

import orjson

from pipelines.dataset import doc_id

BAD = ("invalid_json", "invalid_utf8", "too_long", "not_object", "no_text_field", "text_not_string",
       "corrupt_record")  # the last: a WARC record that could not be read (stages/crawl/warc.py)
REASONS = BAD + ("empty_text",)
# One line is held in memory whole: longer lines are logged `too_long` and skipped (a binary file named .jsonl
# with no newline would otherwise be read into memory at once).
MAX_LINE = 64 << 20


def describe(reason: str, text_field: str) -> str:
    """How a reason reads in a summary line: `120 without field 'text'`."""
    return {"invalid_json": "not valid JSON", "invalid_utf8": "not valid UTF-8",
            "too_long": f"longer than {MAX_LINE >> 20} MiB", "not_object": "not a JSON object",
            "no_text_field": f"without field {text_field!r}", "text_not_string": f"field {text_field!r} not a string",
            "empty_text": f"empty field {text_field!r}", "corrupt_record": "corrupt WARC record"}[reason]


def jsonl_record(line: bytes) -> tuple[bool, Any]:
    """(True, value) for a line holding one JSON value; (False, (reason, detail)) otherwise."""
    try:
        return True, orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            return False, ("invalid_utf8", f"byte 0x{line[bad.start]:02x} at column {bad.start + 1}")
        return False, ("invalid_json", str(exc))


def _scalar_str(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float, bool)):
        return str(v)
    return orjson.dumps(v, default=str).decode()


def meta_json(src, rec: dict) -> str | None:
    """The kept fields as one JSON object (keys in the record's order).

    A JSON string, not a struct: a struct's type is inferred from the values, so two files (or two shards of one
    file) whose fields differ, or whose values are null in one and a string in the other, would write Parquet
    shards of different schemas, which clean, dedupe and tokenize would then have to unify; a string column has
    one type whatever the records hold, and every stage carries it unchanged without knowing what is inside."""
    keep = src.keep_fields
    if keep is None:
        return None
    if keep == "all":
        own = {src.text_field, src.id_field, src.url_field, src.title_field}
        fields = {k: v for k, v in rec.items() if k not in own}
    else:
        fields = {k: rec[k] for k in keep if k in rec}
    return orjson.dumps(fields, default=str).decode()


def doc_row(src, path: str, line: int, rec: Any) -> dict | tuple[str, str]:
    """A docs row of a record (its locator `file:<path>:<line>`), or (reason, detail) when it is not a document.

    The document id hashes the locator and the text (the contract's `doc_id`), not the user's id: user ids are
    not always unique within a dump, and a document id must be. The user's id is kept beside it as `source_id`."""
    if not isinstance(rec, dict):
        return "not_object", f"a JSON {type(rec).__name__.replace('dict', 'object').replace('list', 'array')}"
    tf = src.text_field
    if tf not in rec:
        return "no_text_field", f"fields: {', '.join(list(rec)[:8])}" if rec else "an empty object"
    text = rec[tf]
    if not isinstance(text, str):
        return "text_not_string", f"{tf} is {'null' if text is None else type(text).__name__}"
    if not text or text.isspace():
        return "empty_text", f"{len(text)} whitespace characters" if text else "an empty string"
    locator = f"file:{path}:{line}"
    url = (_scalar_str(rec.get(src.url_field)) if src.url_field else None) or f"file:{path}"
    title = (_scalar_str(rec.get(src.title_field)) if src.title_field else None) or ""
    row = {"id": doc_id(locator, text), "source_name": src.name, "url": url, "source": locator, "title": title,
           "text": text}
    if src.id_field:
        row["source_id"] = _scalar_str(rec.get(src.id_field))
    if src.keep_fields is not None:
        row["meta"] = meta_json(src, rec)
    return row
