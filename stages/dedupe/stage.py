"""The dedupe stage's run(): a thin fan-out of the phases in stages/dedupe/tasks.py and cctasks.py, then the
per-shard writer of kept documents and the duplicates table, the stats and the MLflow artifact.

Run it through the pipeline (`zhgpt run CONFIG`) or in tests with pipelines.testing.helpers.run_stage("dedupe", ...).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.dataset import write_parquet
from pipelines.io import read_docs, read_table
from pipelines.stage import StageContext, StageResult
from pipelines.stats import Stats
from stages.dedupe import cctasks, tasks
from stages.dedupe.arrow import col, nd, strings
from stages.dedupe.components import combine_digests
from stages.dedupe.report import write_clusters_html
from stages.dedupe.sources import against_sources, check_source, gid_row, gid_source, has_source_id, input_sources
from stages.dedupe.tables import DUP_SCHEMA, DUP_SOURCE_IDS

SIG_CACHE = ".against-sigs"  # beside the stage's output dirs: sig files of against sources, by content and settings
RESTART = ["cand", "edges", "edges_in", "cc", "nodes", "resolve", "members"]  # cheap phases, redone on resume


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    parts = band_partitions(cfg, ctx.upstream["clean"].manifest.outputs["docs"].rows)
    root = ctx.partial_dir / f"p{parts}"
    for d in RESTART:
        shutil.rmtree(root / d, ignore_errors=True)
    inputs = input_sources(ctx.upstream["clean"])
    sources = inputs + against_sources(cfg.against, cfg.against_text_column)
    for src in sources[len(inputs):]:
        check_source(src)
    n_in = len(inputs)
    banding = cfg.banding()
    clock = _Clock()
    cache = str(ctx.out_dir.parent / SIG_CACHE)
    signed = ctx.map(tasks.sign, [(i, s, cfg, str(root), banding, parts, cache if s.against else None)
                                  for i, s in enumerate(sources)], rows_of=lambda st: st["docs"])
    clock.lap("sign")
    candidates = sum(ctx.map(tasks.bucket, [(p, str(root), cfg.max_bucket_pairs, n_in) for p in range(parts)]))
    clock.lap("bucket")
    cc_parts = cc_partitions(candidates, ctx.workers, parts)
    verified = ctx.map(tasks.verify, [(s, str(root), cfg, n_in, cc_parts) for s in range(n_in)])
    clock.lap("verify")
    rounds, kept = 0, []
    if sum(v["verified"] for v in verified):
        rounds = _components(ctx, str(root), cc_parts)
        ctx.map(cctasks.resolve, [(q, rounds, str(root), cc_parts) for q in range(cc_parts)])
        kept = ctx.map(cctasks.keep, [(q, str(root), cfg.sample_clusters) for q in range(cc_parts)])
    clock.lap("components")
    sample = sorted((c for k in kept for c in k["sample"]), key=lambda c: (-c[0], c[1]))[:cfg.sample_clusters]
    report = [("report", ctx.out_dir, "clusters.html", sample, root, sources)] if sample else []
    sids = any(has_source_id(s.path) for s in inputs)  # then every duplicates shard names the source ids
    written = ctx.map(_finish, report + [("write", s, inputs[s].path, str(root), str(ctx.out_dir), cfg, sids)
                                         for s in range(n_in)])
    artifacts, written = written[:len(report)], written[len(report):]
    clock.lap("write")
    counts = Stats.total((w["counts"] for w in written), **_removals())
    stats = {**_stats(signed[:n_in], verified, kept, counts, rounds, banding), **clock.laps}
    ctx.log(", ".join(f"{k} {v:.1f}s" for k, v in clock.laps.items()))
    against = Stats.total({sources[s].name: c} for s, c in sorted(counts["against_by_source"].items()))
    extra = {"banding": list(banding), "against_removed": against,
             "against_sigs_cached": sum(st.get("cached", False) for st in signed[n_in:])}
    said = (f"kept {stats['docs_kept']:,.0f} of {stats['docs_in']:,.0f} (removed: {stats['exact_dups']:,.0f} exact "
            f"and {stats['near_dups']:,.0f} near duplicates" + (f", {stats['against_dups']:,.0f} already in "
                                                                 "`against`" if stats["against_dups"] else "") + ")")
    return StageResult(summary=said,
                       outputs={"docs": [w["docs"] for w in written], "duplicates": [w["dups"] for w in written]},
                       stats=stats, extra=extra, artifacts=artifacts)


KEYS_PER_PARTITION = 1 << 22  # bucket keys (band and exact keys) a bucket task sorts: 64 MB, ~0.3 GB while sorted


def band_partitions(cfg, docs: int) -> int:
    """Band-hash partitions: dedupe.partitions, or more when a bucket task would otherwise sort more than
    KEYS_PER_PARTITION keys; a fixed count made each task's memory grow with the corpus (19 keys per document
    with the default banding: 24M keys per task at 10^7 documents and 8 partitions). Execution only: the
    components and the kept documents do not depend on it."""
    bands = cfg.banding()[0] if cfg.threshold is not None else 0
    return max(cfg.partitions, -(-docs * (bands + int(cfg.exact)) // KEYS_PER_PARTITION))


CC_PAIRS_PER_TASK = 1_000_000  # candidate pairs per connected-components task: bounds its memory (~100 MB)


def cc_partitions(candidates: int, workers: int, partitions: int) -> int:
    """Tasks per connected-components map (and per resolve/keep map): one per worker, more when the candidate
    pairs (an upper bound on the verified edges) would not fit CC_PAIRS_PER_TASK each, never above `partitions`.
    The components and the keep rule do not depend on it, so neither do the outputs. Fewer, larger tasks matter
    here: the ~8 maps of these rounds are tiny at 10^5 documents, and their per-task cost does not shrink with
    more workers."""
    return max(1, min(partitions, max(workers, -(-candidates // CC_PAIRS_PER_TASK))))


class _Clock:
    """Wall seconds per phase, reported as stats (seconds_sign, ...) so MLflow shows where the time went."""

    def __init__(self):
        self.t, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"seconds_{name}"] = round(now - self.t, 3)
        self.t = now


def _components(ctx: StageContext, root: str, parts: int) -> int:
    """Alternate large-star and small-star rounds until the edge set stops changing; the final round index."""
    last = None
    for r in range(ctx.cfg.max_cc_rounds):
        digest = combine_digests(ctx.map(cctasks.large_round, [(r, q, root, parts) for q in range(parts)]))
        if digest == last:
            return r
        last = digest
        ctx.map(cctasks.small_round, [(r, q, root, parts) for q in range(parts)])
    raise RuntimeError(f"dedupe: connected components did not converge in {ctx.cfg.max_cc_rounds} rounds; "
                       f"raise dedupe.max_cc_rounds")


def _stats(signed, verified, kept, counts: Stats, rounds, banding) -> dict:
    """The manifest's figures: task counts summed, plus the largest cluster (a max) and two ratios."""
    sig, ver = Stats.total(signed, docs=0, short_docs=0), Stats.total(verified, candidates=0, verified=0)
    docs_in, removed = sig["docs"], counts["removed"]
    return {"docs_in": docs_in, "docs_kept": docs_in - removed, "short_docs": sig["short_docs"],
            "exact_dups": counts["exact"], "near_dups": counts["near"], "against_dups": counts["against"],
            "clusters": sum(k["clusters"] for k in kept),
            "largest_cluster": max([k["largest"] for k in kept], default=0),
            "kept_fraction": round((docs_in - removed) / docs_in, 6) if docs_in else 1.0,
            "chain_drift": round(counts["drift"] / removed, 6) if removed else 0.0,
            "candidate_pairs": ver["candidates"], "verified_pairs": ver["verified"], "cc_rounds": rounds,
            "bands": banding[0], "rows": banding[1]}


def _best_edges(root: Path, s: int, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each removed gid of source s: the other end and Jaccard of its strongest verified edge
    (ties: the smaller other gid)."""
    lo, hi, j = tasks.read_all([root / "edges" / f"s-{s:05d}.arrow"], ["lo", "hi", "j"], np.float64)
    lo2, hi2, j2 = tasks.read_all(list(root.glob(f"edges_in/s-{s:05d}/*.arrow")), ["lo", "hi", "j"], np.float64)
    node = np.r_[lo, hi2].astype(np.int64)
    other = np.r_[hi, lo2].astype(np.int64)
    jac = np.r_[j, j2]
    order = np.lexsort((other, -jac, node))
    node, other, jac = node[order], other[order], jac[order]
    first = np.r_[True, node[1:] != node[:-1]] if len(node) else np.zeros(0, bool)
    node, other, jac = node[first], other[first], jac[first]
    pos = np.searchsorted(node, removed)
    return other[pos], jac[pos]


def _finish(job: str, *args):
    """The last phase's tasks: the clusters page (first, as the longest) beside one writer per input shard."""
    return write_clusters_html(*args) if job == "report" else write_shard(*args)


def write_shard(s: int, path: str, root: str, out_dir: str, cfg, sids: bool = False) -> dict:
    """Kept documents of input shard s (all columns) and its duplicates table, in row order (with `sids`, the
    removed and the kept document's source_id too)."""
    schema = pa.schema(list(DUP_SCHEMA) + (DUP_SOURCE_IDS if sids else []))
    root_p = Path(root)
    shard = read_docs(path)
    mem = [read_table(p) for p in sorted(root_p.glob(f"members/from-*/s-{s:05d}.arrow"))]
    mem = pa.concat_tables(mem).sort_by("gid") if mem else None
    removed = nd(mem.column("gid")) if mem is not None else np.zeros(0, np.int64)
    keep_mask = np.ones(shard.num_rows, bool)
    keep_mask[gid_row(removed)] = False
    docs = write_parquet(shard.filter(col(keep_mask)), out_dir, f"docs/part-{s:05d}.parquet")
    sig = tasks.SigFiles(root_p)
    counts = Stats(_removals(), removed=len(removed))
    if mem is None:
        dups = write_parquet(schema.empty_table(), out_dir, f"duplicates/part-{s:05d}.parquet")
        return {"docs": docs, "dups": dups, "counts": counts}
    kept_gid = nd(mem.column("kept_gid"))
    to_kept, same, _ = tasks.similarity(sig, removed, kept_gid, cfg.verify)
    to_kept = np.where(same, 1.0, to_kept)
    against = nd(mem.column("kept_against"))
    kind = np.where(against, "against", np.where(same, "exact", "near"))
    other, edge_j = _best_edges(root_p, s, removed)
    rows = col(gid_row(removed))
    dup = pa.table({"id": sig[s].column("id").take(rows), "url": sig[s].column("url").take(rows),
                    "cluster_id": mem.column("kept_id"), "kept_id": mem.column("kept_id"),
                    "edge_from": _ids_of(sig, other), "edge_jaccard": col(edge_j), "jaccard_to_kept": col(to_kept),
                    "kind": strings(kind.tolist())}, schema=DUP_SCHEMA)
    if sids:
        dup = dup.append_column(DUP_SOURCE_IDS[0], sig[s].column("source_id").take(rows))
        dup = dup.append_column(DUP_SOURCE_IDS[1], _ids_of(sig, kept_gid, "source_id"))
    counts.update(exact=int((kind == "exact").sum()), near=int((kind == "near").sum()),
                  against=int(against.sum()),
                  drift=int((to_kept < (cfg.threshold if cfg.threshold is not None else 1.0)).sum()))
    src_k = gid_source(kept_gid[against])
    counts["against_by_source"] = {int(k): int((src_k == k).sum()) for k in np.unique(src_k)}
    return {"docs": docs, "dups": write_parquet(dup, out_dir, f"duplicates/part-{s:05d}.parquet"), "counts": counts}


def _removals() -> dict:
    """A write task's counts before it counts anything: documents removed, by kind, drifted, per against source."""
    return {"removed": 0, "exact": 0, "near": 0, "against": 0, "drift": 0, "against_by_source": {}}


def _ids_of(sig: tasks.SigFiles, gids: np.ndarray, column: str = "id") -> pa.Array:
    out = np.empty(len(gids), object)
    src = gid_source(gids)
    for s in np.unique(src):
        sel = np.flatnonzero(src == s)
        out[sel] = sig[int(s)].column(column).take(col(gid_row(gids[sel]))).to_pylist()
    return strings(out.tolist())
