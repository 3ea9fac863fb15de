"""SELU for the CuratorNet towers, in place, with ``exp`` in place of ``expm1`` on the CPU.

PyTorch's CPU ``elu`` kernel (which ``F.selu`` calls) evaluates ``expm1`` for every element,
and the vectorized ``expm1`` is about 5x slower than ``exp`` (2048-wide AVX-512 rows: 3.1
against 0.6 ns per element on the 2-core AMD EPYC of docs/benchmarks.md). The forward here
is six passes around one ``exp``, made block by block so that they stay in cache.
``exp(x) - 1`` loses ``expm1``'s relative precision for x near 0 but not its absolute one
(under 5e-7 on SELU's range, float32's rounding of values of order 1), which is what a sum
with the next layer's other inputs sees.

The backward is the library's own (``elu_backward`` on the result, as ``F.selu(inplace=True)``
records it): the same gradients bit for bit, given the same output.

Elsewhere (CUDA, bfloat16 under autocast, the ``meta`` device) the library's ``F.selu`` runs:
GPUs have a fast ``expm1``, and in bfloat16 ``exp(x) - 1`` near 0 would lose too much.
``benchmarks/bench_kernels.py`` keeps the verdict (docs/benchmarks.md).
"""

import torch
import torch.nn.functional as F
from torch import nn

SELU_SCALE = 1.0507009873554804934193349852946  # Klambauer et al. (2017)
SELU_ALPHA = 1.6732632423543772848170429916717


#: Elements per block of the forward: 1 MB of float32, so that its six passes over a block
#: run in a core's L2 cache instead of six passes over main memory (2.5-3x at the towers'
#: shapes against a whole-tensor pass each, benchmarks/bench_kernels.py).
BLOCK = 1 << 18


def _selu_exp_(x: torch.Tensor, buffer: torch.Tensor) -> None:
    """x <- scale * (max(x, 0) + alpha * (exp(min(x, 0)) - 1)); buffer as large as x."""
    torch.clamp(x, max=0.0, out=buffer).exp_()  # exp(min(x, 0)): 1 where x > 0
    x.clamp_(min=0.0).mul_(SELU_SCALE)
    x.add_(buffer, alpha=SELU_SCALE * SELU_ALPHA).sub_(SELU_SCALE * SELU_ALPHA)


class _SELUExp(torch.autograd.Function):
    """In-place SELU with exp, block by block of a contiguous x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous():
            flat = x.view(-1)
            buffer = torch.empty(min(BLOCK, flat.numel()), dtype=x.dtype)
            for start in range(0, flat.numel(), BLOCK):
                block = flat[start : start + BLOCK]
                _selu_exp_(block, buffer[: block.numel()])
        else:
            _selu_exp_(x, torch.empty_like(x))
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, SELU_ALPHA, SELU_SCALE, 1.0, True, y)


def selu_(x: torch.Tensor) -> torch.Tensor:
    """SELU of x, written into x (x must not be a leaf that requires grad)."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return _SELUExp.apply(x)
    return F.selu(x, inplace=True)


class SELU(nn.Module):
    """``nn.SELU(inplace=True)`` with :func:`selu_`: no parameters, no state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return selu_(x)
