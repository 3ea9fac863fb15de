"""Keep freed memory inside the process while training (glibc malloc tuning).

A training step allocates and frees the same large activations every batch (tens of MB
each at the default batching). glibc returns such blocks to the kernel (``mmap`` above
its threshold, heap trimming above another), and the next batch pays page faults and the
kernel's zeroing for the same memory again: a quarter or more of an epoch's time on a
2-core machine (docs/benchmarks.md). :func:`retained_heap` raises both thresholds for
the duration of training, as jemalloc or tcmalloc would by design, then restores glibc's
defaults and trims the heap, so the process gives the memory back afterwards.

A no-op where the C library is not glibc (macOS, musl): the training is the same, only
slower.
"""

import ctypes
import ctypes.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# mallopt(3) parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
DEFAULT_MMAP_MAX = 65536
# glibc's static defaults (128 KiB each); its upper limit for the mmap threshold on 64 bit
DEFAULT_THRESHOLD = 128 * 1024
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
TRIM_THRESHOLD_RETAINED = 2**31 - 1  # mallopt takes an int


def _glibc() -> "ctypes.CDLL | None":
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None  # glibc only


def set_retained(libc: ctypes.CDLL, retained: bool) -> bool:
    """Raise (``retained``) or restore glibc's thresholds; True when both were accepted."""
    mmap_t, trim_t = (
        (MMAP_THRESHOLD_MAX, TRIM_THRESHOLD_RETAINED)
        if retained
        else (DEFAULT_THRESHOLD, DEFAULT_THRESHOLD)
    )
    mmap_max = 0 if retained else DEFAULT_MMAP_MAX  # 0: no block bypasses the heap
    return all(
        bool(libc.mallopt(param, value))
        for param, value in (
            (M_MMAP_THRESHOLD, mmap_t),
            (M_TRIM_THRESHOLD, trim_t),
            (M_MMAP_MAX, mmap_max),
        )
    )


@contextmanager
def retained_heap(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed blocks up to 32 MiB stay in the process; yields whether the
    tuning applies (glibc). Afterwards glibc's default thresholds return and the heap is
    trimmed (``malloc_trim``)."""
    libc = _glibc() if enabled else None
    if libc is None or not set_retained(libc, True):
        yield False
        return
    try:
        yield True
    finally:
        set_retained(libc, False)
        libc.malloc_trim(0)
