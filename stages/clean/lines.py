"""Line filter: inside a document that the document rules kept as Chinese, drop the lines that are not Chinese
running text, as line-level Chinese pipelines do (Chinese C4 keeps only sentence lines; MAP-CC has line rules).

    from stages.clean.lines import filter_lines
    filter_lines("安装软件包的方法如下。\\n$ sudo apt-get install vim\\n|---|---|", 0.5, True)
    # -> ("安装软件包的方法如下。", Counter({"line_min_cjk_ratio": 1, "line_drop_table_rows": 1}))

Two rules, each switchable from the stage config:
- `line_min_cjk_ratio`: ideographs over letters + ideographs (the document rule's measure) below the threshold.
  This drops commands, paths, code, English sentences, and lines with neither letters nor ideographs (numbers,
  punctuation, table separators), whose ratio is 0.
- `line_drop_table_rows`: lines that begin and end with "|": tables as trafilatura renders them. Cells are
  fragments (package names, sizes, key names), not sentences; the header and "|---|" rows are markup.
Blank lines (paragraph breaks) stay; runs of them left by removed lines fold to one. Deterministic, pure.
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from pipelines.text import CJK, HANGUL, KANA, LETTER, class_table, codepoints

_BLANK_RUNS = re.compile(r"\n{3,}")


def line_cjk_ratios(lines: list[str]) -> np.ndarray:
    """Per line: ideographs / (ideographs + kana + hangul + other letters); 0.0 for a line with none of them."""
    n = len(lines)
    text = "\n".join(lines)
    cps = codepoints(text)
    newline = (cps == 10).astype(np.int64)
    line_of = np.cumsum(newline) - newline  # each character's line number
    cls = class_table()[cps]
    cjk = np.bincount(line_of, weights=cls == CJK, minlength=n)
    letters = np.bincount(line_of, weights=(cls == LETTER) | (cls == KANA) | (cls == HANGUL), minlength=n)
    den = cjk + letters
    return np.divide(cjk, den, out=np.zeros(n), where=den > 0)


def is_table_row(line: str) -> bool:
    s = line.strip()
    return len(s) >= 2 and s[0] == "|" and s[-1] == "|"


def filter_lines(text: str, min_cjk_ratio: float | None, drop_table_rows: bool) -> tuple[str, Counter]:
    """(text without the dropped lines, lines dropped per rule). A line fails the first rule it breaks, tables
    first; empty lines are never counted."""
    lines = text.split("\n")
    ratios = line_cjk_ratios(lines) if min_cjk_ratio is not None else None
    kept, dropped = [], Counter()
    for i, line in enumerate(lines):
        if not line.strip():
            kept.append("")
        elif drop_table_rows and is_table_row(line):
            dropped["line_drop_table_rows"] += 1
        elif ratios is not None and ratios[i] < min_cjk_ratio:
            dropped["line_min_cjk_ratio"] += 1
        else:
            kept.append(line)
    if not dropped:
        return text, dropped
    out = "\n".join(kept)
    return (_BLANK_RUNS.sub("\n\n", out) if "\n\n\n" in out else out).strip(), dropped
