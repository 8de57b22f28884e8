"""The perplexity scorer under a pinned model: bits per byte against a direct transformers computation, CCNet
buckets and a perplexity keep rule in the stage, and a pinned model whose tokenizer does not match.

The pinned model is a small randomly initialised LlamaForCausalLM saved in the layout stages/train/export.py
writes (config.json, model.safetensors, tokenizer.model, tokenizer_config.json), with a SentencePiece model
trained here on sample-site text: a real export's format, at a size that builds in a second.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pytest

from pipelines.config import ConfigError, load
from pipelines.testing.helpers import make_stage_data, run_stage
from pipelines.testing.realtext import sample_docs
from stages.quality.config import QualityConfig
from stages.quality.perplexity import BitsPerByte, check_export
from tests.conftest import write_config


def _tokenizer(path, vocab: int, texts: list[str]) -> None:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(path), vocab_size=vocab,
                                   model_type="bpe", character_coverage=0.98, split_digits=True, pad_id=3,
                                   byte_fallback=True,
                                   normalization_rule_name="identity", add_dummy_prefix=False,
                                   remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                                   user_defined_symbols=["\n"], num_threads=1, minloglevel=2)  # as the tokenizer stage


def _lines(docs: int) -> list[str]:
    return [line for t in sample_docs().column("text").to_pylist()[:docs] for line in t.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("export")
    _tokenizer(d / "tokenizer", 2000, _lines(60))
    (d / "tokenizer.vocab").unlink()
    torch.manual_seed(0)
    conf = LlamaConfig(vocab_size=2000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                       tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(conf).save_pretrained(d, safe_serialization=True)
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": False, "add_eos_token": False, "legacy": False,
        "add_prefix_space": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return d


def _docs() -> list[str]:
    return [t[:n] for t, n in zip(sample_docs().column("text").to_pylist()[100:103], (40, 70, 100))]


def test_bits_per_byte_equals_a_direct_transformers_computation(export):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = _docs()
    ours = BitsPerByte(export, batch=2).score(texts)
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    for text, got in zip(texts, ours):
        ids = [model.config.eos_token_id, *tok(text)["input_ids"]]
        assert len(ids) <= 64  # one window: the direct computation needs no chunking
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()  # mean nats
        want = loss * (len(ids) - 1) / math.log(2) / len(text.encode("utf-8"))
        assert got == pytest.approx(want, rel=1e-4)


def test_long_documents_are_scored_in_windows_that_predict_every_token_once(export):
    scorer = BitsPerByte(export, window=16)
    ids = scorer.sp.encode(sample_docs().column("text")[5].as_py()[:300])
    wins = scorer.windows(ids)
    assert all(len(w) <= 16 for w in wins) and sum(len(w) - 1 for w in wins) == len(ids)
    assert [t for w in wins for t in w[1:]] == ids


def test_perplexity_buckets_and_keep_rule_per_source(ray_session, export, tmp_path):
    t = sample_docs().slice(0, 60)
    t = t.set_column(1, "source_name", pa.array(["a"] * 30 + ["b"] * 30))
    t = t.set_column(6, "text", pa.array([x[:400] for x in t.column("text").to_pylist()]))  # 4-7 windows each
    up = make_stage_data(tmp_path / "dedupe", "dedupe", {"docs": [t.slice(0, 30), t.slice(30, 30)]})
    cfg = QualityConfig(perplexity={"model": export}, keep_by="perplexity", keep_fraction=0.5)
    result, out = run_stage("quality", cfg, {"dedupe": up}, tmp_path / "q")
    scores = out.read_table("scores").to_pylist()
    for source in ("a", "b"):
        mine = [r for r in scores if r["source_name"] == source]
        assert [sum(r["quality_bucket"] == b for r in mine) for b in ("head", "middle", "tail")] == [10, 10, 10]
        head_cut = result.stats[f"bucket_cut.{source}.head"]
        assert max(r["quality_bpb"] for r in mine if r["quality_bucket"] == "head") <= head_cut
        kept = [r for r in mine if r["kept"]]
        assert len(kept) == 15 and max(r["quality_bpb"] for r in kept) == result.stats[f"threshold.{source}"]
    rejects = out.read_table("rejects").to_pylist()
    assert {r["rule"] for r in rejects} == {"perplexity"} and all(r["value"] > r["threshold"] for r in rejects)
    assert "model" in out.manifest.outputs and not out.manifest.outputs["model"].shards  # no classifier here
    assert np.isfinite([r["quality_bpb"] for r in scores]).all()


def test_a_pinned_model_whose_tokenizer_does_not_match_is_one_line_at_load(export, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(export, other)
    _tokenizer(other / "tok", 1500, _lines(20))
    shutil.move(other / "tok.model", other / "tokenizer.model")
    assert "has 1500 pieces but the model's vocab_size is 2000" in check_export(other)
    data = {"work_dir": str(tmp_path / "w"),
            "crawl": {"sources": [{"name": "x", "type": "seeds", "seeds": ["http://127.0.0.1:9/"]}]},
            "clean": {}, "dedupe": {}, "quality": {"perplexity": {"model": str(other)}}}
    with pytest.raises(ConfigError) as err:
        load(write_config(tmp_path / "c.yaml", data))
    assert str(err.value).startswith("config error: quality.perplexity.model") and "\n" not in str(err.value)
    assert "not the tokenizer it was trained with" in str(err.value)
    (other / "tokenizer.model").unlink()
    assert "no tokenizer.model" in check_export(other)
