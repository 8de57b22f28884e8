"""Print the quickstart sample site's "content pages": the pages the clean stage's default preset must mostly keep
(the definition is pipelines/testing/realtext.py `content_ids`; tests/stages/test_clean_stage.py asserts >= 90%).

    .venv/bin/python scripts/content_pages.py        # prints the content pages of data/sample-site
"""
from __future__ import annotations

from pipelines.testing.realtext import content_ids, running_text_cjk, sample_docs


def main() -> None:
    table = sample_docs()
    ids = set(content_ids(table))
    for row in table.to_pylist():
        if row["id"] in ids:
            print(f"{running_text_cjk(row['text']):6d}  {row['url']}")
    print(f"{len(ids)} content pages of {table.num_rows} extracted pages")


if __name__ == "__main__":
    main()
