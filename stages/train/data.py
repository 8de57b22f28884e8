"""Token rows for training: memory-mapped Arrow IPC shards and a seeded, source-weighted global order.

Shards (from the tokenize stage) hold `tokens` = fixed_size_list<uint16|uint32>[seq_len + 1] and `source_name`.
The data position is one global sample index g: sample g of the run is row `order[g]`, the same whatever the
number of workers, so a run resumes at `step * global_batch` with any worker count.

    rows = TokenRows(paths)                                  # zero-copy views of every record batch
    order = GlobalOrder(rows.codes, rows.sources, {"wiki": 2.0}, seed=1337)
    batch = rows.take(order.indices(start, stop))            # (n, seq_len + 1) int64

torch-free (numpy + pyarrow), so the driver, tests and benchmarks share it.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


class DataError(ValueError):
    """Token shards that cannot be trained on (empty split, wrong columns, mixed widths)."""


def _tokens_view(batch: pa.RecordBatch, path: str) -> np.ndarray:
    col = batch.column("tokens")
    if not pa.types.is_fixed_size_list(col.type) or col.null_count:
        raise DataError(f"{path}: column 'tokens' must be a non-null fixed_size_list, got {col.type}")
    flat = col.flatten().to_numpy(zero_copy_only=True)  # a view into the mapped file: no copy
    return flat.reshape(len(col), col.type.list_size)


class TokenRows:
    """Every row of a split's shards, in shard order; rows are (seq_len + 1) token ids."""

    def __init__(self, paths: list[str], split: str = "train"):
        self.chunks: list[np.ndarray] = []
        names: list[np.ndarray] = []
        for p in map(str, paths):
            reader = pa.ipc.open_file(pa.memory_map(p))
            if "tokens" not in reader.schema.names or "source_name" not in reader.schema.names:
                raise DataError(f"{p}: token shards need columns 'tokens' and 'source_name', got {reader.schema.names}")
            for i in range(reader.num_record_batches):
                b = reader.get_batch(i)
                if b.num_rows:
                    self.chunks.append(_tokens_view(b, p))
                    src = b.column("source_name")
                    src = src.dictionary_decode() if pa.types.is_dictionary(src.type) else src
                    names.append(src.to_numpy(zero_copy_only=False))
        if not self.chunks:
            raise DataError(f"the {split} split has no token rows ({len(paths)} shard(s)); "
                            "the corpus is too small for one sequence, or the split is empty")
        widths = {c.shape[1] for c in self.chunks}
        if len(widths) != 1:
            raise DataError(f"the {split} split mixes row widths {sorted(widths)}: shards from different tokenize runs")
        self.width = widths.pop()
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        all_names = np.concatenate(names).astype(str)
        self.sources, codes = np.unique(all_names, return_inverse=True)
        self.sources = [str(s) for s in self.sources]
        self.codes = codes.astype(np.int32)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def seq_len(self) -> int:
        return self.width - 1

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows at global row indices `idx`, copied into one int64 array (n, seq_len + 1)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.width), dtype=np.int64)
        chunk = np.searchsorted(self.starts, idx, side="right") - 1
        for c in np.unique(chunk):
            sel = chunk == c
            out[sel] = self.chunks[c][idx[sel] - self.starts[c]]
        return out

    def max_id(self) -> int:
        return int(max(c.max() for c in self.chunks))


def mix_epoch(codes: np.ndarray, sources: list[str], weights: dict[str, float], seed: int, epoch: int) -> np.ndarray:
    """Row indices of one mix epoch, shuffled: each source's rows `weight` times (2.0 = twice, 0.5 = a seeded half).

    Unlisted sources weigh 1.0. The draw depends only on (seed, epoch), never on workers or time.
    """
    rng = np.random.default_rng([seed, epoch])
    parts = []
    for k, name in enumerate(sources):
        rows = np.flatnonzero(codes == k)
        whole, frac = divmod(float(weights.get(name, 1.0)), 1.0)
        parts.extend([rows] * int(whole))
        n_frac = int(round(frac * len(rows)))
        if n_frac:
            parts.append(np.sort(rng.choice(rows, size=n_frac, replace=False)))
    if not parts:
        raise DataError(f"the source weights {weights} leave no rows to train on (sources: {sources})")
    idx = np.concatenate(parts)
    return idx[rng.permutation(len(idx))]


class GlobalOrder:
    """The run's infinite sample sequence: mix epoch after mix epoch, each a fresh seeded permutation."""

    def __init__(self, codes: np.ndarray, sources: list[str], weights: dict[str, float], seed: int):
        unknown = sorted(set(weights) - set(sources))
        if unknown:
            raise DataError(f"mix names source(s) {unknown} that the train split does not have; it has {sources}")
        self.codes, self.sources, self.weights, self.seed = codes, sources, dict(weights), seed
        self._epoch, self._perm = 0, mix_epoch(codes, sources, weights, seed, 0)
        self.epoch_len = len(self._perm)

    def _epoch_perm(self, e: int) -> np.ndarray:
        if e != self._epoch:
            self._epoch, self._perm = e, mix_epoch(self.codes, self.sources, self.weights, self.seed, e)
        return self._perm

    def indices(self, start: int, stop: int) -> np.ndarray:
        """Row indices of global samples [start, stop)."""
        out = []
        g = start
        while g < stop:
            e, pos = divmod(g, self.epoch_len)
            n = min(stop - g, self.epoch_len - pos)
            out.append(self._epoch_perm(e)[pos:pos + n])
            g += n
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def source_counts(self, start: int, stop: int) -> np.ndarray:
        """Samples per source among global samples [start, stop) (for tokens-seen-per-source metrics)."""
        return np.bincount(self.codes[self.indices(start, stop)], minlength=len(self.sources))


def rank_slice(step: int, global_batch: int, rank: int, world: int) -> tuple[int, int]:
    """Global sample range of `rank` at `step`: a contiguous 1/world of the step's global batch."""
    if global_batch % world:
        raise DataError(f"global_batch {global_batch} does not divide by {world} workers")
    per = global_batch // world
    start = step * global_batch + rank * per
    return start, start + per


def bytes_per_id(pieces: list[str], kinds: list[str]) -> np.ndarray:
    """UTF-8 bytes each SentencePiece id stands for: '▁' is one space, <0xNN> one byte, control ids none.

    Used for bits per byte: bpb = summed nats / ln 2 / summed target bytes.
    """
    out = np.zeros(len(pieces), dtype=np.float64)
    for i, (p, k) in enumerate(zip(pieces, kinds)):
        if k == "byte":
            out[i] = 1
        elif k == "normal" or k == "user":
            out[i] = len(p.replace("\u2581", " ").encode("utf-8"))
    return out
