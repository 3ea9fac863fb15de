"""What machine a figure came from: the processor and the settings that move speed.

Training picks its CPU products by vendor (:mod:`~curatornet_pipeline.kernels.gemm`), the
reproduction report records the processor, and every benchmark prints :func:`runtime` as
its first line, so that figures from machines that differ (with or without AVX-512, AMX)
are never compared unawares. :func:`set_flush_denormal` sets how the CPU treats subnormal
floats in this thread and in the OpenMP workers it uses. :class:`Switch` is the override
of a kernel choice for a block.
"""

import contextlib
import ctypes
import functools
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

OMP_PAUSE_HARD = 2  # omp_pause_resource_t of OpenMP 5.0: release the runtime's threads


class Switch:
    """A process-wide choice that :meth:`use` forces for a block (``value`` None: not
    forced), for benchmarks and tests that set the options side by side in one process."""

    def __init__(self, what: str, options: tuple[str, ...]) -> None:
        self.what, self.options, self.value = what, options, None

    @contextlib.contextmanager
    def use(self, value: str) -> Iterator[None]:
        if value not in self.options:
            expected = " or ".join(repr(o) for o in self.options)
            raise ValueError(f"{self.what} {value!r}: expected {expected}")
        saved, self.value = self.value, value
        try:
            yield
        finally:
            self.value = saved


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


def denormals_flushed() -> bool:
    """Whether this thread flushes subnormal floats (FTZ and DAZ): PyTorch has no getter,
    but a subnormal float32 times one comes back zero only when they are flushed."""
    import torch

    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@functools.cache
def _openmp_pause():
    """``omp_pause_resource_all`` of the OpenMP runtime loaded in this process, or None."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if ".so" in line}
    for path in sorted(paths):
        if not Path(path).name.startswith(("libgomp.", "libomp.", "libiomp5.")):
            continue
        try:
            pause = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        return pause
    return None


def set_flush_denormal(on: bool) -> bool:
    """Flush subnormal floats to zero (``on``) or keep them, in this thread and in the
    OpenMP workers its parallel operators run on; False where the CPU cannot flush.

    ``torch.set_flush_denormal`` sets the calling thread's mode only, and a thread keeps
    the mode it started with: so the OpenMP runtime then releases its workers
    (``omp_pause_resource_all``) and starts fresh ones, with this thread's mode."""
    import torch

    if not torch.set_flush_denormal(on):
        return False
    pause = _openmp_pause()
    if pause is None or pause(OMP_PAUSE_HARD) != 0:
        logger.warning(
            "could not restart the OpenMP workers: those already running keep their "
            "subnormal mode (%s)", "no OpenMP runtime found" if pause is None else "busy",
        )  # fmt: skip
    return True


#: Flush subnormal floats to zero in training and scoring on the CPU (FTZ and DAZ): the one
#: setting behind :func:`flush_denormals`. Benchmarks and tests turn it off to compare.
FLUSH_DENORMALS = True


def flush_denormals() -> None:
    """Make this thread and its OpenMP workers flush subnormal floats, unless
    :data:`FLUSH_DENORMALS` is off; called where training and scoring start (why:
    docs/architecture.md, "Subnormal floats are flushed")."""
    if FLUSH_DENORMALS and not denormals_flushed():
        set_flush_denormal(True)
