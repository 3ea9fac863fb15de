"""Hand-written CPU speed, apart from the paper's code, behind one narrow interface.

The models and the training loop call only the names below; each falls back to stock
PyTorch wherever its kernel does not apply (CUDA, the ``meta`` device, other dtypes) or is
switched off:

- :func:`pool_profiles` and :func:`margins`: fused Numba kernels for the memory-bound part
  of a step on CPU float tensors (:mod:`.fused`; ``CURATORNET_CPU_KERNELS=torch`` for
  PyTorch's operators);
- :class:`Linear` and :func:`linear`: dense layers whose CPU float32 products run on
  oneDNN where MKL is slow (non-Intel processors; :mod:`.gemm`;
  ``CURATORNET_CPU_GEMM=blas`` for ``F.linear``);
- :func:`retain_freed_memory`: a training process keeps freed memory (:mod:`.malloc`;
  ``CURATORNET_MALLOC_TUNING=0`` to leave glibc's defaults);
- :mod:`.machine`: the processor's name for every figure, and the subnormal-float mode of
  a thread and of its OpenMP workers.

A kernel stays only while it makes a whole training step at least 1.05x faster on one of
the machine classes measured and slower on none; the verdicts, and the figures of the
kernels deleted, are in docs/benchmarks.md ("Hand-written kernels").

The names load their module on first use, so that :mod:`.machine` (which names the
processor for benchmarks that must not load PyTorch) imports without PyTorch.
"""

import importlib

#: The interface: name -> the module that defines it.
_INTERFACE = {
    "pool_profiles": "ops",
    "margins": "ops",
    "Linear": "gemm",
    "linear": "gemm",
    "gemm_backend": "gemm",
    "use_gemm_backend": "gemm",
    "kernels": "fused",
    "use_kernels": "fused",
    "retain_freed_memory": "malloc",
}

__all__ = sorted(_INTERFACE)


def __getattr__(name: str):
    if name not in _INTERFACE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_INTERFACE[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_INTERFACE})
