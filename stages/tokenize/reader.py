"""Open tokenize shards as 2-D numpy views over memory-mapped Arrow files (pyarrow + numpy only, no zhgpt imports).

    from stages.tokenize.reader import open_split
    views = open_split("work/tokenize/<key16>")          # train split; or a list of .arrow paths
    x = views[0][i, :-1]; y = views[0][i, 1:]             # one row: seq_len inputs and their targets

Each view has shape (rows, seq_len + 1) and dtype uint16 or uint32; nothing is copied or read until touched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa


def shard_paths(stage_dir: str | os.PathLike, split: str = "train") -> list[Path]:
    """The split's shard paths in manifest order."""
    manifest = json.loads((Path(stage_dir) / "manifest.json").read_text())
    outputs = manifest["outputs"]
    if split not in outputs:
        raise KeyError(f"{stage_dir}: no output {split!r} (have {sorted(outputs)})")
    return [Path(stage_dir) / s["path"] for s in outputs[split]["shards"]]


def open_shard(path: str | os.PathLike, column: str = "tokens") -> np.ndarray:
    """One shard's column as a zero-copy view: tokens (rows, seq_len + 1), or source_name codes (rows,)."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    if reader.num_record_batches == 0:  # a shard with no rows (a tiny split)
        t = reader.schema.field(column).type
        if isinstance(t, pa.FixedSizeListType):
            return np.zeros((0, t.list_size), t.value_type.to_pandas_dtype())
        return np.zeros(0, (t.index_type if isinstance(t, pa.DictionaryType) else t).to_pandas_dtype())
    if reader.num_record_batches != 1:
        raise ValueError(f"{path}: expected one record batch, found {reader.num_record_batches}")
    arr = reader.get_batch(0).column(column)
    if isinstance(arr, pa.DictionaryArray):  # source_name: its int32 codes (the names are in shard_metadata)
        return arr.indices.to_numpy(zero_copy_only=True)
    if not isinstance(arr, pa.FixedSizeListArray):
        return arr.to_numpy(zero_copy_only=True)
    width = arr.type.list_size
    values = arr.values.slice(arr.offset * width, len(arr) * width)
    return values.to_numpy(zero_copy_only=True).reshape(len(arr), width)


def open_split(where: str | os.PathLike | list, split: str = "train", column: str = "tokens") -> list[np.ndarray]:
    """Views of every shard of a split: `where` is a tokenize stage directory or a list of .arrow paths."""
    paths = list(where) if isinstance(where, (list, tuple)) else shard_paths(where, split)
    return [open_shard(p, column) for p in paths]


def shard_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The schema metadata written by tokenize (zhgpt.seq_len, zhgpt.eos_id, zhgpt.sources, ...)."""
    schema = pa.ipc.open_file(pa.memory_map(str(path))).schema
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
