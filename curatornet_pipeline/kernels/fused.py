"""Fused CPU kernels for the memory-bound part of a CuratorNet step, written with Numba:
:func:`pool_profiles` ([mean || max] of ragged profiles) and :func:`triple_margins`
(u . (h_pos - h_neg)), forward and backward, as autograd Functions.

Why hand-written and why this way (serial ``nogil`` kernels in a thread pool, 1-D row
views, backward split by columns for bit-identical results on any thread count, the max's
gradient to the first strictly greater row): docs/architecture.md, "Profile pooling and
the triples' margins". ``CURATORNET_CPU_KERNELS`` = ``auto`` (default) or ``torch``.
"""

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from curatornet_pipeline import settings
from curatornet_pipeline.kernels import machine

CHOICES = ("auto", "torch")

#: Below this many output elements a kernel runs on the calling thread alone: the pool's
#: hand-off (tens of microseconds) would cost more than it saves.
PARALLEL_MIN = 1 << 15


@functools.cache
def _numba():
    """The compiled kernels, or None where Numba is missing (they are then not used)."""
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        return None
    jit = njit(nogil=True, cache=True, boundscheck=False)

    @jit
    def pool_forward(h, items, offsets, inv_len, out, arg, p0, p1):
        """out[p] = [mean || max] of rows h[items[offsets[p]:offsets[p+1]]], p in [p0, p1);
        arg[p, d]: position in ``items`` of the max (first strictly greater), -1 if empty."""
        width = h.shape[1]
        for p in range(p0, p1):
            a, b = offsets[p], offsets[p + 1]
            total, best, at = out[p, :width], out[p, width:], arg[p]
            if b == a:
                total[:] = 0
                best[:] = 0
                at[:] = -1
                continue
            row = h[items[a]]
            for d in range(width):
                total[d] = row[d]
            for d in range(width):
                best[d] = row[d]
            for d in range(width):
                at[d] = a
            for j in range(a + 1, b):
                row = h[items[j]]
                for d in range(width):
                    total[d] += row[d]
                for d in range(width):
                    v, cur = row[d], best[d]
                    better = v > cur
                    best[d] = v if better else cur
                    at[d] = j if better else at[d]
            scale = inv_len[p]
            for d in range(width):
                total[d] *= scale

    @jit
    def pool_backward(grad, items, offsets, inv_len, arg, grad_h, c0, c1):
        """grad_h[:, c0:c1] += the pooling's gradient: every row of profile p gets
        grad_mean[p] / len(p), the max's row gets grad_max[p] (column by column)."""
        width = grad_h.shape[1]
        for p in range(offsets.shape[0] - 1):
            a, b = offsets[p], offsets[p + 1]
            if b == a:
                continue
            scale = inv_len[p]
            g_mean, g_max, at = grad[p, c0:c1], grad[p, width + c0 : width + c1], arg[p, c0:c1]
            for j in range(a, b):
                out = grad_h[items[j], c0:c1]
                for d in range(c1 - c0):
                    out[d] += g_mean[d] * scale + (at[d] == j) * g_max[d]

    @njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "contract"})
    def margins_forward(u, h, profile, positive, negative, out, k0, k1):
        """out[k] = u[profile[k]] . (h[positive[k]] - h[negative[k]]), k in [k0, k1)."""
        width = h.shape[1]
        for k in range(k0, k1):
            uk, hi, hj = u[profile[k]], h[positive[k]], h[negative[k]]
            s = out[k]  # zero, of h's dtype
            for d in range(width):
                s += uk[d] * (hi[d] - hj[d])
            out[k] = s

    @jit
    def margins_backward(grad, u, h, profile, positive, negative, grad_u, grad_h, c0, c1):
        """Columns c0:c1 of grad_u += g (h_pos - h_neg), grad_h[pos] += g u, grad_h[neg] -= g u,
        triple by triple in order."""
        for k in range(positive.shape[0]):
            q, i, j, g = profile[k], positive[k], negative[k], grad[k]
            uk, hi, hj = u[q, c0:c1], h[i, c0:c1], h[j, c0:c1]
            gu = grad_u[q, c0:c1]
            for d in range(c1 - c0):
                gu[d] += g * (hi[d] - hj[d])
            gi = grad_h[i, c0:c1]
            for d in range(c1 - c0):
                gi[d] += g * uk[d]
            gj = grad_h[j, c0:c1]
            for d in range(c1 - c0):
                gj[d] -= g * uk[d]

    return {
        "pool_forward": pool_forward,
        "pool_backward": pool_backward,
        "margins_forward": margins_forward,
        "margins_backward": margins_backward,
    }


@functools.cache
def _configured() -> str:
    wanted = settings.env("CURATORNET_CPU_KERNELS").strip().lower() or "auto"
    if wanted not in CHOICES:
        raise ValueError(f"CURATORNET_CPU_KERNELS={wanted!r}: expected one of {', '.join(CHOICES)}")
    return wanted


_forced = machine.Switch("kernels", ("fused", "torch"))
#: ``with use_kernels("fused" | "torch"):`` runs the block with that choice.
use_kernels = _forced.use


def kernels() -> str:
    """``"fused"`` or ``"torch"``: what pools profiles and scores triples on the CPU here."""
    choice = _forced.value or _configured()
    return "fused" if choice in ("auto", "fused") and _numba() is not None else "torch"


def applies(*tensors: torch.Tensor) -> bool:
    """The fused kernels take these tensors: CPU, float32 or float64, 2-D, and chosen."""
    return (
        all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)
        and all(t.dim() == 2 for t in tensors)
        and len({t.dtype for t in tensors}) == 1
        and kernels() == "fused"
    )


# ----------------------------------------------------------------------------- threads

_pool_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, executor)


def _executor(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads of this process (a forked child makes its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != workers:
            _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, "curatornet-kernel"))
        return _pool[2]


def _split(kernel: Callable, total: int, work: int, *args) -> None:
    """``kernel(*args, start, stop)`` over [0, total) in as many contiguous parts as torch
    has threads, the calling thread taking the first."""
    parts = max(1, min(torch.get_num_threads(), total, work // PARALLEL_MIN))
    if parts == 1:
        kernel(*args, 0, total)
        return
    cuts = [total * k // parts for k in range(parts + 1)]
    flush = machine.denormals_flushed()
    futures = [
        _executor(parts - 1).submit(_in_mode, flush, kernel, *args, cuts[k], cuts[k + 1])
        for k in range(1, parts)
    ]
    kernel(*args, cuts[0], cuts[1])
    for f in futures:
        f.result()


def _in_mode(flush: bool, kernel: Callable, *args) -> None:
    """``kernel(*args)`` on a pool thread with the caller's subnormal mode: a thread keeps
    the mode it was started with (:func:`~curatornet_pipeline.kernels.machine.set_flush_denormal`)."""
    torch.set_flush_denormal(flush)
    kernel(*args)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _index(t: torch.Tensor) -> np.ndarray:
    return _np(t.to(torch.int64).contiguous())


# ----------------------------------------------------------------------------- pooling


class _PoolProfiles(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor):
        h = h.contiguous()
        n_bags, width = offsets.shape[0] - 1, h.shape[1]
        lengths = (offsets[1:] - offsets[:-1]).to(h.dtype)
        inv_len = torch.where(lengths > 0, 1 / lengths.clamp(min=1), 0)
        out = torch.empty(n_bags, 2 * width, dtype=h.dtype)
        arg = torch.empty(n_bags, width, dtype=torch.int64 if len(items) >= 2**31 else torch.int32)
        items_np, offsets_np = _index(items), _index(offsets)
        k = _numba()
        _split(k["pool_forward"], n_bags, n_bags * width,
               _np(h), items_np, offsets_np, _np(inv_len), _np(out), _np(arg))  # fmt: skip
        ctx.save_for_backward(inv_len, arg)
        ctx.index = (items_np, offsets_np)
        ctx.shape = tuple(h.shape)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inv_len, arg = ctx.saved_tensors
        items_np, offsets_np = ctx.index
        grad = grad.contiguous()
        grad_h = torch.zeros(ctx.shape, dtype=grad.dtype)
        _split(_numba()["pool_backward"], ctx.shape[1], grad_h.numel(),
               _np(grad), items_np, offsets_np, _np(inv_len), _np(arg), _np(grad_h))  # fmt: skip
        return grad_h, None, None


def pool_profiles(h: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(P, 2D) [mean || max] of the ragged profiles: h (U, D), profile p is the rows
    ``items[offsets[p]:offsets[p+1]]`` of h; an empty profile gives zeros. Needs
    :func:`applies` (h)."""
    return _PoolProfiles.apply(h, items, offsets)


# ----------------------------------------------------------------------------- margins


class _TripleMargins(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, h, profile, positive, negative):
        u, h = u.contiguous(), h.contiguous()
        index = tuple(_index(t) for t in (profile, positive, negative))
        out = torch.zeros(len(positive), dtype=h.dtype)
        _split(_numba()["margins_forward"], len(out), len(out) * h.shape[1],
               _np(u), _np(h), *index, _np(out))  # fmt: skip
        ctx.save_for_backward(u, h)
        ctx.index = index
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, h = ctx.saved_tensors
        grad_u, grad_h = torch.zeros_like(u), torch.zeros_like(h)
        _split(_numba()["margins_backward"], h.shape[1], len(grad) * h.shape[1],
               _np(grad.contiguous()), _np(u), _np(h), *ctx.index,
               _np(grad_u), _np(grad_h))  # fmt: skip
        return grad_u, grad_h, None, None, None


def triple_margins(
    u: torch.Tensor,
    h: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    profile: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) x_uij = u[profile[k]] . (h[positive[k]] - h[negative[k]]): u (P, D) profile
    vectors, h (U, D) item vectors; ``profile`` None means triple k has profile k. Needs
    :func:`applies` (u, h)."""
    if profile is None:
        profile = torch.arange(len(positive))
    return _TripleMargins.apply(u, h, profile, positive, negative)
