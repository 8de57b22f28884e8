"""Kept only for tests/stages/test_train_common.py, which imports it: the real module is
pipelines/testing/realtext.py. Remove once that test imports pipelines.testing.realtext."""
from pipelines.testing.realtext import SITE, html_files, sample_docs, site_root  # noqa: F401
