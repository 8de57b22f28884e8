"""The quality stage (optional, between dedupe and the tokenizer): model-based document scoring and a keep rule.

Scorers: a fastText classifier trained on `positives` (reference text the kept documents should resemble)
against `negatives` (given, or a seeded sample of the input), with its held-out precision, recall and ROC AUC
in the stats; and, optionally, bits per byte under a pinned model (the HF export of an earlier train stage),
with CCNet-style head / middle / tail buckets per source. The keep rule reads one scorer: a kept fraction per
source, or a threshold.

Inputs: dedupe's `docs`. When the config has a `quality:` section, the tokenizer and tokenize stages read this
stage's `docs` instead of dedupe's (`stands_in_for`). Outputs: `docs` (input columns plus `quality_fasttext`,
`quality_bpb`, `quality_bucket` for the scorers in use), `rejects` (id, url, source_name, rule = the scorer,
value, threshold), `scores` (every document's scores and `kept`), `model` (the fastText model, `quality.bin`).
Run with the pipeline; tests: tests/stages/test_quality*.py; benchmark: bench/quality.py.
"""
from __future__ import annotations

from pipelines.io import DOC_SCHEMA
from pipelines.stage import OutputSpec, StageSpec
from stages.quality.config import QualityConfig

SPEC = StageSpec(
    name="quality",
    inputs=["dedupe"],
    config_model=QualityConfig,
    outputs=[OutputSpec("docs", "parquet", primary=True, schema=DOC_SCHEMA), OutputSpec("rejects", "parquet"),
             OutputSpec("scores", "parquet"), OutputSpec("model", "file")],
    run="stages.quality.stage:run",
    libraries=["fasttext-numpy2-wheel", "numpy", "torch", "transformers", "sentencepiece"],
    headline=["kept_fraction", "docs_kept", "classifier.roc_auc"],
    stands_in_for="dedupe",
)
