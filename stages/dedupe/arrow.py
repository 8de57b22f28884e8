"""Arrow columns from numpy arrays and str lists without loading pandas.

pyarrow imports pandas (~0.45 CPU-s) the first time a process calls pa.array(), pa.table() on numpy or Python
values, Array.to_numpy(), a compute function with a Python scalar (fill_null("")), pq.read_table() (shards are
read with pipelines.io.read_table, which avoids it), Table.group_by() or Table.join(). Every fresh Ray worker would
pay that once, so the dedupe tasks convert through buffers here instead. The values are the same as pa.array()'s
and to_numpy()'s.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def col(a: np.ndarray) -> pa.Array:
    """A numeric or bool numpy array as an Arrow array of the same dtype, no nulls (zero-copy except bools)."""
    a = np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return pa.Array.from_buffers(pa.bool_(), len(a), [None, pa.py_buffer(np.packbits(a, bitorder="little"))])
    return pa.Array.from_buffers(pa.from_numpy_dtype(a.dtype), len(a), [None, pa.py_buffer(a)])


def nd(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric or bool Arrow array without nulls as numpy (a read-only view, except bools)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    if arr.null_count:
        raise ValueError(f"nd(): {arr.type} array has {arr.null_count} nulls")
    buf = arr.buffers()[1]
    if pa.types.is_boolean(arr.type):
        bits = np.frombuffer(buf, np.uint8) if buf is not None else np.zeros(0, np.uint8)
        return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].astype(bool)
    dtype = np.dtype({"double": "float64", "float": "float32"}.get(str(arr.type), str(arr.type)))
    if buf is None:
        return np.zeros(0, dtype)
    return np.frombuffer(buf, dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def strings(items: list[str], large: bool = False) -> pa.Array:
    """A list of str as an Arrow string (or large_string) array, no nulls."""
    enc = [s.encode("utf-8") for s in items]
    off = np.zeros(len(enc) + 1, np.int64 if large else np.int32)
    np.cumsum(np.fromiter(map(len, enc), np.int64, len(enc)), out=off[1:])
    typ = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(typ, len(enc), [None, pa.py_buffer(off), pa.py_buffer(b"".join(enc))])


def table(**cols) -> pa.Table:
    """pa.table() of named columns, numpy arrays converted by col()."""
    return pa.table({k: col(v) if isinstance(v, np.ndarray) else v for k, v in cols.items()})
