"""Ray tasks for the distributed connected components and the keep rule (see stages/dedupe/tasks.py for the
file layout). Each task reads the files addressed to its partition and writes files addressed to others.

Keep rule: per component, against documents first (a corpus never re-admits what it already has), then the
longest text, ties by the smallest id.

Run: through the stage; tested by `.venv/bin/python -m pytest -q tests/stages/test_dedupe_stage.py`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.io import read_table, write_ipc
from stages.dedupe import components as cc
from stages.dedupe.arrow import col, nd, table
from stages.dedupe.sources import gid_source
from stages.dedupe.tasks import read_all


def _write_routed(routed, out: Path, q: int) -> None:
    for dest, (u, v) in enumerate(routed):
        write_ipc(table(u=u, v=v), out / f"from-{q:05d}" / f"p-{dest:04d}.arrow")


def large_round(r: int, q: int, root: str, partitions: int) -> tuple[int, int]:
    """Large-star on partition q of round r; writes labels (final once the edge set stops changing)."""
    root_p = Path(root)
    u, v = read_all(list(root_p.glob(f"cc/r{r:03d}/from-*/p-{q:04d}.arrow")), ["u", "v"])
    (lo, hi), (nodes, labels), digest = cc.large_star(u, v)
    write_ipc(table(gid=nodes, label=labels), root_p / "cc" / f"labels-{r:03d}" / f"p-{q:04d}.arrow")
    _write_routed(cc.route_small(lo, hi, partitions), root_p / "cc" / f"r{r:03d}s", q)
    return digest


def small_round(r: int, q: int, root: str, partitions: int) -> int:
    root_p = Path(root)
    u, v = read_all(list(root_p.glob(f"cc/r{r:03d}s/from-*/p-{q:04d}.arrow")), ["u", "v"])
    lo, hi = cc.small_star(u, v)
    _write_routed(cc.route_large(lo, hi, partitions), root_p / "cc" / f"r{r + 1:03d}", q)
    return len(lo)


def resolve(q: int, r: int, root: str, partitions: int) -> int:
    """Attach node attributes to the final labels and route each node to its component's partition."""
    root_p = Path(root)
    lab = read_table(root_p / "cc" / f"labels-{r:03d}" / f"p-{q:04d}.arrow")
    nodes = [read_table(p) for p in sorted(root_p.glob(f"nodes/v-*/p-{q:04d}.arrow"))]
    # a gid's attributes are the same in every file that names it: keep one row per gid, then join on gid
    attrs = pa.concat_tables(nodes).sort_by("gid")
    agid = nd(attrs.column("gid"))
    one = np.flatnonzero(np.r_[True, agid[1:] != agid[:-1]]) if len(agid) else np.zeros(0, np.int64)
    agid, gid, label = agid[one], nd(lab.column("gid")), nd(lab.column("label"))
    pos = np.searchsorted(agid, gid)
    hit = pos < len(agid)
    hit[hit] = agid[pos[hit]] == gid[hit]
    rows = col(one[pos[hit]])
    joined = table(gid=gid[hit], label=label[hit], length=attrs.column("length").take(rows),
                   id=attrs.column("id").take(rows), against=attrs.column("against").take(rows))
    dest = cc.partition_of(nd(joined.column("label")), partitions)
    for p in range(partitions):
        write_ipc(joined.filter(col(dest == p)), root_p / "resolve" / f"from-{q:05d}" / f"p-{p:04d}.arrow")
    return joined.num_rows


def keep(q: int, root: str, sample: int) -> dict:
    """Pick each component's kept document; route removed input documents to the writer of their shard."""
    root_p = Path(root)
    parts = [read_table(p) for p in sorted(root_p.glob(f"resolve/from-*/p-{q:04d}.arrow"))]
    t = pa.concat_tables(parts) if parts else None
    if t is None or t.num_rows == 0:
        return {"clusters": 0, "largest": 0, "sample": []}
    t = t.sort_by([("label", "ascending"), ("against", "descending"),
                                         ("length", "descending"), ("id", "ascending")])
    label = nd(t.column("label"))
    first = np.r_[True, label[1:] != label[:-1]]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, len(label)])
    gid = nd(t.column("gid"))
    kept_pos = np.repeat(starts, sizes)
    members = table(gid=gid, kept_gid=gid[kept_pos], kept_id=t.column("id").take(col(kept_pos)),
                    kept_against=nd(t.column("against"))[kept_pos],
                    size=np.repeat(sizes, sizes)).filter(col(~first))
    src = gid_source(nd(members.column("gid")))
    for s in np.unique(src):
        write_ipc(members.filter(col(src == s)), root_p / "members" / f"from-{q:05d}" / f"s-{s:05d}.arrow")
    ids = t.column("id").to_pylist()
    order = sorted(range(len(starts)), key=lambda i: (-sizes[i], ids[starts[i]]))[:sample]
    return {"clusters": len(starts), "largest": int(sizes.max()),
            "sample": [(int(sizes[i]), ids[starts[i]], int(gid[starts[i]])) for i in order]}
