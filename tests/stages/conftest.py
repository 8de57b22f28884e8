"""Fixtures shared by the stage tests."""
from __future__ import annotations

import pytest

from pipelines.dataset import StageData
from pipelines.testing.tokenrows import make_tokenize


@pytest.fixture(scope="session")
def tokenized(tmp_path_factory) -> StageData:
    return make_tokenize(tmp_path_factory.mktemp("tokenize"))
