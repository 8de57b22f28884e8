"""The classifier's examples: reference documents read from files or a stage directory, a seeded sample of the
stage's input as negatives, and a held-out split by document. Pure functions over pyarrow tables.

Reference files: `.txt` (the whole file is one document), `.jsonl` (one JSON object a line, its `text` field),
`.parquet` (one row a document, its text column), or a stage directory (a `manifest.json` beside its outputs:
its `docs` output, else its primary one). Every example carries an id (the file's `id` column, else a hash of
where it came from and its text) and a url (the `url` column or field, else None): negatives drawn from the
input never include a document whose url or text is among the positives.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.dataset import StageData, doc_id
from pipelines.io import read_docs, read_table

# Fewer documents than this in a class cannot train a classifier worth its name: the held-out split (20% by
# default) would keep fewer than 2 of them, too few for precision, recall or a ROC AUC to mean anything.
MIN_DOCS = 10


@dataclass(frozen=True)
class Example:
    id: str
    url: str | None
    text: str


def _parquet_examples(path: Path, column: str) -> list[Example]:
    t = read_table(path)
    if column not in t.column_names:
        raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(t.column_names)})")
    texts = t.column(column).to_pylist()
    ids = t.column("id").to_pylist() if "id" in t.column_names else [None] * len(texts)
    urls = t.column("url").to_pylist() if "url" in t.column_names else [None] * len(texts)
    return [Example(i or doc_id(f"{path.name}#{n}", x), u, x) for n, (i, u, x) in enumerate(zip(ids, urls, texts))
            if x and x.strip()]


def _jsonl_examples(path: Path, column: str) -> list[Example]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path} line {n + 1}: not a JSON object") from None
        x = obj.get(column) if isinstance(obj, dict) else None
        if isinstance(x, str) and x.strip():
            out.append(Example(obj.get("id") or doc_id(f"{path.name}#{n}", x), obj.get("url"), x))
    return out


def _stage_dir_paths(path: Path) -> list[Path]:
    data = StageData.open(path)
    return data.paths("docs" if "docs" in data.manifest.outputs else None)


def read_examples(paths: list[Path], column: str = "text") -> list[Example]:
    """Every non-empty document of the given files / stage directories, in the order given."""
    out: list[Example] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for shard in _stage_dir_paths(p):
                out += _parquet_examples(shard, column)
        elif p.suffix == ".parquet":
            out += _parquet_examples(p, column)
        elif p.suffix == ".jsonl":
            out += _jsonl_examples(p, column)
        elif p.suffix == ".txt":
            x = p.read_text(encoding="utf-8")
            if x.strip():
                out.append(Example(doc_id(p.name, x), None, x))
        else:
            raise ValueError(f"{p}: not a .txt, .jsonl or .parquet file, nor a stage directory")
    return out


def text_key(text: str) -> str:
    """Whitespace-insensitive identity of a text (for keeping positives out of the negatives)."""
    return hashlib.blake2b("".join(text.split()).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def draw(key: str, seed: int) -> int:
    """A seeded 64-bit draw per id: samples and splits by draw do not depend on file order or worker count."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, key=seed.to_bytes(8, "little")).digest(),
                          "little")


def sample_negatives(shards: list[Path], k: int, seed: int, positives: list[Example]) -> list[Example]:
    """The k input documents with the smallest draws, leaving out those whose url or text is a positive's."""
    urls = {e.url for e in positives if e.url}
    texts = {text_key(e.text) for e in positives}
    cands: list[tuple[int, int, str]] = []
    for i, path in enumerate(shards):
        t = read_docs(path, ["id", "url"])
        for id_, url in zip(t.column("id").to_pylist(), t.column("url").to_pylist()):
            if url not in urls:
                cands.append((draw(id_, seed), i, id_))
    cands.sort()
    picked: list[Example] = []
    for i in sorted({i for _, i, _ in cands}):  # read texts shard by shard, more than k in case some are positives
        want = {id_ for _, j, id_ in cands[:k + len(texts)] if j == i}
        if want:
            t = read_docs(shards[i], ["id", "url", "text"])
            t = t.filter(pc.is_in(t.column("id"), pa.array(sorted(want), pa.string())))
            picked += [Example(a, b, c) for a, b, c in zip(*(t.column(n).to_pylist() for n in ("id", "url", "text")))
                       if c and c.strip() and text_key(c) not in texts]
    order = {id_: d for d, _, id_ in cands}
    return sorted(picked, key=lambda e: (order[e.id], e.id))[:k]


def holdout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): the ceil(fraction * n) documents with the smallest draws are held out."""
    ranked = sorted(examples, key=lambda e: (draw(e.id, seed), e.id))
    n = math.ceil(fraction * len(ranked))
    return ranked[n:], ranked[:n]


def pieces(examples: list[Example], chars: int) -> list[Example]:
    """Training examples: each document cut at line ends into pieces of at least `chars` characters (the last
    may be shorter). With a few dozen reference documents, whole documents give fastText too few updates: on
    the sample site, 19 + 19 whole documents left every score near 0.5 (held-out recall 0 at 0.5), 300-char
    pieces gave recall 1.0."""
    out = []
    for e in examples:
        buf: list[str] = []
        size = k = 0
        for line in e.text.split("\n"):
            buf.append(line)
            size += len(line) + 1
            if size >= chars:
                out.append(Example(f"{e.id}#{k}", e.url, "\n".join(buf)))
                buf, size, k = [], 0, k + 1
        if "".join(buf).strip():
            out.append(Example(f"{e.id}#{k}", e.url, "\n".join(buf)))
    return out
