"""The Ray tasks of the dedupe stage, one function per phase; they talk through Arrow IPC files under
`<stage>/.partial/p<partitions>/` so that no task holds more than its shard or its partition.

    sign    per source      sig/s-*.arrow (id, url, length, exact key, shingle-hash set, signature)
                            bands/s-*/p-*.arrow (bucket key, gid), one file per band-hash partition
    bucket  per partition   cand/p-*/s-*.arrow candidate pairs (lo < hi), at the source of lo
    verify  per source      edges (exact Jaccard >= threshold), cc/r000 input, node attributes
    cc      per partition   large-star / small-star rounds (stages/dedupe/components.py)
    resolve, keep           join labels with node attributes; the keep rule picks one document per component
    write   per input shard kept documents + the duplicates table (stages/dedupe/stage.py)

Run: through the stage (`zhgpt run CONFIG`); tested by `.venv/bin/python -m pytest -q tests/stages/test_dedupe_stage.py`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from stages.dedupe import components as cc
from stages.dedupe.arrow import col, nd, strings, table
from stages.dedupe.sources import ROW_BITS, Source, gid_row, gid_source, read_source


def write_ipc(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    os.replace(tmp, path)


def read_ipc(path: Path) -> pa.Table:
    """Memory-mapped: pages of shingle sets that a task does not touch are never read into memory."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def read_all(paths: list[Path], names: list[str], dtype=np.int64) -> list[np.ndarray]:
    tables = [read_ipc(p) for p in sorted(paths)]
    return [np.concatenate([nd(t.column(n)) for t in tables]).astype(dtype, copy=False) if tables
            else np.zeros(0, dtype) for n in names]


def _pairs_table(lo, hi) -> pa.Table:
    return table(lo=lo.astype(np.int64, copy=False), hi=hi.astype(np.int64, copy=False))


def sign(idx: int, src: Source, cfg, root: str, banding: tuple[int, int], partitions: int) -> dict:
    """Normalise, hash and sign one source; emit its bucket records partitioned by band hash."""
    from stages.dedupe.lsh import band_keys, key_of_bytes
    from stages.dedupe.minhash import sign_batch
    from stages.dedupe.normalise import exact_key, normalise_batch

    root_p = Path(root)
    done = root_p / "sig" / f"s-{idx:05d}.json"
    if done.exists():  # resumed after a kill: this source is already signed
        return json.loads(done.read_text())
    t = read_source(src)
    norm = normalise_batch(t.column("text").to_pylist())
    exact = np.frombuffer(b"".join(exact_key(x) for x in norm.to_pylist()), np.uint8).reshape(-1, 16)
    sigs, hashes, starts = sign_batch(norm, cfg.ngram, cfg.num_perm, cfg.seed, cfg.hashfunc)
    lengths = pa.compute.utf8_length(t.column("text")).cast(pa.int64())  # read_source left no nulls
    sig_t = pa.table({"id": t.column("id"), "url": t.column("url"), "length": lengths,
                      "exact": pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(norm),
                                                                    [None, pa.py_buffer(exact.tobytes())]),
                      "shingles": pa.LargeListArray.from_arrays(col(starts), col(hashes)),
                      "sig": pa.FixedSizeListArray.from_arrays(col(sigs.ravel()), cfg.num_perm)})
    write_ipc(sig_t, root_p / "sig" / f"s-{idx:05d}.arrow")
    gids = (np.int64(idx) << ROW_BITS) + np.arange(len(norm), dtype=np.int64)
    keys, owners = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
    if cfg.exact:
        keys.append(np.array([key_of_bytes(e) for e in exact], np.uint64))
        owners.append(gids)
    has = np.diff(starts) > 0  # documents under n characters have no shingles: exact dedupe only
    if cfg.threshold is not None and has.any():
        bk = band_keys(sigs[has], *banding)
        keys.append(bk.ravel())
        owners.append(np.repeat(gids[has], bk.shape[1]))
    keys, owners = np.concatenate(keys), np.concatenate(owners)
    part = ((keys >> np.uint64(40)) % np.uint64(partitions)).astype(np.int64)
    for p in range(partitions):
        sel = part == p
        write_ipc(table(key=keys[sel], gid=owners[sel]), root_p / "bands" / f"s-{idx:05d}" / f"p-{p:04d}.arrow")
    stats = {"docs": len(norm), "short_docs": int((~has).sum()), "chars": int(pa.compute.sum(lengths).as_py() or 0)}
    done.write_text(json.dumps(stats))
    return stats


def bucket(p: int, root: str, cap: int, n_inputs: int) -> int:
    """Candidate pairs of one band-hash partition, routed to the source of their smaller document."""
    from stages.dedupe.lsh import bucket_pairs

    root_p = Path(root)
    keys, gids = read_all(list(root_p.glob(f"bands/s-*/p-{p:04d}.arrow")), ["key", "gid"], np.uint64)
    lo, hi = bucket_pairs(keys, gids.view(np.int64), cap)
    keep = gid_source(lo) < n_inputs  # lo < hi: a pair of two against documents never matters
    lo, hi = lo[keep], hi[keep]
    src = gid_source(lo)
    for s in np.unique(src):
        sel = src == s
        write_ipc(_pairs_table(lo[sel], hi[sel]), root_p / "cand" / f"p-{p:04d}" / f"s-{s:05d}.arrow")
    return len(lo)


class SigFiles:
    """Lazily memory-mapped sig files of every source, by source index."""

    def __init__(self, root: Path):
        self.root, self.cache = root, {}

    def __getitem__(self, s: int) -> pa.Table:
        if s not in self.cache:
            self.cache[s] = read_ipc(self.root / "sig" / f"s-{s:05d}.arrow")
        return self.cache[s]

    def sets(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        col = self[s].column("shingles").combine_chunks()
        return nd(col.values), nd(col.offsets)

    def exact(self, s: int) -> np.ndarray:
        col = self[s].column("exact").combine_chunks()
        return np.frombuffer(col.buffers()[1], np.uint8)[col.offset * 16:(col.offset + len(col)) * 16].reshape(-1, 16)

    def sigs(self, s: int) -> np.ndarray:
        col = self[s].column("sig").combine_chunks()
        return nd(col.values).reshape(len(col), -1)


def similarity(sig: SigFiles, lo: np.ndarray, hi: np.ndarray, verify: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Jaccard, exact-equal, both-empty) for pairs of gids, one source pair at a time."""
    from stages.dedupe.lsh import jaccard_pairs, signature_jaccard

    jac, same, empty = np.zeros(len(lo)), np.zeros(len(lo), bool), np.zeros(len(lo), bool)
    sl, sh = gid_source(lo), gid_source(hi)
    for a, b in sorted(set(zip(sl.tolist(), sh.tolist()))):
        idx = np.flatnonzero((sl == a) & (sh == b))
        ra, rb = gid_row(lo[idx]), gid_row(hi[idx])
        fa, oa = sig.sets(a)
        fb, ob = sig.sets(b)
        empty[idx] = ((oa[ra + 1] - oa[ra]) == 0) | ((ob[rb + 1] - ob[rb]) == 0)
        same[idx] = (sig.exact(a)[ra] == sig.exact(b)[rb]).all(axis=1)
        if verify == "exact":
            jac[idx] = jaccard_pairs(fa, oa, ra, fb, ob, rb)
        else:
            jac[idx] = signature_jaccard(sig.sigs(a), ra, sig.sigs(b), rb)
    return jac, same, empty


def verify(s: int, root: str, cfg, n_inputs: int, partitions: int) -> dict:
    """Keep the candidate pairs of source s that reach the threshold (or are exact duplicates)."""
    root_p = Path(root)
    lo, hi = read_all(list(root_p.glob(f"cand/p-*/s-{s:05d}.arrow")), ["lo", "hi"])
    if len(lo):
        from stages.dedupe.lsh import unique_pairs

        lo, hi = unique_pairs(lo, hi)
    sig = SigFiles(root_p)
    jac, same, empty = similarity(sig, lo, hi, cfg.verify)
    ok = (same & cfg.exact) | (~empty & (jac >= (cfg.threshold if cfg.threshold is not None else 2.0)))
    jac = np.where(same, 1.0, jac)
    lo, hi, jac = lo[ok], hi[ok], jac[ok]
    write_ipc(table(lo=lo, hi=hi, j=jac), root_p / "edges" / f"s-{s:05d}.arrow")
    other = gid_source(hi)
    for t in np.unique(other):  # a copy at the source of hi, so its writer finds every edge of its documents
        sel = other == t
        write_ipc(table(lo=lo[sel], hi=hi[sel], j=jac[sel]),
                  root_p / "edges_in" / f"s-{t:05d}" / f"from-{s:05d}.arrow")
    for q, (u, v) in enumerate(cc.route_large(lo, hi, partitions)):
        write_ipc(table(u=u, v=v), root_p / "cc" / "r000" / f"from-{s:05d}" / f"p-{q:04d}.arrow")
    _write_nodes(sig, np.unique(np.r_[lo, hi]), root_p / "nodes" / f"v-{s:05d}", partitions, n_inputs)
    return {"candidates": len(ok), "verified": int(ok.sum()), "exact_pairs": int(same[ok].sum())}


def _write_nodes(sig: SigFiles, nodes: np.ndarray, out: Path, partitions: int, n_inputs: int) -> None:
    """Node attributes for the keep rule (length, id, against), at each node's component partition."""
    src = gid_source(nodes)
    length = np.zeros(len(nodes), np.int64)
    ids = np.empty(len(nodes), object)
    for s in np.unique(src):
        sel = np.flatnonzero(src == s)
        rows = col(gid_row(nodes[sel]))
        length[sel] = nd(sig[int(s)].column("length").take(rows))
        ids[sel] = sig[int(s)].column("id").take(rows).to_pylist()
    part = cc.partition_of(nodes, partitions)
    for q in range(partitions):
        sel = part == q
        write_ipc(table(gid=nodes[sel], length=length[sel], id=strings(ids[sel].tolist()),
                        against=src[sel] >= n_inputs), out / f"p-{q:04d}.arrow")
