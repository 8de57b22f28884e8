"""Progress display: one rich line per stage on a TTY (tasks, rows, MB/s, ETA), plain periodic lines otherwise:
per stage, the task count and the end of its first map, then at most one line every EVERY seconds, whatever the
number of tasks and of map() calls (a stage's `<stage>.<step>` maps, like its index, count as the stage's own).

The progress channel: any stage code, including a Ray Train worker (which has no StageContext), appends JSON
lines to `<stage dir>/.partial/progress.jsonl` with `channel(out_dir).put(step=..., total=..., ...)`; while a
stage runs, the runner's Watch thread tails that file and shows the newest line (`step N/M`, loss, tokens/s,
ETA). Throttled by the writer: at most one line a second.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipelines.stage import Progress

EVERY = float(os.environ.get("ZHGPT_PROGRESS_EVERY", "10"))  # seconds between plain lines for one stage
CHANNEL = Path(".partial") / "progress.jsonl"


def _eta(done: float, total: float, elapsed: float) -> str:
    if not total or done <= 0 or done >= total:
        return ""
    s = int(elapsed * (total - done) / done)
    return f"ETA {s // 60}m{s % 60:02d}s"


def describe(done: int, total: int, rows: int, nbytes: int, elapsed: float) -> str:
    """`12/40 tasks, 3,120 rows, 4.2 MB/s, ETA 0m31s` (rows and MB/s only when tasks report them)."""
    parts = [f"{done}/{total} tasks"]
    if rows:
        parts.append(f"{rows:,} rows")
    if nbytes and elapsed > 0:
        parts.append(f"{nbytes / elapsed / 1e6:.1f} MB/s")
    return ", ".join(parts + [e for e in [_eta(done, total, elapsed)] if e])


def describe_step(rec: dict[str, Any], elapsed: float) -> str:
    """`step 300/650, loss 4.12, 12,345 tokens/s, ETA 2m10s` from a progress-channel record."""
    parts = [f"step {rec.get('step')}/{rec.get('total')}"]
    if isinstance(rec.get("loss"), (int, float)):
        parts.append(f"loss {rec['loss']:.3f}")
    if rec.get("tokens_per_s"):
        parts.append(f"{rec['tokens_per_s']:,.0f} tokens/s")
    first, step, total = rec.get("from") or 0, rec.get("step") or 0, rec.get("total") or 0
    eta = _eta(step - first, total - first, rec.get("elapsed", elapsed))  # a resumed run: from its first step
    return ", ".join(parts + ([eta] if eta else []))


class PlainProgress(Progress):
    def __init__(self) -> None:
        self.t0: dict[str, float] = {}
        self.total: dict[str, int] = {}
        self.last: dict[str, float] = {}  # per stage (the part before any '.'): when its last line was printed
        self.ended: set[str] = set()  # stages whose first map has ended

    def start(self, stage: str, total: int) -> None:
        self.t0[stage], self.total[stage] = time.time(), total
        if stage.split(".")[0] not in self.last:
            self.last[stage.split(".")[0]] = time.time()
            self.log(f"[{stage}] {total} task(s)")

    def advance(self, stage: str, done: int, rows: int, nbytes: int = 0) -> None:
        now, key, total = time.time(), stage.split(".")[0], self.total.get(stage, 0)
        first_end = done >= total and key not in self.ended
        if done >= total:
            self.ended.add(key)
        if not first_end and now - self.last.get(key, 0) < EVERY:
            return
        self.last[key] = now
        self.log(f"[{stage}] " + describe(done, total, rows, nbytes, now - self.t0.get(stage, now)))

    def step(self, stage: str, rec: dict[str, Any]) -> None:
        now = time.time()
        if now - self.last.get(stage, 0) < EVERY and rec.get("step") != rec.get("total"):
            return
        self.last[stage] = now
        self.log(f"[{stage}] " + describe_step(rec, now - self.t0.setdefault(stage, now)))


class RichProgress(Progress):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.bar = Bar(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.fields[what]}"),
                       TimeElapsedColumn(), console=self.console, transient=False)
        self.tasks: dict[str, int] = {}
        self.t0: dict[str, float] = {}
        self.total: dict[str, int] = {}

    def _task(self, stage: str, total: int | None) -> int:
        if not self.tasks:
            self.bar.start()
        if stage not in self.tasks:  # one display per stage, whatever the number of map() calls in it
            self.t0[stage] = time.time()
            self.tasks[stage] = self.bar.add_task(stage, total=total, what="")
        return self.tasks[stage]

    def start(self, stage: str, total: int) -> None:
        self.bar.update(self._task(stage, total), total=total, completed=0)
        self.total[stage], self.t0[stage] = total, time.time()

    def advance(self, stage: str, done: int, rows: int, nbytes: int = 0) -> None:
        what = describe(done, self.total.get(stage, 0), rows, nbytes, time.time() - self.t0[stage])
        self.bar.update(self._task(stage, None), completed=done, what=what)

    def step(self, stage: str, rec: dict[str, Any]) -> None:
        t = self._task(stage, rec.get("total"))
        self.bar.update(t, total=rec.get("total"), completed=rec.get("step"),
                        what=describe_step(rec, time.time() - self.t0[stage]))

    def finish(self, stage: str) -> None:
        self.bar.refresh()

    def log(self, msg: str) -> None:
        self.bar.console.print(msg, markup=False, highlight=False) if self.tasks else self.console.print(
            msg, markup=False, highlight=False)

    def close(self) -> None:
        if self.tasks:
            self.bar.stop()


def make_progress() -> Progress:
    return RichProgress() if sys.stderr.isatty() else PlainProgress()


class channel:
    """The writing end: `channel(out_dir).put(step=3, total=650, loss=4.2, tokens_per_s=1e4)`. Cheap (an append
    and a flush at most once a second), safe to call from any process that sees the stage directory."""

    def __init__(self, out_dir: str | os.PathLike, every: float = 1.0):
        self.path, self.every, self.last, self.t0 = Path(out_dir) / CHANNEL, every, 0.0, time.time()
        self.first: Any = None

    def put(self, force: bool = False, **rec: Any) -> None:
        now = time.time()
        if self.first is None:
            self.first = rec.get("step", 0)
        if not force and now - self.last < self.every:
            return
        self.last = now
        rec.setdefault("from", self.first)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**rec, "elapsed": round(now - self.t0, 3)}) + "\n")


class Watch:
    """The reading end, in the driver while a stage runs: a thread that shows each new channel line."""

    def __init__(self, progress: Progress, stage: str, out_dir: Path, every: float = 0.5):
        self.progress, self.stage, self.path, self.every = progress, stage, Path(out_dir) / CHANNEL, every
        self.stop, self.pos = threading.Event(), 0
        self.thread = threading.Thread(target=self._run, name=f"progress-{stage}", daemon=True)

    def __enter__(self) -> "Watch":
        if hasattr(self.progress, "step"):
            self.path.unlink(missing_ok=True)  # lines of an earlier attempt are not this one's progress
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
            self._read()  # the last line (the final step) is shown too

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self._read()

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as fh:
                fh.seek(self.pos)
                lines = fh.readlines()
        except FileNotFoundError:
            return
        whole = [x for x in lines if x.endswith("\n")]  # a line being written is read next time
        self.pos += sum(len(x.encode("utf-8")) for x in whole)
        recs = [json.loads(x) for x in whole if x.strip()]
        if recs:
            self.progress.step(self.stage, recs[-1])
