"""What machine a figure came from: the processor and the settings that move speed.

Training picks its CPU products by vendor (:mod:`~curatornet_pipeline.core.linear`), the
reproduction report records the processor, and every benchmark prints :func:`runtime` as
its first line, so that figures from machines that differ (with or without AVX-512, AMX)
are never compared unawares.
"""

import functools
import os
import platform
import sys
from pathlib import Path


@functools.cache
def cpuinfo(field: str) -> str:
    """The first value of ``field`` in /proc/cpuinfo ("" where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == field:
            return value.strip()
    return ""


def processor() -> str:
    """The processor's model name, e.g. "AMD EPYC 7B13" (the platform's answer elsewhere)."""
    return cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def runtime() -> str:
    """One line naming the processor and the settings that move the figures: with torch
    loaded, its version, threads and CPU capability (AVX2 / AVX512) and the OpenMP spin
    count. A process that has not loaded torch (the sampling benchmark, whose peak memory
    is one of its figures) is not made to load it."""
    line = f"processor: {processor()} ({os.cpu_count()} cores)"
    torch = sys.modules.get("torch")
    if torch is None:
        return line
    return (
        f"{line}; torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}"
    )
