"""The committed definition of the quickstart sample site's "content pages": the pages the clean stage's default
preset must mostly keep (tests/stages/test_clean_stage.py asserts >= 90%).

A page is a content page when its extracted text has at least 200 CJK ideographs (every ideograph block) in
lines of running text, i.e. lines of at least 10 characters. The line condition leaves out pages whose Chinese
is mostly a navigation menu (LilyPond's community/glossary pages: 60 one-word menu lines, ~150 ideographs).

    .venv/bin/python scripts/content_pages.py        # prints the content pages of data/sample-site
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.text import CJK, char_classes  # noqa: E402

MIN_CJK = 200
MIN_LINE_CHARS = 10


def running_text_cjk(text: str) -> int:
    """Ideographs in lines of at least MIN_LINE_CHARS characters."""
    lines = [line.strip() for line in text.split("\n")]
    return int(sum(np.count_nonzero(char_classes(line) == CJK) for line in lines if len(line) >= MIN_LINE_CHARS))


def is_content(text: str) -> bool:
    return running_text_cjk(text or "") >= MIN_CJK


def content_ids(table) -> list[str]:
    """Ids of the content pages in a documents table (DOC_SCHEMA), in table order."""
    return [i for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist()) if is_content(t)]


def main() -> None:
    from tests.realtext import sample_docs

    table = sample_docs()
    ids = set(content_ids(table))
    for row in table.to_pylist():
        if row["id"] in ids:
            print(f"{running_text_cjk(row['text']):6d}  {row['url']}")
    print(f"{len(ids)} content pages of {table.num_rows} extracted pages")


if __name__ == "__main__":
    main()
