"""The dedupe stage's own table: `duplicates`, one row per removed document and why (its kept document, the
verified edge that joined it to the cluster, and its Jaccard to the kept one). Kept documents keep their columns."""
from __future__ import annotations

import pyarrow as pa

DUP_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("cluster_id", pa.string()),
                        ("kept_id", pa.string()), ("edge_from", pa.string()), ("edge_jaccard", pa.float64()),
                        ("jaccard_to_kept", pa.float64()), ("kind", pa.string())])
# With documents that carry the user's own ids (a files source's `id_field`), both documents are named by them too.
DUP_SOURCE_IDS = [pa.field("source_id", pa.string()), pa.field("kept_source_id", pa.string())]
