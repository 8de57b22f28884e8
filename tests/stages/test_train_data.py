"""The train stage's data order over real token shards (the `tokenized` fixture is in conftest.py).

Run: `.venv/bin/python -m pytest -q tests/stages/test_train_data.py`
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.dataset import write_arrow
from pipelines.testing.tokenrows import SEQ_LEN
from stages.train.data import DataError, GlobalOrder, TokenRows, mix_epoch, rank_slice


# -- data order -------------------------------------------------------------------------------------------------
def test_rows_are_memory_mapped_views_of_real_tokens(tokenized):
    rows = TokenRows(tokenized.paths("train"))
    assert rows.seq_len == SEQ_LEN and len(rows) > 100
    assert rows.sources == ["faq", "reference"]
    assert rows.chunks[0].base is not None  # a view into the mapped file, not a copy
    assert rows.max_id() < tokenized.manifest.extra["vocab_size"]


def test_order_is_seeded_weighted_and_worker_independent(tokenized):
    rows = TokenRows(tokenized.paths("train"))
    n_faq, n_ref = (rows.codes == 0).sum(), (rows.codes == 1).sum()
    order = GlobalOrder(rows.codes, rows.sources, {"faq": 2.0, "reference": 0.5}, seed=7)
    assert order.epoch_len == 2 * n_faq + round(0.5 * n_ref)
    counts = order.source_counts(0, order.epoch_len)
    assert counts.tolist() == [2 * n_faq, round(0.5 * n_ref)]
    again = GlobalOrder(rows.codes, rows.sources, {"faq": 2.0, "reference": 0.5}, seed=7)
    span = (order.epoch_len - 5, order.epoch_len + 40)  # across a mix-epoch boundary
    assert np.array_equal(order.indices(*span), again.indices(*span))
    epoch0, epoch1 = (mix_epoch(rows.codes, rows.sources, {}, 7, e) for e in (0, 1))
    assert not np.array_equal(epoch0, epoch1)
    # one global sample sequence: 1 worker and 4 workers cover the same samples in each step
    for step in (0, 3, 17):
        one = order.indices(*rank_slice(step, 16, 0, 1))
        four = np.concatenate([order.indices(*rank_slice(step, 16, r, 4)) for r in range(4)])
        assert np.array_equal(one, four)


def test_bad_data_is_one_clear_line(tmp_path, tokenized):
    rows = TokenRows(tokenized.paths("train"))
    with pytest.raises(DataError, match="does not have"):
        GlobalOrder(rows.codes, rows.sources, {"wikipedia": 1.0}, seed=0)
    with pytest.raises(DataError, match="leave no rows"):
        GlobalOrder(rows.codes, rows.sources, {"faq": 0.0, "reference": 0.0}, seed=0)
    empty = pa.table({"tokens": pa.FixedSizeListArray.from_arrays(pa.array([], pa.uint16()), SEQ_LEN + 1),
                      "source_name": pa.array([], pa.string())})
    write_arrow(empty, tmp_path, "val/part-00000.arrow")
    with pytest.raises(DataError, match="the val split has no token rows") as exc:
        TokenRows([tmp_path / "val/part-00000.arrow"], "val")
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="does not divide"):
        rank_slice(0, 10, 0, 4)
