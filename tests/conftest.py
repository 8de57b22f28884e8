"""Shared fixtures: one local Ray for the whole session, configs written to temp dirs; tests using the e2e run
are marked `e2e` (pyproject.toml lists the markers; `make test-fast` leaves out e2e, slow and cluster tests).

Run: `make test` (or `.venv/bin/python -m pytest -q`); `make test-fast` for the unit tests.
The test-only stages and helpers live in pipelines/testing/, importable by Ray workers like any stage.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RAY_DEDUP_LOGS", "0")




def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "e2e_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def ray_session():
    import logging

    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    # left running until the interpreter exits: other session fixtures may still use it


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def kit_config(tmp_path):
    """A config for the test-only gen -> upper -> count DAG in a fresh work dir."""

    def make(**sections) -> Path:
        data = {"pipeline": "kit", "work_dir": str(tmp_path / "work"), "plugins": ["pipelines.testing.stagekit"],
                "ray": {"workers": 2}, "gen": {"shards": 4, "rows_per_shard": 30}, "upper": {}, "count": {}}
        for k, v in sections.items():
            if v is None:  # leave the section out (in YAML an empty section means "with its defaults")
                data.pop(k, None)
            elif isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k] = {**data[k], **v}
            else:
                data[k] = v
        return write_config(tmp_path / "kit.yaml", data)

    return make


E2E_PAGES = ["basic-defs", "choosing", "compatibility", "getting-debian", "kernel", "pkg-basics", "support"]


@pytest.fixture(scope="session")
def e2e_run(ray_session, tmp_path_factory):
    """One tiny real run of the data pipeline, built once per session: a 127.0.0.1 site of real Debian FAQ pages
    (plus an exact copy of one page and a page too short to keep), crawl -> clean -> dedupe -> tokenizer -> tokenize.
    Lineage / status / verify / trace tests read it. Yields (config path, RunReport, site info)."""
    import functools
    import http.server
    import shutil
    import threading

    from pipelines.cli import execute
    from pipelines.config import load
    from pipelines.testing.realtext import site_root

    d = tmp_path_factory.mktemp("e2e")
    site = d / "site"
    site.mkdir()
    faq = site_root() / "usr/share/doc/debian/FAQ/zh-cn"
    links = []
    for name in E2E_PAGES:
        shutil.copy(faq / f"{name}.zh-cn.html", site / f"{name}.html")
        links.append(f"{name}.html")
    shutil.copy(faq / "kernel.zh-cn.html", site / "kernel-copy.html")  # an exact duplicate at another URL
    short = "<html><head><title>短</title></head><body><p>这一页只有一句话。</p></body></html>"
    (site / "short.html").write_text(short, encoding="utf-8")
    links += ["kernel-copy.html", "short.html"]
    index = "<html><body>" + "".join(f'<a href="{x}">{x}</a>' for x in links) + "</body></html>"
    (site / "index.html").write_text(index, encoding="utf-8")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    cfg = {"pipeline": "e2e", "work_dir": str(d / "work"), "ray": {"workers": 2},
           "crawl": {"sources": [{"name": "faq", "type": "seeds", "seeds": [f"{base}/index.html"], "max_depth": 1,
                                  "allow_private": ["127.0.0.1"]}], "min_delay": 0, "partitions": 2,
                     "fetched_at": "2026-11-26T00:00:00Z"},
           "clean": {}, "dedupe": {"partitions": 2},
           "tokenizer": {"vocab_size": 2000, "num_threads": 2},
           "tokenize": {"seq_len": 64, "val_fraction": 0.2, "tokens_per_shard": 4096}}
    cfg_path = write_config(d / "e2e.yaml", cfg)
    try:
        report = execute(load(cfg_path))
        yield cfg_path, report, {"base": base, "pages": E2E_PAGES}
    finally:
        httpd.shutdown()
