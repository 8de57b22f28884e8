"""tokenizer stage: lossless SentencePiece training on real Chinese text, pinning, bad input.

Run: `.venv/bin/python -m pytest -q tests/stages/test_tokenizer.py` (about 20 s, most of it extracting the sample).
"""
from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from pipelines.config import ConfigError, validate
from pipelines.io import ContractError
from pipelines.testing.helpers import docs_table, make_stage_data, run_stage
from pipelines.testing.realtext import sample_docs
from stages.tokenizer import TokenizerConfig
from stages.tokenizer.train import MODEL, VOCAB, cut_line, keep_doc, load_processor, training_lines

# What a Chinese web corpus throws at a tokenizer; each must survive decode(encode(x)) unchanged.
HARD = [
    "中文句子，带全角标点：“引号”、《书名号》！？（括号）……——",
    "混合 mixed 中英文 text，数字 2026 年 11 月 26 日，版本 v1.2.3。",
    "def 函数(x):\n\tif x:\n        return x  # 注释\n",
    "表情 😀👍🏽 与罕见字 𠀀𠀁𪚥（扩展 B 区）",
    "全角字母ＡＢＣ和全角数字１２３，半角ABC123",
    "制表符\t\t两个空格  三个空格   行尾空格 \n\n\n多个换行",
    "  行首空格与\r\nWindows 换行",
]



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = sample_docs()
    n = d.num_rows // 3
    return make_stage_data(tmp_path_factory.mktemp("dedupe"), "dedupe",
                           {"docs": [d.slice(0, n), d.slice(n, n), d.slice(2 * n), docs_table(HARD)]})


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory, ray_session):
    cfg = TokenizerConfig(vocab_size=4000, num_threads=2)
    return run_stage("tokenizer", cfg, {"dedupe": corpus}, tmp_path_factory.mktemp("tokenizer"), workers=2)


def test_cut_line_keeps_every_character():
    line = "长段落😀" * 3000  # 18 KB of 3- and 4-byte characters
    pieces = list(cut_line(line, 1000))
    assert "".join(pieces) == line
    assert all(len(p.encode()) <= 1000 for p in pieces) and len(pieces) >= 18
    assert list(training_lines(["甲\n\n乙\n"], 100)) == ["甲", "乙"]


def test_document_sample_is_seeded():
    ids = [f"doc-{i}" for i in range(2000)]
    kept = [i for i in ids if keep_doc(i, 7, 0.25)]
    assert kept == [i for i in ids if keep_doc(i, 7, 0.25)]
    assert 400 < len(kept) < 600
    assert kept != [i for i in ids if keep_doc(i, 8, 0.25)]


def test_trains_lossless_model_with_specials(trained, corpus):
    result, out = trained
    ex = result.extra
    assert (ex["unk_id"], ex["bos_id"], ex["eos_id"], ex["pad_id"]) == (0, 1, 2, 3)
    assert ex["reserved_ids"] == list(range(4, 20)) and ex["vocab_size"] == 4000 and ex["dtype"] == "uint16"
    assert [p.name for p in out.paths("model")] == ["tokenizer.model", "tokenizer.vocab"]
    assert result.artifacts == [MODEL, VOCAB]
    vocab = (out.dir / VOCAB).read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 4000 and vocab[ex["newline_id"]].split("\t")[1] == '"\\n"'
    sp = load_processor((out.dir / MODEL).read_bytes())
    texts = corpus.read_table(columns=["text"]).column("text").to_pylist()
    assert len(texts) > 200
    for text in texts + HARD:
        assert sp.decode(sp.encode(text)) == text
    assert sp.encode("𠀀") and all(sp.is_byte(i) for i in sp.encode("𠀀"))  # Extension B via byte fallback
    assert result.stats["train_docs"] == len(texts) and result.stats["train_lines"] > 20000


def test_same_model_with_one_worker(trained, corpus, tmp_path):
    cfg = TokenizerConfig(vocab_size=4000, num_threads=2)
    _, again = run_stage("tokenizer", cfg, {"dedupe": corpus}, tmp_path / "tok", workers=1)
    assert again.manifest.digests == trained[1].manifest.digests


def test_model_is_the_one_the_whole_stream_trains(corpus, tmp_path, ray_session):
    """Below input_sentence_size lines, one sampling task per shard feeds SentencePiece the very lines, in the same
    order, that one task reading every shard did (here with a document sample): the model trained before."""
    from stages.tokenizer.sample import corpus_docs
    from stages.tokenizer.train import train_model

    cfg = TokenizerConfig(vocab_size=3000, num_threads=2, sample_fraction=0.5, seed=3)
    result, out = run_stage("tokenizer", cfg, {"dedupe": corpus}, tmp_path / "tok", workers=2)
    counts = {"train_docs": 0, "train_chars": 0}
    texts = [t for p in corpus.paths("docs") for _, t in corpus_docs(str(p), cfg.seed, cfg.sample_fraction, counts)]
    lines = list(training_lines(texts, cfg.max_sentence_bytes))
    assert (out.dir / MODEL).read_bytes() == train_model(lines, cfg)
    assert result.stats["train_docs"] == counts["train_docs"] < corpus.manifest.outputs["docs"].rows
    assert result.stats["train_lines"] == result.stats["sentencepiece_lines"] == len(lines)


def test_line_sample_above_the_cap_is_the_same_in_any_process(corpus, tmp_path, ray_session):
    """Above input_sentence_size lines the stage samples the lines itself (SentencePiece's reservoir sample ignores
    its seed, so each process trained another model): the same model with 1 and 2 workers, ~3,000 lines fed."""
    cfg = TokenizerConfig(vocab_size=3000, num_threads=2, input_sentence_size=3000, seed=3)
    two, out2 = run_stage("tokenizer", cfg, {"dedupe": corpus}, tmp_path / "two", workers=2)
    _, out1 = run_stage("tokenizer", cfg, {"dedupe": corpus}, tmp_path / "one", workers=1)
    assert out2.manifest.digests == out1.manifest.digests
    assert two.stats["train_lines"] > 3 * 3000
    assert 3000 - 8 * 3000**0.5 < two.stats["sentencepiece_lines"] <= 3000


def test_long_paragraph_is_not_skipped(tmp_path, ray_session):
    # One 36 KB line: SentencePiece would skip it (max_sentence_length); cut into pieces, its word is learned.
    real = sample_docs().column("text").to_pylist()[:20]
    up = make_stage_data(tmp_path / "dedupe", "dedupe", {"docs": [docs_table(["鳕鱼鲱鱼" * 3000] + real)]})
    cfg = TokenizerConfig(vocab_size=3000, max_sentence_bytes=4096, num_threads=1)
    result, out = run_stage("tokenizer", cfg, {"dedupe": up}, tmp_path / "tok", workers=1)
    sp = load_processor((out.dir / MODEL).read_bytes())
    assert not any(sp.is_byte(i) for i in sp.encode("鳕鲱"))  # only that line has them: skipped, they'd be bytes
    # 36,000 bytes in cuts of <= 4,096 bytes: 9 lines, none skipped
    assert result.stats["train_lines"] == len(list(training_lines(real, 4096))) + 9


def test_pinned_model_trains_nothing(trained, corpus, tmp_path):
    model = trained[1].dir / MODEL
    cfg = TokenizerConfig(model_path=model, vocab_size=999)
    assert cfg.key_dict() == {"model_path": "pinned"}
    want = hashlib.sha256(f"model_path\0{hashlib.sha256(model.read_bytes()).hexdigest()}\n".encode()).hexdigest()
    assert cfg.external_digest() == want  # the pinned model's bytes are part of the cache key
    result, out = run_stage("tokenizer", cfg, {"dedupe": corpus}, tmp_path / "tok", workers=1)
    assert (out.dir / MODEL).read_bytes() == model.read_bytes()
    assert out.manifest.digests == trained[1].manifest.digests
    assert result.extra["pinned"] is True and result.extra["eos_id"] == 2


def test_bad_model_path_is_one_line(tmp_path):
    bad = tmp_path / "not.model"
    bad.write_bytes(b"\x00 this is not a model")
    with pytest.raises(ConfigError) as err:
        validate({"tokenizer": {"model_path": str(bad)}})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("config error: tokenizer.model_path:")
    assert "not a SentencePiece model" in msg
    with pytest.raises(ValidationError, match="path_not_file|does not point to a file"):
        TokenizerConfig(model_path=tmp_path / "missing.model")
    with pytest.raises(ValidationError):
        TokenizerConfig(character_coverage=0.5)


def test_vocab_too_large_for_corpus_fails_clearly(tmp_path, ray_session):
    up = make_stage_data(tmp_path / "dedupe", "dedupe", {"docs": [docs_table(["很短的文本。"] * 5)]})
    with pytest.raises(ValueError,
                       match=r"^SentencePiece training failed: Vocabulary size too high .*vocab_size=5000\)$"):
        run_stage("tokenizer", TokenizerConfig(vocab_size=5000, num_threads=1), {"dedupe": up}, tmp_path / "t")
    empty = make_stage_data(tmp_path / "empty", "dedupe", {"docs": [docs_table(["", ""])]})
    with pytest.raises(ValueError, match="no text to train on"):
        run_stage("tokenizer", TokenizerConfig(num_threads=1), {"dedupe": empty}, tmp_path / "t2")


def test_shard_without_text_is_one_line_before_training(tmp_path, ray_session):
    """Every shard's schema is checked before SentencePiece consumes anything: raised inside its iterator, the error
    came back as "SentencePiece training failed: INTERNAL: ValueError: ..." after training on the first shard."""
    good = docs_table(["机器学习是人工智能的一个分支。"] * 5)
    up = make_stage_data(tmp_path / "dedupe", "dedupe", {"docs": [good, good.drop_columns(["text"])]})
    with pytest.raises(ContractError, match=r"part-00001.parquet: documents shard lacks column\(s\) \['text'\]$"):
        run_stage("tokenizer", TokenizerConfig(vocab_size=400, num_threads=1), {"dedupe": up}, tmp_path / "t")


def test_unigram_option_is_lossless_and_repeatable():
    from stages.tokenizer.train import train_model

    texts = [t for t in sample_docs().column("text").to_pylist() if len(t) < 5000][:30]  # ~69k chars: ~2 s
    cfg = TokenizerConfig(model_type="unigram", vocab_size=2000, num_threads=2)
    model = train_model(training_lines(texts, cfg.max_sentence_bytes), cfg)
    assert model == train_model(training_lines(texts, cfg.max_sentence_bytes), cfg)
    sp = load_processor(model)
    for text in sample_docs().column("text").to_pylist()[:60] + HARD:
        assert sp.decode(sp.encode(text)) == text
