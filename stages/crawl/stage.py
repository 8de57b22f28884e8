"""The crawl stage's run(): every source in config order (a seeds crawl, or WARC / local files fanned out over Ray),
its shards gathered in order, counts per URL fate in the stats and, in words, in the summary the console prints.

Run it through the pipeline (`zhgpt run CONFIG`, section `crawl:`); tests: tests/stages/test_crawl*.py.
"""
from __future__ import annotations

import csv
from pathlib import Path

from pipelines.stage import StageContext, StageResult
from pipelines.stats import Stats

FATES = ["fetched", "no_text", "not_text", "not_html", "robots", "blocked", "error", "out_of_scope", "invalid",
         "max_pages", "undecodable", "robots_meta"]
# The summary's words, in the order a user reads them; errors are told by kind (ERROR_WORDS, below).
WORDS = {"fetched": "fetched", "no_text": "no text", "not_text": "not text", "not_html": "not html",
         "undecodable": "undecodable", "robots": "robots", "robots_meta": "robots meta",
         "blocked": "blocked private", "out_of_scope": "out of scope", "invalid": "invalid", "max_pages": "max pages"}
ERROR_WORDS = {"http_4xx": "http 4xx", "http_5xx": "http 5xx", "http_other": "http other", "timeout": "timeout",
               "connection": "connection failed", "dns": "dns failed", "too_large": "too large",
               "redirect": "bad redirect", "retry_after": "retry-after too long"}


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


def summary(counts: dict, docs: int) -> str:
    """`631 documents from 1024 URLs: fetched 631, no text 2, ..., errors 3 (http 4xx 1, timeout 2)`."""
    errors = counts.get("errors", {})
    other = counts.get("error", 0) - sum(errors.values())  # errors without a kind (the files and warc sources)
    parts = [f"{word} {counts.get(fate, 0)}" for fate, word in WORDS.items()]
    kinds = ", ".join([f"{word} {errors[k]}" for k, word in ERROR_WORDS.items() if errors.get(k)]
                      + ([f"other {other}"] if other else []))
    parts.append(f"errors {counts.get('error', 0)}" + (f" ({kinds})" if kinds else ""))
    total = sum(v for k, v in counts.items() if k in FATES)
    return f"{docs} documents from {total} URLs: " + ", ".join(parts)


def why_empty(ctx: StageContext, log_shards: list, counts: dict) -> str:
    """For a crawl without documents: its most common fate and the first URL the log gives it, with the reason."""
    from pipelines.io import read_table

    fate = max((f for f in FATES if f != "fetched"), key=lambda f: counts.get(f, 0))
    if not counts.get(fate):
        return "no URL was planned (no seeds left after scope)"
    for shard in log_shards:
        for row in read_table(ctx.out_dir / shard.path, ["url", "fate", "reason"]).to_pylist():
            if row["fate"] == fate:
                return f"{WORDS.get(fate, fate)} {counts[fate]}, e.g. {row['url']}: {row['reason']}"
    return f"{WORDS.get(fate, fate)} {counts[fate]}"


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
    said: list[str] = []  # a line per files/warc source; the URL fates of the seeds sources go first
    for i, src in enumerate(ctx.cfg.sources):
        if src.provenance is not None:
            extra["provenance"][src.name] = provenance(src.provenance)
        if src.type == "seeds":
            shards, got = run_seeds(ctx, i, src)
        else:
            shards, got, line = run_sources(ctx, src)
            said.append(line)
        for k, v in shards.items():
            outputs[k].extend(v)
        records.add(got.pop("records", {}))
        counts.add(got)
    docs = sum(s.rows for s in outputs["docs"])
    if any(src.type == "seeds" for src in ctx.cfg.sources):
        said.insert(0, summary(counts, docs))
        if not docs:  # (a files/warc source without documents has already failed the stage)
            said[0] += f". No documents: {why_empty(ctx, outputs['log'], counts)}"
    extra["summary"] = "; ".join(said)
    if not outputs["docs"]:  # downstream stages read a schema even from an empty crawl
        empty_docs, empty_log = _empty_docs(ctx)
        outputs["docs"].append(empty_docs)
        outputs["log"] = outputs["log"] or [empty_log]
    stats = {f"urls_{k}": float(v) for k, v in sorted(counts.items()) if k != "errors"}
    stats.update({f"records_{k}": float(v) for k, v in sorted(records.items())})
    stats.update({f"urls_error_{k}": float(counts.get("errors", {}).get(k, 0)) for k in ERROR_WORDS})
    stats.update(docs=float(docs), log_rows=float(sum(s.rows for s in outputs["log"])),
                 warc_bytes=float(sum(s.bytes for s in outputs["warc"])), sources=float(len(ctx.cfg.sources)))
    return StageResult(outputs=outputs, stats=stats, extra=extra)
