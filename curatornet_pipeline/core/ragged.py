"""Ragged arrays as CSR (offsets + flat values): the one place for the helpers that sampling,
splitting, training and evaluation need (profiles, baskets, hidden items).

A ragged array of n rows is ``offsets`` (n+1,) int64, non-decreasing from 0 to
``len(values)``, and ``values``; row k is ``values[offsets[k]:offsets[k+1]]``. Everything
here is vectorized numpy: no Python loop over rows.
"""

import numpy as np


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """(n+1,) int64 offsets of rows of the given lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def lengths(offsets: np.ndarray) -> np.ndarray:
    """(n,) row lengths."""
    return np.diff(np.asarray(offsets, dtype=np.int64))


def row_ids(lengths_: np.ndarray) -> np.ndarray:
    """The row of every value: ``repeat(arange(n), lengths)``."""
    lengths_ = np.asarray(lengths_, dtype=np.int64)
    return np.repeat(np.arange(len(lengths_), dtype=np.int64), lengths_)


def range_positions(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the concatenated ranges ``starts[k]:stops[k]``; returns (offsets, flat)."""
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.asarray(stops, dtype=np.int64) - starts
    offsets = offsets_from_lengths(sizes)
    flat = np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1], dtype=np.int64)
    return offsets, flat


def concat_ranges(
    starts: np.ndarray, stops: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``values[starts[k]:stops[k]]``: returns (row of each value, values)."""
    offsets, flat = range_positions(starts, stops)
    return row_ids(lengths(offsets)), np.asarray(values)[flat]


def take_rows(
    offsets: np.ndarray, values: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` (any order, repeats allowed) of a ragged array, as a new ragged array."""
    offsets = np.asarray(offsets, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    new_offsets, flat = range_positions(offsets[rows], offsets[rows + 1])
    return new_offsets, np.asarray(values)[flat]


def check(offsets: np.ndarray, values: np.ndarray, what: str = "offsets") -> tuple:
    """(offsets as int64, values as int64) after checking the CSR invariants; ValueError
    naming ``what`` otherwise."""
    offsets = np.asarray(offsets, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(values):
        raise ValueError(f"{what} must go from 0 to the number of values ({len(values)})")
    if np.any(np.diff(offsets) < 0):
        raise ValueError(f"{what} must be non-decreasing")
    return offsets, values
