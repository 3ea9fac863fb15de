"""Micro-benchmarks of the hand-written training kernels against the library's, at the shapes
one default CuratorNet batch has on UGallery-scale data (~15k unique items of width 200,
~24k profiles of mean size 4 over them).

Each kernel is timed forward + backward (median of ``--repeats``), and in the same run the
whole training step with the library kernel swapped in, since a kernel pays only if the
step gets faster. Verdicts in docs/benchmarks.md.

The kernels in use (:mod:`curatornet_pipeline.kernels`) are
:class:`~curatornet_pipeline.kernels.gemm.Linear` (the towers' dense layers, whose CPU
products run on oneDNN where the BLAS is slow), against ``F.linear`` on the BLAS; and the
fused pooling and margins of :mod:`~curatornet_pipeline.kernels.fused`, against PyTorch's
operators (``embedding_bag`` mean and max, gathers). Two SELUs with exp for expm1 (one out
of place with its own backward, one in place in blocks with the library's backward) and a
pooling backward did not reach the bar against the library's and were deleted; they live
on below only so that ``--deleted`` can measure their verdicts again. A vectorized max
pooling (``segment_max``) was deleted without: it ran only where the fused kernels do not.

    .venv/bin/python benchmarks/bench_kernels.py
"""

import argparse
import logging
import statistics
import sys
import time
from types import SimpleNamespace

# the package before torch: it sets the OpenMP runtime's defaults of the pipeline's processes
import curatornet_pipeline  # noqa: F401

# isort: split

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curatornet_pipeline.kernels.fused import use_kernels
from curatornet_pipeline.kernels.gemm import Linear, gemm_backend, use_gemm_backend
from curatornet_pipeline.kernels.machine import runtime
from curatornet_pipeline.kernels.malloc import retain_freed_memory

log = logging.getLogger("bench_kernels")

# ----------------------------------------------------------------------------- the replaced
# hand-written kernels, as the models used them before this benchmark's verdict

_SELU_LAMBDA = 1.0507009873554804934193349852946  # Klambauer et al. (2017)
_SELU_ALPHA = 1.6732632423543772848170429916717


class _SELUFunction(torch.autograd.Function):
    """SELU with exp instead of expm1: PyTorch's CPU ``elu`` runs a scalar expm1 and is
    5x slower than the matmuls it follows. Absolute error ~1e-7 near 0, as fp32 itself."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        neg = torch.exp(torch.clamp(x, max=0.0)).sub_(1.0).mul_(_SELU_ALPHA)
        y = torch.where(x > 0, x, neg).mul_(_SELU_LAMBDA)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        # dy/dx = lambda for x > 0, lambda*alpha*e^x = y + lambda*alpha otherwise
        slope = torch.where(y > 0, _SELU_LAMBDA, y + _SELU_LAMBDA * _SELU_ALPHA)
        return grad * slope


class _PoolProfiles(torch.autograd.Function):
    """[mean || max] over ragged profiles read straight from the unique item vectors.

    Forward gathers the profile rows once and uses segment reductions; backward scatters
    into the (U, D) item vectors with one ``index_add_`` (autograd's generic gather and
    segment-max backward are 3x slower on CPU). Ties of the max share the gradient evenly.
    Pools in fp32 under bf16 autocast (CPU segment reductions are slow in bf16).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, profile_items: torch.Tensor, offsets: torch.Tensor):
        ctx.in_dtype = h.dtype
        h = h.float()
        lengths = offsets[1:] - offsets[:-1]  # (B,)
        h_p = h.index_select(0, profile_items)  # (S, D)
        mean = torch.segment_reduce(h_p, "mean", lengths=lengths, axis=0)  # (B, D)
        amax = torch.segment_reduce(h_p, "max", lengths=lengths, axis=0)  # (B, D)
        seg = torch.repeat_interleave(torch.arange(len(lengths), device=h.device), lengths)  # (S,)
        is_max = h_p == amax.index_select(0, seg)  # (S, D)
        ctx.save_for_backward(profile_items, lengths, seg, is_max)
        ctx.n_items = h.shape[0]
        return torch.cat([mean, amax], dim=1)  # (B, 2D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        profile_items, lengths, seg, is_max = ctx.saved_tensors
        g_mean, g_max = grad.chunk(2, dim=1)  # (B, D) each
        n_max = torch.segment_reduce(is_max.to(grad.dtype), "sum", lengths=lengths, axis=0)
        g_p = (g_mean / lengths.unsqueeze(1).to(grad.dtype)).index_select(0, seg)  # (S, D)
        g_p.addcmul_(is_max.to(grad.dtype), (g_max / n_max.clamp(min=1)).index_select(0, seg))
        g_h = torch.zeros(ctx.n_items, g_mean.shape[1], dtype=grad.dtype, device=grad.device)
        g_h.index_add_(0, profile_items, g_p)
        return g_h.to(ctx.in_dtype), None, None


def custom_pool(h, profile_items, offsets):
    return _PoolProfiles.apply(h, profile_items, offsets)


class CustomSELU(nn.Module):
    def forward(self, x):
        return _SELUFunction.apply(x)


#: The second SELU with exp (in the towers until the ninth session): 1 MB blocks, so that its
#: six passes stay in a core's L2 cache, in place, the library's ``elu_backward`` behind it.
#: 1.35-1.69x ``F.selu`` on an AMD EPYC with AVX-512, 0.83-1.62x on one without, at par on an
#: Intel Xeon; the step 1.04x, 0.94x and 1.00x (docs/benchmarks.md).
_BLOCK = 1 << 18


def _selu_exp_(x: torch.Tensor, buffer: torch.Tensor) -> None:
    """x <- scale * (max(x, 0) + alpha * (exp(min(x, 0)) - 1)); buffer as large as x."""
    torch.clamp(x, max=0.0, out=buffer).exp_()
    x.clamp_(min=0.0).mul_(_SELU_LAMBDA)
    x.add_(buffer, alpha=_SELU_LAMBDA * _SELU_ALPHA).sub_(_SELU_LAMBDA * _SELU_ALPHA)


class _BlockedSELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        flat = x.view(-1)  # the towers' outputs are contiguous
        buffer = torch.empty(min(_BLOCK, flat.numel()), dtype=x.dtype)
        for start in range(0, flat.numel(), _BLOCK):
            block = flat[start : start + _BLOCK]
            _selu_exp_(block, buffer[: block.numel()])
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, _SELU_ALPHA, _SELU_LAMBDA, 1.0, True, y)


def blocked_selu_(x: torch.Tensor) -> torch.Tensor:
    return _BlockedSELU.apply(x)


class BlockedSELU(nn.Module):
    def forward(self, x):
        return blocked_selu_(x)


# ----------------------------------------------------------------------------- library


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def fwd_bwd(op, x: torch.Tensor):
    def run():
        x.grad = None
        y = op(x)
        y.backward(torch.ones_like(y))

    return run


def pool_autograd(h, profile_items, offsets):
    """[mean || max] of ragged profiles with autograd over index_select + segment_reduce."""
    lengths = offsets[1:] - offsets[:-1]
    h_p = h.index_select(0, profile_items)
    mean = torch.segment_reduce(h_p, "mean", lengths=lengths, axis=0)
    amax = torch.segment_reduce(h_p, "max", lengths=lengths, axis=0)
    return torch.cat([mean, amax], dim=1)


def pool_embedding_bag(h, profile_items, offsets):
    """The same with F.embedding_bag (mean and max bags), autograd backward."""
    off = offsets[:-1]
    mean = F.embedding_bag(profile_items, h, off, mode="mean")
    amax = F.embedding_bag(profile_items, h, off, mode="max")
    return torch.cat([mean, amax], dim=1)


#: The training-step variants: which of the project's kernels the library's replace.
STEPS = {
    "project": "as trained: fused pooling and margins, nn.SELU in place",
    "torch pooling": "PyTorch's operators for pooling (embedding_bag mean and max) and margins",
    "blocked SELU": "the deleted in-place SELU with exp in blocks in place of nn.SELU",
    "deleted": "PyTorch's operators, the first deleted SELU and the deleted pooling",
    "BLAS GEMM": "every dense layer's products on the BLAS (MKL), as F.linear",
    "oneDNN GEMM": "forward and input gradient of every dense layer on oneDNN",
}


def training_steps(kinds: list[str], repeats: int) -> dict[str, list[float]]:
    """Seconds of one default-sized CuratorNet training step (forward, backward, Adam) on a
    batch of UGallery shape, for each variant of ``STEPS``: all variants are built first,
    then their steps alternate (``repeats`` rounds), so that a slow phase of the machine
    hits every variant alike and each round gives paired ratios."""
    from bench_train import curatornet, synthetic  # noqa: PLC0415 (benchmarks/ is sys.path[0])

    import curatornet_pipeline.core.models.networks as m  # noqa: PLC0415
    from curatornet_pipeline.core.training.batching import (  # noqa: PLC0415
        WHOLE_CATALOGUE_AT,
        TripleSet,
    )
    from curatornet_pipeline.core.training.train import TrainConfig  # noqa: PLC0415

    triplets, features = synthetic(60_000)
    ts = TripleSet(triplets, ~triplets.is_validation, True, False, WHOLE_CATALOGUE_AT)
    order = np.random.default_rng(0).permutation(len(ts))
    a, b = ts.cuts(order, TrainConfig.max_profile_items_per_batch, TrainConfig.batch_triples)[0]
    batch = ts.batch(order[a:b], torch.from_numpy(features), torch.device("cpu"))
    saved_pool = m.pool_profiles

    def variant(kernels: str):
        model = curatornet(features)
        activation = {"deleted": CustomSELU, "blocked SELU": BlockedSELU}.get(kernels)
        if activation is not None:
            for tower in (model.item_tower, model.user_tower):
                for k, layer in enumerate(tower):
                    if isinstance(layer, nn.SELU):
                        tower[k] = activation()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        pool = custom_pool if kernels == "deleted" else saved_pool
        gemm = {"BLAS GEMM": "blas", "oneDNN GEMM": "onednn"}.get(kernels, gemm_backend())
        operators = kernels in ("torch pooling", "deleted")

        def step() -> float:
            m.pool_profiles = pool
            try:
                with use_gemm_backend(gemm), use_kernels("torch" if operators else "fused"):
                    t = time.perf_counter()
                    loss = model.loss(batch, 1e-4)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    return time.perf_counter() - t
            finally:
                m.pool_profiles = saved_pool

        return step

    steps = {k: variant(k) for k in kinds}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):
        for k, step in steps.items():
            times[k].append(step())
    return times


def selu_fwd_bwd(op, x0: torch.Tensor):
    """Forward + backward of an in-place activation after a copy of x0 (the towers apply it
    to a fresh linear output); the copy is timed too, for both sides alike."""

    def run():
        x = x0.clone().requires_grad_()
        y = op(x * 1.0)
        y.backward(torch.ones_like(y))

    return run


def dense_layers(items: int, profiles: int, repeats: int) -> None:
    """Forward + backward of each tower layer at a default batch's shapes, its products on
    the BLAS (``F.linear``) and on oneDNN (:class:`~curatornet_pipeline.kernels.gemm.Linear`),
    alternating round by round, against the 2048^2 product on each."""
    from bench_train import gemm_peaks  # noqa: PLC0415 (benchmarks/ is sys.path[0])

    peaks = gemm_peaks()
    log.info("fp32 2048^2 product: %s", ", ".join(f"{k} {v:.0f} GFLOP/s"
                                                  for k, v in peaks.items()))  # fmt: skip
    # item tower over the catalogue (the features get no gradient), user tower over profiles
    shapes = ((items, 2048, 200, False), (items, 200, 200, True), (profiles, 400, 300, True),
              (profiles, 300, 200, True), (profiles, 200, 200, True))  # fmt: skip
    total = {"blas": 0.0, "onednn": 0.0}
    for rows, n_in, n_out, input_grad in shapes:
        layer = Linear(n_in, n_out)
        x = torch.randn(rows, n_in, requires_grad=input_grad)
        g = torch.randn(rows, n_out)

        def run(layer=layer, x=x, g=g):
            layer.zero_grad()
            x.grad = None
            layer(x).backward(g)

        times: dict[str, list[float]] = {"blas": [], "onednn": []}
        for _ in range(repeats + 1):
            for backend in times:
                with use_gemm_backend(backend):
                    t = time.perf_counter()
                    run()
                    times[backend].append(time.perf_counter() - t)
        flops = 2 * rows * n_in * n_out * (3 if input_grad else 2)
        t_b, t_o = (statistics.median(v[1:]) for v in times.values())  # first: warm-up
        total["blas"] += t_b
        total["onednn"] += t_o
        log.info("dense layer %5d x %4d -> %3d%s fwd+bwd: BLAS %5.1f ms (%3.0f GFLOP/s), "
                 "oneDNN %5.1f ms (%3.0f GFLOP/s): oneDNN %.2fx", rows, n_in, n_out,
                 "" if input_grad else " (no input grad)", 1e3 * t_b, flops / t_b / 1e9,
                 1e3 * t_o, flops / t_o / 1e9, t_b / t_o)  # fmt: skip
    log.info("the five layers: BLAS %.0f ms, oneDNN %.0f ms: oneDNN %.2fx", 1e3 * total["blas"],
             1e3 * total["onednn"], total["blas"] / total["onednn"])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=15_000)
    ap.add_argument("--profiles", type=int, default=24_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--deleted",
        action="store_true",
        help="also time the deleted SELU and pooling backward against the library",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    retain_freed_memory()  # as a training process does (kernels/malloc.py)
    from bench_train import profile_sizes  # noqa: PLC0415 (benchmarks/ is sys.path[0])

    log.info("%s", runtime())
    rng = np.random.default_rng(0)

    sizes = profile_sizes(args.profiles, rng)  # bench_train's heavy tail: mean 4, max 270
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]))
    profile_items = torch.from_numpy(rng.integers(0, args.items, int(offsets[-1])))
    from curatornet_pipeline.kernels import margins as triple_margins  # noqa: PLC0415
    from curatornet_pipeline.kernels import pool_profiles  # noqa: PLC0415

    x = torch.randn(args.items, 200, requires_grad=True)
    pooled = {}
    for k in ("fused", "torch"):
        with use_kernels(k):
            pooled[k] = timed(fwd_bwd(lambda h: pool_profiles(h, profile_items, offsets), x),
                              args.repeats)  # fmt: skip
    log.info("pooling [mean||max] (%d items x 200, %d profiles) fwd+bwd: fused %.1f ms, "
             "PyTorch's operators %.1f ms: fused %.2fx", args.items, args.profiles,
             1e3 * pooled["fused"], 1e3 * pooled["torch"],
             pooled["torch"] / pooled["fused"])  # fmt: skip
    n_triples = 24_000
    batch = SimpleNamespace(
        positive=torch.from_numpy(rng.integers(0, args.items, n_triples)),
        negative=torch.from_numpy(rng.integers(0, args.items, n_triples)),
        profile_of=torch.from_numpy(rng.integers(0, args.profiles, n_triples)),
    )
    u = torch.randn(args.profiles, 200, requires_grad=True)
    margins = {}
    for k in ("fused", "torch"):
        with use_kernels(k):

            def run():
                triple_margins(
                    u, x, batch.positive, batch.negative, batch.profile_of
                ).sum().backward()

            margins[k] = timed(run, args.repeats)
    log.info("margins (%d triples, %d profiles, %d items, width 200) fwd+bwd: fused %.1f ms, "
             "PyTorch's operators %.1f ms: fused %.2fx", n_triples, args.profiles, args.items,
             1e3 * margins["fused"], 1e3 * margins["torch"],
             margins["torch"] / margins["fused"])  # fmt: skip
    dense_layers(args.items, args.profiles, args.repeats)
    kinds = [k for k in STEPS if args.deleted or k not in ("deleted", "blocked SELU")]
    if args.deleted:
        # the towers' SELU shapes: item layers (items x 200), user layers (profiles x 300, 200)
        for rows, width in ((args.items, 200), (args.profiles, 300)):
            x = torch.randn(rows, width)
            copy = timed(selu_fwd_bwd(lambda z: z, x), args.repeats)
            ours = timed(selu_fwd_bwd(blocked_selu_, x), args.repeats)
            lib = timed(selu_fwd_bwd(lambda z: F.selu(z, inplace=True), x), args.repeats)
            # the kernels' own share, once the copy both sides make is taken out (when the
            # noise leaves one: the copy can measure longer than a whole fast run)
            net = (f"{(lib - copy) / (ours - copy):.2f}x" if ours > copy and lib > copy
                   else "not measurable")  # fmt: skip
            log.info("deleted blocked SELU (%d x %d) fwd+bwd: blocked %.2f ms, F.selu %.2f "
                     "ms: blocked %.2fx; net of the %.2f ms copy both include: %s", rows,
                     width, 1e3 * ours, 1e3 * lib, lib / ours, 1e3 * copy, net)  # fmt: skip
        width = 200
        x = torch.randn(args.items, width, requires_grad=True)
        ours = timed(fwd_bwd(_SELUFunction.apply, x), args.repeats)
        lib = timed(fwd_bwd(F.selu, x), args.repeats)
        log.info("deleted SELU (%d x %d) fwd+bwd: custom %.2f ms, F.selu %.2f ms: "
                 "custom %.2fx", args.items, width, 1e3 * ours, 1e3 * lib,
                 lib / ours)  # fmt: skip
        runs = {
            "deleted custom backward": lambda h: _PoolProfiles.apply(h, profile_items,
                                                                     offsets),
            "autograd segment_reduce": lambda h: pool_autograd(h, profile_items, offsets),
            "autograd embedding_bag": lambda h: pool_embedding_bag(h, profile_items,
                                                                   offsets),
        }  # fmt: skip
        t = {k: timed(fwd_bwd(op, x), args.repeats) for k, op in runs.items()}
        base = t["deleted custom backward"]
        log.info("pooling [mean||max] (%d items x %d) fwd+bwd: %s", args.items, width,
                 ", ".join(f"{k} {1e3 * v:.1f} ms ({v / base:.2f}x)"
                           for k, v in t.items()))  # fmt: skip
    times = training_steps(kinds, max(args.repeats, 15))
    log.info("end to end, one default training step (forward+backward+Adam), medians of %d "
             "alternating rounds: %s", len(times["project"]),
             ", ".join(f"{k} {1e3 * statistics.median(v):.0f} ms"
                       for k, v in times.items()))  # fmt: skip

    def paired(other: str) -> float:  # median over rounds of other's step / the project's
        return statistics.median(
            [o / p for o, p in zip(times[other], times["project"], strict=True)]
        )

    log.info("paired ratio, the step is %.2fx faster with the fused pooling and margins than "
             "with PyTorch's operators", paired("torch pooling"))  # fmt: skip
    if args.deleted:
        log.info("paired ratio, the step is %.2fx faster with nn.SELU than with the deleted "
                 "blocked SELU", paired("blocked SELU"))  # fmt: skip
    log.info("paired ratio, the step with every dense layer's forward and input gradient on "
             "oneDNN is %.2fx faster than on the BLAS (the project takes %s here)",
             statistics.median([b / o for b, o in zip(times["BLAS GEMM"],
                                                      times["oneDNN GEMM"], strict=True)]),
             gemm_backend())  # fmt: skip


if __name__ == "__main__":
    main()
