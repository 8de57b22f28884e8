"""The train stage's commands, added to `zhgpt` through SPEC.commands (pipelines/cli.py imports nothing from here):

    zhgpt generate CONFIG --prompt "..."        # sample from the train output of CONFIG (as it is now)
    zhgpt generate --model PATH --prompt "..."  # ... or from a train stage dir, its checkpoints/ or export/
    zhgpt plan --preset 175b --gpus 1024 --gpu h100   # what a pretraining run takes (plan.py)

Importing this module is cheap (typer and the planner, no torch): `zhgpt` imports it at start-up.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Optional

import typer

from stages.train.plan import GIB, PlanError, make_plan, published_checks


def register(app: typer.Typer) -> None:
    app.command("generate", help="Sample a continuation of PROMPT from a trained model: CONFIG's train output, "
                "or --model PATH.")(generate)
    app.command("plan", help="What a pretraining run takes: memory per GPU, parallel layout, days, GPU-hours.")(
        plan_command)


def train_output(config: Path, overrides: Optional[List[str]]) -> Path:
    """The local directory of CONFIG's train stage, as the config is now (fetched from a remote store if need be)."""
    from pipelines.cli import fail, load_cfg
    from pipelines.runner import plan_all
    from pipelines.storage import StorageError, Store

    cfg = load_cfg(config, overrides)
    if getattr(cfg, "train", None) is None:
        fail(f"{config}: the config has no train section", 2)
    try:
        store = Store.of(cfg)
        plan = plan_all(cfg, store)["train"]
        if not plan.complete:
            why = "an upstream stage is not complete" if plan.key is None else f"key {plan.key[:16]}"
            fail(f"{config}: the train stage has no output for this config yet ({why}); run `zhgpt run {config}`", 2)
        return store.fetch("train", plan.key, plan.manifest)
    except StorageError as exc:
        fail(str(exc), 2)
        raise  # unreachable


def generate(config: Optional[Path] = typer.Argument(None, help="pipeline config: sample from its train output"),
             model: Optional[Path] = typer.Option(None, "--model", help="a train stage directory, or its "
                                                  "checkpoints/ or export/"),
             prompt: str = typer.Option(..., "--prompt", help="Chinese text to continue"),
             max_new_tokens: int = typer.Option(64, min=1), temperature: float = typer.Option(0.8, min=0.0),
             seed: int = 0,
             override: Optional[List[str]] = typer.Option(None, "-o", "--override",
                                                          help="dotted override KEY=VALUE (repeatable)")) -> None:
    """Sample a continuation of PROMPT from a trained model."""
    from pipelines.cli import fail
    from stages.train.generate import generate_cli

    if (config is None) == (model is None):
        fail("give a pipeline CONFIG or --model PATH (one of them)", 2)
    path = model if model is not None else train_output(config, override)
    try:
        generate_cli(path, prompt, max_new_tokens, temperature, seed)
    except FileNotFoundError as exc:
        fail(str(exc), 2)


# -- zhgpt plan -----------------------------------------------------------------------------------------------
def fmt_count(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def gib(x: float) -> str:
    return f"{x / GIB:,.0f}" if x >= 100 * GIB else f"{x / GIB:.1f}"


def render(plan: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(100, shutil.get_terminal_size().columns))  # a piped 80 columns would wrap the table
    s, g, est, cap = plan["shape"], plan["gpu"], plan["estimate"], plan["capacity_bytes"]
    kv = f" kv{s['kv_heads']}" if s["kv_heads"] else ""
    con.print(f"[bold]{s['name']}[/bold] {s['title']}: {fmt_count(plan['params'])} params (L{s['layers']} "
              f"d{s['d_model']} h{s['heads']}{kv} ffn{s['ffn_hidden']} V{s['vocab']} T{s['seq_len']}), "
              f"{fmt_count(plan['tokens'])} tokens on {plan['gpus']} x {g['label']}", soft_wrap=True)
    con.print(f"memory per GPU in GiB: {plan['precision']} + AdamW, micro-batch {plan['micro_batch']}, "
              f"rc = activation recompute, fits = under {cap / GIB:.0f} GiB", soft_wrap=True)
    t = Table()
    for col in ("layout", "DP", "weights", "grads", "optim", "acts", "acts rc", "total", "total rc", "fits"):
        t.add_column(col, justify="left" if col in ("layout", "fits") else "right")
    for row in plan["memory"]:
        p, r = row["plain"], row["recompute"]
        fits = "yes" if p["total"] <= cap else "rc" if r["total"] <= cap else "no"
        t.add_row(row["layout"].replace(" +recompute", ""), str(row["dp"]),
                  *(gib(p[k]) for k in ("weights", "gradients", "optimizer", "activations")), gib(r["activations"]),
                  gib(p["total"]), gib(r["total"]), fits, style="bold green" if row["chosen"] else None)
    con.print(t)
    con.print(f"smallest layout that fits: [bold green]{plan['layout']['label'] if plan['layout'] else 'none'}"
              f"[/bold green]" + (f" x DP{plan['layout']['dp']}" if plan["layout"] else ""))
    rt = Table(title="time and cost", show_header=False)
    for k, v in (("FLOPs per token", f"{est['flops_per_token'] / 1e12:.3g} TFLOP (PaLM formula)"),
                 ("total FLOPs", f"{est['total_flops']:.3g}"),
                 ("MFU", f"{g['mfu']:.0%}  ({g['mfu_source']})"), ("goodput", f"{g['goodput']:.0%}"),
                 ("TFLOP/s per GPU", f"{est['tflops_per_gpu']:.0f} of {g['peak_tflops']:.0f} peak"),
                 ("tokens/s", f"{fmt_count(est['tokens_per_s'])} ({fmt_count(est['tokens_per_s_per_gpu'])} per GPU)"),
                 ("step time", f"{est['step_s']:.2f} s per {fmt_count(plan['global_batch'])}-token batch"),
                 ("days", f"{est['days']:.1f}"), ("GPU-hours", fmt_count(est["gpu_hours"]))):
        rt.add_row(k, v)
    con.print(rt)


def render_published(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table("run", "gpu", "figure", "published", "planner", "error", "implied MFU",
              title="planner (default MFU and goodput per GPU) vs published runs")
    for r in rows:
        t.add_row(r["run"], r["gpu"], r["metric"], fmt_count(r["published"]), fmt_count(r["predicted"]),
                  f"{r['error']:+.0%}" + ("" if r["check"] else " (not checked)"), f"{r['implied_mfu']:.0%}")
    Console(width=max(100, shutil.get_terminal_size().columns)).print(t)
    for r in rows:
        typer.echo(f"  {r['run']}: {r['source']}")


def plan_command(
        preset: Optional[str] = typer.Option(None, help="model preset: 175b, llama2-70b, ..., or a train preset"),
        params: Optional[str] = typer.Option(None, help="parameter count (175B); GPT-3 proportions unless shaped"),
        layers: Optional[int] = None, d_model: Optional[int] = None, heads: Optional[int] = None,
        kv_heads: Optional[int] = None, ffn_hidden: Optional[int] = None, vocab: Optional[int] = None,
        seq_len: Optional[int] = None,
        tokens: Optional[str] = typer.Option(None, help="training tokens (300B); default: the preset's, else 20/param"),
        gpus: int = typer.Option(8, help="number of GPUs"), gpu: str = typer.Option("h100", help="GPU type"),
        mfu: Optional[float] = typer.Option(None, help="override the GPU type's default MFU"),
        goodput: Optional[float] = typer.Option(None, help="override the GPU type's default goodput"),
        global_batch: Optional[str] = typer.Option(None, help="tokens per optimizer step (default: preset's or 4M)"),
        micro_batch: int = typer.Option(1, help="sequences per GPU per forward pass"),
        precision: str = typer.Option("bf16-mixed", help="bf16-mixed (2+2+12 bytes/param) or fp32 (4+4+8)"),
        usable: float = typer.Option(0.9, help="share of GPU memory a layout may fill"),
        tp: Optional[int] = None, pp: Optional[int] = None,
        zero: Optional[int] = typer.Option(None, help="0 = DDP, 1-3 = ZeRO stage (3 = FSDP)"),
        recompute: Optional[bool] = typer.Option(None, "--recompute/--no-recompute"),
        published: bool = typer.Option(False, "--published", help="check the planner against published runs"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Memory per GPU, the smallest parallel layout that fits, step time, tokens/s, days and GPU-hours."""
    try:
        if published:
            rows = published_checks()
            typer.echo(json.dumps(rows, indent=1)) if as_json else render_published(rows)
            return
        dims = dict(layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads, ffn_hidden=ffn_hidden)
        fixed = dict(tp=tp, pp=pp, zero=zero, recompute=recompute)
        plan = make_plan(preset, params, dims, vocab, seq_len, tokens, gpus, gpu, mfu, goodput, global_batch,
                         micro_batch, precision, usable, fixed)
    except PlanError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(plan, indent=1)) if as_json else render(plan)
    if plan["layout"] is None:
        need = plan["min_gpus"] or "no count up to 65536"
        typer.echo(f"error: no layout of {gpus} x {plan['gpu']['label']} fits; {need} GPUs would "
                   f"(or use a bigger GPU, a smaller --micro-batch)", err=True)
        raise typer.Exit(1)
