"""Running an ablation's variants (pipelines/ablate.py builds and checks them) and reporting what each did.

Each variant is an ordinary pipeline run (pipelines.cli.execute), recorded by a Lineage that makes its parent
run a child of the ablation's run. The table has one row per variant: val bits per byte per eval set
(`eval/<set>/bpb`), on the validation split and per source (`val/bpb`, `val/<source>/bpb`: the split is drawn
from each variant's own documents, so only the eval sets are the same text for every variant), tokens trained,
and the documents each data stage kept; then one row per noise seed with the absolute differences between the
two seeds of the first variant.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.lineage import Lineage


class VariantLineage(Lineage):
    """A Lineage whose pipeline run is a child of the ablation's run."""

    def __init__(self, uri: str, variant: Any, ablation_run_id: str):
        super().__init__(uri, variant.cfg.pipeline, variant.cfg.local_dir)
        self.variant, self.ablation_run_id = variant, ablation_run_id

    def start_parent(self, cfg: Any, *args: Any, **kw: Any) -> str:
        run_id = super().start_parent(cfg, *args, **kw)
        self.client.set_tag(run_id, "mlflow.parentRunId", self.ablation_run_id)
        self.client.set_tag(run_id, "zhgpt.variant", f"{self.variant.vid}: {self.variant.label}"[:5000])
        return run_id


@dataclass
class AblationResult:
    run_id: str
    out_dir: Path
    rows: list[dict[str, Any]]
    markdown: str


def variant_row(v: Any, report: Any, client: Any) -> dict[str, Any]:
    """One table row from a variant's run: its train stage's metrics and the rows each docs output kept."""
    row: dict[str, Any] = {"variant": v.vid, "settings": v.label, "seed": v.cfg.model_dump()["train"].get("seed")}
    train = report.plans["train"].manifest
    try:
        metrics = client.get_run(train.extra.get("mlflow_metrics_run_id") or train.mlflow_run_id).data.metrics
    except Exception:  # noqa: BLE001 - a train stage recorded in another store: the manifest's figures remain
        metrics = {"val/bpb": train.stats.get("val_bpb", math.nan)}
    row.update({k: metrics[k] for k in sorted(metrics) if k.endswith("/bpb") and k.startswith(("eval/", "val"))})
    row["tokens"] = train.stats.get("tokens")
    for name, plan in report.plans.items():
        if plan.manifest is not None and "docs" in plan.manifest.outputs:
            row[f"docs.{name}"] = plan.manifest.outputs["docs"].rows
    row["ran"] = " ".join(report.executed) or "-"
    return row


def noise_rows(rows: list[dict[str, Any]], variants: list[Any]) -> list[dict[str, Any]]:
    """|difference| between each noise-seed repeat and the variant it repeats, for every bits-per-byte column."""
    by_id = {r["variant"]: r for r in rows}
    out = []
    for v in variants:
        if v.seed_of:
            a, b = by_id[v.seed_of], by_id[v.vid]
            out.append({"variant": f"noise-{v.seed_of}-{v.vid}", "settings": "seed-to-seed noise (absolute difference)",
                        **{k: abs(a[k] - b[k]) for k in a if k.endswith("/bpb") and k in b}})
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    bpb = sorted((c for c in cols if c.endswith("/bpb")), key=lambda c: (not c.startswith("eval/"), c))
    docs = sorted((c for c in cols if c.startswith("docs.")), key=lambda c: (_rank(c[5:]), c))
    return ["variant", "settings", "seed", *bpb, "tokens", *docs, "ran"]


def _rank(stage: str) -> int:
    from pipelines.stage import BUILTIN

    return BUILTIN.index(stage) if stage in BUILTIN else len(BUILTIN)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_report(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """ablation.csv, ablation.md and (with matplotlib installed) ablation.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    with open(out_dir / "ablation.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows([{c: r.get(c, "") for c in cols} for r in rows])
    (out_dir / "ablation.md").write_text(markdown(rows) + "\n", encoding="utf-8")
    files = [out_dir / "ablation.csv", out_dir / "ablation.md"]
    png = plot(rows, out_dir / "ablation.png")
    return files + ([png] if png else [])


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Grouped bars: bits per byte per eval set / validation source, one bar per variant; noise rows skipped."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no ablation.png (the table has every figure)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in rows if not r["variant"].startswith("noise-")]
    metrics = [c for c in _columns(runs) if c.endswith("/bpb")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics)), 4))
    width = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        xs = [m + i * width for m in range(len(metrics))]
        ax.bar(xs, [r.get(c, math.nan) for c in metrics], width, label=f"{r['variant']}: {r['settings']}"[:60])
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], metrics, rotation=20, fontsize=8)
    ax.set_ylabel("bits per byte (lower is better)")
    lows = [r.get(c) for r in runs for c in metrics if isinstance(r.get(c), float) and not math.isnan(r.get(c))]
    if lows:
        ax.set_ylim(min(lows) * 0.95, max(lows) * 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_ablation(variants: list[Any], argv: list[str]) -> AblationResult:
    """Run every variant in this process (one Ray), under one MLflow parent run; write and log the report."""
    from pipelines.cli import execute, tracking_uri_of

    first = variants[0].cfg
    uri = tracking_uri_of(first)
    root = Lineage(uri, first.pipeline, first.local_dir)
    client = root.client
    parent = client.create_run(root.exp_id, run_name=f"ablation-{time.strftime('%Y%m%d-%H%M%S')}",
                               tags={"zhgpt.kind": "ablation", "zhgpt.work_dir": str(first.work_dir),
                                     "zhgpt.command": " ".join(argv)[:5000]}).info.run_id
    root._params(parent, {v.vid: v.label for v in variants})
    rows: list[dict[str, Any]] = []
    try:
        for v in variants:
            print(f"== {v.vid}: {v.label}", flush=True)
            report = execute(v.cfg, lineage=VariantLineage(uri, v, parent))
            rows.append(variant_row(v, report, client))
    except BaseException as exc:
        client.set_tag(parent, "zhgpt.error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(parent, "FAILED")
        raise
    rows += noise_rows(rows, variants)
    out_dir = first.local_dir / "ablations" / parent
    for f in write_report(rows, out_dir):
        client.log_artifact(parent, str(f))
    root._metrics(parent, {f"{r['variant']}.{k}": v for r in rows for k, v in r.items()
                           if isinstance(v, (int, float)) and k != "seed" and not math.isnan(v)})
    client.set_terminated(parent, "FINISHED")
    return AblationResult(parent, out_dir, rows, markdown(rows))
