"""LSH over MinHash signatures: band keys, bucket -> candidate pairs, and verification of pairs.

(How many bands of how many rows: stages/dedupe/banding.py.)

Run: tested by `.venv/bin/python -m pytest -q tests/stages/test_dedupe_units.py tests/stages/test_dedupe_accuracy.py`.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from stages.dedupe.minhash import jaccard_sorted


@nb.njit(cache=True)
def _mix64(h):
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@nb.njit(cache=True)
def band_keys(sigs, bands, rows):
    """uint64[docs, bands]: a 64-bit hash of (band index, its r signature values) per document."""
    d = sigs.shape[0]
    out = np.empty((d, bands), np.uint64)
    for i in range(d):
        for j in range(bands):
            h = _mix64(np.uint64(j + 1) * np.uint64(0x9E3779B97F4A7C15))
            for k in range(j * rows, (j + 1) * rows):
                h = _mix64(h ^ np.uint64(sigs[i, k]))
            out[i, j] = h
    return out


@nb.njit(cache=True)
def key_of_bytes(digest16):
    """A 64-bit bucket key from a 16-byte exact-text hash (an extra 'band' that catches texts under n chars)."""
    h = np.uint64(0xE7AC7)
    for k in range(16):
        h = _mix64(h ^ (np.uint64(digest16[k]) << np.uint64(8 * (k % 8))))
    return h


@nb.njit(cache=True)
def _bucket_pairs_sorted(keys, gids, cap):
    """Candidate pairs (lo, hi) from runs of equal keys in key-sorted arrays.

    A bucket of k <= cap documents yields all k(k-1)/2 pairs; a larger one (a template, a mass exact duplicate)
    yields a star on its smallest member plus each member's neighbour, 2k pairs, so one bucket of 10^5 copies
    costs 2*10^5 pairs, not 5*10^9.
    """
    n = len(keys)
    cnt = 0
    i = 0
    while i < n:
        j = i
        while j < n and keys[j] == keys[i]:
            j += 1
        k = j - i
        cnt += k * (k - 1) // 2 if k <= cap else 2 * (k - 1)
        i = j
    lo = np.empty(cnt, np.int64)
    hi = np.empty(cnt, np.int64)
    c = 0
    i = 0
    while i < n:
        j = i
        while j < n and keys[j] == keys[i]:
            j += 1
        if j - i <= cap:
            for x in range(i, j):
                for y in range(x + 1, j):
                    lo[c], hi[c] = gids[x], gids[y]
                    c += 1
        else:
            for x in range(i + 1, j):
                lo[c], hi[c] = gids[i], gids[x]
                c += 1
                if x > i + 1:
                    lo[c], hi[c] = gids[x - 1], gids[x]
                    c += 1
        i = j
    return lo[:c], hi[:c]


def unique_pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated (lo < hi) pairs, sorted by (lo, hi)."""
    a, b = np.minimum(lo, hi), np.maximum(lo, hi)
    keep = a != b
    pairs = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def bucket_pairs(keys: np.ndarray, gids: np.ndarray, cap: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """All candidate pairs from (bucket key, document) records, deduplicated and sorted."""
    order = np.lexsort((gids, keys))  # members in gid order inside each bucket: deterministic pairs
    lo, hi = _bucket_pairs_sorted(keys[order], gids[order], cap)
    return unique_pairs(lo, hi)


@nb.njit(cache=True)
def jaccard_pairs(flat_a, off_a, rows_a, flat_b, off_b, rows_b):
    """Exact Jaccard of shingle-hash sets for pairs (row rows_a[k] of set list A, row rows_b[k] of list B)."""
    out = np.empty(len(rows_a), np.float64)
    for k in range(len(rows_a)):
        i, j = rows_a[k], rows_b[k]
        out[k] = jaccard_sorted(flat_a[off_a[i]:off_a[i + 1]], flat_b[off_b[j]:off_b[j + 1]])
    return out


@nb.njit(cache=True)
def signature_jaccard(sig_a, rows_a, sig_b, rows_b):
    """Estimated Jaccard (share of equal signature values) for pairs of rows."""
    out = np.empty(len(rows_a), np.float64)
    p = sig_a.shape[1]
    for k in range(len(rows_a)):
        eq = 0
        for x in range(p):
            eq += sig_a[rows_a[k], x] == sig_b[rows_b[k], x]
        out[k] = eq / p
    return out

