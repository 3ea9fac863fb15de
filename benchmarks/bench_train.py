"""Training throughput and fraction of the matmul peak on UGallery-shaped triples (CPU default).

One run prints: the processor, the fp32 matmul peak of this machine (median), and for one
epoch of the real training loop (medians of ``--repeats``): triples/s and fraction of the
peak of one CuratorNet (also with the BLAS for every product, with PyTorch's operators for
pooling and margins, in bf16 where the CPU has it, and with subnormal floats kept against
flushed, in alternating rounds), and VBPR with dense vs sparse row updates; and the share of
subnormal values among the activations and gradients of one epoch with subnormals kept. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` over the forward and backward of real batches
(so only the products that run: the frozen features get no input gradient). ``--profile``
adds a ``torch.profiler`` breakdown of one CuratorNet epoch.

The features are shaped like pooled post-ReLU ResNet-50 vectors (non-negative, a third
zeros; ``core.synth_vectors.resnet_like_vectors``), as real ones are; ``--features
normal`` gives the standard-normal features of the figures before issue 31.

    .venv/bin/python benchmarks/bench_train.py --triples 200000
"""

import argparse
import logging
import math
import statistics
import sys
import time
from dataclasses import replace

# the package before torch: it sets the OpenMP runtime's defaults of the pipeline's processes
import curatornet_pipeline  # noqa: F401

# isort: split

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from curatornet_pipeline.core.data.synth_vectors import resnet_like_vectors
from curatornet_pipeline.core.models.networks import VBPR, CuratorNet, CuratorNetConfig, VBPRConfig
from curatornet_pipeline.core.training.batching import WHOLE_CATALOGUE_AT, TripleSet
from curatornet_pipeline.core.training.train import TrainConfig, bf16_native, train
from curatornet_pipeline.core.types import Triplets
from curatornet_pipeline.kernels import machine
from curatornet_pipeline.kernels.fused import kernels, use_kernels
from curatornet_pipeline.kernels.gemm import (
    gemm_backend,
    onednn_available,
    onednn_mm,
    use_gemm_backend,
)
from curatornet_pipeline.kernels.machine import runtime

N_ITEMS, N_USERS, D_IN, MAX_PROFILE = 13_297, 2_919, 2048, 270

log = logging.getLogger("bench_train")


def profile_sizes(n: int, rng: np.random.Generator, mean: float = 4.0) -> np.ndarray:
    """Heavy-tailed sizes in 1..270: discrete power law k^-a with a set for the given mean."""
    k = np.arange(1, MAX_PROFILE + 1, dtype=np.float64)
    lo, hi = 1.0, 4.0
    for _ in range(60):  # mean decreases with a
        a = (lo + hi) / 2
        p = k**-a
        lo, hi = (a, hi) if (k * p).sum() / p.sum() > mean else (lo, a)
    return rng.choice(k.astype(np.int64), size=n, p=p / p.sum())


def item_features(
    n_items: int, kind: str, rng: np.random.Generator, group: np.ndarray | None = None
) -> np.ndarray:
    """(n_items, 2048) float32: ``"resnet"``, shaped like pooled post-ReLU ResNet-50 vectors
    with the items' ``group`` structure (40 random groups when None); ``"normal"``, i.i.d.
    standard normal."""
    if kind == "normal":
        return rng.standard_normal((n_items, D_IN), dtype=np.float32)
    if kind != "resnet":
        raise ValueError(f"features {kind!r}: choose 'resnet' or 'normal'")
    group = rng.integers(0, 40, n_items) if group is None else group
    return resnet_like_vectors(group, rng, D_IN)


def synthetic(
    n_triples: int, seed: int = 0, features: str = "resnet"
) -> tuple[Triplets, np.ndarray]:
    """UGallery-shaped triples over 2048-d features (every triple has a real user)."""
    rng = np.random.default_rng(seed)
    x = item_features(N_ITEMS, features, rng)
    n_profiles = max(n_triples // 4, 1)
    sizes = profile_sizes(n_profiles, rng)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    items = rng.integers(0, N_ITEMS, offsets[-1], dtype=np.int64).astype(np.int32)
    n = n_triples
    triplets = Triplets(
        profile_offsets=offsets,
        profile_items=items,
        profile=rng.integers(0, n_profiles, n),
        positive=rng.integers(0, N_ITEMS, n).astype(np.int32),
        negative=rng.integers(0, N_ITEMS, n).astype(np.int32),
        user=rng.integers(0, N_USERS, n).astype(np.int32),
        strategy=np.zeros(n, np.int8),
        hash=np.arange(n, dtype=np.uint64),
        is_validation=np.arange(n) < min(2000, n // 10),  # small: validation is not timed
    )
    return triplets, x


def sampled(n_triples: int, seed: int = 0, features: str = "resnet") -> tuple[Triplets, np.ndarray]:
    """Triples of the six sampling strategies on the synthetic UGallery-scale purchases
    (benchmarks/bench_sampling.py), over 2048-d features that follow the items' artists:
    the real profile reuse (whole histories shared by strategies 1 and 3, single items by 2
    and 4)."""
    from bench_sampling import load_ugallery

    from curatornet_pipeline.core.sampling.triples import (
        SamplingConfig,
        build_context,
        merge_triplets,
        sample_strategy,
    )
    from curatornet_pipeline.core.types import GUIDELINE_STRATEGIES

    split, artist, clusters, pca = load_ugallery(seed)
    ctx = build_context(split, artist, clusters, pca)
    config = SamplingConfig(n_per_strategy=-(-n_triples // 6), seed=seed)
    triplets = merge_triplets({s: sample_strategy(ctx, s, config) for s in GUIDELINE_STRATEGIES})
    rng = np.random.default_rng(seed)
    return triplets, item_features(split.n_items, features, rng, artist)


def profiles_per_triple(triplets: Triplets, config: TrainConfig) -> float:
    """Distinct profiles a default batch pools per triple (the user tower's share of rows)."""
    ts = TripleSet(triplets, ~triplets.is_validation, True, False)
    order = np.random.default_rng(config.seed).permutation(len(ts))
    cuts = ts.cuts(order, config.max_profile_items_per_batch, config.batch_triples)
    distinct = sum(len(np.unique(ts.profile[order[a:b]])) for a, b in cuts)
    return distinct / len(ts)


def _gflops(fn, n: int, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def gemm_peaks(n: int = 2048, reps: int = 7, dtype=torch.float32) -> dict[str, float]:
    """GFLOP/s of an n x n product, median of ``reps``, on the BLAS (``torch.mm``) and, in
    float32 where PyTorch has it, on oneDNN (``kernels/gemm.py``'s kernel)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    peaks = {"BLAS": _gflops(lambda: torch.mm(a, b), n, reps)}
    if dtype == torch.float32 and onednn_available():
        bt = b.t().contiguous()
        peaks["oneDNN"] = _gflops(lambda: onednn_mm(a, bt, None), n, reps)
    return peaks


def matmul_peak_gflops(n: int = 2048, reps: int = 7, dtype=torch.float32) -> float:
    """The machine's peak: the faster of the two GEMMs of :func:`gemm_peaks`."""
    return max(gemm_peaks(n, reps, dtype).values())


def curatornet(features: np.ndarray) -> CuratorNet:
    torch.manual_seed(0)
    model = CuratorNet(CuratorNetConfig())
    model.fit_scaler(features)
    return model


def vbpr(features: np.ndarray, n_users: int = N_USERS) -> VBPR:
    torch.manual_seed(0)
    model = VBPR(VBPRConfig(n_users=n_users, n_items=len(features)))
    model.fit_scaler(features)
    return model


def flops_per_triple(make, triplets, features, config) -> float:
    """Counted FLOPs (forward + backward) per training triple over every batch of an epoch,
    cut as training cuts them (the item tower's cost is per batch, not per triple)."""
    module = make()
    whole = WHOLE_CATALOGUE_AT if module.kind == "curatornet" else math.inf
    ts = TripleSet(
        triplets, ~triplets.is_validation, module.needs_profiles, module.kind == "vbpr", whole
    )
    order = np.random.default_rng(config.seed).permutation(len(ts))
    cuts = ts.cuts(order, config.max_profile_items_per_batch, config.batch_triples)
    x = torch.from_numpy(features)
    flops = triples = 0
    for a, b in cuts:
        batch = ts.batch(order[a:b], x, torch.device("cpu"))
        with FlopCounterMode(display=False) as counter:
            module.loss(batch, 1e-4).backward()
        flops += counter.get_total_flops()
        triples += b - a
    return flops / triples


def subnormals(t: torch.Tensor) -> tuple[int, int]:
    """(subnormal, all) values of a float32 tensor, read from their bits: a comparison of
    floats would itself see subnormals as zero where they are flushed."""
    if t.dtype != torch.float32:
        return 0, 0
    bits = t.detach().contiguous().view(torch.int32)
    tiny = ((bits & 0x7F800000) == 0) & ((bits & 0x007FFFFF) != 0)  # exponent 0, mantissa not
    return int(tiny.sum()), t.numel()


class SubnormalCount:
    """Counts the subnormal values of every training step of ``model``: among the tensors
    its loss saves for backward (the activations, parameters left out) and among the
    gradients that reach each node of the backward graph (parameters' included)."""

    def __init__(self, model: torch.nn.Module):
        self.counts = {"activations": [0, 0], "gradients": [0, 0]}
        self._params = {id(p) for p in model.parameters()}
        self._loss = model.loss
        model.loss = self._counted_loss  # what the training loop calls, on this instance

    def _add(self, kind: str, t: torch.Tensor) -> None:
        tiny, n = subnormals(t)
        self.counts[kind][0] += tiny
        self.counts[kind][1] += n

    def _saved(self, t: torch.Tensor) -> torch.Tensor:
        if id(t) not in self._params:
            self._add("activations", t)
        return t

    def _counted_loss(self, batch, l2):
        with torch.autograd.graph.saved_tensors_hooks(self._saved, lambda t: t):
            loss = self._loss(batch, l2)
        seen, nodes = set(), [loss.grad_fn]
        while nodes:
            node = nodes.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            node.register_hook(self._gradients)
            nodes.extend(child for child, _ in node.next_functions)
        return loss

    def _gradients(self, grad_inputs, grad_outputs) -> None:
        for g in grad_outputs:
            if g is not None:
                self._add("gradients", g)

    def line(self) -> str:
        return ", ".join(
            f"{kind} {100 * tiny / max(n, 1):.4f}% ({tiny:,} of {n:,})"
            for kind, (tiny, n) in self.counts.items()
        )


def keeping_subnormals(fn):
    """``fn()`` with subnormal floats kept (no FTZ/DAZ), as training ran before issue 31."""
    machine.FLUSH_DENORMALS = False
    machine.set_flush_denormal(False)
    try:
        return fn()
    finally:
        machine.FLUSH_DENORMALS = True
        machine.set_flush_denormal(True)


def paired_runs(fns: dict, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """:func:`timed_runs` of several variants in alternating rounds (the order reversed
    every other round, after one untimed warm-up of each), so that a slow phase of a shared
    machine hits them alike and each round gives a paired ratio."""
    for fn in fns.values():
        fn()
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for r in range(repeats):
        for k in list(fns)[:: 1 if r % 2 == 0 else -1]:
            runs[k] += timed_runs(fns[k], 1)
    return runs


def timed_runs(fn, repeats: int) -> list[tuple[float, float]]:
    """(seconds, matmul peak measured just before) of each repeat: on a shared machine the
    peak drifts by tens of percent within minutes, so each run is set against its own."""
    return [(matmul_peak_gflops(reps=5), fn())[::-1] for _ in range(repeats)]


def _named(key: str, names: tuple[str, ...]) -> bool:
    """``key`` is one of ``names``; a name ending in ``*`` matches as a prefix."""
    return any(key.startswith(n[:-1]) if n.endswith("*") else key == n for n in names)


def profile_epoch(triplets, features, config) -> None:
    """Where one CuratorNet epoch's time goes, by operator category."""
    from torch.profiler import ProfilerActivity, profile

    model = curatornet(features)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(model, triplets, triplets, features, replace(config, epochs=1))
    # self time of the operators; the pooling functions' own loops count as pooling. Fresh
    # pages of new tensors fault on first touch, inside whichever operator writes them
    cats = {
        "matmuls (mm/addmm/bmm/baddbmm, oneDNN linear)": (
            "aten::mm",
            "aten::addmm",
            "aten::bmm",
            "aten::baddbmm",
            "mkldnn::_linear_pointwise",
        ),
        # selu_'s own passes (its add_ and mul_ count with the other elementwise ops)
        "SELU forward and backward": (
            "aten::elu",
            "aten::elu_",
            "aten::elu_backward",
            "_SELUExp*",
            "aten::exp_",
            "aten::clamp",
            "aten::clamp_",
            "aten::sub_",
        ),
        "pooling (fused kernel; or embedding_bag mean and max)": (
            "_PoolProfiles",
            "_PoolProfilesBackward",
            "aten::embedding_bag",
            "aten::_embedding_bag",
            "aten::_embedding_bag_backward",
            "aten::_embedding_bag_dense_backward",
            "aten::_embedding_bag_per_sample_weights_backward",
            "aten::cat",
        ),
        "margins and gathers (fused kernel; or gathers, scatters)": (
            "_TripleMargins",
            "_TripleMarginsBackward",
            "aten::index_select",
            "aten::index",
            "aten::index_add_",
            "aten::scatter_add_",
            "aten::embedding_dense_backward",
        ),
        "other elementwise (scores, loss, grads)": (
            "aten::mul",
            "aten::sum",
            "aten::add",
            "aten::add_",
            "aten::sub",
            "aten::copy_",
            "aten::fill_",
            "aten::zero_",
            "aten::softplus",
            "aten::softplus_backward",
        ),
        "optimizer (Adam)": (
            "aten::_foreach_*",
            "Optimizer.step*",
            "aten::addcmul_",
            "aten::lerp_",
        ),
        "batch preparation (unique, from_numpy)": (
            "aten::unique",
            "aten::_unique2",
            "aten::from_numpy",
        ),
    }
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    log.info("profile of one epoch (self CPU time, %.2f s total):", total / 1e6)
    for name, prefixes in cats.items():
        t = sum(e.self_cpu_time_total for e in events if _named(e.key, prefixes))
        log.info("  %-42s %5.1f%%", name, 100 * t / max(total, 1))
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    for e in top:
        log.info("  top: %-36s %6.1f%%", e.key, 100 * e.self_cpu_time_total / max(total, 1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triples", type=int, default=200_000)
    ap.add_argument("--batch-triples", type=int, default=TrainConfig.batch_triples)
    ap.add_argument("--budget", type=int, default=TrainConfig.max_profile_items_per_batch)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="all",
                    help="comma list: single,blas,torchkernels,bf16,ftz,subnormals,"
                         "vbpr")  # fmt: skip
    ap.add_argument("--profile", action="store_true", help="profile one CuratorNet epoch")
    ap.add_argument("--data", choices=["random", "sampled"], default="random",
                    help="random: each triple draws one of n/4 power-law profiles; sampled: "
                         "the six strategies on synthetic UGallery purchases")  # fmt: skip
    ap.add_argument("--features", choices=["resnet", "normal"], default="resnet",
                    help="resnet: shaped like pooled post-ReLU ResNet-50 vectors; normal: "
                         "i.i.d. standard normal (the figures before issue 31)")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    logging.getLogger("curatornet_pipeline").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = (
        set(args.only.split(","))
        if args.only != "all"
        else {"single", "blas", "torchkernels", "bf16", "ftz", "subnormals", "vbpr"}
    )

    make = synthetic if args.data == "random" else sampled
    triplets, features = make(args.triples, features=args.features)
    n_users = int(triplets.user.max()) + 1
    sizes = np.diff(triplets.profile_offsets)[triplets.profile]
    n_train = int((~triplets.is_validation).sum())
    config = replace(
        TrainConfig(), epochs=1, batch_triples=args.batch_triples,
        max_profile_items_per_batch=args.budget, device=args.device,
    )  # fmt: skip
    log.info("%s", runtime())
    log.info("%s triples: %d items x %d, %d training triples, profile size mean %.2f max %d, "
             "%.2f distinct profiles per triple in a batch; batches of at most %d triples",
             args.data, len(features), D_IN, n_train, sizes.mean(), sizes.max(),
             profiles_per_triple(triplets, config), config.batch_triples)  # fmt: skip
    log.info("%s features: %.1f%% zeros, mean %.3f, min %.3f, max %.3f", args.features,
             100 * (features == 0).mean(), features.mean(), features.min(),
             features.max())  # fmt: skip
    first = gemm_peaks()
    peaks = [max(first.values())]
    log.info(
        "fp32 matmul peak (2048^2, median of 7): %s; the fractions below are of the "
        "faster, measured before each repeat",
        ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in first.items()),
    )
    log.info("dense layers' products on: %s (CURATORNET_CPU_GEMM); pooling and margins: %s "
             "(CURATORNET_CPU_KERNELS)", gemm_backend(), kernels())  # fmt: skip

    def report(name: str, runs: list[tuple[float, float]], flops: float) -> float:
        """Log medians of the runs; the fraction of peak is the median of each run's own."""
        seconds = statistics.median(s for s, _ in runs)
        peaks.extend(p for _, p in runs)
        tps = n_train / seconds
        gflops = flops * tps / 1e9
        fraction = statistics.median(flops * n_train / s / 1e9 / p for s, p in runs)
        log.info("%-34s %6.2f s/epoch  %8.0f triples/s  %6.1f MFLOP/triple  %6.1f GFLOP/s = "
                 "%.2f of peak (medians of %d)", name, seconds, tps, flops / 1e6, gflops,
                 fraction, len(runs))  # fmt: skip
        return seconds

    def one() -> float:
        r = train(curatornet(features), triplets, triplets, features, config)
        return n_train / r.triples_per_second

    results = {}
    f_one = flops_per_triple(lambda: curatornet(features), triplets, features, config)
    if "single" in parts:
        results["single"] = report("CuratorNet, one model", timed_runs(one, args.repeats), f_one)
    if "blas" in parts and gemm_backend() != "blas":

        def one_blas() -> float:
            with use_gemm_backend("blas"):
                return one()

        results["blas"] = report(
            "CuratorNet, one model, BLAS GEMM", timed_runs(one_blas, args.repeats), f_one
        )
        if "single" in parts:
            log.info("oneDNN products: %.2fx BLAS's triples/s",
                     results["blas"] / results["single"])  # fmt: skip
    if "torchkernels" in parts and kernels() != "torch":

        def one_torch_kernels() -> float:
            with use_kernels("torch"):
                return one()

        results["torchkernels"] = report(
            "CuratorNet, one model, torch pooling",
            timed_runs(one_torch_kernels, args.repeats),
            f_one,
        )
        if "single" in parts:
            log.info("fused pooling and margins: %.2fx torch operators' triples/s",
                     results["torchkernels"] / results["single"])  # fmt: skip
    if "bf16" in parts and not bf16_native(args.device):
        log.info("bf16 autocast: skipped, this CPU has no native bfloat16 products (%s; "
                 "oneDNN's bf16 check is false) and training refuses bf16 here",
                 torch.backends.cpu.get_cpu_capability())  # fmt: skip
    elif "bf16" in parts:
        bf16_peak = matmul_peak_gflops(dtype=torch.bfloat16)
        log.info("bf16 matmul peak (torch.mm 2048^2, median of 7): %.1f GFLOP/s", bf16_peak)
        config_bf16 = replace(config, bf16=True)

        def one_bf16() -> float:
            r = train(curatornet(features), triplets, triplets, features, config_bf16)
            return n_train / r.triples_per_second

        results["bf16"] = report(
            "CuratorNet, bf16 autocast", timed_runs(one_bf16, args.repeats), f_one
        )
        log.info("bf16: %.2fx fp32's triples/s; %.2f of the bf16 peak (the fraction above is "
                 "of the fp32 peak)", results.get("single", math.nan) / results["bf16"],
                 f_one * n_train / results["bf16"] / 1e9 / bf16_peak)  # fmt: skip
    if "ftz" in parts:
        runs = paired_runs({"on": one, "off": lambda: keeping_subnormals(one)}, args.repeats)
        on = report("CuratorNet, subnormals flushed", runs["on"], f_one)
        off = report("CuratorNet, subnormals kept", runs["off"], f_one)
        paired = statistics.median(o / f for (o, _), (f, _) in zip(runs["off"], runs["on"],
                                                                    strict=True))  # fmt: skip
        log.info("flushing subnormals (FTZ/DAZ): %.2fx the triples/s of keeping them (median "
                 "of %d paired rounds; %.2fx from the medians)", paired, len(runs["on"]),
                 off / on)  # fmt: skip
    if "subnormals" in parts:

        def counted() -> SubnormalCount:
            model = curatornet(features)
            count = SubnormalCount(model)
            train(model, triplets, triplets, features, config)
            return count

        log.info("subnormal values in one CuratorNet epoch with subnormals kept: %s",
                 keeping_subnormals(counted).line())  # fmt: skip
    if "vbpr" in parts:
        for sparse in (False, True):
            c = replace(config, sparse_rows=sparse)

            def run_vbpr(c=c) -> float:
                r = train(vbpr(features, n_users), triplets, triplets, features, c)
                return n_train / r.triples_per_second

            def make(sparse=sparse):
                m = vbpr(features, n_users)
                m.sparse_grad = sparse
                return m

            f_v = flops_per_triple(make, triplets, features, c)
            results[f"vbpr{sparse}"] = report(
                f"VBPR, {'sparse' if sparse else 'dense'} rows",
                timed_runs(run_vbpr, args.repeats),
                f_v,
            )
        log.info("VBPR sparse speedup over dense: %.2fx",
                 results["vbprFalse"] / results["vbprTrue"])  # fmt: skip
    log.info("matmul peak over the run: median %.1f, min %.1f, max %.1f GFLOP/s (%d measures)",
             statistics.median(peaks), min(peaks), max(peaks), len(peaks))  # fmt: skip
    if args.profile:
        profile_epoch(triplets, features, config)


if __name__ == "__main__":
    main()
