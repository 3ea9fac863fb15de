"""Max pooling of ragged profiles on the CPU: the user tower's max half.

``F.embedding_bag(mode="max")`` runs a scalar loop over every (profile item, dimension) on
the CPU (its sum and mean modes have a vectorized kernel; max has none): at a default
CuratorNet batch (~24k profiles, ~100k profile items, width 200) it took a quarter of the
training step, more than the user tower's matmuls. :func:`segment_max` computes the same
maximum position by position instead: profiles sorted by length, so that the profiles
longer than k are a prefix, and one vectorized ``maximum`` per position k over the k-th
items of those profiles. The loop runs max-length times (270 at the heaviest synthetic
tail), each over a contiguous block; the argmax is kept as the position k, and the
backward writes each block's share of the gradient and adds it into the item vectors
with one ``index_add_``.
``benchmarks/bench_kernels.py`` measures it against ``F.embedding_bag`` (docs/benchmarks.md).

On CUDA, ``F.embedding_bag`` has a parallel max kernel and is used as is. On the CPU the
training path pools with the fused kernel of :mod:`~curatornet_pipeline.core.fused`; this one
is the max of PyTorch's operators path (``CURATORNET_CPU_KERNELS=torch``), the reference the
fused kernel is tested against.
"""

import torch
import torch.nn.functional as F


class _SegmentMax(torch.autograd.Function):
    """(B, D) per-profile maximum of the rows ``h[items[offsets[b]:offsets[b+1]]]``.

    Profiles are sorted longest first; ``rows`` lists the h rows position-major (block k:
    the k-th item of each of the ``longer[k]`` profiles longer than k), so that every step
    gathers one contiguous block and updates a prefix of the output. The argmax is kept as
    the position k, in float32: comparisons written straight into a float buffer and
    ``maximum`` are vectorized, where ``masked_fill_`` and bool masks are scalar loops.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor):
        n_bags, width = offsets.shape[0] - 1, h.shape[1]
        lengths = offsets[1:] - offsets[:-1]
        order = torch.argsort(lengths, descending=True, stable=True)  # longest first
        sorted_lengths = lengths.index_select(0, order)
        # longer[k]: how many profiles are longer than k (a prefix of the sorted ones)
        longer = n_bags - torch.cumsum(torch.bincount(sorted_lengths), 0)
        block = torch.zeros(longer.shape[0] + 1, dtype=torch.int64)  # block k of ``rows``
        torch.cumsum(longer, 0, out=block[1:])
        bag = torch.repeat_interleave(torch.arange(n_bags), sorted_lengths)  # sorted bag ids
        first = torch.zeros(n_bags + 1, dtype=torch.int64)
        torch.cumsum(sorted_lengths, 0, out=first[1:])
        k = torch.arange(bag.shape[0]) - first.index_select(0, bag)  # position in profile
        source = offsets.index_select(0, order).index_select(0, bag) + k  # into ``items``
        position_major = torch.empty_like(source)
        position_major[block.index_select(0, k) + bag] = source
        rows = items.index_select(0, position_major)  # h rows, position-major

        bounds = list(zip(block.tolist(), longer.tolist(), strict=False))
        n0 = bounds[0][1] if bounds else 0
        out = torch.zeros(n_bags, width, dtype=h.dtype)
        out[:n0] = h.index_select(0, rows[:n0])
        argk = torch.zeros(n_bags, width, dtype=h.dtype)  # position of the max, as a float
        better = torch.empty(bounds[1][1] if len(bounds) > 1 else 0, width, dtype=h.dtype)
        for pos, (at, nk) in enumerate(bounds[1:], start=1):
            if nk == 0:
                break
            xk, head, step = h.index_select(0, rows[at : at + nk]), out[:nk], better[:nk]
            # strictly greater: ties keep the earlier position, as embedding_bag does
            torch.gt(xk, head, out=step).mul_(pos)
            torch.maximum(argk[:nk], step, out=argk[:nk])
            torch.maximum(head, xk, out=head)
        ctx.save_for_backward(argk, order, rows)
        ctx.bounds, ctx.n_rows = bounds, h.shape[0]
        return torch.empty_like(out).index_copy_(0, order, out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        argk, order, rows = ctx.saved_tensors
        grad = grad.index_select(0, order)  # profiles in sorted order
        grad_h = torch.zeros(ctx.n_rows, grad.shape[1], dtype=grad.dtype)
        hit = torch.empty_like(grad)
        for pos, (at, nk) in enumerate(ctx.bounds):
            if nk == 0:
                break
            torch.eq(argk[:nk], pos, out=hit[:nk])
            grad_h.index_add_(0, rows[at : at + nk], hit[:nk].mul_(grad[:nk]))
        return grad_h, None, None


def segment_max(h: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(B, D) maximum over each ragged profile: h (U, D) rows, profile b is the rows
    ``items[offsets[b]:offsets[b+1]]`` of h; an empty profile gives zeros (as
    ``F.embedding_bag``). The gradient goes to one row of tied maxima (the first)."""
    if h.device.type != "cpu":
        return F.embedding_bag(items, h, offsets[:-1], mode="max")
    return _SegmentMax.apply(h, items, offsets)
