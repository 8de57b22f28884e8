"""The one fault-injection hook: tests make a run fail at a known point, never by sleeping and hoping.

    ZHGPT_FAULT=clean.tasks@2          the driver SIGKILLs itself once 2 tasks of the clean stage are done
    ZHGPT_FAULT=crawl.round@1:raise    the crawl raises after round 1 is checkpointed
    ZHGPT_FAULT=train.rank1@3          Ray Train rank 1 SIGKILLs itself before step 3 (once: see `marker`)
    ZHGPT_FAULT=train.rank1.reported@6 ... after Ray Train has taken its report of step 6 (the final checkpoint)
    ZHGPT_FAULT=upper.tasks@2:int      the driver sends itself SIGINT (a Ctrl-C) once 2 tasks of upper are done

Several faults are comma-separated. Code marks a point with `fault_point(site, n)`; it does nothing unless the
variable names that site and count. A Ray worker has the variable only if its Ray was started (or joined, see
pipelines/raysetup.py) after it was set, and keeps it for later tasks; so code that runs in Ray tasks takes the
driver's value as an argument and calls `adopt` (the crawl's partition tasks; the train stage's workers, with
their run inputs).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "ZHGPT_FAULT"


class InjectedFault(RuntimeError):
    """Raised at a fault point whose action is `raise`."""


def _actions(site: str, n: int) -> list[str]:
    out = []
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        point, _, action = item.partition(":")
        if point == f"{site}@{n}":
            out.append(action or "kill")
    return out


def adopt(value: str | None) -> None:
    """Make the driver's ZHGPT_FAULT this process's own (in a Ray worker, which may hold an earlier task's):
    `value` None or "" means no fault."""
    os.environ[ENV] = value or ""


def armed(site: str, n: int) -> bool:
    """Whether ZHGPT_FAULT names `site@n`: for a point that must get ready before it fires."""
    return bool(_actions(site, n))


def fault_point(site: str, n: int, marker: str | os.PathLike | None = None) -> None:
    """SIGKILL this process (or raise InjectedFault, or send it SIGINT) when ZHGPT_FAULT names `site@n`. With
    `marker`, at most once: the marker file is written first, so a restarted worker passing the same point
    carries on."""
    for action in _actions(site, n):
        if marker is not None:
            if Path(marker).exists():
                return
            Path(marker).parent.mkdir(parents=True, exist_ok=True)
            Path(marker).write_text(f"{site}@{n}\n")
        print(f"{ENV}: {action} at {site}@{n}", flush=True)
        if action == "raise":
            raise InjectedFault(f"{ENV}: injected failure at {site}@{n}")
        if action == "int":
            os.kill(os.getpid(), signal.SIGINT)
            return
        os.kill(os.getpid(), signal.SIGKILL)
