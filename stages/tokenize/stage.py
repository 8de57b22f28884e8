"""The tokenize stage's fan-out: encode (one task per input shard), then pack (one task per output shard).

Format and policies: stages/tokenize/__init__.py. Tests: `.venv/bin/python -m pytest -q tests/stages/test_tokenize.py`.
"""
from __future__ import annotations

import math
import re
import shutil
from typing import Any

import pyarrow.parquet as pq
import ray

from pipelines.dataset import write_file
from pipelines.stage import StageContext, StageResult
from pipelines.stats import Stats
from stages.tokenize.encode import byte_mask, encode_shard, move_to_val
from stages.tokenize.pack import pack_shard, shard_meta
from stages.tokenize.tables import SPLITS, TRAIN, VAL

MODEL_COPY = "tokenizer/tokenizer.model"


def tokenizer_model(ctx: StageContext) -> tuple[bytes, str]:
    """(model bytes, digest of the tokenizer's `model` output)."""
    up = ctx.upstream["tokenizer"]
    models = [p for p in up.paths("model") if p.suffix == ".model"]
    if len(models) != 1:
        raise ValueError(f"{up.dir}: the tokenizer output must hold exactly one .model file, found {len(models)}")
    return models[0].read_bytes(), up.manifest.outputs["model"].digest


def model_facts(model: bytes) -> tuple[dict[str, Any], Any]:
    """(ids and dtype for the manifest, the byte-piece mask the encode tasks count with)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    n = sp.get_piece_size()
    return {"vocab_size": n, "eos_id": sp.eos_id(), "bos_id": sp.bos_id(), "pad_id": sp.pad_id(),
            "dtype": "uint16" if n <= 1 << 16 else "uint32"}, byte_mask(sp)


def merge(parts: list[dict[str, Any]]) -> Stats:
    """The encode tasks' counts summed (ints, so the order of tasks does not matter); `first_draw` is the one
    figure that is not a sum: the smallest (draw, id) of any shard, with the index of its shard."""
    out = Stats.total(({k: v for k, v in p.items() if k != "first_draw"} for p in parts), docs=0, tokens=0, chars=0,
                      bytes=0, byte_tokens=0, split_tokens={s: {} for s in SPLITS})
    draws = [[*p["first_draw"], i] for i, p in enumerate(parts) if p.get("first_draw")]
    out["first_draw"] = min(draws, key=lambda d: d[:2], default=None)
    return out


def ensure_val(enc: dict[str, Any], val_fraction: float, part) -> str | None:
    """With val_fraction > 0, at least one document is in val (as a train/test split of a small corpus would have):
    when no id drew val, the document with the smallest draw moves there. Returns its id, or None."""
    split_tokens = enc["split_tokens"]
    if val_fraction == 0 or any(split_tokens[SPLITS[VAL]].values()) or enc["docs"] < 2 or not enc["first_draw"]:
        return None
    _, doc_id, n, src, shard = enc["first_draw"]
    move_to_val(part / f"part-{shard:05d}.arrow", doc_id)
    train = split_tokens[SPLITS[TRAIN]]
    train[src] -= n
    if train[src] == 0:
        del train[src]
    split_tokens[SPLITS[VAL]][src] = n
    return doc_id


def plan_shards(split_tokens: dict[str, dict[str, int]], per_shard: int) -> dict[int, int]:
    """Output shards per split, from its token count: a function of the data and config only."""
    return {i: math.ceil(sum(split_tokens[s].values()) / per_shard) for i, s in enumerate(SPLITS)}


def summarise(enc: dict[str, Any], packed: list[dict[str, Any]], jobs: list[tuple], facts: dict) -> dict[str, float]:
    content = max(1, enc["tokens"] - enc["docs"])  # per-token ratios leave the EOS tokens out
    stats: dict[str, float] = {"docs": enc["docs"], "tokens": enc["tokens"], "chars": enc["chars"],
                               "bytes": enc["bytes"], "chars_per_token": round(enc["chars"] / content, 4),
                               "bytes_per_token": round(enc["bytes"] / content, 4),
                               "byte_fallback_rate": round(enc["byte_tokens"] / content, 6),
                               "tail_tokens_dropped": sum(p["tail"] for p in packed)}
    row_len = facts["seq_len"] + 1
    for i, name in enumerate(SPLITS):
        mine = [p for p, j in zip(packed, jobs) if j[0] == i]
        stats[f"{name}_shards"] = len(mine)
        stats[f"{name}_rows"] = sum(p["shard"].rows for p in mine)
        stats[f"{name}_tokens"] = stats[f"{name}_rows"] * row_len
    for src, n in tokens_per_source(enc).items():
        stats[f"tokens_src_{re.sub(r'[^0-9A-Za-z_.-]', '_', src) or 'none'}"] = n
    return stats


def tokens_per_source(enc: dict[str, Any]) -> dict[str, int]:
    return dict(sorted(Stats.total(enc["split_tokens"].values()).items()))


def rows_per_source(packed: list[dict[str, Any]], jobs: list[tuple]) -> dict[str, dict[str, int]]:
    parts = ({SPLITS[j[0]]: p["rows_per_source"]} for p, j in zip(packed, jobs))
    return Stats.total(parts, **{s: {} for s in SPLITS})


def text_bytes(path: str) -> int:
    """Uncompressed size of a documents shard (from its Parquet footer): what an encode task's time follows."""
    meta = pq.ParquetFile(path).metadata
    return sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))


def largest_first(ctx: StageContext, fn, jobs: list[tuple], sizes: list[int], **kw) -> list[Any]:
    """ctx.map over the jobs, biggest first so no worker is left with a big task at the end; results in job order."""
    order = sorted(range(len(jobs)), key=lambda i: (-sizes[i], i))
    out: list[Any] = [None] * len(jobs)
    for i, r in zip(order, ctx.map(fn, [jobs[i] for i in order], **kw)):
        out[i] = r
    return out


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    model, digest = tokenizer_model(ctx)
    facts, is_byte = model_facts(model)
    facts.update(seq_len=cfg.seq_len, tokenizer_digest=digest)
    part = ctx.partial_dir / "enc"
    docs = [str(p) for p in ctx.upstream["dedupe"].paths("docs")]
    shared = [ray.put(model), ray.put({**facts, "is_byte": is_byte})]  # stored once, not copied into every task
    jobs = [(i, p, *shared, cfg, str(part)) for i, p in enumerate(docs)]
    enc = merge(largest_first(ctx, encode_shard, jobs, [text_bytes(p) for p in docs], num_cpus=cfg.encode_threads,
                              rows_of=lambda s: s["docs"]))
    if enc["tokens"] == 0:
        raise ValueError("the dedupe output holds no non-empty documents: nothing to tokenize")
    moved = ensure_val(enc, cfg.val_fraction, part)
    sources = sorted({s for per in enc["split_tokens"].values() for s in per})
    meta = shard_meta(cfg.seq_len, facts["eos_id"], facts["vocab_size"], sources, digest)
    encs = [str(part / f"part-{i:05d}.arrow") for i in range(len(docs))]
    sids = any("source_id" in pq.read_schema(p).names for p in docs)  # then every sidecar has the column
    jobs = [(split, b, n, encs, sources, meta, str(ctx.out_dir), sids)
            for split, n in plan_shards(enc["split_tokens"], cfg.tokens_per_shard).items() for b in range(n)]
    packed = ctx.map(pack_shard, jobs, rows_of=lambda r: r["shard"].rows)
    shutil.rmtree(part, ignore_errors=True)  # the encode files are ~2x the output; the stage is complete now
    outputs = {name: [p["shard"] for p, j in zip(packed, jobs) if j[0] == i] for i, name in enumerate(SPLITS)}
    outputs["rows"] = [p["rows"] for p in packed]
    outputs["tokenizer"] = [write_file(model, ctx.out_dir, MODEL_COPY)]  # training and export read it from here
    extra = {**facts, "sources": sources, "tokens_per_source": tokens_per_source(enc),
             "rows_per_source": rows_per_source(packed, jobs), "tail_policy": "drop",
             "split_rows": {s: sum(x.rows for x in outputs[s]) for s in SPLITS}, "val_moved": moved}
    stats = summarise(enc, packed, jobs, facts)
    said = (f"{stats['tokens']:,.0f} tokens from {stats['docs']:,.0f} documents ({stats['chars_per_token']:.2f} "
            f"characters per token) -> " + ", ".join(f"{s} {stats[f'{s}_rows']:,.0f} rows" for s in SPLITS)
            + f" of {facts['seq_len']} tokens")
    return StageResult(outputs=outputs, stats=stats, extra=extra, summary=said)
