"""Token shards for the train tests and benches: real Chinese text from the sample site, a SentencePiece model
trained here, and train/val shards with a manifest in the tokenize stage's format."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.dataset import Manifest, Output, StageData, write_arrow, write_file, write_manifest
from pipelines.testing.realtext import sample_docs

SEQ_LEN = 64
VOCAB = 2000


def corpus() -> list[tuple[str, str]]:
    """(source_name, text): Debian Reference (zh-CN) as `reference`, the Debian FAQ (zh-CN) as `faq`."""
    ref = sample_docs("usr/share/debian-reference/*.zh-cn.html").column("text").to_pylist()
    faq = sample_docs("usr/share/doc/debian/FAQ/zh-cn/*.html").column("text").to_pylist()
    return [("reference", t) for t in ref] + [("faq", t) for t in faq]


def train_spm(texts: list[str], vocab: int = VOCAB) -> bytes:
    """A lossless BPE model trained the way the tokenizer stage trains (identity normalisation, spaces kept,
    no dummy prefix, "\\n" a piece, byte fallback, split digits, reserved control ids)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    lines = [ln for t in texts for ln in t.splitlines() if ln.strip()]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab,
                                   model_type="bpe", byte_fallback=True, character_coverage=0.9995,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True,
                                   user_defined_symbols=["\n"], control_symbols=[f"<reserved_{i}>" for i in range(4)],
                                   num_threads=1, minloglevel=2)
    return buf.getvalue()


def pack(docs: list[tuple[str, str]], sp, seq_len: int, eos: int) -> pa.Table:
    """Per source: concatenate encoded docs (+eos) and cut into rows of seq_len+1 (the tokenize format)."""
    toks, names = [], []
    for src in sorted({s for s, _ in docs}):
        ids = np.concatenate([np.array(sp.encode(t) + [eos], dtype=np.uint16) for s, t in docs if s == src])
        n = len(ids) // (seq_len + 1)
        toks.append(ids[:n * (seq_len + 1)])
        names += [src] * n
    arr = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(toks)), seq_len + 1)
    return pa.table({"tokens": arr, "source_name": pa.array(names)})


def make_tokenize(stage_dir: Path, docs=None, seq_len: int = SEQ_LEN, vocab: int = VOCAB, shards: int = 2,
                  model: bytes | None = None, digest: str | None = None) -> StageData:
    """A complete tokenize-stage output: train/val Arrow shards, the tokenizer model, manifest extra."""
    import sentencepiece as spm

    docs = docs if docs is not None else corpus()
    model = model or train_spm([t for _, t in docs], vocab)
    sp = spm.SentencePieceProcessor(model_proto=model)
    eos = sp.eos_id()
    val_docs = [d for i, d in enumerate(docs) if i % 8 == 3]
    train_docs = [d for i, d in enumerate(docs) if i % 8 != 3]
    train = pack(train_docs, sp, seq_len, eos)
    per = -(-train.num_rows // shards)
    outs = {"train": Output("arrow", [write_arrow(train.slice(i * per, per), stage_dir, f"train/part-{i:05d}.arrow")
                                      for i in range(shards)], primary=True),
            "val": Output("arrow", [write_arrow(pack(val_docs, sp, seq_len, eos), stage_dir, "val/part-00000.arrow")]),
            "tokenizer": Output("file", [write_file(model, stage_dir, "tokenizer/tokenizer.model")])}
    extra = {"seq_len": seq_len, "dtype": "uint16", "vocab_size": sp.get_piece_size(), "eos_id": eos,
             "tokenizer_digest": digest or outs["tokenizer"].digest}
    m = Manifest(stage="tokenize", cache_key="tok" * 21 + "x", outputs=outs, config={}, upstream={},
                 code_version="test", extra=extra)
    write_manifest(stage_dir, m)
    return StageData(stage_dir, m)
