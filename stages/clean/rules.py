"""Quality rules for Chinese text. Each rule is a pure function `rule(doc, threshold) -> (ok, rule, value)`.

    from stages.clean.rules import Doc, min_cjk_ratio
    min_cjk_ratio(Doc("中文文本 with some English"), 0.30)   # -> (True, "min_cjk_ratio", 0.47...)

`doc` is a `Doc` (or a plain string): a read-only view that computes the code points, character classes and
lines once, so twelve rules over one document cost one pass each. Statistics are over non-whitespace
characters, because Chinese has no spaces between words and layout whitespace says nothing about quality.
Defaults and their sources live in the stage config (stages/clean/config.py).
"""
from __future__ import annotations

import re
from functools import cached_property

import numpy as np

from pipelines.text import CJK, DIGIT, HANGUL, KANA, LETTER, SPACE, SYMBOL, char_classes, codepoints
from stages.clean.ngrams import char_stats, ngram_stats

Result = tuple[bool, str, float]
# A line "ends a sentence" when its last character (after closing quotes/brackets) is one of these:
# Chinese C4's set 。！？…”： plus the ASCII forms that NFKC produces from ！？： and the ；.
TERMINAL = frozenset("。！？…：；.!?:;")
_CLOSERS = "”’\"'」』）)】]》〉"
_TERMINAL_LINE = re.compile("[" + re.escape("".join(sorted(TERMINAL))) + "][" + re.escape(_CLOSERS) + r"]*[^\S\n]*$",
                            re.MULTILINE)
_PARA_SPLIT = re.compile(r"\n\s*\n")
# The distinct-character ratio falls with length (Heaps' law), so it is averaged over 1 000-char windows: there,
# Debian Reference chapters score 0.20-0.28, a page repeating one sentence 0.006, English-only pages ~0.06;
# over whole 40 000-char chapters the same text scores 0.06 and MAP-CC's 0.1 would drop it.
UNIQUE_WINDOW = 1_000


class Doc:
    """A document's text with lazily computed views shared by the rules."""

    def __init__(self, text: str, top_ns: tuple[int, ...] = (2, 3, 4), dup_ns: tuple[int, ...] = tuple(range(5, 11))):
        self.text = text
        self.top_ns, self.dup_ns = top_ns, dup_ns  # the n-gram sizes the configured rules will ask for
        self._top: dict[int, float] = {}
        self._dup: dict[int, float] = {}
        self._chars: dict[int, tuple[float, float]] = {}

    @cached_property
    def lines(self) -> list[str]:
        return [line for line in (raw.strip() for raw in self.text.split("\n")) if line]

    @cached_property
    def classes(self) -> np.ndarray:
        return char_classes(self.text)

    @cached_property
    def counts(self) -> np.ndarray:
        return np.bincount(self.classes, minlength=9)

    @cached_property
    def dense(self) -> np.ndarray:
        """Code points of the non-whitespace characters, as uint64 for hashing."""
        return codepoints(self.text)[self.classes != SPACE].astype(np.uint64)

    @property
    def chars(self) -> int:
        return int(self.dense.size)

    def char_stats(self, window: int) -> tuple[float, float]:
        """(entropy, windowed distinct-character ratio), computed together in one compiled pass."""
        if window not in self._chars:
            self._chars[window] = char_stats(self.dense, window)
        return self._chars[window]

    def top_ngram(self, n: int) -> float:
        if n not in self._top:
            self._ngrams(top=n)
        return self._top[n]

    def dup_ngram(self, n: int) -> float:
        if n not in self._dup:
            self._ngrams(dup=n)
        return self._dup[n]

    def _ngrams(self, top: int | None = None, dup: int | None = None) -> None:
        """Every configured n in one compiled pass: the n-gram hashes are extended from n to n + 1 in place."""
        top_ns = sorted({*self.top_ns, *([top] if top else [])} - set(self._top))
        dup_ns = sorted({*self.dup_ns, *([dup] if dup else [])} - set(self._dup))
        t, d = ngram_stats(self.dense, top_ns, dup_ns)
        self._top.update(zip(top_ns, map(float, t)))
        self._dup.update(zip(dup_ns, map(float, d)))


def as_doc(doc: Doc | str) -> Doc:
    return doc if isinstance(doc, Doc) else Doc(doc)


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else 0.0


def min_chars(doc: Doc | str, threshold: float) -> Result:
    v = as_doc(doc).chars
    return bool(v >= threshold), "min_chars", float(v)


def max_chars(doc: Doc | str, threshold: float) -> Result:
    v = as_doc(doc).chars
    return bool(v <= threshold), "max_chars", float(v)


def min_avg_line_chars(doc: Doc | str, threshold: float) -> Result:
    lines = as_doc(doc).lines
    v = _ratio(sum(map(len, lines)), len(lines))
    return bool(v >= threshold), "min_avg_line_chars", v


def min_cjk_ratio(doc: Doc | str, threshold: float) -> Result:
    """Ideographs (every CJK block) over letters and ideographs: digits, punctuation and symbols are judged by
    their own rules, so a page of commands with Chinese explanations is not counted twice against."""
    c = as_doc(doc).counts
    v = _ratio(c[CJK], c[CJK] + c[KANA] + c[HANGUL] + c[LETTER])
    return bool(v >= threshold), "min_cjk_ratio", v


def max_kana_share(doc: Doc | str, threshold: float) -> Result:
    """Kana among ideographs + kana + hangul: Japanese prose runs at 40-70%, Chinese at ~0."""
    c = as_doc(doc).counts
    v = _ratio(c[KANA], c[CJK] + c[KANA] + c[HANGUL])
    return bool(v <= threshold), "max_kana_share", v


def max_hangul_share(doc: Doc | str, threshold: float) -> Result:
    c = as_doc(doc).counts
    v = _ratio(c[HANGUL], c[CJK] + c[KANA] + c[HANGUL])
    return bool(v <= threshold), "max_hangul_share", v


def ends_sentence(line: str) -> bool:
    core = line.rstrip(_CLOSERS)
    return bool(core) and core[-1] in TERMINAL


def min_terminal_punct_lines(doc: Doc | str, threshold: float) -> Result:
    d = as_doc(doc)
    # one regex pass over the text (~5x faster than testing each line in Python); same count as ends_sentence
    v = _ratio(len(_TERMINAL_LINE.findall(d.text)), len(d.lines))
    return bool(v >= threshold), "min_terminal_punct_lines", v


def _dup_fraction(items: list[str]) -> float:
    return _ratio(len(items) - len(set(items)), len(items))


def max_dup_line_frac(doc: Doc | str, threshold: float) -> Result:
    """Lines that repeat an earlier line, over all non-empty lines (Gopher's dup_line_frac)."""
    v = _dup_fraction(as_doc(doc).lines)
    return bool(v <= threshold), "max_dup_line_frac", v


def max_dup_para_frac(doc: Doc | str, threshold: float) -> Result:
    paras = [p.strip() for p in _PARA_SPLIT.split(as_doc(doc).text) if p.strip()]
    v = _dup_fraction(paras)
    return bool(v <= threshold), "max_dup_para_frac", v


def top_ngram_frac(doc: Doc | str, n: int) -> float:
    """Characters covered by the most frequent character n-gram, over all characters (Gopher, on chars)."""
    return as_doc(doc).top_ngram(n)


def dup_ngram_frac(doc: Doc | str, n: int) -> float:
    """Characters in repeated character n-grams, counted as Gopher does (first occurrences excluded)."""
    return as_doc(doc).dup_ngram(n)


def max_top_ngram_frac(doc: Doc | str, threshold: float, n: int = 2) -> Result:
    v = top_ngram_frac(doc, n)
    return bool(v <= threshold), f"max_top_{n}gram_frac", v


def max_dup_ngram_frac(doc: Doc | str, threshold: float, n: int = 5) -> Result:
    v = dup_ngram_frac(doc, n)
    return bool(v <= threshold), f"max_dup_{n}gram_frac", v


def max_digit_ratio(doc: Doc | str, threshold: float) -> Result:
    d = as_doc(doc)
    v = _ratio(d.counts[DIGIT], d.chars)
    return bool(v <= threshold), "max_digit_ratio", v


def max_symbol_ratio(doc: Doc | str, threshold: float) -> Result:
    """Unicode symbol characters (math, currency, modifiers, emoji, box drawing) plus # over all characters."""
    d = as_doc(doc)
    v = _ratio(d.counts[SYMBOL] + d.text.count("#"), d.chars)
    return bool(v <= threshold), "max_symbol_ratio", v


def unique_char_ratio(doc: Doc | str, window: int = UNIQUE_WINDOW) -> float:
    """Distinct characters over characters, averaged over windows of `window` characters."""
    return as_doc(doc).char_stats(window)[1]


def min_unique_char_ratio(doc: Doc | str, threshold: float) -> Result:
    v = unique_char_ratio(doc)
    return bool(v >= threshold), "min_unique_char_ratio", v


def char_entropy(doc: Doc | str) -> float:
    """Shannon entropy of the character unigram distribution, in bits."""
    return as_doc(doc).char_stats(UNIQUE_WINDOW)[0]


def min_char_entropy(doc: Doc | str, threshold: float) -> Result:
    v = char_entropy(doc)
    return bool(v >= threshold), "min_char_entropy", v
