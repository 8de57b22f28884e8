"""What the tokenizer's sampled-line budget (tokenizer.input_sentence_size) costs and buys: SentencePiece's peak
memory and training time against the lines it is given, and the model's compression on held-out documents.

    PYTHONPATH=$PWD .venv/bin/python bench/tokenizer_budget.py --docs 1000000 --budgets 500000,1000000,2000000

Above the budget the stage trains on a seeded sample of that many lines (stages/tokenizer/sample.py), so this is
the memory the tokenizer stage holds on any corpus larger than the budget. The lines: the scale benchmark's corpus
(pipelines/testing/corpus.py; written once under --root, reused), documents in order (each is an independent draw,
so a prefix is a random sample), split and cut as the stage does; --heldout documents of its last file are held
out. Each budget trains in a fresh spawned process with the stage's default options (BPE, 64,000 pieces), which
reports its own peak RSS (ru_maxrss) and training seconds; compression is held-out characters per token.

Measured on the generated 10^6-document corpus (2 cores, sentencepiece 0.2.x): 1.0 / 1.8 / 3.3 GB peak and 24 / 37 /
75 s at 0.5 / 1 / 2M lines (the stage's old 5M: 7.7 GB in bench/scale.py). Compression stays at 3.654 characters
per token at every budget there, by construction: the generated text recombines 9.3k sentences, which 0.5M lines
already hold many times over. Only a real corpus (--corpus, a folder with jsonl/*.jsonl of {"text": ...}) says
what a bigger budget buys.
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

from pipelines.testing.corpus import generate
from stages.tokenizer.config import TokenizerConfig
from stages.tokenizer.train import load_processor, train_model, training_lines


def corpus_texts(files: list[Path]):
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)["text"]


def train_child(lines_path: str, budget: int) -> tuple[bytes, float, float]:
    """In a fresh process: (model, training seconds, peak RSS MB of this process)."""
    cfg = TokenizerConfig(input_sentence_size=budget)

    def lines():
        with open(lines_path, encoding="utf-8") as fh:
            for line in itertools.islice(fh, budget):
                yield line.rstrip("\n")

    t0 = time.perf_counter()
    model = train_model(lines(), cfg, presampled=True)
    return model, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chars_per_token(model: bytes, texts: list[str]) -> float:
    sp = load_processor(model, "bench")
    return sum(map(len, texts)) / sum(len(ids) for ids in sp.encode(texts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="250000,500000,1000000", help="comma-separated line budgets")
    ap.add_argument("--docs", type=int, default=100_000, help="corpus size (documents, held-out ones included)")
    ap.add_argument("--heldout", type=int, default=2000, help="documents of the last file held out")
    ap.add_argument("--corpus", type=Path, help="a folder with jsonl/*.jsonl (default: the generated corpus)")
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "zhgpt-scale")
    args = ap.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    corpus = args.corpus or generate(args.root, args.docs, 50_000, 0, 0.03, 0.03, 2)
    files = sorted((corpus / "jsonl").glob("*.jsonl"))
    heldout = list(itertools.islice(corpus_texts(files[-1:]), args.heldout))  # the corpus's last file
    cut = TokenizerConfig().max_sentence_bytes
    with tempfile.TemporaryDirectory() as tmp:
        path, n = Path(tmp) / "lines.txt", 0
        with open(path, "w", encoding="utf-8") as fh:
            for line in itertools.islice(training_lines(corpus_texts(files[:-1]), cut), budgets[-1]):
                fh.write(line + "\n")
                n += 1
        print(f"corpus {corpus.name}: {n} training lines available, {len(heldout)} held-out documents")
        print(f"{'lines':>10} {'MB':>7} {'train s':>8} {'peak RSS MB':>12} {'chars/token':>12}")
        for b in [b for b in budgets if b <= n]:
            with get_context("spawn").Pool(1) as pool:
                model, secs, rss = pool.apply(train_child, (str(path), b))
            with open(path, encoding="utf-8") as fh:
                mb = sum(len(line.encode("utf-8")) for line in itertools.islice(fh, b)) / 1e6
            print(f"{b:>10} {mb:>7.0f} {secs:>8.1f} {rss:>12.0f} {chars_per_token(model, heldout):>12.3f}", flush=True)


if __name__ == "__main__":
    main()
