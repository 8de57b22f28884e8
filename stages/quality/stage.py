"""The quality stage: train the classifier in the driver (one thread, seeded), score every input shard in a Ray
task, set per-source thresholds from all the scores, then split each shard into kept docs and rejects in a
second round of tasks. Output file names follow the input shard's index, so any worker count writes the same
files.

Run through the pipeline (`zhgpt run CONFIG` with a `quality:` section) or tests/helpers.run_stage("quality",
cfg, {"dedupe": data}, out).
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np

from pipelines.dataset import ShardInfo, write_file, write_parquet
from pipelines.io import atomic_path, read_docs
from pipelines.stage import StageContext, StageResult
from pipelines.stats import Stats
from stages.quality import classifier, keep
from stages.quality.config import QualityConfig
from stages.quality.corpus import MIN_DOCS, holdout, read_examples, sample_negatives

MODEL = "model/quality.bin"


@functools.lru_cache(maxsize=2)
def _fasttext(path: str, tokens: str) -> classifier.Scorer:
    return classifier.Scorer(path, tokens)


@functools.lru_cache(maxsize=1)
def _bpb(path: str, window: int | None, batch: int):
    from stages.quality.perplexity import BitsPerByte

    return BitsPerByte(Path(path), window, batch)


def score_shard(path: str, model: str | None, cfg: QualityConfig) -> dict:
    """Every document's scores (one task per input shard); the task's CPU seconds for the benchmark."""
    t0 = time.process_time()
    t = read_docs(path, ["source_name", "text"])
    texts = t.column("text").to_pylist()
    out = {"source_name": np.array(t.column("source_name").to_pylist(), dtype=object)}
    if model is not None:
        out[keep.FASTTEXT] = _fasttext(model, cfg.classifier.tokens).scores(texts)
    if cfg.perplexity is not None:
        import torch

        torch.set_num_threads(1)  # one task per core: the fan-out is the parallelism
        p = cfg.perplexity
        out[keep.BPB] = _bpb(str(p.model), p.window, p.batch).score(texts)
    out["cpu_s"] = time.process_time() - t0
    return out


def keep_shard(i: int, path: str, scores: dict, limit: np.ndarray, cuts: np.ndarray | None, scorer: str | None,
               out_dir: str) -> tuple[ShardInfo, ShardInfo, ShardInfo]:
    """Write shard i's kept docs (with the score columns), its rejects and its scores."""
    docs = read_docs(path)
    cols = {k: scores[k] for k in (keep.FASTTEXT, keep.BPB) if k in scores}
    if cuts is not None:
        cols[keep.BUCKET] = keep.buckets(scores[keep.BPB], cuts[:, 0], cuts[:, 1])
    mask = np.ones(docs.num_rows, bool) if scorer is None else keep.kept(scores[keep.SCORER_COLUMN[scorer]], limit,
                                                                         scorer)
    kept, rejects, all_scores = keep.split(docs, cols, mask, scorer, limit)
    return (write_parquet(kept, out_dir, f"docs/part-{i:05d}.parquet"),
            write_parquet(rejects, out_dir, f"rejects/part-{i:05d}.parquet"),
            write_parquet(all_scores, out_dir, f"scores/part-{i:05d}.parquet"))


def fit_classifier(ctx: StageContext, shards: list[str]) -> tuple[str, dict]:
    """Train on positives vs negatives (given, or sampled from the input) and measure it on the held-out split."""
    cfg = ctx.cfg
    pos = read_examples(cfg.positives, cfg.text_column)
    if cfg.negatives:
        neg = read_examples(cfg.negatives, cfg.text_column)
    else:
        want = int(np.ceil(cfg.negatives_per_positive * len(pos)))
        neg = sample_negatives([Path(s) for s in shards], want, cfg.sample_seed, pos)
        if len(neg) < MIN_DOCS:
            raise ValueError(f"quality: the input has {len(neg)} document(s) that are not positives; at least "
                             f"{MIN_DOCS} are needed as negatives")
    c = cfg.classifier
    pos_train, pos_held = holdout(pos, c.holdout_fraction, cfg.sample_seed)
    neg_train, neg_held = holdout(neg, c.holdout_fraction, cfg.sample_seed)
    path = ctx.out_dir / MODEL
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        classifier.train(pos_train, neg_train, c, tmp)
    figures = classifier.heldout_figures(classifier.Scorer(path, c.tokens), pos_held, neg_held)
    figures.update(train_pos=len(pos_train), train_neg=len(neg_train))
    ctx.log(f"classifier ({c.tokens}): held-out precision {figures['precision']:.3f}, recall {figures['recall']:.3f}, "
            f"ROC AUC {figures['roc_auc']:.3f} on {len(pos_held)}+{len(neg_held)} documents")
    return str(path), figures


def _limits(cfg: QualityConfig, parts: list[dict]) -> tuple[dict, dict]:
    """({source: keep threshold}, {source: bucket cuts}) from every document's scores."""
    scorer = cfg.keep_scorer()
    sources = np.concatenate([p["source_name"] for p in parts]) if parts else np.array([], dtype=object)
    limits: dict = {}
    cuts: dict = {}
    if scorer is not None:
        col = keep.SCORER_COLUMN[scorer]
        limits = keep.thresholds(sources, np.concatenate([p[col] for p in parts]), scorer, cfg.keep_fraction,
                                 cfg.threshold)
    if cfg.perplexity is not None:
        cuts = keep.bucket_cuts(sources, np.concatenate([p[keep.BPB] for p in parts]), cfg.perplexity.percentiles)
    return limits, cuts


def summarise(parts: list[dict], infos: list[tuple], limits: dict, cuts: dict, figures: dict) -> dict[str, float]:
    st = Stats(docs_in=sum(len(p["source_name"]) for p in parts), docs_kept=sum(k.rows for k, _, _ in infos))
    st["docs_rejected"] = st["docs_in"] - st["docs_kept"]
    st["kept_fraction"] = round(st["docs_kept"] / st["docs_in"], 6) if st["docs_in"] else 0.0
    st["score_cpu_seconds"] = round(sum(p["cpu_s"] for p in parts), 3)
    st.add({"threshold": limits, "bucket_cut": {s: {"head": c[0], "tail": c[1]} for s, c in cuts.items()}})
    st.add({"classifier": figures} if figures else {})
    return {k: float(v) for k, v in st.flat().items()}


def run(ctx: StageContext) -> StageResult:
    shards = [str(p) for p in ctx.upstream["dedupe"].paths("docs")]
    model, figures = fit_classifier(ctx, shards) if ctx.cfg.positives else (None, {})
    result = score_and_keep(ctx, shards, model, figures)
    result.outputs["model"] = [ShardInfo.of(ctx.out_dir, MODEL, 0)] if model else []
    return result


def score_and_keep(ctx: StageContext, shards: list[str], model: str | None, figures: dict) -> StageResult:
    """The fan-out (what bench/quality.py times): score every shard, set the thresholds, split every shard;
    the result's outputs are docs, rejects and scores."""
    cfg: QualityConfig = ctx.cfg
    parts = ctx.map(score_shard, [(s, model, cfg) for s in shards], rows_of=lambda p: len(p["source_name"]))
    limits, cuts = _limits(cfg, parts)
    items = []
    for i, (s, p) in enumerate(zip(shards, parts)):
        names = p["source_name"].tolist()
        c = np.stack([keep.per_doc(names, {k: v[j] for k, v in cuts.items()}) for j in (0, 1)], 1) if cuts else None
        items.append((i, s, p, keep.per_doc(names, limits), c, cfg.keep_scorer(), str(ctx.out_dir)))
    infos = ctx.map(keep_shard, items, rows_of=lambda r: r[2].rows)
    stats = summarise(parts, infos, limits, cuts, figures)
    report = write_file(json.dumps({"stats": stats, "thresholds": limits, "bucket_cuts": cuts}, indent=1,
                                   sort_keys=True).encode(), ctx.out_dir, "report/quality.json")
    ctx.log(f"kept {stats['docs_kept']:.0f}/{stats['docs_in']:.0f} documents"
            + (f" by {cfg.keep_scorer()}" if cfg.keep_scorer() else " (scores only)"))
    return StageResult(outputs={"docs": [k for k, _, _ in infos], "rejects": [r for _, r, _ in infos],
                                "scores": [s for _, _, s in infos]},
                       stats=stats, extra={"thresholds": limits, "bucket_cuts": cuts, "classifier": figures},
                       artifacts=[report.path])
