"""tokenizer stage: train a SentencePiece model on the deduped documents, or pin an existing `.model` file.

Output `model` (files, primary): `model/tokenizer.model` (the SentencePiece model proto) and
`model/tokenizer.vocab` (one line per piece: `id<TAB>piece as a JSON string<TAB>score<TAB>type`; JSON because
the newline piece would break a plain TSV). The digest of `model` is the tokenizer's identity downstream.
Manifest extra: vocab_size, unk/bos/eos/pad ids, reserved_ids, newline_id, dtype (the token dtype a packed
shard needs: uint16 when every id fits, else uint32), model_type, byte_fallback, pinned.

Training is lossless: identity normalisation, whitespace kept, no dummy prefix, "\\n" a piece of its own and
byte fallback on, so `decode(encode(text)) == text` for any text without U+2581 (SentencePiece's own whitespace
marker, which decodes to a space). Documents are split into lines; a line longer than `max_sentence_bytes` is cut
at character boundaries instead of being skipped (SentencePiece skips long lines with only a warning).

Run with the pipeline (`zhgpt run configs/quickstart.yaml`) or alone: `zhgpt run CONFIG --only tokenizer`.
"""
from __future__ import annotations

from pipelines.stage import OutputSpec, StageSpec
from stages.tokenizer.config import TokenizerConfig

SPEC = StageSpec(
    name="tokenizer",
    inputs=["dedupe"],
    config_model=TokenizerConfig,
    outputs=[OutputSpec("model", "file", primary=True)],
    run="stages.tokenizer.stage:run",
    libraries=["sentencepiece"],
    headline=["vocab_size", "train_lines"],
)
