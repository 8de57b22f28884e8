"""A static HTTP server for the quickstart's sample site (data/sample-site/root), on 127.0.0.1 only.

    .venv/bin/python scripts/serve_sample_site.py start [--port 8765] [--root data/sample-site/root]
    .venv/bin/python scripts/serve_sample_site.py stop
    .venv/bin/python scripts/serve_sample_site.py serve      # foreground (Ctrl-C to stop)

`start` forks a background server, waits until it answers, and writes its pid to data/sample-site/server.pid;
`stop` ends that pid only. The Makefile's `run` target uses both.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT / "data" / "sample-site" / "root"
PIDFILE = ROOT / "data" / "sample-site" / "server.pid"
HOST = "127.0.0.1"  # never any other interface
FIXED_DATE = 1764547200.0  # 2025-12-01T00:00:00Z


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".html": "text/html; charset=utf-8"}

    def log_message(self, format: str, *args) -> None:  # quiet: the crawl's log records every fetch
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header is the files' own date, not the clock: the crawl's WARC keeps the response headers,
        so with `crawl.fetched_at` pinned two quickstart crawls write the same bytes (Last-Modified keeps the
        file's mtime, which is passed in)."""
        return super().date_time_string(FIXED_DATE if timestamp is None else timestamp)


def serve(root: Path, port: int) -> None:
    handler = functools.partial(Handler, directory=str(root))
    with http.server.ThreadingHTTPServer((HOST, port), handler) as httpd:
        httpd.serve_forever()


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=1) as resp:
            return resp.status < 500
    except OSError:
        return False


def start(root: Path, port: int) -> None:
    if not root.is_dir():
        sys.exit(f"error: {root}: no such folder; run scripts/fetch_sample_site.sh first")
    if PIDFILE.exists():
        stop()
    proc = subprocess.Popen([sys.executable, __file__, "serve", "--root", str(root), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    for _ in range(100):  # up to 10 s: the server answers within ~0.2 s on a 2-core machine
        if proc.poll() is not None:
            sys.exit(f"error: the server exited: {proc.stderr.read().decode(errors='replace').strip()[-300:]}")
        if _answers(port):
            PIDFILE.write_text(str(proc.pid))
            print(f"serving {root} on http://{HOST}:{port}/ (pid {proc.pid})")
            return
        try:
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
    proc.terminate()
    sys.exit(f"error: no answer on {HOST}:{port} after 10 s")


def stop() -> None:
    if not PIDFILE.exists():
        return
    pid = int(PIDFILE.read_text().strip() or 0)
    PIDFILE.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
        print(f"stopped the sample-site server (pid {pid})")
    except ProcessLookupError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["start", "stop", "serve"])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--port", type=int, default=int(os.environ.get("SAMPLE_SITE_PORT", 8765)))
    a = ap.parse_args()
    if a.action == "serve":
        serve(a.root, a.port)
    elif a.action == "start":
        start(a.root, a.port)
    else:
        stop()


if __name__ == "__main__":
    main()
