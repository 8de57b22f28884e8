"""The fastText quality classifier: what fastText sees of Chinese text, deterministic training, held-out figures.

What fastText sees. fastText splits its input on whitespace and Chinese has none, so a document is a few very
long "words". Two choices were measured on the quickstart's corpus (bench/quality.py prints them):
  chars  every character a token (`"中 文 文 本"`), word n-grams 1-2: character unigrams and bigrams, the usual
         features of Chinese text classifiers, with no word segmenter to ship or version;
  raw    the text as is, with fastText's subword character n-grams (minn 1 - maxn 3) inside each run.
On the sample site's Debian pages (24 positives, as many sampled negatives, 20% held out, mean of 5 seeds) both
reach precision 0.90, recall 0.96, ROC AUC 0.984, and `chars` predicts 1.7-2.0x as fast (2,669 vs 1,588 and
3,564 vs 1,769 documents per CPU-second in two runs: bigrams are hashed once per position, subwords per n-gram
length inside each long run), so it is the default.

Determinism: fastText trains with one thread (hogwild with several threads makes the result depend on their
interleaving) from a fixed seed, in a fresh process (see _TRAIN), on a training file whose order is fixed by
seeded draws, so the model file and every score are the same on every run.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from stages.quality.corpus import Example, draw, pieces

POS, NEG = "__label__keep", "__label__other"


def prepare(text: str, tokens: str) -> str:
    """One line of what fastText sees: characters separated by spaces (`chars`) or the text (`raw`).
    Newlines become spaces: fastText's predict takes one line."""
    if tokens == "chars":
        # " ".join(text) in numpy: every code point followed by a space, the newlines made spaces (runs of
        # spaces are one separator to fastText). 3.6x faster than the join, which cost 60% of predict's time.
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        out = np.full(2 * len(cps), 32, dtype=np.uint32)
        out[::2] = cps
        out[out == 10] = 32
        return out[:-1].tobytes().decode("utf-32-le")
    return " ".join(text.split())


def write_training_file(path: Path, positives: list[Example], negatives: list[Example], tokens: str,
                        seed: int) -> int:
    """Labelled lines in a seeded order (fastText's SGD visits them in file order); returns the line count."""
    rows = [(POS, e) for e in positives] + [(NEG, e) for e in negatives]
    rows.sort(key=lambda r: (draw(r[0] + r[1].id, seed), r[0], r[1].id))
    with open(path, "w", encoding="utf-8") as fh:
        for label, e in rows:
            fh.write(f"{label} {prepare(e.text, tokens)}\n")
    return len(rows)


# fastText keeps state between trainings in one process: the same data and seed gave 3 different models and 3
# "Encountered NaN" failures in 8 trainings in one process, and the same model in 6 fresh processes out of 6.
# So each training runs in a fresh interpreter (~0.1 s) that imports fastText alone.
_TRAIN = """
import json, sys
import fasttext
args = json.loads(sys.argv[1])
try:
    fasttext.train_supervised(input=args.pop("input"), **{k: v for k, v in args.items() if k != "out"}
                              ).save_model(args["out"])
except RuntimeError as exc:
    sys.exit(f"fastText: {exc}")
"""


def train(positives: list[Example], negatives: list[Example], cfg, out: Path) -> None:
    """Train on the examples and save the model to `out` (cfg: stages.quality.config.FastTextConfig)."""
    fd, name = tempfile.mkstemp(suffix=".txt", dir=out.parent)
    os.close(fd)
    args = {"input": name, "out": str(out), "dim": cfg.dim, "epoch": cfg.epoch, "lr": cfg.lr,
            "wordNgrams": cfg.word_ngrams, "minn": cfg.minn, "maxn": cfg.maxn, "bucket": cfg.bucket,
            "loss": "softmax", "thread": 1, "seed": cfg.seed, "verbose": 0}
    try:
        write_training_file(Path(name), pieces(positives, cfg.example_chars), pieces(negatives, cfg.example_chars),
                            cfg.tokens, cfg.seed)
        done = subprocess.run([sys.executable, "-c", _TRAIN, json.dumps(args)], capture_output=True, text=True,
                              check=False)
    finally:
        os.unlink(name)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        hint = ": lower classifier.lr" if "NaN" in why else ""
        raise ValueError(f"quality.classifier: training failed ({why}){hint}")


class Scorer:
    """P(keep) for documents under a saved model."""

    def __init__(self, model_path: str | Path, tokens: str):
        import fasttext

        self.model = fasttext.load_model(str(model_path))
        self.tokens = tokens

    def scores(self, texts: list[str]) -> np.ndarray:
        labels, probs = self.model.predict([prepare(t or "", self.tokens) for t in texts], k=2)
        return np.array([dict(zip(ls, ps)).get(POS, 0.0) for ls, ps in zip(labels, probs)], dtype=np.float64)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum statistic (ties share their mean rank)."""
    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):  # average the ranks of tied scores
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def heldout_figures(scorer: Scorer, pos: list[Example], neg: list[Example], threshold: float = 0.5) -> dict:
    """Precision and recall at `threshold` and ROC AUC on the held-out documents."""
    s = scorer.scores([e.text for e in pos + neg])
    y = np.array([1] * len(pos) + [0] * len(neg))
    pred = s >= threshold
    tp = int((pred & (y == 1)).sum())
    return {"precision": tp / int(pred.sum()) if pred.any() else 0.0, "recall": tp / len(pos) if pos else math.nan,
            "roc_auc": roc_auc(s, y), "heldout_pos": len(pos), "heldout_neg": len(neg)}
