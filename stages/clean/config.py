"""The clean stage's config: every threshold typed, documented and switchable (`null` turns a rule off).

Defaults are a Chinese web preset drawn from published pipelines (figures in shared/docs/research/data_anchors.md §5):
ChineseWebText (CWT), MAP-CC, FineWeb-2 `cmn_Hani`, Chinese C4, Gopher. Where a default departs from its source
the field says why. Importing this module is cheap (pydantic only).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from pipelines.stage import ExternalFile, StageConfig
from stages.clean.normalise import KEEP_PUNCT

PII_TYPES = ("email", "id_card", "bank_card", "phone", "ipv4", "ipv6")
BOILERPLATE = ["展开全文", "阅读全文", "查看全文", "显示全文", "更多", "查看更多", "点击查看更多", "加载更多", "返回顶部",  # noqa: E501
               "回到顶部", "返回首页", "上一篇", "下一篇", "上一页", "下一页", "上一章", "下一章", "分享到", "打印本页",
               "关闭窗口", "收藏本站", "设为首页", "展開全文", "閱讀全文", "更多內容", "返回頂部", "回到頂部"]


class CleanConfig(StageConfig):
    """Chinese-first normalisation, Traditional->Simplified, script/language and quality rules, PII masking."""

    # --- normalisation ---
    nfkc: bool = Field(True, description="Unicode NFKC (full-width letters/digits to half-width, ligatures, U+3000)")
    keep_punct: str = Field(KEEP_PUNCT, description="characters NFKC must leave alone (Chinese full-width "
                            "punctuation it would turn into ASCII); 。、「」『』【】《》 are not touched by "
                            "NFKC anyway")
    halfwidth: bool = Field(True, description="full-width ASCII letters/digits to half-width when nfkc is off")
    remove_invisible: bool = Field(True, description="drop control and zero-width characters (U+200B, BOM, ...)")
    fold_whitespace: bool = Field(True, description="runs of blanks -> one space; 3+ newlines -> one blank line")
    boilerplate: Optional[list[str]] = Field(BOILERPLATE, description="navigation phrases removed when a line is "
                                             "only that phrase (optionally bracketed, or followed by ：title)")

    # --- Traditional -> Simplified ---
    traditional: Literal["convert", "keep", "drop"] = Field(
        "convert", description="what to do with a Traditional-script document (CWT drops, Data-Juicer converts)")
    traditional_min_fraction: float = Field(0.05, ge=0, le=1, description="a document is Traditional when at least "
                                            "this fraction of its ideographs are Traditional-only forms (Debian "
                                            "Reference: zh-CN 0.000, zh-TW 0.26-0.36)")
    opencc_config: str = Field("tw2sp", description="OpenCC config for Traditional documents; tw2sp converts "
                               "Taiwan phrasing too (檔案->文件, 預設->默认), scripts/measure_opencc.py measures it")
    opencc_by_source: dict[str, str] = Field({}, description="source_name -> OpenCC config (e.g. {hk-news: hk2s})")
    opencc_by_host_suffix: dict[str, str] = Field({".hk": "hk2s", ".mo": "hk2s"},
                                                  description="URL host suffix -> OpenCC config")

    # --- script and language ---
    max_kana_share: Optional[float] = Field(0.2, ge=0, le=1, description="kana among ideographs+kana+hangul "
                                            "(Japanese prose 0.4-0.7, Chinese ~0)")
    max_hangul_share: Optional[float] = Field(0.2, ge=0, le=1, description="hangul among ideographs+kana+hangul")
    langid_model: Optional[ExternalFile] = Field(None, description="optional fastText language-ID model "
                                             "(lid.176.bin, GlotLID); without it the script rules decide")
    langid_labels: list[str] = Field(["__label__zh", "__label__cmn_Hani", "__label__zho_Hani"],
                                     description="labels that count as Chinese")
    langid_min_score: float = Field(0.5, ge=0, le=1, description="CCNet/CWT 0.5 (MAP-CC 0.4, Data-Juicer 0.8)")

    # --- quality rules (statistics over non-whitespace characters) ---
    min_chars: Optional[int] = Field(200, ge=0, description="CWT drops <= 200 chars")
    max_chars: Optional[int] = Field(None, ge=1, description="MAP-CC caps at 10 000; off: a book chapter is good text")
    min_avg_line_chars: Optional[float] = Field(10, ge=0, description="CWT: average line length >= 10")
    min_cjk_ratio: Optional[float] = Field(0.30, ge=0, le=1, description="CWT 30%; ideographs of every block over "
                                           "letters+ideographs (digits/symbols have their own rules)")
    min_terminal_punct_lines: Optional[float] = Field(0.106, ge=0, le=1, description="fraction of lines ending in "
                                                      "。！？…：；.!?:; (FineWeb-2 cmn line_punct_thr 0.106)")
    max_dup_line_frac: Optional[float] = Field(0.287, ge=0, le=1, description="FineWeb-2 cmn dup_line_frac")
    max_dup_para_frac: Optional[float] = Field(0.30, ge=0, le=1, description="Gopher duplicate paragraph fraction")
    max_top_ngram_frac: Optional[dict[int, float]] = Field({2: 0.20, 3: 0.18, 4: 0.16},
                                                           description="MAP-CC top char n-gram fractions")
    max_dup_ngram_frac: Optional[dict[int, float]] = Field({n: 0.60 for n in range(5, 11)},
                                                           description="MAP-CC duplicate char 5-10-gram fractions")
    max_digit_ratio: Optional[float] = Field(0.30, ge=0, le=1, description="MAP-CC digits <= 0.3")
    max_symbol_ratio: Optional[float] = Field(0.10, ge=0, le=1, description="MAP-CC hashtag/ellipsis <= 0.1, "
                                              "applied to all Unicode symbols and #")
    min_unique_char_ratio: Optional[float] = Field(0.10, ge=0, le=1, description="MAP-CC > 0.1; averaged over "
                                                   "1 000-char windows so long documents are not penalised")
    min_char_entropy: Optional[float] = Field(3.0, ge=0, description="MAP-CC unigram char entropy >= 3 bits")
    sensitive_words: Optional[ExternalFile] = Field(None, description="UTF-8 file, one word per line (# comments)")
    max_sensitive_per_line: Optional[float] = Field(0.5, ge=0, description="CWT: distinct hits per line > 0.5 drops")
    max_sensitive_per_doc: Optional[int] = Field(3, ge=0, description="Chinese C4: > 3 occurrences drops")

    # --- line filter: inside a document the rules above kept, drop lines that are not Chinese running text ---
    line_min_cjk_ratio: Optional[float] = Field(None, ge=0, le=1, description="drop a line whose ideographs are "
                                                "below this share of its letters + ideographs (commands, paths, "
                                                "English; lines of only digits/punctuation score 0); null: off")
    line_drop_table_rows: bool = Field(False, description="drop lines that begin and end with | (tables as the "
                                       "crawl's extractor renders them: cell fragments and markup rows)")

    # --- PII ---
    pii: Optional[list[Literal["email", "id_card", "bank_card", "phone", "ipv4", "ipv6"]]] = Field(
        list(PII_TYPES), description="PII kinds masked with typed placeholders (<EMAIL>, <PHONE>, ...)")

    @field_validator("opencc_config")
    @classmethod
    def _known_config(cls, v: str) -> str:
        return _check_opencc(v)

    @field_validator("opencc_by_source", "opencc_by_host_suffix")
    @classmethod
    def _known_configs(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: _check_opencc(c) for k, c in v.items()}

    @field_validator("max_top_ngram_frac", "max_dup_ngram_frac")
    @classmethod
    def _ngram_sizes(cls, v: Optional[dict[int, float]]) -> Optional[dict[int, float]]:
        for n, thr in (v or {}).items():
            if not 1 <= n <= 32 or not 0 <= thr <= 1:
                raise ValueError(f"n-gram size {n} must be 1-32 and its fraction {thr} within 0-1")
        return v


_OPENCC_1_1_6 = ["hk2s", "hk2t", "jp2t", "s2hk", "s2t", "s2tw", "s2twp", "t2hk", "t2jp", "t2s", "t2tw", "tw2s",
                 "tw2sp", "tw2t"]


def _check_opencc(name: str) -> str:
    import opencc

    # opencc.CONFIGS is in the official bindings (OpenCC >= 1.1.7); the list below is what 1.1.6 ships
    shipped = getattr(opencc, "CONFIGS", None) or [f"{c}.json" for c in _OPENCC_1_1_6]
    known = sorted(c.removesuffix(".json") for c in shipped)
    if name.removesuffix(".json") not in known:
        raise ValueError(f"unknown OpenCC config {name!r}; use one of {', '.join(known)}")
    return name.removesuffix(".json")
