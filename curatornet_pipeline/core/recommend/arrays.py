"""The array work of ranking and explaining: top-k of a score matrix, a profile pooled
without each of its items (leave-one-out explanations), unit rows for cosines, and tiny
forward passes on one thread.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread for a tiny forward pass: on a shared 2-core machine, OpenMP
    synchronisation makes a (1, 300) SELU take ~6 ms with two threads and ~3 us with one."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def leave_one_out_pooled(h: np.ndarray) -> np.ndarray | None:
    """(m, D) item vectors of one profile -> (m, 2D): row j is ``[mean || max]`` of the
    profile without item j, exactly as :func:`~curatornet_pipeline.core.models.networks.pool_profiles`
    pools it; None when m == 1.

    O(m D): the mean from the sum less the item (in float64), the max from each
    dimension's two largest values (a dimension whose maximum is item j's takes the
    second largest; a tie keeps the maximum).
    """
    h = np.asarray(h, dtype=np.float32)
    m = len(h)
    if m < 2:
        return None
    total = h.sum(axis=0, dtype=np.float64)
    mean = ((total[None, :] - h) / (m - 1)).astype(np.float32)  # (m, D)
    top2 = np.sort(np.partition(h, m - 2, axis=0)[m - 2 :], axis=0)  # (2, D) ascending
    first, second = top2[1], top2[0]
    argmax = h.argmax(axis=0)  # (D,) the row holding each maximum
    holds_max = argmax[None, :] == np.arange(m)[:, None]  # (m, D)
    amax = np.where(holds_max, second[None, :], first[None, :])  # (m, D)
    return np.ascontiguousarray(np.concatenate([mean, amax], axis=1))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(B, n) scores -> (B, min(k, n)) item indices, best first (argpartition, then sort)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = scores.shape[1]
    kk = min(k, n)
    if kk < n:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # (B, kk) unordered
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)  # (B, kk)
