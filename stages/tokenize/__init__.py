"""tokenize stage: encode the deduped documents with the tokenizer stage's model, shuffle, pack, split.

Run with the pipeline (`zhgpt run configs/quickstart.yaml`), alone with `zhgpt run CONFIG --only tokenize`,
its tests with `.venv/bin/python -m pytest -q tests/stages/test_tokenize.py`.

How it works
  1. encode (one Ray task per input shard): every document -> its tokens + EOS; an order key
     blake2b(id, key=seed) and a split draw blake2b(id, person="zhgpt.val") (the validation set does not move when
     the shuffle seed does). Written sorted by (split, key) under `.partial/enc/` (a rerun after a kill keeps them).
     With val_fraction > 0 and no document drawing val (a small corpus), the one with the smallest draw moves to
     val (manifest `val_moved`), so a non-zero fraction never yields an empty validation split.
  2. pack (one Ray task per output shard): output shard b of a split holds the documents whose order key falls in
     the b-th of `ceil(split tokens / tokens_per_shard)` equal key ranges, in key order: a corpus-level shuffle,
     the same whatever the number of workers. Within a shard, the documents of each source_name are concatenated
     and cut into rows of exactly `seq_len + 1` tokens, so every row comes from one source (training can weight
     sources by row). Rows are ordered by the key of the document they begin in, which interleaves sources.
     Tail policy: the last `< seq_len + 1` tokens of each (shard, source) group are dropped and counted in
     `tail_tokens_dropped`; so rows tokens + tail_tokens_dropped == document tokens + one EOS per document.

Shard format (what training reads)
  `train/part-NNNNN.arrow`, `val/part-NNNNN.arrow`: Arrow IPC files (Feather v2), uncompressed, one record batch:
    tokens       fixed_size_list<uint16 | uint32>[seq_len + 1]   (uint16 when the vocab has <= 65,536 pieces)
    source_name  dictionary<int32, string>: the row's source; codes index `extra.sources` (sorted names)
  A row is x = tokens[:-1], y = tokens[1:]. Documents end with EOS (`extra.eos_id`); a row may begin mid-document.
  Schema metadata (bytes): zhgpt.seq_len, zhgpt.eos_id, zhgpt.vocab_size, zhgpt.sources (JSON list),
  zhgpt.tokenizer_digest. `stages/tokenize/reader.py` maps a split to 2-D numpy views (pyarrow + numpy only).
  `rows/<split>-NNNNN.parquet` (lineage sidecar, one per arrow shard): one line per (row, document) segment with
    split, shard, row, id, url, source_name, start (offset in the row), length, doc_offset (offset in the document).
  `tokenizer/tokenizer.model`: a copy of the SentencePiece model the shards were encoded with (what train exports).
Manifest extra: seq_len, dtype, vocab_size, eos_id, bos_id, pad_id, tokenizer_digest, sources,
  tokens_per_source (document tokens incl. EOS, both splits), rows_per_source {split: {source: rows}}, tail_policy.
"""
from __future__ import annotations

from pipelines.stage import OutputSpec, StageSpec
from stages.tokenize.config import TokenizeConfig
from stages.tokenize.tables import ROWS_SCHEMA, TOKENS_SCHEMA

SPEC = StageSpec(
    name="tokenize",
    inputs=["dedupe", "tokenizer"],
    config_model=TokenizeConfig,
    outputs=[OutputSpec("train", "arrow", primary=True, schema=TOKENS_SCHEMA),
             OutputSpec("val", "arrow", schema=TOKENS_SCHEMA), OutputSpec("rows", "parquet", schema=ROWS_SCHEMA),
             OutputSpec("tokenizer", "file")],
    run="stages.tokenize.stage:run",
    libraries=["sentencepiece", "pyarrow"],
    headline=["tokens", "chars_per_token", "train_rows"],
)
