"""Lineage written after the command returns: the MLflow records of a `zhgpt run` in which every stage was cached.

Such a run does ~0.5 s of work, and importing MLflow and opening its store costs ~3 s more (measured: `import
mlflow` 2.9 s, MlflowClient on the sqlite store 0.4 s on this machine). So the run's events (parent run, cached
stage runs, finish) are written as a journal, `<work_dir>/.zhgpt/lineage/<time>-<pid>.json`, before the command
exits, and a detached writer process (`python -m pipelines.journal FILE`) replays them into MLflow.

Nothing is lost and nothing is written twice:
- the journal is on disk before `zhgpt run` returns; a writer that dies leaves it there;
- every command that opens MLflow (the next run that executes a stage, `trace --run`, `ui`, `gc`) first calls
  flush_pending(): it takes each journal's lock (waiting for a writer at work) and replays what is still there;
- a journal is deleted after its replay, under its lock; a replay that died half-way is undone first (the runs
  it made carry the tag `zhgpt.journal`).
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.io import read_json, write_json
from pipelines.logfile import LOG

JOURNALS = Path(".zhgpt") / "lineage"


def hand_over(lineage: Any, events: list[list[Any]]) -> Path:
    """Write the journal of a deferred run and start the writer; return the journal's path."""
    d = lineage.work_dir / JOURNALS
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    tag = f"{lineage.experiment}:{path.stem}"
    for ev in events:
        if ev[0] == "parent":
            ev[2] = {**ev[2], "zhgpt.journal": tag}
    write_json(path, {"uri": lineage.uri, "experiment": lineage.experiment, "work_dir": str(lineage.work_dir),
                      "tag": tag, "events": events, "record": str(lineage.record_path or "")})
    with open(lineage.work_dir / LOG, "ab") as log:  # the writer keeps its own copy of the handle
        subprocess.Popen([sys.executable, "-m", "pipelines.journal", str(path)], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True)
    return path


def flush_pending(work_dir: Path) -> int:
    """Replay every journal still under the work_dir (waiting for a writer holding one); return how many."""
    d = Path(work_dir) / JOURNALS
    n = 0
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        n += replay_file(path)
    return n


def mlflow_client(work_dir: Path, uri: str) -> Any:
    """An MlflowClient on `uri`, once the work_dir's pending journals are written (MLflow imported only here)."""
    from mlflow.tracking import MlflowClient

    flush_pending(work_dir)
    return MlflowClient(uri)


def replay_file(path: Path) -> int:
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return 0
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a writer at work holds it until its journal is gone
        if os.fstat(fh.fileno()).st_nlink == 0:
            return 0  # replayed and removed while we waited
        journal = read_json(path)
        _replay(journal)
        path.unlink()
    return 1


def _replay(journal: dict[str, Any]) -> None:
    from pipelines.lineage import Lineage

    lin = Lineage(journal["uri"], journal["experiment"], Path(journal["work_dir"]), deferred=True)
    lin.live(flush=False)  # this process holds the journal's lock: it must not wait for itself
    _undo(lin, journal["tag"])
    lin.replay(journal["events"])
    rec = Path(journal.get("record") or "")
    if rec.is_file():  # the run record learns its MLflow run id (trace prints it)
        data = read_json(rec)
        write_json(rec, {**data, "mlflow_run_id": lin.parent})


def _undo(lin: Any, tag: str) -> None:
    """Delete the runs a replay of this journal made before it died (a replay is all or nothing)."""
    done = lin.client.search_runs([lin.exp_id], f"tags.`zhgpt.journal` = '{tag}'")
    for parent in done:
        for kid in lin.client.search_runs([lin.exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"):
            lin.client.delete_run(kid.info.run_id)
        lin.client.delete_run(parent.info.run_id)


def main(argv: list[str]) -> None:
    os.nice(10)  # the next command the user types comes first (importing MLflow is ~3 CPU-s)
    for p in argv:
        replay_file(Path(p))


if __name__ == "__main__":
    main(sys.argv[1:])
