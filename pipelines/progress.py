"""Progress display: a rich bar per stage on a TTY, plain one-line-per-event logs otherwise (CI, files)."""
from __future__ import annotations

import sys
import time

from pipelines.stage import Progress


class PlainProgress(Progress):
    def __init__(self) -> None:
        self.t0: dict[str, float] = {}
        self.total: dict[str, int] = {}

    def start(self, stage: str, total: int) -> None:
        self.t0[stage], self.total[stage] = time.time(), total
        self.log(f"[{stage}] {total} task(s)")

    def advance(self, stage: str, done: int, rows: int) -> None:
        dt = max(time.time() - self.t0.get(stage, time.time()), 1e-9)
        self.log(f"[{stage}] {done}/{self.total.get(stage, '?')} tasks, {rows} rows, {rows / dt:.0f} rows/s")


class RichProgress(Progress):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console)
        self.tasks: dict[str, int] = {}
        self.t0: dict[str, float] = {}

    def start(self, stage: str, total: int) -> None:
        if not self.tasks:
            self.bar.start()
        self.t0[stage] = time.time()
        self.tasks[stage] = self.bar.add_task(stage, total=total, rate="")

    def advance(self, stage: str, done: int, rows: int) -> None:
        rate = rows / max(time.time() - self.t0[stage], 1e-9)
        self.bar.update(self.tasks[stage], completed=done, rate=f"{rate:,.0f} rows/s" if rows else "")

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
