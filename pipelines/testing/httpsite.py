"""A real HTTP site on a loopback address for crawl tests and benchmarks: routes map a path to (status, headers,
body) or to a callable of the server; every request's arrival time is kept in `hits`.

    server = SiteServer({"/": (200, {"Content-Type": "text/html; charset=utf-8"}, "<p>你好</p>".encode())})
    ...crawl server.base...
    server.close()

Its `Date` header is a constant, so what a crawl records (the WARC, and the offsets into it) does not depend on
the clock.
"""
from __future__ import annotations

import http.server
import threading
import time


class SiteServer:
    """A ThreadingHTTPServer on a loopback address; routes map a path to (status, headers, body) or a callable."""

    def __init__(self, routes: dict, host: str = "127.0.0.1"):
        self.routes, self.hits, self.release = routes, {}, threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.setdefault(self.path, []).append(time.monotonic())
                route = server.routes.get(self.path, (404, {}, b"not found"))
                status, headers, body = route(server) if callable(route) else route
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler hung up on purpose (size cap, timeout)

            def log_message(self, *a):
                pass

            def date_time_string(self, timestamp=None):
                return "Thu, 01 Jan 2026 00:00:00 GMT"  # what the server returns must not depend on the clock

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
