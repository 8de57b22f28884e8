"""The tokenize stage's outputs as tables (the format itself is documented in stages/tokenize/__init__.py).

`train` and `val` shards hold `tokens` (fixed_size_list<uint16 | uint32>[seq_len + 1]) and `source_name` (a
dictionary column); their types follow the vocabulary and seq_len, so the declared schema names the columns and
leaves the types open (pa.null() = any type). `rows` is the lineage sidecar: one line per (row, document) segment
(plus `source_id`, the user's own record id, when the documents carry one).
"""
from __future__ import annotations

import pyarrow as pa

TRAIN, VAL = 0, 1
SPLITS = ("train", "val")

TOKENS_SCHEMA = pa.schema([("tokens", pa.null()), ("source_name", pa.null())])
ROWS_SCHEMA = pa.schema([("split", pa.string()), ("shard", pa.int32()), ("row", pa.int64()), ("id", pa.string()),
                         ("url", pa.string()), ("source_name", pa.string()), ("start", pa.int32()),
                         ("length", pa.int32()), ("doc_offset", pa.int64())])
