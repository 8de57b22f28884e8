"""The clean stage's Ray fan-out: one task per input shard, each writing one docs and one rejects shard.

Run through the pipeline (`zhgpt run CONFIG`) or in tests with
pipelines.testing.helpers.run_stage("clean", cfg, {"crawl": data}, out).
"""
from __future__ import annotations

import json

from pipelines.dataset import ShardInfo, write_file, write_parquet
from pipelines.io import read_docs
from pipelines.stage import StageContext, StageResult
from pipelines.stats import Stats
from stages.clean.config import CleanConfig
from stages.clean.core import Cleaner, clean_table, line_filter_on, rule_names


def clean_shard(i: int, path: str, cfg: CleanConfig, out_dir: str) -> tuple[ShardInfo, ShardInfo, dict]:
    """Clean one input shard; output names follow the input's index, so any worker count writes the same files."""
    docs, rejects, stats = clean_table(read_docs(path), cfg, Cleaner(cfg))
    return (write_parquet(docs, out_dir, f"docs/part-{i:05d}.parquet"),
            write_parquet(rejects, out_dir, f"rejects/part-{i:05d}.parquet"), stats)


def summarise(parts: list[dict], cfg: CleanConfig) -> dict[str, float]:
    """The tasks' counts summed (every rule the config switches on appears, at 0 when it dropped nothing), plus
    the kept and rejected totals and the kept fraction."""
    zeros = {f"rejected.{n}": 0 for n in rule_names(cfg)} | {f"pii.{k}": 0 for k in cfg.pii or ()}
    if line_filter_on(cfg):
        zeros |= {"line_chars_removed": 0, "lines_removed.line_drop_table_rows": 0,
                  "lines_removed.line_min_cjk_ratio": 0}
    stats = Stats.total(parts, **zeros).flat()
    stats["docs_kept"] = stats.get("docs_kept", 0.0)
    stats["docs_rejected"] = stats.get("docs_in", 0.0) - stats["docs_kept"]
    stats["kept_fraction"] = round(stats["docs_kept"] / stats["docs_in"], 6) if stats.get("docs_in") else 0.0
    return stats


def run(ctx: StageContext) -> StageResult:
    paths = ctx.upstream["crawl"].paths("docs")
    items = [(i, str(p), ctx.cfg, str(ctx.out_dir)) for i, p in enumerate(paths)]
    results = ctx.map(clean_shard, items, rows_of=lambda r: r[0].rows)
    stats = summarise([r[2] for r in results], ctx.cfg)
    report = write_file(json.dumps(stats, indent=1, sort_keys=True).encode(), ctx.out_dir, "report/clean_stats.json")
    return StageResult(outputs={"docs": [r[0] for r in results], "rejects": [r[1] for r in results]},
                       stats=stats, artifacts=[report.path], summary=summary(stats))


def summary(stats: dict[str, float]) -> str:
    """`kept 477 of 1,082 (rejected: min_cjk_ratio 297, min_chars 134, ...)`: rules by the documents they took."""
    rejected = sorted(((k.split(".", 1)[1], v) for k, v in stats.items() if k.startswith("rejected.") and v),
                      key=lambda kv: -kv[1])
    why = ", ".join(f"{rule} {n:,.0f}" for rule, n in rejected)
    return f"kept {stats['docs_kept']:,.0f} of {stats.get('docs_in', 0):,.0f}" + (f" (rejected: {why})" if why else "")
