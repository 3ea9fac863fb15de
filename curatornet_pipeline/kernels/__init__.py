"""Hand-written CPU speed, apart from the paper's code, behind one narrow interface
(docs/architecture.md, "The hand-written speed lives in ``kernels/``").

The models and the training loop call only the names below; each falls back to stock
PyTorch where its kernel does not apply or is switched off: :func:`pool_profiles` and
:func:`margins` (:mod:`.fused`), :class:`Linear` and :func:`linear` (:mod:`.gemm`),
:func:`retain_freed_memory` (:mod:`.malloc`). :mod:`.machine` names the processor and sets
the subnormal-float mode. The names load their module on first use, so that :mod:`.machine`
imports without PyTorch.
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
