"""Dense layers whose CPU float32 products run on oneDNN where the BLAS (MKL) is slow.

:class:`Linear` is ``nn.Linear`` whose forward and input gradient run as
``mkldnn::_linear_pointwise`` when :func:`gemm_backend` is ``"onednn"`` (weight gradient on
the BLAS); elsewhere (CUDA, bf16 autocast, ``meta``, ``"blas"``) it is ``F.linear``.
``CURATORNET_CPU_GEMM`` = ``auto`` (oneDNN unless the CPU is Intel's: by machine, never by
timing, so that a resumed run takes the same kernels), ``onednn`` or ``blas``. Why and the
figures: docs/architecture.md, "The towers' dense layers".
"""

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter

from curatornet_pipeline import settings
from curatornet_pipeline.kernels.machine import Switch, cpuinfo

BACKENDS = ("auto", "onednn", "blas")


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def _configured_backend() -> str:
    wanted = settings.env("CURATORNET_CPU_GEMM").strip().lower() or "auto"
    if wanted not in BACKENDS:
        raise ValueError(f"CURATORNET_CPU_GEMM={wanted!r}: expected one of {', '.join(BACKENDS)}")
    if wanted == "blas" or not onednn_available():
        return "blas"
    if wanted == "onednn":
        return "onednn"
    return "blas" if cpuinfo("vendor_id") == "GenuineIntel" else "onednn"


_forced = Switch("gemm backend", ("onednn", "blas"))


def gemm_backend() -> str:
    """``"onednn"`` or ``"blas"``: the float32 CPU backend of :class:`Linear` in this process."""
    return _forced.value or _configured_backend()


def use_gemm_backend(backend: str) -> contextlib.AbstractContextManager[None]:
    """Run the block on ``backend`` (``"onednn"`` or ``"blas"``)."""
    if backend == "onednn" and not onednn_available():
        raise RuntimeError("this PyTorch build has no oneDNN (MKL-DNN)")
    return _forced.use(backend)


def onednn_mm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x @ w.T + b on oneDNN (x (M, K), w (N, K) contiguous)."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


if onednn_available() and torch.ops.mkldnn._linear_pointwise not in flop_counter.flop_registry:

    @flop_counter.register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _linear_pointwise_flop(x_shape, w_shape, *args, **kwargs) -> int:
        """FLOPs of x @ w.T (FlopCounterMode knows ``addmm``, not oneDNN's op)."""
        return 2 * math.prod(x_shape) * w_shape[0]


class _OneDNNLinear(torch.autograd.Function):
    """x @ weight.T + bias for a 2-D x: forward and input gradient on oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        return onednn_mm(x, weight.contiguous(), bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_mm(grad, weight.t().contiguous(), None)
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(grad.t(), x)
        if ctx.needs_input_grad[2]:  # False when there is no bias
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` with the CPU float32 products on :func:`gemm_backend`."""
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and gemm_backend() == "onednn"
    ):
        y = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
        return y if x.dim() == 2 else y.view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` whose CPU float32 products run on :func:`gemm_backend`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
