"""The `zhgpt` command line: parse, build the DAG, run it. Nothing happens at import time.

Exit codes: 0 ok; 1 a stage failed or verify found damage; 2 bad config / bad command line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer

from pipelines.config import ConfigError, RootBase, load

app = typer.Typer(add_completion=True, no_args_is_help=True, help="zhgpt: a Chinese GPT pretraining pipeline.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"zhgpt {version('zhgpt')}")
        except PackageNotFoundError:
            typer.echo("zhgpt (not installed: running from a source tree)")
        raise typer.Exit()


@app.callback()
def _main(show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                            help="print the version and exit")) -> None:
    """zhgpt: a Chinese GPT pretraining pipeline."""

ConfigArg = typer.Argument(..., help="pipeline config YAML, e.g. configs/quickstart.yaml")
OverrideOpt = typer.Option(None, "-o", "--override", help="dotted override KEY=VALUE (repeatable)")


def fail(msg: str, code: int) -> None:
    typer.echo(f"error: {msg}" if not msg.startswith("config error") else msg, err=True)
    raise typer.Exit(code)


def load_cfg(config: Path, overrides: Optional[List[str]], ray_address: str | None = None,
             tracking_uri: str | None = None) -> RootBase:
    extra = list(overrides or [])
    if ray_address:
        extra.append(f"ray.address={ray_address}")
    if tracking_uri:
        extra.append(f"tracking_uri={tracking_uri}")
    try:
        return load(config, extra)
    except ConfigError as exc:
        fail(str(exc), 2)
        raise  # unreachable


def tracking_uri_of(cfg: RootBase) -> str:
    from pipelines.lineage import default_uri

    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(cfg.local_dir)


def execute(cfg: RootBase, from_: str | None = None, only: str | None = None, force: list[str] | None = None,
            fresh: bool = False, lineage=None, deferred: bool = False, label: str = "",
            tags: dict[str, str] | None = None):
    """Run the pipeline in this process (the CLI, `zhgpt ablate` and the tests all come through here).
    `lineage`: a pipelines.lineage.Lineage to record into (ablate passes one that nests the run under its own).
    `deferred`: MLflow is opened only if a stage executes (see Lineage); Ray in any case starts only then."""
    from pipelines.lineage import Lineage, check_reachable
    from pipelines.progress import make_progress
    from pipelines.raysetup import init_ray
    from pipelines.runner import Runner
    from pipelines.storage import Store

    uri = tracking_uri_of(cfg)
    check_reachable(uri)
    Store.of(cfg).check()  # an unusable store of record stops the run here, before anything is written
    cfg.local_dir.mkdir(parents=True, exist_ok=True)
    progress = make_progress()
    try:
        lineage = lineage or Lineage(uri, cfg.pipeline, cfg.local_dir, deferred=deferred)
        runner = Runner(cfg, lineage, progress, fresh=fresh, label=label, tags=tags,
                        start_ray=lambda: init_ray(cfg.ray, cfg.local_dir, progress))
        return runner.run(from_=from_, only=only, force=force)
    finally:
        getattr(progress, "close", lambda: None)()


def describe_run(from_: str | None, only: str | None, force: list[str], overrides: list[str],
                 fresh: bool) -> tuple[str, dict[str, str]]:
    """What a run was asked to do: its name's tail (`--from dedupe train.max_steps=20`) and its MLflow tags."""
    flags = ([f"--from {from_}"] if from_ else []) + ([f"--only {only}"] if only else []) + \
        [f"--force {f}" for f in force] + (["--fresh"] if fresh else [])
    tags = {"zhgpt.from": from_ or "", "zhgpt.only": only or "", "zhgpt.force": ",".join(force),
            "zhgpt.fresh": str(fresh).lower(), "zhgpt.overrides": " ".join(overrides)[:5000]}
    return " ".join(flags + list(overrides)), {k: v for k, v in tags.items() if v and v != "false"}


def interrupted(stage: str | None) -> None:
    typer.echo(f"interrupted during {stage}; run again to resume" if stage else "interrupted", err=True)
    raise typer.Exit(130)


@app.command()
def run(config: Path = ConfigArg,
        from_: Optional[str] = typer.Option(None, "--from", help="re-run STAGE and all downstream"),
        only: Optional[str] = typer.Option(None, "--only", help="re-run STAGE alone on existing inputs"),
        force: Optional[List[str]] = typer.Option(None, "--force", help="ignore STAGE's cache (repeatable)"),
        override: Optional[List[str]] = OverrideOpt,
        ray_address: Optional[str] = typer.Option(None, "--ray-address", help="join this Ray cluster"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI"),
        fresh: bool = typer.Option(False, "--fresh", help="start resumable stages (training) afresh")) -> None:
    """Run the pipeline: every stage whose inputs, config or code changed; reuse the rest."""
    from pipelines.dataset import ContractError
    from pipelines.runner import Interrupted, SelectionError, StageFailed, one_line, selection
    from pipelines.storage import StorageError

    cfg = load_cfg(config, override, ray_address, tracking_uri)
    try:
        selection(cfg, from_, only, list(force or []))  # a bad --only/--from/--force: before anything is opened
        label, tags = describe_run(from_, only, list(force or []), list(override or []), fresh)
        with sigterm_as_interrupt():
            report = execute(cfg, from_, only, list(force or []), fresh, deferred=True, label=label, tags=tags)
    except SelectionError as exc:
        fail(str(exc), 2)
    except Interrupted as exc:
        interrupted(exc.stage)
    except KeyboardInterrupt:
        interrupted(None)
    except (StageFailed, ContractError) as exc:
        fail(str(exc), 1)
    except (ConnectionError, StorageError) as exc:
        fail(str(exc), 2)
    except OSError as exc:  # the work_dir itself: read-only, full, a name too long, permission denied
        fail(one_line(exc), 1)
    except Exception as exc:  # the tracking store refused a write (a read-only or damaged mlflow.db...)
        if not type(exc).__module__.startswith(("mlflow", "sqlalchemy", "alembic")):
            raise
        fail(f"MLflow tracking store {tracking_uri_of(cfg)}: {one_line(exc)}", 1)
    from pipelines.console import print_summary

    print_summary(report)


class sigterm_as_interrupt:
    """SIGTERM (a scheduler, `kill`) ends a run as Ctrl-C does: the stage resumable, the MLflow runs KILLED."""

    def __enter__(self):
        import signal

        def handler(signum, frame):
            raise KeyboardInterrupt

        self.old = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        signal.signal(signal.SIGTERM, self.old)


@app.command()
def status(config: Path = ConfigArg, override: Optional[List[str]] = OverrideOpt,
           as_json: bool = typer.Option(False, "--json", help="machine-readable output (see README)")) -> None:
    """Per stage: cache key, state (complete/stale/missing/partial/failed), rows, outputs, MLflow run id."""
    from pipelines.status import stage_status
    from pipelines.storage import StorageError

    cfg = load_cfg(config, override)
    try:
        rows = stage_status(cfg)
    except StorageError as exc:
        fail(str(exc), 2)
    if as_json:
        typer.echo(json.dumps({"version": 1, "pipeline": cfg.pipeline, "work_dir": str(cfg.work_dir),
                               "stages": rows}, ensure_ascii=False, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("stage", "state", "key", "rows", "mlflow run", "dir")
    for r in rows:
        rows_text = str(r["rows"]) if r["rows"] is not None else "-"
        t.add_row(r["stage"], r["state"], (r["cache_key"] or "-")[:16], rows_text, r["mlflow_run_id"] or "-",
                  r["dir"] or "-")
    Console().print(t)


@app.command()
def verify(config: Path = ConfigArg, override: Optional[List[str]] = OverrideOpt) -> None:
    """Re-hash every shard of every complete stage against its manifest; exit 1 on any mismatch."""
    from pipelines.runner import plan_all
    from pipelines.storage import StorageError, Store

    cfg = load_cfg(config, override)
    store = Store.of(cfg)
    bad = 0
    try:
        store.check()
        plans = plan_all(cfg, store)
    except StorageError as exc:
        fail(str(exc), 2)
    for name, plan in plans.items():
        if not plan.complete:
            typer.echo(f"{name}: not complete, skipped")
            continue
        try:
            problems = store.verify(name, plan.key)
        except StorageError as exc:
            fail(str(exc), 2)
        for p in problems:
            typer.echo(f"CORRUPT {name}: {p}")
        bad += len(problems)
        n = sum(len(o.shards) for o in plan.manifest.outputs.values())
        if not problems:
            typer.echo(f"{name}: {n} shard(s) ok")
    if bad:
        fail(f"{bad} shard(s) do not match their manifest", 1)


@app.command()
def ui(config: Path = ConfigArg, override: Optional[List[str]] = OverrideOpt,
       port: int = typer.Option(5000, help="port on 127.0.0.1")) -> None:
    """Start the MLflow UI on the pipeline's tracking store, bound to 127.0.0.1; print the runs view's URL."""
    from pipelines.lineage import Lineage

    cfg = load_cfg(config, override)
    uri = tracking_uri_of(cfg)
    cfg.local_dir.mkdir(parents=True, exist_ok=True)
    exp = Lineage(uri, cfg.pipeline, cfg.local_dir).exp_id  # writes pending lineage first
    runs = f"#/experiments/{exp}/runs"  # MLflow 3 opens an experiment on its GenAI overview otherwise
    if uri.startswith("http"):
        typer.echo(f"the tracking store is a server already: {uri.rstrip('/')}/{runs}")
        return
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    typer.echo(f"MLflow UI: http://127.0.0.1:{port}/{runs}  (store {uri}; Ctrl-C stops it)")
    try:
        subprocess.run(cmd, check=False)
    except KeyboardInterrupt:
        pass


@app.command()
def gc(config: Path = ConfigArg, override: Optional[List[str]] = OverrideOpt,
       dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed; remove nothing")) -> None:
    """Remove stage directories that no complete stage of this config, no kept MLflow run and no running
    `zhgpt run` refers to; print what it frees."""
    from pipelines.gc import collect, referenced

    cfg = load_cfg(config, override)
    if "://" in str(cfg.work_dir):
        fail("gc works on a local work_dir (a store in object storage keeps its own lifecycle rules)", 2)
    dirs = collect(cfg, referenced(cfg, tracking_uri_of(cfg)), dry_run)
    for d, size in dirs:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {d} ({size / 1e6:,.1f} MB)")
    total = sum(s for _, s in dirs)
    typer.echo(f"{'would free' if dry_run else 'freed'} {len(dirs)} director{'y' if len(dirs) == 1 else 'ies'}, "
               f"{total / 1e6:,.1f} MB")


@app.command()
def trace(config: Path = ConfigArg, url: Optional[str] = typer.Option(None, "--url", help="a page's URL"),
          doc: Optional[str] = typer.Option(None, "--doc", help="a document id"),
          row: Optional[str] = typer.Option(None, "--row", help="a token row: SPLIT:SHARD:ROW"),
          source_id: Optional[str] = typer.Option(None, "--source-id", help="a record's own id (files source "
                                                  "id_field)"),
          run_id: Optional[str] = typer.Option(None, "--run", help="an earlier pipeline run: its number (#15) "
                                               "or MLflow run id"),
          override: Optional[List[str]] = OverrideOpt,
          as_json: bool = typer.Option(False, "--json", help="machine-readable output (see README)")) -> None:
    """Follow a document (--url/--doc/--source-id) through every stage, or a token row (--row) back to its
    documents."""
    from pipelines.stage import ordered
    from pipelines.storage import StorageError
    from pipelines.trace import TraceError, localise, trace_docs, trace_row

    cfg = load_cfg(config, override)
    if sum(x is not None for x in (url, doc, row, source_id)) != 1:
        fail("give exactly one of --url, --doc, --row, --source-id", 2)
    try:
        parent, stages = trace_stages(cfg, run_id)
        stages = localise(stages, cfg.local_dir, cfg.storage_options)
        out = trace_row(stages, row) if row else trace_docs(stages, ordered(list(stages)), url=url, doc=doc,
                                                            source_id=source_id)
    except TraceError as exc:
        fail(str(exc), 1)
    except StorageError as exc:
        fail(str(exc), 2)
    out["pipeline_run_id"] = parent
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False, indent=1, default=str))
    else:
        from pipelines.trace import render

        typer.echo(render(out))


def trace_stages(cfg: RootBase, run_id: str | None):
    """The run's stage dirs: from the work_dir's run records (no MLflow), else (an MLflow run id, or a work_dir
    from before the records) from MLflow, rebased into this work_dir."""
    from pipelines.journal import mlflow_client
    from pipelines.trace import rebase, recorded_stage_dirs, run_stage_dirs

    found = recorded_stage_dirs(cfg.local_dir, run_id)
    if found is not None:
        return found
    parent, stages = run_stage_dirs(mlflow_client(cfg.local_dir, tracking_uri_of(cfg)), cfg.pipeline, run_id)
    return parent, rebase(stages, cfg.local_dir)


def _register_stage_commands() -> None:
    """Stages contribute their own commands (StageSpec.commands: "module:function", called with the app)."""
    from pipelines.stage import load_object, registry

    for spec in registry().values():
        if spec.commands:
            load_object(spec.commands)(app)


def _register_ablate() -> None:
    from pipelines.ablate import ablate_command

    app.command("ablate", help="One pipeline run per combination of --vary values; a table and plot of what "
                "each did to the model.")(ablate_command)


_register_ablate()
_register_stage_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
