"""Keep freed memory in a training process instead of handing it back to the kernel.

A CuratorNet step allocates tens of (profiles x 200..400) float32 tensors of 10-30 MB
(activations, their gradients) and frees them at the end of the step. PyTorch's CPU
allocator is glibc's ``malloc``, which by default serves such sizes with ``mmap`` until a
freed one raises its threshold, and returns the top of its heap to the kernel whenever
more than twice that threshold is free. Either way the next step's tensors land on fresh
pages, and every 4 KiB page faults on first touch, in whichever operator first writes the
tensor (the counts and their cost are in docs/benchmarks.md).

:func:`retain_freed_memory` sets glibc's knobs once per process (``mallopt``, the same as
the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_``
environment variables, which cannot be set after the process has started): sizes up to
32 MiB, glibc's largest mmap threshold, come from the heap, and up to 1 GiB of free heap
is kept. A training process's resident size then stays at its peak instead of falling
between steps. Off with ``CURATORNET_MALLOC_TUNING=0``; a no-op on other C libraries.
"""

import ctypes
import functools
import logging
import platform

from curatornet_pipeline import settings

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


@functools.cache
def retain_freed_memory() -> bool:
    """Tune glibc's malloc for a training process (once); True where it took effect."""
    if settings.env("CURATORNET_MALLOC_TUNING").strip() == "0":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = all(
        mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    if not done:
        logger.warning("glibc's mallopt refused the training process's settings")
    return done
