"""The Ray tasks of the dedupe stage, one function per phase; they talk through Arrow IPC files under
`<stage>/.partial/p<partitions>/` so that no task holds more than its shard or its partition.

    sign    per source      sig/s-*.arrow (id, url, length, exact key, shingle-hash set, signature); an against
                            source's sig file is kept in <stage>/../.against-sigs/ and reused while its content
                            and the signing settings stay the same
                            bands/s-*/p-*.arrow (bucket key, gid), one file per band-hash partition
    bucket  per partition   cand/p-*/s-*.arrow candidate pairs (lo < hi), at the source of lo
    verify  per source      edges (exact Jaccard >= threshold), cc/r000 input, node attributes
    cc      per CC part     large-star / small-star rounds (stages/dedupe/components.py); CC parts: one per
                            worker, more when the candidate pairs are many (stage.cc_partitions)
    resolve, keep           per CC part: join labels with node attributes; the keep rule picks one document
                            per component
    write   per input shard kept documents + the duplicates table (stages/dedupe/stage.py)

Run: through the stage (`zhgpt run CONFIG`); tested by
`.venv/bin/python -m pytest -q tests/stages/test_dedupe_stage.py`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.dataset import sha256_file
from pipelines.io import atomic_path, read_json, read_table, write_ipc, write_json
from stages.dedupe import components as cc
from stages.dedupe.arrow import col, nd, strings, table
from stages.dedupe.sources import ROW_BITS, Source, gid_row, gid_source, read_source

# The phases' files are Arrow IPC, read with pipelines.io.read_table: memory-mapped, so pages of shingle sets that
# a task does not touch are never read into memory.


def read_all(paths: list[Path], names: list[str], dtype=np.int64) -> list[np.ndarray]:
    tables = [read_table(p) for p in sorted(paths)]
    return [np.concatenate([nd(t.column(n)) for t in tables]).astype(dtype, copy=False) if tables
            else np.zeros(0, dtype) for n in names]


def _pairs_table(lo, hi) -> pa.Table:
    return table(lo=lo.astype(np.int64, copy=False), hi=hi.astype(np.int64, copy=False))


def sign(idx: int, src: Source, cfg, root: str, banding: tuple[int, int], partitions: int,
         cache: str | None = None) -> dict:
    """Canonicalise, hash and sign one source; emit its bucket records partitioned by band hash. With `cache` (for
    against sources), the sig file is taken from there when a run already signed the same content with the same
    settings, and left there otherwise."""
    from stages.dedupe.lsh import band_keys, key_of_bytes

    root_p = Path(root)
    done = root_p / "sig" / f"s-{idx:05d}.json"
    if done.exists():  # resumed after a kill: this source is already signed
        return read_json(done)
    path = root_p / "sig" / f"s-{idx:05d}.arrow"
    cached = Path(cache) / f"{sig_cache_key(src, cfg)}.arrow" if cache else None
    reused = cached is not None and cached.exists()
    if reused:
        _link(cached, path)
    else:
        write_ipc(_signed(src, cfg), path)
        if cached is not None:
            _link(path, cached)
    sig = SigFiles(root_p)
    sigs, (_, starts), exact = sig.sigs(idx), sig.sets(idx), sig.exact(idx)
    gids = (np.int64(idx) << ROW_BITS) + np.arange(len(sigs), dtype=np.int64)
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
    stats = {"docs": len(sigs), "short_docs": int((~has).sum()), "chars": int(nd(sig.column(idx, "length")).sum()),
             "cached": reused}
    write_json(done, stats)
    return stats


def _signed(src: Source, cfg) -> pa.Table:
    """The sig table of a source: id, url, source_id, length, exact key, sorted shingle-hash set, signature."""
    from stages.dedupe.canonical import canonical_batch, exact_key
    from stages.dedupe.minhash import sign_batch

    t = read_source(src)
    norm = canonical_batch(t.column("text").to_pylist())
    exact = b"".join(exact_key(x) for x in norm.to_pylist())
    sigs, hashes, starts = sign_batch(norm, cfg.ngram, cfg.num_perm, cfg.seed, cfg.hashfunc)
    lengths = pa.compute.utf8_length(t.column("text")).cast(pa.int64())  # read_source left no nulls
    return pa.table({"id": t.column("id"), "url": t.column("url"), "source_id": t.column("source_id"),
                     "length": lengths,
                     "exact": pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(norm),
                                                                   [None, pa.py_buffer(exact)]),
                     "shingles": pa.LargeListArray.from_arrays(col(starts), col(hashes)),
                     "sig": pa.FixedSizeListArray.from_arrays(col(sigs.ravel()), cfg.num_perm)})


def sig_cache_key(src: Source, cfg) -> str:
    """What a source's sig file depends on: its content, its file name (eval corpora's ids come from file and
    line), text column, the shingle and permutation settings, and the code that reads, canonicalises and signs."""
    from stages.dedupe import canonical, minhash, sources

    h = hashlib.sha256(sha256_file(src.path).encode())
    h.update(json.dumps([Path(src.path).name, src.text_column, cfg.ngram, cfg.num_perm, cfg.seed,
                         cfg.hashfunc]).encode())
    for code in (minhash.__file__, canonical.__file__, sources.__file__, __file__):
        h.update(Path(code).read_bytes())
    return h.hexdigest()[:40]


def _link(src: Path, dst: Path) -> None:
    """dst gets src's content, atomically: a hard link (files are only ever replaced, never written in place),
    or a copy across file systems."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


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
            self.cache[s] = read_table(self.root / "sig" / f"s-{s:05d}.arrow")
        return self.cache[s]

    def column(self, s: int, name: str) -> pa.Array:
        """One column as one array: a zero-copy view of the mapped file (combine_chunks would copy it)."""
        col = self[s].column(name)
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()

    def sets(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        col = self.column(s, "shingles")
        return nd(col.values), nd(col.offsets)

    def exact(self, s: int) -> np.ndarray:
        col = self.column(s, "exact")
        if len(col) == 0:
            return np.zeros((0, 16), np.uint8)
        return np.frombuffer(col.buffers()[1], np.uint8)[col.offset * 16:(col.offset + len(col)) * 16].reshape(-1, 16)

    def sigs(self, s: int) -> np.ndarray:
        col = self.column(s, "sig")
        return nd(col.values).reshape(len(col), col.type.list_size)


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
