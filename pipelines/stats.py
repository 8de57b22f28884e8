"""One mergeable stats type: named counts that add up across tasks, in any order.

Every stage's tasks return their counts; the stage sums them with `Stats.total` and reports `flat()` as the
manifest's stats (MLflow metrics). Nested dicts merge key by key, so per-source or per-rule counts need no code.

    parts = [Stats(docs=3, rejected={"min_chars": 1}), Stats(docs=2, rejected={"min_chars": 2, "langid": 1})]
    Stats.total(parts).flat()   # {"docs": 5.0, "rejected.langid": 1.0, "rejected.min_chars": 3.0}
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping


class Stats(dict):
    """A dict of numbers (or of nested Stats-like dicts) that merges by addition."""

    def add(self, other: Mapping[str, Any]) -> "Stats":
        for k, v in other.items():
            if isinstance(v, Mapping):
                mine = self.get(k)
                self[k] = (mine if isinstance(mine, Stats) else Stats(mine or {})).add(v)
            else:
                self[k] = self.get(k, 0) + v
        return self

    @classmethod
    def total(cls, parts: Iterable[Mapping[str, Any]], **zeros: Any) -> "Stats":
        """The sum of parts; `zeros` names counts that must appear even when no part has them (0 in MLflow
        keeps the Compare view free of blanks)."""
        out = cls(zeros)
        for p in parts:
            out.add(p)
        return out

    def flat(self, sep: str = ".") -> dict[str, float]:
        """Sorted {"a.b": float} metrics."""
        out: dict[str, float] = {}
        for k, v in self.items():
            if isinstance(v, Mapping):
                out.update({f"{k}{sep}{kk}": vv for kk, vv in Stats(v).flat(sep).items()})
            else:
                out[k] = float(v)
        return dict(sorted(out.items()))
