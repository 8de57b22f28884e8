"""Evaluation data: the `eval_sets` corpora tokenized with the run's tokenizer (driver side), the fixed rows every
evaluation scores (worker side), and the unigram yardstick. numpy and pyarrow only.

    sets = tokenize_eval_sets(ctx, info, sp)               # {name: [Arrow path]} under .partial/eval/
    rows = fixed_rows({"val": info.val, **sets}, eval_rows(cfg.eval_tokens, info.seq_len))
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipelines.dataset import write_arrow
from pipelines.io import read_table
from stages.train.data import TokenRows
from stages.train.upstream import TokenInfo, TrainInputError


def eval_rows(eval_tokens: int, seq_len: int) -> int:
    """Rows per eval set: eval_tokens worth of seq_len-token rows, at least one."""
    return max(1, math.ceil(eval_tokens / seq_len))


def read_texts(path: Path) -> list[str]:
    """A .parquet file's `text` column, or a UTF-8 text file cut at blank lines."""
    if path.suffix == ".parquet":
        return read_table(path, ["text"]).column("text").to_pylist()
    return [t for t in path.read_text(encoding="utf-8").split("\n\n") if t.strip()]


def tokenize_eval_sets(ctx, info: TokenInfo, sp) -> dict[str, list[str]]:
    """Each `train.eval_sets` corpus as seq_len+1-token rows (Arrow, under .partial/eval/), logged as an MLflow
    eval input. Every document ends with EOS, as in training."""
    import pyarrow as pa

    out = {}
    for name, path in sorted(ctx.cfg.eval_sets.items()):
        path = Path(path)
        ids = np.concatenate([np.array(sp.encode(t) + [info.eos_id], dtype=np.uint32) for t in read_texts(path)]
                             or [[]])
        w = info.seq_len + 1
        n = len(ids) // w
        if n == 0:
            raise TrainInputError(f"train.eval_sets.{name}: {path} has {len(ids)} tokens, fewer than one "
                                  f"{w}-token row")
        toks = pa.FixedSizeListArray.from_arrays(pa.array(ids[:n * w]), w)
        shard = write_arrow(pa.table({"tokens": toks, "source_name": pa.array([name] * n)}), ctx.partial_dir,
                            f"eval/{name}.arrow")
        out[name] = [str(ctx.partial_dir / shard.path)]
        log_eval_input(ctx, name, path, shard.sha256)
    return out


def log_eval_input(ctx, name: str, path: Path, digest: str) -> None:
    if not (ctx.tracking_uri and ctx.mlflow_run_id):
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    ds = Dataset(name=f"eval.{name}", digest=digest[:32], source_type="local",
                 source=json.dumps({"uri": str(Path(path).resolve())}))
    MlflowClient(ctx.tracking_uri).log_inputs(ctx.mlflow_run_id, datasets=[
        DatasetInput(ds, tags=[InputTag("mlflow.data.context", "eval")])])


def fixed_rows(sets: dict[str, list[str]], n: int) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Per eval set: its first n rows in file order, their source codes and the source names. Every evaluation
    scores exactly these rows."""
    out = {}
    for name, paths in sets.items():
        r = TokenRows(paths, name)
        k = min(len(r), n)
        out[name] = (r.take(np.arange(k)), r.codes[:k], r.sources)
    return out


def unigram_bpb(val: TokenRows, bpi: list[float], rows: int) -> float:
    """Bits per byte of the validation rows under their own unigram distribution: the yardstick to beat."""
    toks = val.take(np.arange(min(len(val), rows)))[:, 1:].ravel()
    counts = np.bincount(toks)
    p = counts[counts > 0] / counts.sum()
    bits = -(counts[counts > 0] * np.log2(p)).sum()
    return float(bits / np.asarray(bpi)[toks].sum())
