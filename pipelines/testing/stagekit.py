"""Test-only stages (never shipped): a tiny three-stage DAG that exercises the runner for real.

`gen` writes N shards of Chinese sentences, `upper` transforms each shard in a Ray task, `count` sums rows.
Registered when a config lists `plugins: [pipelines.testing.stagekit]`.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import pyarrow as pa
from pydantic import Field

from pipelines.dataset import DOC_SCHEMA, doc_id, write_parquet
from pipelines.io import read_docs, read_table
from pipelines.stage import ExternalFile, OutputSpec, StageConfig, StageContext, StageResult, StageSpec, register

SENTENCES = ["机器学习是人工智能的一个分支。", "北京是中华人民共和国的首都。", "今天天气很好，我们去公园散步吧！",
             "Debian 是一个自由的操作系统。", "大规模语言模型需要大量的中文语料。"]


class GenConfig(StageConfig):
    shards: int = Field(4, ge=1)
    rows_per_shard: int = Field(50, ge=1)
    seed: int = 0


class UpperConfig(StageConfig):
    EXEC_FIELDS = frozenset({"slow_ms"})
    suffix: str = "。"
    suffix_file: Optional[ExternalFile] = None  # when set, its first line is the suffix
    fail_shard: Optional[int] = None  # this shard's task raises (a known fault point)
    slow_ms: int = 0  # execution only: lets a test catch the stage in the middle


class CountConfig(StageConfig):
    pass


def gen_shard(i: int, cfg: GenConfig, out_dir: str):
    rows = []
    for j in range(cfg.rows_per_shard):
        text = SENTENCES[(i * 7 + j + cfg.seed) % len(SENTENCES)] + f"（第{i}-{j}条）"
        loc = f"test://gen/{i}/{j}"
        rows.append({"id": doc_id(loc, text), "source_name": "gen", "url": loc, "source": f"gen:{i}:{j}",
                     "fetched_at": "2026-01-01T00:00:00Z", "title": "", "text": text})
    return write_parquet(pa.Table.from_pylist(rows), out_dir, f"docs/part-{i:05d}.parquet")


def run_gen(ctx: StageContext) -> StageResult:
    items = [(i, ctx.cfg, str(ctx.out_dir)) for i in range(ctx.cfg.shards)]
    shards = ctx.map(gen_shard, items, rows_of=lambda s: s.rows)
    return StageResult(outputs={"docs": shards}, stats={"shards": len(shards)})


def upper_shard(i: int, path: str, cfg: UpperConfig, out_dir: str):
    marker = os.environ.get("ZHGPT_TEST_MARKER_DIR")
    if marker:  # which node runs this task, written when it starts (the cluster tests read it)
        import ray

        node = ray.get_runtime_context().get_node_id()
        open(os.path.join(marker, f"start-{i}-{node}"), "w").close()
    if cfg.slow_ms:
        time.sleep(cfg.slow_ms / 1000)
    if cfg.fail_shard == i:
        raise ValueError(f"shard {i} is unreadable (fail_shard)")
    t = read_docs(path)
    suffix = cfg.suffix_file.read_text(encoding="utf-8").splitlines()[0] if cfg.suffix_file else cfg.suffix
    texts = [s + suffix for s in t.column("text").to_pylist()]
    t = t.set_column(t.schema.get_field_index("text"), "text", pa.array(texts))
    if marker:
        with open(os.path.join(marker, f"done-{i}"), "w") as fh:
            fh.write(node)
    return write_parquet(t, out_dir, f"docs/part-{i:05d}.parquet")


def run_upper(ctx: StageContext) -> StageResult:
    paths = ctx.upstream["gen"].paths("docs")
    shards = ctx.map(upper_shard, [(i, str(p), ctx.cfg, str(ctx.out_dir)) for i, p in enumerate(paths)],
                     rows_of=lambda s: s.rows)
    return StageResult(outputs={"docs": shards}, stats={"chars_added": sum(s.rows for s in shards)})


def run_count(ctx: StageContext) -> StageResult:
    n = sum(read_table(p).num_rows for p in ctx.upstream["upper"].paths("docs"))
    info = write_parquet(pa.table({"rows": [n]}), ctx.out_dir, "count/part-00000.parquet")
    if os.environ.get("ZHGPT_TEST_FAIL_COUNT"):
        raise ValueError("count refused its input (ZHGPT_TEST_FAIL_COUNT)")
    return StageResult(outputs={"count": [info]}, stats={"total": n})


# This module is the stages' code (what their code version hashes), named as Ray workers import it.
register(StageSpec("gen", [], GenConfig, [OutputSpec("docs", "parquet", True, DOC_SCHEMA)], f"{__name__}:run_gen",
                   code_modules=[__name__]))
register(StageSpec("upper", ["gen"], UpperConfig, [OutputSpec("docs", "parquet", True, DOC_SCHEMA)],
                   f"{__name__}:run_upper", code_modules=[__name__]))
register(StageSpec("count", ["upper"], CountConfig, [OutputSpec("count", "parquet", True)], f"{__name__}:run_count",
                   code_modules=[__name__], headline=["total"]))
