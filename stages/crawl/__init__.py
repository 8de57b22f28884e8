"""crawl: sources (HTTP seeds, WARC/WET files, local files) -> `docs` (primary), `log` (every URL's fate), `warc`.

Run it as part of a pipeline (`zhgpt run configs/quickstart.yaml`); its tests are
`.venv/bin/python -m pytest -q tests/stages/test_crawl*.py`. Importing this package is cheap (its config and table
schemas); aiohttp, trafilatura, warcio and protego are imported inside the functions that need them.
"""
from __future__ import annotations

from pipelines.stage import OutputSpec, StageSpec
from stages.crawl.config import CrawlConfig
from stages.crawl.tables import DOCS_SCHEMA, LOG_SCHEMA

SPEC = StageSpec(
    name="crawl",
    inputs=[],
    config_model=CrawlConfig,
    outputs=[OutputSpec("docs", "parquet", primary=True, schema=DOCS_SCHEMA),
             OutputSpec("log", "parquet", schema=LOG_SCHEMA), OutputSpec("warc", "file")],
    run="stages.crawl.stage:run",
    libraries=["trafilatura", "charset-normalizer", "lxml", "warcio", "protego", "aiohttp"],
    headline=["docs", "urls_fetched", "urls_error"],
)
