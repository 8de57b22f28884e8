"""A synthetic but realistic Chinese corpus for the scale benchmark, made of the sample site's real paragraphs.

Document i is a pure function of (seed, i), so files are written in parallel and any file can be regenerated alone:
- an original: paragraphs of 1-5 sentences drawn at random from the sample site's sentences (Debian's Chinese
  documentation as extracted by trafilatura; the 9.3k sentences of >= 8 characters from its paragraphs that are at
  least 30% ideographs, so that documents pass clean's script rule as Chinese web text does, and lines are new
  combinations, as SentencePiece and dedupe see them on the web), until a log-normal target length is reached
  (median 600 characters, sigma 0.9: mean ~900, 5% under 140 and 5% over 2,600, the shape of web page text);
  one document in ten is Traditional (its sentences from the zh-tw pages: clean converts it), the others Simplified;
- an exact copy (rate `exact`) of a random original elsewhere in the corpus, at another URL;
- a near copy (rate `near`) of a random original: 1% of its characters replaced by other Chinese characters and
  one sentence moved (character 5-gram Jaccard ~0.9 to the original, above dedupe's default 0.8).
Files are JSONL (`url`, `title`, `text`), `per_file` documents each; the planted copies are listed in
`planted.parquet` beside the `jsonl/` folder (copy, original, kind), so the benchmark can score dedupe's recall.
"""
from __future__ import annotations

import json
import math
import random
import re
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io import atomic_path

MEDIAN_CHARS, SIGMA, MIN_SENTENCES = 600, 0.9, 3
EDIT_FRACTION = 0.01
TRADITIONAL = 0.1
POOLS: dict[bool, list[str]] = {}  # traditional? -> sentences
HANZI: str = ""


def load_pool() -> None:
    """The sentence pools and the Chinese characters near copies substitute (from pipelines/testing/realtext.py)."""
    global HANZI
    from pipelines.testing.realtext import sample_docs
    from pipelines.text import cjk_fraction

    for trad in (False, True):
        paras = [p.strip() for d in sample_docs().to_pylist() if ("zh-tw" in d["url"]) == trad
                 for p in d["text"].split("\n") if len(p.strip()) >= 20]
        POOLS[trad] = [s.strip() for p in paras if cjk_fraction(p) >= 0.3
                       for s in re.findall(r"[^。！？；]+[。！？；]?", p) if len(s.strip()) >= 8]
    HANZI = "".join(sorted({c for p in POOLS[False] for c in p if "\u4e00" <= c <= "\u9fff"}))


def url_of(i: int) -> str:
    return f"https://bench.zhgpt.test/doc/{i}"


def _rng(seed: int, i: int) -> random.Random:
    return random.Random((seed << 40) | i)


def kind_of(rng: random.Random, exact: float, near: float) -> str:
    r = rng.random()
    return "exact" if r < exact else "near" if r < exact + near else "original"


def original(seed: int, i: int) -> str:
    rng = _rng(seed, i)
    rng.random()  # the kind draw
    target = min(50_000, rng.lognormvariate(math.log(MEDIAN_CHARS), SIGMA))
    pool = POOLS[rng.random() < TRADITIONAL]
    paras, size, count = [], 0, 0
    while size < target or count < MIN_SENTENCES:
        para = "".join(pool[rng.randrange(len(pool))] for _ in range(rng.randint(1, 5)))
        paras.append(para)
        size += len(para) + 1
        count += 1 + para.count("。")
    return "\n".join(paras)


def near_copy(text: str, rng: random.Random) -> str:
    """Replace 1% of the characters (at least one) and move one sentence to another place."""
    chars = list(text)
    for k in rng.sample(range(len(chars)), max(1, round(len(chars) * EDIT_FRACTION))):
        chars[k] = HANZI[rng.randrange(len(HANZI))]
    sentences = [s for s in "".join(chars).replace("。", "。\0").split("\0") if s]
    if len(sentences) >= 3:
        s = sentences.pop(rng.randrange(len(sentences)))
        sentences.insert(rng.randrange(len(sentences) + 1), s)
    return "".join(sentences)


def document(seed: int, i: int, n: int, exact: float, near: float) -> tuple[str, tuple[int, int, str] | None]:
    """(text, (copy, original, kind) when it is a planted copy)."""
    rng = _rng(seed, i)
    kind = kind_of(rng, exact, near)
    if kind == "original":
        return original(seed, i), None
    while True:  # a random original elsewhere (the same draws whatever the file layout)
        j = rng.randrange(n)
        if j != i and kind_of(_rng(seed, j), exact, near) == "original":
            break
    text = original(seed, j)
    return (text if kind == "exact" else near_copy(text, rng)), (i, j, kind)


def write_file(args: tuple) -> list[tuple[int, int, str]]:
    path, seed, lo, hi, n, exact, near = args
    planted = []
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for i in range(lo, hi):
            text, copy = document(seed, i, n, exact, near)
            fh.write(json.dumps({"url": url_of(i), "title": f"文档 {i}", "text": text}, ensure_ascii=False) + "\n")
            if copy:
                planted.append(copy)
    return planted


def generate(root: Path, n: int, per_file: int, seed: int, exact: float, near: float, procs: int) -> Path:
    """The corpus folder for these settings (written once, reused by later runs); returns it."""
    d = root / f"corpus-{n}-f{per_file}-s{seed}-e{exact}-n{near}"
    if (d / "planted.parquet").exists():
        return d
    (d / "jsonl").mkdir(parents=True, exist_ok=True)
    load_pool()
    jobs = [(str(d / "jsonl" / f"part-{k:05d}.jsonl"), seed, lo, min(n, lo + per_file), n, exact, near)
            for k, lo in enumerate(range(0, n, per_file))]
    with get_context("fork").Pool(procs) as pool:  # the pool of paragraphs is inherited, not pickled
        planted = [c for part in pool.imap(write_file, jobs) for c in part]
    table = pa.table({"copy": [c[0] for c in planted], "original": [c[1] for c in planted],
                      "kind": [c[2] for c in planted]})
    with atomic_path(d / "planted.parquet") as tmp:
        pq.write_table(table, tmp)
    return d
