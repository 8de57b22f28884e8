"""The crawl stage's run(): every source in config order (a seeds crawl, or WARC / local files fanned out over Ray),
its shards gathered in order, counts per URL fate in the stats.

Run it through the pipeline (`zhgpt run CONFIG`, section `crawl:`); tests: tests/stages/test_crawl*.py.
"""
from __future__ import annotations

import csv
from pathlib import Path

from pipelines.stage import StageContext, StageResult
from pipelines.stats import Stats

FATES = ["fetched", "no_text", "not_text", "not_html", "robots", "blocked", "error", "out_of_scope", "invalid",
         "max_pages", "undecodable"]


def provenance(path: Path) -> list[dict]:
    """Rows of a package TSV (package, version, file, sha256): recorded in the manifest's `extra`."""
    with open(path, encoding="utf-8", newline="") as fh:
        return [dict(zip(("package", "version", "file", "sha256"), row)) for row in csv.reader(fh, delimiter="\t")
                if row]


def _empty_docs(ctx: StageContext):
    from pipelines.dataset import table_of, write_parquet
    from stages.crawl.tables import DOCS_SCHEMA, LOG_SCHEMA

    return (write_parquet(table_of([], DOCS_SCHEMA), ctx.out_dir, "docs/empty.parquet"),
            write_parquet(table_of([], LOG_SCHEMA), ctx.out_dir, "log/empty.parquet"))


def run(ctx: StageContext) -> StageResult:
    from stages.crawl.records import REASONS
    from stages.crawl.seeds import run_seeds
    from stages.crawl.sources import run_sources

    outputs: dict[str, list] = {"docs": [], "log": [], "warc": []}
    # Every fate has a metric, zero included, so MLflow's Compare view has no blanks between runs.
    counts = Stats(dict.fromkeys(FATES, 0))
    # Records of files/warc sources that made no document, per reason (records.py); none for a seeds-only crawl.
    records = Stats(dict.fromkeys(("read",) + REASONS, 0)) if any(s.type != "seeds" for s in ctx.cfg.sources) \
        else Stats()
    extra: dict = {"provenance": {}}
    for i, src in enumerate(ctx.cfg.sources):
        if src.provenance is not None:
            extra["provenance"][src.name] = provenance(src.provenance)
        shards, got = run_seeds(ctx, i, src) if src.type == "seeds" else run_sources(ctx, src)
        for k, v in shards.items():
            outputs[k].extend(v)
        records.add(got.pop("records", {}))
        counts.add(got)
    if not outputs["docs"]:  # downstream stages read a schema even from an empty crawl
        docs, log = _empty_docs(ctx)
        outputs["docs"].append(docs)
        outputs["log"] = outputs["log"] or [log]
    stats = {f"urls_{k}": float(v) for k, v in sorted(counts.items())}
    stats.update({f"records_{k}": float(v) for k, v in sorted(records.items())})
    stats.update(docs=float(sum(s.rows for s in outputs["docs"])), log_rows=float(sum(s.rows for s in outputs["log"])),
                 warc_bytes=float(sum(s.bytes for s in outputs["warc"])), sources=float(len(ctx.cfg.sources)))
    return StageResult(outputs=outputs, stats=stats, extra=extra)
