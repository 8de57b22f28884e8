"""Choosing the LSH banding (pure arithmetic, cheap to import: the config validator uses it).

A pair of documents with Jaccard J shares at least one of b bands of r rows with probability 1-(1-J^r)^b.
With 128 permutations, (b, r) = (18, 7) gives 0.986 at J = 0.8 (datasketch's own choice for 0.8, (9, 13),
gives 0.40): candidates are cheap to verify exactly, missed pairs are lost for good.

Run: `.venv/bin/python -m stages.dedupe.banding 0.8 128` prints the banding chosen for a threshold.
"""
from __future__ import annotations

import sys


def candidate_probability(j: float, bands: int, rows: int) -> float:
    """Probability that a pair with Jaccard j shares at least one band."""
    return 1.0 - (1.0 - j ** rows) ** bands


def choose_banding(threshold: float, num_perm: int, min_prob: float) -> tuple[int, int]:
    """The most selective (bands, rows) using at most num_perm rows whose candidate probability at the
    threshold is at least min_prob: the largest r with b = num_perm // r that still reaches it."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= min_prob:
            best = (bands, rows)
    return best


if __name__ == "__main__":
    t, perms = float(sys.argv[1]) if len(sys.argv) > 1 else 0.8, int(sys.argv[2]) if len(sys.argv) > 2 else 128
    b, r = choose_banding(t, perms, 0.98)
    print(f"threshold {t}, {perms} permutations: {b} bands x {r} rows")
    for j in (0.3, 0.5, 0.7, t, 0.9):
        print(f"  P(candidate | J={j:.2f}) = {candidate_probability(j, b, r):.3f}")
