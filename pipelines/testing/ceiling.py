"""The machine's scaling ceiling, shared by the benchmarks: wall seconds for n plain processes to do the same
work at the same time. n * together_wall(args, 1) / together_wall(args, n) is the n-worker speed-up the machine
itself gives, which a stage's speed-up is printed beside.

The child (`args`) loads what it needs, prints a line, waits for a line on stdin, works, and prints a line.
"""
from __future__ import annotations

import subprocess
import time


def together_wall(args: list[str], n: int, env: dict | None = None) -> float:
    procs = [subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(n)]
    for p in procs:
        p.stdout.readline()  # loaded: imports and data are outside the clock
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        p.stdout.readline()
    wall = time.perf_counter() - t0
    for p in procs:
        p.wait()
    return wall
