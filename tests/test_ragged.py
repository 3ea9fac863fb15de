"""The CSR helpers against plain Python lists."""

import numpy as np
import pytest

from curatornet_pipeline.core import ragged

ROWS = [[3, 1], [], [7], [2, 2, 9, 4]]


def _csr():
    offsets = ragged.offsets_from_lengths([len(r) for r in ROWS])
    return offsets, np.array([v for r in ROWS for v in r])


def test_take_rows_in_any_order_with_repeats_and_empty_rows():
    offsets, values = _csr()
    rows = [3, 1, 0, 3, 2]
    new_offsets, flat = ragged.take_rows(offsets, values, np.array(rows))
    got = [flat[new_offsets[k] : new_offsets[k + 1]].tolist() for k in range(len(rows))]
    assert got == [ROWS[r] for r in rows]


def test_concat_ranges_and_row_ids():
    offsets, values = _csr()
    row, flat = ragged.concat_ranges(offsets[[0, 3]], offsets[[1, 4]], values)
    assert row.tolist() == [0, 0, 1, 1, 1, 1] and flat.tolist() == ROWS[0] + ROWS[3]
    assert ragged.lengths(offsets).tolist() == [2, 0, 1, 4]


def test_check_names_the_broken_invariant():
    offsets, values = _csr()
    assert ragged.check(offsets, values)[0].dtype == np.int64
    with pytest.raises(ValueError, match="profile_offsets must go from 0"):
        ragged.check(offsets[:-1], values, "profile_offsets")
    with pytest.raises(ValueError, match="non-decreasing"):
        ragged.check(np.array([0, 5, 3, 7]), values)
