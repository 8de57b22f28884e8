"""Connected components over an edge list split into partitions: large-star / small-star rounds (Kiveris et al.,
"Connected Components in MapReduce and Beyond", 2014), each round a group-by on one partition of edges.

No step holds the whole graph: a reducer sees the edges whose grouping node hashes to its partition. The
alternation converges to stars around each component's smallest node in O(log^2 n) rounds (chains of 10^4
nodes take ~15 rounds); the edge set stops changing, which a per-partition set digest detects.

    labels = connected_components(lo, hi, partitions=4)   # {node: smallest node of its component}

The stage runs the same reducers as Ray tasks over files (stages/dedupe/stage.py); this in-memory driver is the
reference its tests compare with.
"""
from __future__ import annotations

import numpy as np

_MUL1, _MUL2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over int64 node ids (a fixed hash, the same in every process)."""
    z = np.asarray(x, dtype=np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def partition_of(nodes: np.ndarray, partitions: int) -> np.ndarray:
    return (mix(nodes) % np.uint64(partitions)).astype(np.int64)


def _groups(u: np.ndarray, v: np.ndarray):
    """Unique directed edges sorted by (u, v), with the start of each u-group and each group's min neighbour."""
    if len(u) == 0:
        e = np.zeros(0, np.int64)
        return e, e, e, e
    pairs = np.unique(np.stack([u, v], axis=1), axis=0)
    u, v = pairs[:, 0].copy(), pairs[:, 1].copy()
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    gmin = np.minimum.reduceat(v, starts)
    return u, v, starts, gmin


def set_digest(u: np.ndarray, v: np.ndarray) -> tuple[int, int]:
    """(count, xor of hashes) of a set of unique directed edges: xor-able across partitions."""
    if len(u) == 0:
        return 0, 0
    h = mix(mix(u).view(np.int64) ^ v)
    return len(u), int(np.bitwise_xor.reduce(h))


def combine_digests(digests: list[tuple[int, int]]) -> tuple[int, int]:
    count, x = 0, 0
    for c, h in digests:
        count, x = count + c, x ^ h
    return count, x


def large_star(u: np.ndarray, v: np.ndarray):
    """Reducer over edges (u, v) given in both directions, grouped by u: link every larger neighbour of u to
    m = min(N(u) + u). Returns (new edges lo, hi), labels (node, m) and the digest of the input edge set."""
    u, v, starts, gmin = _groups(u, v)
    digest = set_digest(u, v)
    if len(u) == 0:
        return (u, v), (u, u), digest
    sizes = np.diff(np.r_[starts, len(u)])
    m_node = np.minimum(u[starts], gmin)
    m = np.repeat(m_node, sizes)
    sel = v > u
    return (v[sel], m[sel]), (u[starts], m_node), digest


def small_star(u: np.ndarray, v: np.ndarray):
    """Reducer over edges (u, v) with v < u, grouped by the larger node u: link u and each of its smaller
    neighbours to m = min(N(u) + u), dropping the self-loop (m, m)."""
    u, v, starts, gmin = _groups(u, v)
    if len(u) == 0:
        return u, v
    m_node = np.minimum(u[starts], gmin)
    m = np.repeat(m_node, np.diff(np.r_[starts, len(u)]))
    a = np.r_[v, u[starts]]
    b = np.r_[m, m_node]
    keep = a != b
    return a[keep], b[keep]


def route_large(lo: np.ndarray, hi: np.ndarray, partitions: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Edges as the large-star reducers want them: both directions, each at its grouping node's partition."""
    u, v = np.r_[lo, hi], np.r_[hi, lo]
    part = partition_of(u, partitions)
    return [(u[part == p], v[part == p]) for p in range(partitions)]


def route_small(lo: np.ndarray, hi: np.ndarray, partitions: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Edges as the small-star reducers want them: (larger, smaller), at the larger node's partition."""
    u, v = np.maximum(lo, hi), np.minimum(lo, hi)
    keep = u != v
    u, v = u[keep], v[keep]
    part = partition_of(u, partitions)
    return [(u[part == p], v[part == p]) for p in range(partitions)]


def connected_components(lo, hi, partitions: int = 4, max_rounds: int = 100) -> dict[int, int]:
    """Reference driver: {node: smallest node in its component} for every node on an edge."""
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    parts = route_large(lo, hi, partitions)
    last = None
    for _ in range(max_rounds):
        outs = [large_star(u, v) for u, v in parts]
        digest = combine_digests([o[2] for o in outs])
        if digest == last:
            return {int(n): int(m) for o in outs for n, m in zip(*o[1])}
        last = digest
        small_in = [route_small(*o[0], partitions) for o in outs]
        smalls = [small_star(np.concatenate([s[p][0] for s in small_in]), np.concatenate([s[p][1] for s in small_in]))
                  for p in range(partitions)]
        large_in = [route_large(a, b, partitions) for a, b in smalls]
        parts = [(np.concatenate([x[p][0] for x in large_in]), np.concatenate([x[p][1] for x in large_in]))
                 for p in range(partitions)]
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
