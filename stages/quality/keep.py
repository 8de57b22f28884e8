"""The keep rule and the perplexity buckets: from every document's scores to per-source thresholds, then to the
kept documents (scores as columns), the rejects (scorer, value, threshold) and the scores of all documents.

Scores: `quality_fasttext` = P(keep) under the classifier (higher is better), `quality_bpb` = bits per byte
under the pinned model (lower is better), `quality_bucket` = head | middle | tail (CCNet's split: per source,
the documents below the first percentile cut are the head, above the second the tail).
Keep rule, per source: `keep_fraction` keeps the ceil(fraction * n) best documents (the threshold is the score
of the last of them; a tie at the threshold is kept too), or `threshold` keeps every document at least as good.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

FASTTEXT, BPB, BUCKET = "quality_fasttext", "quality_bpb", "quality_bucket"
SCORER_COLUMN = {"fasttext": FASTTEXT, "perplexity": BPB}
HIGHER_IS_BETTER = {"fasttext": True, "perplexity": False}
REJECT_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("source_name", pa.string()),
                           ("rule", pa.string()), ("value", pa.float64()), ("threshold", pa.float64())])


def _by_source(sources: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    return {s: values[sources == s] for s in sorted(set(sources.tolist()))}


def thresholds(sources: np.ndarray, values: np.ndarray, scorer: str, keep_fraction: float | None,
               threshold: float | None) -> dict[str, float]:
    """{source: threshold}. NaN scores (empty documents) count as the worst."""
    if keep_fraction is None:
        return {s: float(threshold) for s in sorted(set(sources.tolist()))}
    out = {}
    for s, v in _by_source(sources, values).items():
        good = np.sort(v[~np.isnan(v)])
        if HIGHER_IS_BETTER[scorer]:
            good = good[::-1]
        k = math.ceil(keep_fraction * len(v))
        out[s] = float(good[min(k, len(good)) - 1]) if len(good) else float("nan")
    return out


def kept(values: np.ndarray, limit: np.ndarray, scorer: str) -> np.ndarray:
    """Which documents pass (NaN never does)."""
    with np.errstate(invalid="ignore"):
        ok = values >= limit if HIGHER_IS_BETTER[scorer] else values <= limit
    return ok & ~np.isnan(values)


def bucket_cuts(sources: np.ndarray, bpb: np.ndarray, percentiles: tuple[float, float]) -> dict[str, list[float]]:
    """{source: [head/middle cut, middle/tail cut]} in bits per byte: the source's percentiles."""
    out = {}
    for s, v in _by_source(sources, bpb).items():
        v = v[~np.isnan(v)]
        out[s] = [float(np.quantile(v, p)) for p in percentiles] if len(v) else [float("nan")] * 2
    return out


def buckets(bpb: np.ndarray, cut_lo: np.ndarray, cut_hi: np.ndarray) -> list[str]:
    return ["tail" if not b <= hi else "head" if b <= lo else "middle" for b, lo, hi in zip(bpb, cut_lo, cut_hi)]


def per_doc(sources: list[str], table: dict[str, object], default: float = float("nan")) -> np.ndarray:
    """A per-source value spread over documents."""
    return np.array([table.get(s, default) for s in sources], dtype=np.float64)


def split(docs: pa.Table, scores: dict[str, np.ndarray], keep: np.ndarray, scorer: str | None,
          limit: np.ndarray) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(kept docs with the score columns, rejects, scores of every document with `kept`)."""
    cols = {}
    for name, v in scores.items():
        cols[name] = pa.array(v, pa.string()) if name == BUCKET else pa.array(v, pa.float64())
    scored = docs
    for name, arr in cols.items():
        scored = scored.append_column(name, arr)
    mask = pa.array(keep)
    all_scores = pa.table({"id": docs.column("id"), "url": docs.column("url"),
                           "source_name": docs.column("source_name"), **cols, "kept": mask})
    out = ~keep
    if scorer is None:
        rejects = REJECT_SCHEMA.empty_table()
    else:
        value = scores[SCORER_COLUMN[scorer]]
        drop = pa.array(out)
        rejects = pa.table({"id": docs.column("id").filter(drop), "url": docs.column("url").filter(drop),
                            "source_name": docs.column("source_name").filter(drop),
                            "rule": pa.array([scorer] * int(out.sum()), pa.string()),
                            "value": pa.array(value[out], pa.float64()),
                            "threshold": pa.array(limit[out], pa.float64())}, schema=REJECT_SCHEMA)
    return scored.filter(mask), rejects, all_scores
