"""The clean stage's tables: `docs` (the input's columns, plus what cleaning did to each document) and `rejects`
(every dropped document with the rule, the measured value and the threshold; ids and URLs, not a second copy of
the text)."""
from __future__ import annotations

import pyarrow as pa

from pipelines.dataset import DOC_SCHEMA
from stages.clean.config import PII_TYPES

ADDED = ([("converted", pa.string())] + [(f"pii_{k}", pa.int32()) for k in PII_TYPES]
         + [("lines_removed", pa.int32())])
DOCS_SCHEMA = pa.schema(list(DOC_SCHEMA) + ADDED)
REJECT_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("source_name", pa.string()),
                           ("rule", pa.string()), ("value", pa.float64()), ("threshold", pa.float64())])
