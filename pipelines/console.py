"""What `zhgpt run` prints when it ends: one row per stage (ran or cached, how long, what it did in words), the
figures the README promises (val bits per byte and its ratio to unigram, the samples' CJK share, documents
kept), and where the run is recorded."""
from __future__ import annotations

import math
from typing import Any

from pipelines.runner import summary_of


def headline(plans: dict[str, Any]) -> list[str]:
    """The run's headline figures, from the manifests of its last data stage and of train."""
    out = []
    docs = [p for p in plans.values() if p.manifest is not None and "docs" in p.manifest.outputs]
    if docs:
        first, last = docs[0].manifest.outputs["docs"].rows, docs[-1].manifest.outputs["docs"].rows
        out.append(f"documents kept: {last:,} of {first:,} ({docs[-1].name})")
    train = plans.get("train")
    st = train.manifest.stats if train is not None and train.manifest is not None else {}
    bpb, ratio, cjk = st.get("val_bpb"), st.get("bpb_ratio"), st.get("cjk_fraction")
    if _num(bpb):
        out.append(f"val bits per byte: {bpb:.3f}" + (f" ({ratio:.3f} of unigram)" if _num(ratio) else ""))
    if _num(cjk):
        out.append(f"samples' CJK share: {cjk:.0%}")
    return out


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def print_summary(report: Any) -> None:
    import typer

    rows = []
    for name, plan in report.plans.items():
        if plan.manifest is None:
            continue
        state = "ran" if name in report.executed else "cached"
        secs = f"{plan.manifest.wall_seconds:.1f}s" if state == "ran" else "-"
        rows.append((name, state, secs, summary_of(plan.manifest)))
    width = max([len(r[0]) for r in rows] or [5])
    for name, state, secs, what in rows:
        typer.echo(f"  {name:<{width}}  {state:<6} {secs:>7}  {what}")
    for line in headline(report.plans):
        typer.echo(f"  {line}")
    where = report.parent_run_id or f"{report.run_name!r} (written in the background)"
    typer.echo(f"done: ran {', '.join(report.executed) or 'nothing'}; reused {', '.join(report.cached) or 'nothing'}; "
               f"MLflow run {where}")
