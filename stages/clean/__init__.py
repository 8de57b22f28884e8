"""The clean stage: Chinese-first normalisation, Traditional->Simplified (OpenCC), script/language and quality
rules, an optional line filter (stages/clean/lines.py), PII masking; every dropped document goes to `rejects` with
the rule, the measured value and the threshold; removed lines are counted per rule in the stats.

Inputs: crawl's `docs`. Outputs: `docs` (input columns kept, plus `converted`, `pii_<kind>` and `lines_removed`
counts) and `rejects` (id, url, source_name, rule, value, threshold), one shard of each per input shard.
Run it with the pipeline (`zhgpt run configs/quickstart.yaml --from clean`); tests: tests/stages/test_clean*.py.
"""
from __future__ import annotations

from pipelines.stage import OutputSpec, StageSpec
from stages.clean.config import CleanConfig
from stages.clean.tables import DOCS_SCHEMA, REJECT_SCHEMA

SPEC = StageSpec(
    name="clean",
    inputs=["crawl"],
    config_model=CleanConfig,
    outputs=[OutputSpec("docs", "parquet", primary=True, schema=DOCS_SCHEMA),
             OutputSpec("rejects", "parquet", schema=REJECT_SCHEMA)],
    run="stages.clean.stage:run",
    libraries=["opencc", "fasttext-numpy2-wheel", "numpy"],
    headline=["kept_fraction", "docs_kept"],
)
