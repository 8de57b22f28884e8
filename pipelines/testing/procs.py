"""What a benchmark's processes cost, read from /proc (Linux): CPU seconds of a process and all its descendants,
and the peak resident memory of each, by role (the driver, Ray workers, Ray's own daemons).

- CPU: utime + stime of every process seen in the tree, as last sampled (every `period` seconds, and at each mark),
  kept after the process exits. Reaped children's cutime cannot stand in for that: the raylet does not wait for the
  workers it stops (their seconds never reach its cutime; measured: a tokenize stage came out at -2 CPU-s that way).
  What a sample can miss: the last < `period` of a process that exits, and processes that live shorter than that.
- Memory: VmHWM (peak RSS) per process. `reset_peaks()` writes 5 to /proc/PID/clear_refs, which sets VmHWM back
  to the current RSS: a stage's peak is then the largest VmHWM seen until its end, idle workers included (memory a
  worker keeps from the previous stage counts against the stage it sits through).
- Ray workers are recognised by their command line ("ray::..." once named, or default_worker.py before); a
  process a worker starts (a trainer in a child process) counts as a worker too.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
ROLES = ("driver", "workers", "ray")


def read_proc(pid: int, name: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:  # gone, or not ours to read
        return None


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, own CPU seconds, start time in ticks: with the pid, a process's identity)."""
    text = read_proc(pid, "stat")
    if text is None:
        return None
    f = text.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields after it are fixed
    return int(f[1]), (int(f[11]) + int(f[12])) / TICK, int(f[19])


def _status(pid: int) -> dict[str, str]:
    """/proc/PID/status as {field: value text} (empty when the process is gone)."""
    out = {}
    for line in (read_proc(pid, "status") or "").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name] = value
    return out


def _mb(status: dict[str, str], key: str) -> float:
    """A kB field of a parsed status (VmHWM, VmRSS, RssAnon...) in MB; 0 when absent."""
    value = status.get(key)
    return int(value.split()[0]) / 1024 if value is not None else 0.0


def rss_mb(pid: int, key: str = "VmHWM") -> float:
    """VmHWM (peak resident set) or VmRSS (resident now) of a process, in MB."""
    return _mb(_status(pid), key)


def is_ray_worker(pid: int) -> bool:
    cmd = (read_proc(pid, "cmdline") or "").replace("\0", " ")
    return cmd.startswith("ray::") or "default_worker.py" in cmd


def descendants(root: int) -> list[int]:
    """root and every process below it, each after its parent."""
    return [pid for pid, _, _ in _tree(root)]


def _tree(root: int) -> list[tuple[int, int, tuple[int, float, int] | None]]:
    """(pid, parent pid, its _stat as read to build the tree) of root and every process below it, parents first
    (root's stat is None when it is gone)."""
    kids: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, float, int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            stats[int(d)] = st
            kids.setdefault(st[0], []).append(int(d))
    out, todo = [], [(root, 0)]
    while todo:
        pid, parent = todo.pop()
        out.append((pid, parent, stats.get(pid)))
        todo.extend((k, pid) for k in kids.get(pid, []))
    return out


def ray_workers(root: int) -> list[int]:
    return [p for p in descendants(root) if is_ray_worker(p)]


def worker_peak_rss_mb(root: int | None = None) -> float:
    """Largest VmHWM among the Ray worker processes under `root` (default: this process)."""
    return max((rss_mb(p) for p in ray_workers(root or os.getpid())), default=0.0)


@dataclass
class Mark:
    """Totals at one instant: wall clock, CPU seconds of the whole tree, and CPU seconds by role."""
    t: float
    cpu: float
    by_role: dict[str, float] = field(default_factory=dict)


class TreeMonitor:
    """Samples a process tree in a background thread; `mark()` and `peaks()` bracket a stage."""

    def __init__(self, root: int, period: float = 0.5, timeline: bool = False):
        self.root, self.period = root, period
        # (t, driver resident, largest worker resident, largest worker anonymous) MB, when asked for
        self.timeline: list[tuple[float, float, float, float]] | None = [] if timeline else None
        self.roles: dict[tuple, str] = {}  # (pid, start time) -> role
        self.cpu: dict[tuple, float] = {}  # own CPU seconds, last seen (kept after the process exits)
        self.peak: dict[tuple, float] = {}  # VmHWM since the last reset, last seen
        self.anon: dict[tuple, float] = {}  # largest RssAnon sampled since the last reset
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(self.period):
            self.sample()

    def sample(self) -> None:
        """Update every live process of the tree (and the timeline: resident MB now, largest by role)."""
        now = {r: 0.0 for r in ROLES}
        anon = {r: 0.0 for r in ROLES}
        with self.lock:
            role_of: dict[int, str] = {}  # a process a worker started (a trainer in a child) counts as a worker
            for pid, parent, st in _tree(self.root):
                if st is None:
                    continue
                key = (pid, st[2])
                if key not in self.roles:
                    self.roles[key] = ("driver" if pid == self.root else "workers"
                                       if is_ray_worker(pid) or role_of.get(parent) == "workers" else "ray")
                role_of[pid] = self.roles[key]
                self.cpu[key] = st[1]
                status = _status(pid)
                self.peak[key] = max(self.peak.get(key, 0.0), _mb(status, "VmHWM"))
                self.anon[key] = max(self.anon.get(key, 0.0), _mb(status, "RssAnon"))
                if self.timeline is not None:
                    role = self.roles[key]
                    now[role] = max(now[role], _mb(status, "VmRSS"))
                    anon[role] = max(anon[role], _mb(status, "RssAnon"))
            if self.timeline is not None:
                self.timeline.append((time.perf_counter(), now["driver"], now["workers"], anon["workers"]))

    def mark(self) -> Mark:
        self.sample()
        with self.lock:
            by_role = {r: sum(c for p, c in self.cpu.items() if self.roles[p] == r) for r in ROLES}
        return Mark(time.perf_counter(), sum(by_role.values()), by_role)

    def reset_peaks(self) -> None:
        with self.lock:
            for pid in descendants(self.root):
                try:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
                except OSError:
                    pass
            self.peak.clear()
            self.anon.clear()

    def peaks(self) -> dict[str, float]:
        """Largest peak RSS (MB) by role since the last reset, and (`<role>_anon`) the largest anonymous memory
        sampled: resident memory that is not a mapped file's pages. Those (dedupe's memory-mapped signature files,
        3.8 GB of the 3.8 GB resident in its verify tasks at 10^6 documents, 0.8 GB anonymous) are page cache the
        kernel takes back under pressure."""
        self.sample()
        with self.lock:
            out = {r: max((m for p, m in self.peak.items() if self.roles[p] == r), default=0.0) for r in ROLES}
            out.update({f"{r}_anon": max((m for p, m in self.anon.items() if self.roles[p] == r), default=0.0)
                        for r in ROLES})
            return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
