"""Shared fixtures: one local Ray for the whole session, configs written to temp dirs.

Run: `make test` (or `.venv/bin/python -m pytest -q`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Ray workers import test-only stages (tests.stagekit) by name: put the repo root on their path.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


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
        data = {"pipeline": "kit", "work_dir": str(tmp_path / "work"), "plugins": ["tests.stagekit"],
                "ray": {"workers": 2}, "gen": {"shards": 4, "rows_per_shard": 30}, "upper": {}, "count": {}}
        for k, v in sections.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k] = {**data[k], **v}
            else:
                data[k] = v
        return write_config(tmp_path / "kit.yaml", data)

    return make
