"""The MLflow artifact of a dedupe run: a sample of clusters side by side (kept text | removed texts), so a reader
can judge at a glance whether the threshold removes what it should. Largest clusters first, ties by kept id.

Run: written by every dedupe run that finds duplicates (`<stage dir>/clusters.html`, logged to MLflow).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io import read_table, write_bytes
from stages.dedupe.arrow import col
from stages.dedupe.sources import Source, gid_row, gid_source, read_source
from stages.dedupe.tasks import SigFiles, similarity

SHOW_CHARS = 400  # per text: enough to see the shared passage, small enough for 20 clusters in one page
SHOW_REMOVED = 4  # removed documents shown per cluster


def _texts(gids: list[int], sources: list[Source]) -> dict[int, str]:
    out: dict[int, str] = {}
    arr = np.array(gids, np.int64)
    for s in np.unique(gid_source(arr)):
        sel = arr[gid_source(arr) == s]
        texts = read_source(sources[int(s)], ["text"]).column("text").take(col(gid_row(sel)))
        out.update(zip(sel.tolist(), texts.to_pylist()))
    return out


def write_clusters_html(out_dir: Path, name: str, sample: list[tuple[int, str, int]], root: Path,
                        sources: list[Source]) -> str:
    """Write `name` under out_dir for clusters given as (size, kept id, kept gid); returns its relative path."""
    kept_gids = np.array([c[2] for c in sample], np.int64)
    mem = pa.concat_tables([read_table(p) for p in sorted(Path(root).glob("members/from-*/s-*.arrow"))])
    mem = mem.filter(pc.is_in(mem.column("kept_gid"), col(kept_gids)))
    mem = mem.sort_by([("kept_gid", "ascending"), ("gid", "ascending")])
    by_kept: dict[int, list[int]] = {}
    for g, k in zip(mem.column("gid").to_pylist(), mem.column("kept_gid").to_pylist()):
        if len(by_kept.setdefault(k, [])) < SHOW_REMOVED:
            by_kept[k].append(g)
    shown = [g for k in kept_gids.tolist() for g in by_kept.get(k, [])]
    jac, _, _ = similarity(SigFiles(Path(root)), np.array(shown, np.int64),
                           np.array([k for k in kept_gids.tolist() for _ in by_kept.get(k, [])], np.int64), "exact")
    j_of = dict(zip(shown, jac.tolist()))
    texts = _texts(kept_gids.tolist() + shown, sources)
    rows = []
    for size, kept_id, kg in sample:
        cells = "".join(f"<div class=r><b>J={j_of[g]:.3f}</b> {_cut(texts[g])}</div>" for g in by_kept.get(kg, []))
        kept = f"<b>{html.escape(kept_id)}</b> ({size} docs)<br>{_cut(texts[kg])}"
        rows.append(f"<tr><td>{kept}</td><td>{cells}</td></tr>")
    page = ("<!doctype html><meta charset=utf-8><title>dedupe clusters</title><style>td{vertical-align:top;"
            "width:50%;border:1px solid #ccc;padding:4px;font-size:13px}.r{margin-bottom:6px}</style>"
            "<table><tr><th>kept</th><th>removed (Jaccard to kept)</th></tr>" + "".join(rows) + "</table>")
    write_bytes(Path(out_dir) / name, page.encode("utf-8"))
    return name


def _cut(text: str) -> str:
    return html.escape(text[:SHOW_CHARS] + ("…" if len(text) > SHOW_CHARS else ""))
