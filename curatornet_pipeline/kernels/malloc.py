"""Keep freed memory in a training process instead of handing it back to the kernel, so
that each step's large tensors do not land on fresh pages that fault on first touch.

:func:`retain_freed_memory` sets glibc's ``mallopt`` knobs once per process (sizes up to
32 MiB from the heap, up to 1 GiB of free heap kept); ``CURATORNET_MALLOC_TUNING=0`` turns
it off; a no-op on other C libraries. Figures: docs/architecture.md, "Training processes
keep freed memory".
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
