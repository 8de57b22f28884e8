"""Unit tests for the clean stage's pure functions: normalisation, script detection, every quality rule on both
sides of its threshold, PII masking (positives and the listed negatives), the line filter on real text.

Run: .venv/bin/python -m pytest -q tests/stages/test_clean_rules.py   (~3 s; no Ray)
"""
from __future__ import annotations

import pytest

from pipelines.testing.realtext import sample_docs
from pipelines.text import CJK, KANA, char_classes
from stages.clean import rules as R
from stages.clean.config import CleanConfig
from stages.clean.core import Cleaner
from stages.clean.lines import filter_lines, line_cjk_ratios
from stages.clean.normalise import is_boilerplate, normalise
from stages.clean.pii import id_checksum_ok, luhn_ok, mask_pii
from stages.clean.script import script_share, traditional_fraction

# Hand-written prose (mine), ~240 characters, used as the "good text" side of each rule.
PROSE = ("今天下午我们在图书馆讨论了开源软件的发展历史。自由软件运动起源于上世纪八十年代，"
         "当时的程序员希望能够自由地阅读、修改和分享源代码。\n"
         "后来，越来越多的公司开始参与到开源项目中来，Linux 内核就是其中最著名的例子之一。"
         "如今，从手机到服务器，几乎每一台设备上都运行着开源代码。\n"
         "当然，开源并不意味着没有规则。每个项目都有自己的许可证，规定了使用者可以做什么、不可以做什么。"
         "理解这些许可证的区别，对于开发者来说非常重要。\n"
         "最后，大家一致认为，参与开源社区不仅能提高编程能力，还能结识来自世界各地的朋友！")


def valid_id(prefix17: str) -> str:
    for check in "0123456789X":
        if id_checksum_ok(prefix17 + check):
            return prefix17 + check
    raise AssertionError


def luhn_complete(prefix: str) -> str:
    return next(prefix + d for d in "0123456789" if luhn_ok(prefix + d))


# --- normalisation -------------------------------------------------------------------------------------------

def test_nfkc_keeps_chinese_punctuation_and_halves_ascii():
    out = normalise("ＡＢＣ　１２３，你好！「引号」（括号）：；？", keep_punct="，！？：；（）")
    assert out == "ABC 123，你好！「引号」（括号）：；？"


def test_nfkc_without_protection_turns_punctuation_ascii():
    assert normalise("你好，世界！", keep_punct="") == "你好,世界!"


def test_halfwidth_when_nfkc_off_keeps_other_characters():
    assert normalise("ＡＢ１２，ﬁ", nfkc=False) == "AB12，ﬁ"


def test_invisible_characters_removed_and_whitespace_folded():
    text = "\ufeff第一\u200b行\x07  \t 文本 \r\n\n\n\n\u00a0第二行\u200d"
    assert normalise(text) == "第一行 文本\n\n第二行"


def test_boilerplate_lines_removed_only_when_alone():
    phrases = frozenset(["展开全文", "更多", "返回顶部", "上一篇", "下一篇"])
    text = "正文第一段。\n展开全文\n【更多】\n返回顶部↑\n上一篇：Debian 12 发布\n更多的人开始使用 Linux 系统，这是一个好现象。"  # noqa: E501
    assert normalise(text, boilerplate=phrases) == "正文第一段。\n更多的人开始使用 Linux 系统，这是一个好现象。"
    assert not is_boilerplate("上一篇文章里我们讨论了很多关于软件包管理的话题，今天继续讨论其他的问题和方法", phrases)


# --- script --------------------------------------------------------------------------------------------------

def test_cjk_class_covers_every_ideograph_block():
    # URO, Ext A (㐀), Ext B (𠀀), Ext G (𰀀), compatibility (豈), 〇; kana and hangul are not ideographs
    classes = char_classes("中㐀𠀀𰀀豈〇かカ한a1")
    assert list(classes[:6] == CJK) == [True] * 6
    assert not (classes[6:] == CJK).any()


def test_kana_and_hangul_shares():
    assert script_share("これは日本語の文章です。ひらがなが多い。", KANA) > 0.5
    assert R.max_kana_share("これは日本語の文章です。ひらがなとカタカナが多い。", 0.2)[0] is False
    assert R.max_kana_share("卡尔・马克思是德国人。", 0.2)[0] is True  # ・ (U+30FB) is punctuation, not kana
    assert R.max_hangul_share("이것은 한국어 문장입니다.", 0.2)[0] is False
    assert R.max_hangul_share(PROSE, 0.2) == (True, "max_hangul_share", 0.0)


def test_traditional_fraction_separates_scripts():
    assert traditional_fraction(PROSE) == 0.0
    assert traditional_fraction("這是一個關於軟體與網路的說明檔案。") > 0.4
    assert traditional_fraction("") == 0.0


# --- quality rules: each on both sides of its threshold --------------------------------------------------------

@pytest.mark.parametrize("rule, good, bad, threshold", [
    (R.min_chars, PROSE, "短文本。", 200),
    (R.max_chars, "短文本。", PROSE, 100),
    (R.min_avg_line_chars, PROSE, "首页\n新闻\n关于\n联系我们\n" * 20, 10),
    (R.min_cjk_ratio, PROSE, "This page is English with 一点 Chinese.", 0.30),
    (R.min_terminal_punct_lines, PROSE, "首页导航\n新闻中心\n产品介绍\n联系我们\n今天天气很好。", 0.3),
    (R.max_dup_line_frac, PROSE, "点击这里下载软件\n" * 5 + PROSE, 0.287),
    (R.max_dup_para_frac, PROSE, ("重复的段落内容在这里。\n\n" * 4) + PROSE, 0.30),
    (R.max_digit_ratio, PROSE, "电话号码：" + "0123456789" * 10, 0.30),
    (R.max_symbol_ratio, PROSE, "促销！" + "★☆♥♦※#" * 20 + PROSE, 0.10),
    (R.min_unique_char_ratio, PROSE, "好好学习天天向上。" * 200, 0.10),
    (R.min_char_entropy, PROSE, "哈哈哈哈哈啊啊啊啊" * 30, 3.0),
])
def test_rule_both_sides(rule, good, bad, threshold):
    ok, name, value = rule(good, threshold)
    assert ok, (name, value)
    ok, name2, value2 = rule(bad, threshold)
    assert not ok and name2 == name and isinstance(value2, float)


def test_values_are_measurements():
    assert R.min_chars("一二三 四五", 0) == (True, "min_chars", 5.0)  # whitespace not counted
    assert R.max_dup_line_frac("甲\n乙\n甲\n甲", 1)[2] == pytest.approx(0.5)
    assert R.min_cjk_ratio("中文ab", 0)[2] == pytest.approx(0.5)
    assert R.min_cjk_ratio("中文 123 !!!", 0)[2] == 1.0  # digits/punctuation judged by their own rules


@pytest.mark.parametrize("n, threshold", [(2, 0.20), (3, 0.18), (4, 0.16)])
def test_top_ngram_both_sides(n, threshold):
    assert R.max_top_ngram_frac(PROSE, threshold, n=n)[0]
    spam = "买买买" * 50 + PROSE if n == 2 else ("点击下载" * 60) + PROSE
    ok, name, value = R.max_top_ngram_frac(spam, threshold, n=n)
    assert not ok and name == f"max_top_{n}gram_frac" and value > threshold


@pytest.mark.parametrize("n", [5, 10])
def test_dup_ngram_both_sides(n):
    assert R.max_dup_ngram_frac(PROSE, 0.60, n=n)[0]
    ok, name, value = R.max_dup_ngram_frac(PROSE * 4, 0.60, n=n)
    assert not ok and name == f"max_dup_{n}gram_frac" and 0.6 < value <= 1.0


def test_dup_ngram_counts_like_gopher():
    # "一二三四五" then its repeat: the first occurrence counts nothing, the repeat its 5 characters
    assert R.dup_ngram_frac("一二三四五一二三四五", 5) == pytest.approx(0.5)
    assert R.dup_ngram_frac("一二三", 5) == 0.0


# --- PII -----------------------------------------------------------------------------------------------------

def test_pii_positives():
    idn = valid_id("11010519900307123")
    card = luhn_complete("622202123456789012")
    text = (f"邮箱 zhang.san@example.com.cn，手机 138-1234-5678 或 +86 13912345678，身份证{idn}，"
            f"银行卡 {card}，服务器 IP地址192.168.1.10 和 fe80::1、2001:db8::8a2e:370:7334。")
    masked, counts = mask_pii(text)
    assert counts == {"email": 1, "id_card": 1, "bank_card": 1, "phone": 2, "ipv4": 1, "ipv6": 2}
    for secret in ("zhang.san", "1234-5678", "13912345678", idn, card, "192.168", "fe80", "2001:db8"):
        assert secret not in masked
    assert "<EMAIL>" in masked and "<ID_CARD>" in masked and "<BANK_CARD>" in masked and "<IP>" in masked


def test_pii_negatives_left_alone():
    bad_id = valid_id("11010519900307123")[:17] + ("0" if valid_id("11010519900307123")[17] != "0" else "1")
    bad_card = luhn_complete("622202123456789012")[:-1] + "0"
    text = ("日期 2024-01-15、2024年1月15日 12:30:45，版本 1.2.3、v1.2.3.4、linux-4.19.0.6，"
            "第 6.2.4.1 节，价格 ¥1999.00 和 $13,800.50，ISBN 978-7-111-12345-6、ISBN 9787111123456，"
            f"随机数 123456789012345678，错的身份证 {bad_id}，错的卡号 {bad_card}，"
            "订单号 20240115138123456789，MAC 00:1a:2b:3c:4d:5e，C++ std::vector。")
    masked, counts = mask_pii(text)
    assert masked == text and sum(counts.values()) == 0


def test_pii_kinds_selectable():
    masked, counts = mask_pii("a@b.cn 13812345678", kinds=("phone",))
    assert masked == "a@b.cn <PHONE>" and counts == {"phone": 1}


def test_terminal_punct_count_matches_the_line_definition():
    text = "第一句。\n标题\n他说：“好。”\n  结尾！  \nEnglish line.\n（括号）\n列表项"
    doc = R.Doc(text)
    assert R.min_terminal_punct_lines(doc, 0)[2] == pytest.approx(sum(map(R.ends_sentence, doc.lines)) / 7) == 4 / 7


# --- line filter ---------------------------------------------------------------------------------------------

def test_line_cjk_ratio_both_sides():
    lines = ["使用 apt 命令安装软件包。",         # 9 ideographs, 3 letters: 0.75
             "运行 sudo apt-get install vim",     # 2 ideographs, 20 letters
             "2024 年 1 月",                      # digits are not letters: 1.0
             "1.2.3 --- |",                      # no letters, no ideographs: 0
             "これは日本語です",                   # kana count as letters: 3 / 8
             ""]
    assert list(line_cjk_ratios(lines)) == pytest.approx([0.75, 2 / 22, 1.0, 0.0, 3 / 8, 0.0])
    text, dropped = filter_lines("\n".join(lines), 0.5, False)
    assert text == "使用 apt 命令安装软件包。\n2024 年 1 月" and dropped == {"line_min_cjk_ratio": 3}
    assert filter_lines("\n".join(lines), 0.05, False)[0].split("\n")[:2] == lines[:2]


def test_line_filter_on_real_debian_text():
    """Debian Reference ch01 (zh-CN) as the clean stage sees it: prose stays, commands/paths/tables go."""
    text = Cleaner(CleanConfig()).normalise(sample_docs("usr/share/debian-reference/ch01.zh-cn.html")
                                            .column("text").to_pylist()[0])
    out, dropped = filter_lines(text, 0.5, True)
    kept, before = out.split("\n"), text.split("\n")
    for line in ["为了在 Linux 字符控制台中使用鼠标，您需要让 gpm(8) 作为后台守护进程（daemon）运行。",
                 "在现代滚轮鼠标上的中央滚轮，被认为是中间键，并可以被当做中间键使用。在 2 键鼠标系统的情况下，"
                 "同时按左键和右键就相当于按中间键。",
                 "less(1) 命令是一个增强版的分页程序（文件内容查看器）。它按照指定的命令参数或标准输出来读取文件。在用"]:  # noqa: E501
        assert line in before and line in kept, line
    for line in ["export PATH", "CDPATH=.:/usr/share/doc:~:~/Desktop:~", "# enable bash-completion", "fi",
                 "| Ctrl-U | 删除光标前到行首的字符 |", "|---|---|"]:
        assert line in before and line not in kept, line
    assert dropped["line_drop_table_rows"] > 100 and dropped["line_min_cjk_ratio"] > 100
    rest = before
    for line in filter(None, kept):  # what stays is the input's own lines, in order, nothing rewritten
        rest = rest[rest.index(line) + 1:]
    assert sum(dropped.values()) == len([x for x in before if x.strip()]) - len([x for x in kept if x])
    assert filter_lines(text, 0.5, True) == (out, dropped)
    assert filter_lines(text, None, False) == (text, {})
