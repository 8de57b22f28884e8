"""dedupe: exact and MinHash-LSH near-duplicate removal between clean and tokenize, distributed over Ray.

    clean.docs ──> sign (per shard) ──> bucket (per band-hash partition) ──> verify (per shard, exact Jaccard)
               ──> connected components (large/small-star rounds per partition) ──> keep rule ──> write (per shard)

Outputs: `docs` (kept documents, every column kept) and `duplicates` (id, url, cluster_id, kept_id, edge_from,
edge_jaccard, jaccard_to_kept, kind = exact | near | against): every removal is explained. `against:` lists earlier
dedupe outputs or evaluation corpora whose documents are never re-admitted (their near-duplicates are removed);
their signatures are cached by content in `<work_dir>/dedupe/.against-sigs/` (safe to delete), so reruns skip them.

Run: `zhgpt run configs/quickstart.yaml` (section `dedupe:`); tests: `.venv/bin/python -m pytest -q
tests/stages/test_dedupe*.py`; benchmark: `.venv/bin/python bench/dedupe.py`.
"""
from __future__ import annotations

from pipelines.dataset import DOC_SCHEMA
from pipelines.stage import OutputSpec, StageSpec
from stages.dedupe.config import DedupeConfig
from stages.dedupe.tables import DUP_SCHEMA

SPEC = StageSpec(
    name="dedupe",
    inputs=["clean"],
    config_model=DedupeConfig,
    outputs=[OutputSpec("docs", "parquet", primary=True, schema=DOC_SCHEMA),
             OutputSpec("duplicates", "parquet", schema=DUP_SCHEMA)],
    run="stages.dedupe.stage:run",
    libraries=["numpy"],
    headline=["exact_dups", "near_dups", "against_dups", "kept_fraction", "chain_drift"],
)
