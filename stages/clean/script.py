"""Script and language: script shares over the shared character classes (pipelines/text.py), Traditional-script
detection, OpenCC conversion and the optional fastText language-ID model.

    from stages.clean.script import traditional_fraction, Converter
    traditional_fraction("這是一個測試")   # -> 1.0 of its ideographs are Traditional-only
    Converter("tw2sp").convert("預設的檔案")  # -> "默认的文件"
"""
from __future__ import annotations

import functools

import numpy as np

from pipelines.text import CJK, HANGUL, IDEOGRAPH_RANGES, KANA, char_classes, class_table, codepoints


def script_share(text: str, cls: int) -> float:
    """Share of `cls` among the script characters (ideographs + kana + hangul); 0 when there are none."""
    c = np.bincount(char_classes(text), minlength=9)
    total = c[CJK] + c[KANA] + c[HANGUL]
    return float(c[cls] / total) if total else 0.0


@functools.lru_cache(maxsize=1)
def traditional_chars() -> frozenset[str]:
    """Ideographs that OpenCC's character-level t2s changes: the Traditional forms (4 221 with OpenCC 1.4.2).

    Built by converting every BMP ideograph on its own line, so phrase rules cannot apply.
    """
    import opencc

    chars = [chr(cp) for lo, hi in IDEOGRAPH_RANGES if hi < 0x10000 for cp in range(lo, hi + 1)]
    out = opencc.OpenCC("t2s").convert("\n".join(chars)).split("\n")
    return frozenset(c for c, s in zip(chars, out) if c != s)


@functools.lru_cache(maxsize=1)
def _trad_table() -> np.ndarray:
    """Boolean per BMP code point (every Traditional form OpenCC knows is in the BMP)."""
    table = np.zeros(0x10000, dtype=bool)
    table[[ord(c) for c in traditional_chars()]] = True
    return table


def traditional_fraction(text: str) -> float:
    """Fraction of the document's ideographs that are Traditional-only forms (0.0 for Simplified text).

    Measured on the Debian Reference (OpenCC 1.4.2): every zh-CN page 0.000, zh-TW pages 0.26-0.36.
    """
    cps = codepoints(text)
    n_cjk = int(np.count_nonzero(class_table()[cps] == CJK))
    if not n_cjk:
        return 0.0
    n_trad = int(np.count_nonzero(_trad_table()[cps[cps < 0x10000]]))
    return n_trad / n_cjk


class Converter:
    """One OpenCC converter per configuration, built lazily (loading a config reads its dictionaries)."""

    def __init__(self) -> None:
        self._cache: dict[str, object] = {}

    def convert(self, text: str, config: str) -> str:
        if config not in self._cache:
            import opencc

            self._cache[config] = opencc.OpenCC(config)
        return self._cache[config].convert(text)  # type: ignore[attr-defined]


class LangId:
    """A fastText language-ID model (lid.176, GlotLID or one you trained). Loaded once per task."""

    def __init__(self, path: str, labels: list[str]):
        import fasttext

        fasttext.FastText.eprint = lambda *a, **k: None  # silence the load-time deprecation banner
        self.model = fasttext.load_model(str(path))
        self.labels = set(labels)

    def score(self, text: str) -> float:
        """Probability mass the model puts on the accepted labels (fastText wants one line of text)."""
        labels, probs = self.model.predict(" ".join(text.split())[:20000], k=5)
        return float(sum(p for lab, p in zip(labels, probs) if lab in self.labels))
