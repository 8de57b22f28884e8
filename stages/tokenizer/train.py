"""Training a SentencePiece model from document shards: pure helpers (the stage's run() is in stage.py).

Try it alone: `.venv/bin/python -m pytest -q tests/stages/test_tokenizer.py`.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Any, Iterable, Iterator

from pipelines.dataset import ShardInfo, write_file

MODEL = "model/tokenizer.model"
VOCAB = "model/tokenizer.vocab"
SPECIALS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": 3}
UINT16_IDS = 1 << 16


def load_processor(model: bytes, where: str = "model"):
    """A SentencePieceProcessor from model bytes; ValueError naming `where` when they are not a model."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(model)
    except (RuntimeError, OSError, TypeError):
        raise ValueError(f"{where} is not a SentencePiece model (its bytes do not parse as a ModelProto)") from None
    return sp


def keep_doc(doc_id: str, seed: int, fraction: float) -> bool:
    """Seeded, deterministic document sample: a doc is kept when its hash falls below `fraction`."""
    if fraction >= 1.0:
        return True
    h = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8, key=seed.to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little") < fraction * 2.0**64


def cut_line(line: str, max_bytes: int) -> Iterator[str]:
    """Pieces of `line` of at most `max_bytes` UTF-8 bytes, cut at character boundaries (nothing dropped)."""
    data = line.encode("utf-8", "surrogatepass")
    while len(data) > max_bytes:
        cut = max_bytes
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # back off to the start of a UTF-8 character
            cut -= 1
        yield data[:cut].decode("utf-8", "surrogatepass")
        data = data[cut:]
    if data:
        yield data.decode("utf-8", "surrogatepass")


def training_lines(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """Non-empty lines of the documents: SentencePiece trains on lines; "\\n" is added back as its own piece."""
    for text in texts:
        for line in text.split("\n"):
            if line:
                yield from cut_line(line, max_bytes)


def trainer_options(cfg: Any, presampled: bool = False) -> dict[str, Any]:
    """SentencePiece options for a lossless Chinese tokenizer (see the package docstring for why each is set).
    `presampled`: the lines are the stage's own sample (stages/tokenizer/sample.py), taken as given."""
    opts = dict(
        model_type=cfg.model_type, vocab_size=cfg.vocab_size, character_coverage=cfg.character_coverage,
        byte_fallback=cfg.byte_fallback, split_digits=cfg.split_digits,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,  # runs of spaces in code become one piece
        user_defined_symbols=["\n"], control_symbols=[f"<reserved_{i}>" for i in range(cfg.reserved_tokens)],
        max_sentence_length=cfg.max_sentence_bytes, num_threads=cfg.num_threads, minloglevel=2, **SPECIALS,
    )
    if cfg.input_sentence_size is not None:
        opts.update(input_sentence_size=cfg.input_sentence_size, shuffle_input_sentence=not presampled)
    if cfg.model_type == "unigram":
        opts["train_extremely_large_corpus"] = cfg.vocab_size > 200_000
    return opts


def train_model(lines: Iterable[str], cfg: Any, presampled: bool = False) -> bytes:
    """Train on the given lines; returns the model bytes. Same lines and config -> same bytes, as long as there
    are at most input_sentence_size lines or they are `presampled` (SentencePiece's own reservoir sample ignores
    the seed set here: see stages/tokenizer/sample.py)."""
    import sentencepiece as spm

    spm.set_random_generator_seed(cfg.seed + 1)  # kept: it is what models trained before were trained with
    sink = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=sink,
                                       **trainer_options(cfg, presampled))
    except RuntimeError as exc:  # e.g. "INTERNAL: src/x.cc(744) [check] Vocabulary size too high (400). ..."
        reason = str(exc).splitlines()[0].split("] ", 1)[-1][:300]
        raise ValueError(f"SentencePiece training failed: {reason} (tokenizer.vocab_size={cfg.vocab_size})") from None
    return sink.getvalue()


def describe(model: bytes) -> dict[str, Any]:
    """Facts downstream stages need: special ids, vocab size, the token dtype a shard needs."""
    sp = load_processor(model)
    n = sp.get_piece_size()
    ids = {"unk_id": sp.unk_id(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "pad_id": sp.pad_id()}
    named = set(ids.values())
    reserved = [i for i in range(n) if sp.is_control(i) and i not in named]
    newline = sp.piece_to_id("\n")
    return {"vocab_size": n, **ids, "reserved_ids": reserved,
            "newline_id": newline if newline != sp.unk_id() else -1,
            "byte_pieces": sum(1 for i in range(n) if sp.is_byte(i)),
            "dtype": "uint16" if n <= UINT16_IDS else "uint32"}


def vocab_text(model: bytes) -> str:
    """One line per piece: id, the piece as JSON (pieces include "\\n"), score, type."""
    sp = load_processor(model)
    lines = []
    for i in range(sp.get_piece_size()):
        kind = ("control" if sp.is_control(i) else "byte" if sp.is_byte(i) else "unknown" if sp.is_unknown(i)
                else "unused" if sp.is_unused(i) else "normal")
        lines.append(f"{i}\t{json.dumps(sp.id_to_piece(i), ensure_ascii=False)}\t{sp.get_score(i):g}\t{kind}")
    return "\n".join(lines) + "\n"


def write_model(model: bytes, out_dir: str) -> list[ShardInfo]:
    return [write_file(model, out_dir, MODEL), write_file(vocab_text(model).encode("utf-8"), out_dir, VOCAB)]
