"""Training throughput of CuratorNet on UGallery-shaped synthetic triples (CPU by default).

Prints triples/s of the real training loop (``core.train.train``, one epoch), useful FLOPs per
triple (item tower once per UNIQUE item of a batch, user tower per triple, x3 for forward and
backward), the measured fp32 matmul peak of this machine in the same run and the fraction of
it achieved, the projected time of a 10M-triple epoch, and the speedup over a naive
implementation (item tower recomputed per triple for profile, positive and negative; profiles
padded to the batch maximum, batches grouped by profile size as in the reference code).

    .venv/bin/python benchmarks/bench_train.py --triples 200000
"""

import argparse
import logging
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from curatornet_pipeline.core.models import CuratorNet, CuratorNetConfig
from curatornet_pipeline.core.train import TrainConfig, _TripleSet, train
from curatornet_pipeline.core.types import Triplets

N_ITEMS, D_IN, MAX_PROFILE = 13_297, 2048, 270


def profile_sizes(n: int, rng: np.random.Generator, mean: float = 4.0) -> np.ndarray:
    """Heavy-tailed sizes in 1..270: discrete power law k^-a with a set for the given mean."""
    k = np.arange(1, MAX_PROFILE + 1, dtype=np.float64)
    lo, hi = 1.0, 4.0
    for _ in range(60):  # mean decreases with a
        a = (lo + hi) / 2
        p = k**-a
        lo, hi = (a, hi) if (k * p).sum() / p.sum() > mean else (lo, a)
    return rng.choice(k.astype(np.int64), size=n, p=p / p.sum())


def synthetic(n_triples: int, seed: int = 0) -> tuple[Triplets, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((N_ITEMS, D_IN), dtype=np.float32)
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
        user=np.full(n, -1, np.int32),
        strategy=np.zeros(n, np.int8),
        hash=np.arange(n, dtype=np.uint64),
        is_validation=np.arange(n) < min(2000, n // 10),  # small: validation is not timed
    )
    return triplets, features


def matmul_peak_gflops(n: int = 2048, reps: int = 7, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def forward_macs(model: CuratorNet, n_unique: int, n_triples: int) -> tuple[int, int]:
    c = model.config
    item = sum(
        a * b for a, b in zip([c.input_dim, *c.item_layers][:-1], c.item_layers, strict=True)
    )
    user_in = [2 * c.item_layers[-1], *c.user_layers]
    user = sum(a * b for a, b in zip(user_in[:-1], c.user_layers, strict=True))
    return n_unique * item, n_triples * user


def naive_step(model, optimizer, features_t, prof, lengths, pos, neg, l2) -> None:
    """The lab implementation's shape: item tower on every (padded) profile slot, pos and neg."""
    b, L = prof.shape
    x = model.scale(features_t[prof])  # (B, L, F)
    h = model.item_tower(x)  # (B, L, D) recomputed per triple
    mask = (torch.arange(L)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, L, 1)
    mean = (h * mask).sum(1) / lengths[:, None]
    amax = (h * mask + (~mask) * -9999.0).amax(1)
    u = model.user_tower(torch.cat([mean, amax], 1))
    s_pos = (u * model.embed_items(features_t[pos])).sum(1)
    s_neg = (u * model.embed_items(features_t[neg])).sum(1)
    loss = F.softplus(-(s_pos - s_neg)).mean() + l2 * model.l2_penalty()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bench_naive(model, triplets, features, budget: int, n_batches: int) -> float:
    """Triples/s of the naive step on batches grouped by profile size (sampled across sizes)."""
    ts = _TripleSet(triplets, ~triplets.is_validation, True, False)
    order = np.argsort(ts.sizes, kind="stable")
    cuts = ts.cuts(order, budget, 10**9)
    # reference budget counts |profile| + 3 per triple; same budget on padded slots here
    picks = np.linspace(0, len(cuts) - 1, n_batches).round().astype(int)
    features_t = torch.from_numpy(features)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    done, seconds = 0, 0.0
    for k in picks:
        a, b = cuts[k]
        idx = order[a:b]
        lengths = ts.sizes[idx]
        L = int(lengths.max())
        prof = np.zeros((len(idx), L), np.int64)
        for r, p in enumerate(ts.profile[idx]):
            row = ts.items[ts.offsets[p] : ts.offsets[p + 1]]
            prof[r, : len(row)] = row
        t = time.perf_counter()
        naive_step(
            model, optimizer, features_t, torch.from_numpy(prof), torch.from_numpy(lengths).float(),
            torch.from_numpy(ts.positive[idx]), torch.from_numpy(ts.negative[idx]), 1e-4,
        )  # fmt: skip
        seconds += time.perf_counter() - t
        done += len(idx)
    # batches picked uniformly over the sorted order: weight by the whole epoch's cost
    return done / seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triples", type=int, default=200_000)
    ap.add_argument("--batch-triples", type=int, default=TrainConfig.batch_triples)
    ap.add_argument("--budget", type=int, default=TrainConfig.max_profile_items_per_batch)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--naive-batches", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (TrainConfig.bf16)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    log = logging.getLogger("bench_train")
    if args.threads:
        torch.set_num_threads(args.threads)

    triplets, features = synthetic(args.triples)
    sizes = np.diff(triplets.profile_offsets)[triplets.profile]
    log.info(
        "synthetic: %d items x %d, %d triples, profile size mean %.2f max %d; torch threads %d",
        N_ITEMS, D_IN, len(triplets), sizes.mean(), sizes.max(), torch.get_num_threads(),
    )  # fmt: skip
    peak = matmul_peak_gflops()
    log.info("fp32 matmul peak (torch.mm 2048^2, median): %.1f GFLOP/s", peak)
    if args.bf16:
        peak = matmul_peak_gflops(dtype=torch.bfloat16)
        log.info("bf16 matmul peak (torch.mm 2048^2, median): %.1f GFLOP/s (fraction below)", peak)

    torch.manual_seed(0)
    model = CuratorNet(CuratorNetConfig())
    model.fit_scaler(features)
    config = replace(
        TrainConfig(),
        epochs=1,
        batch_triples=args.batch_triples,
        max_profile_items_per_batch=args.budget,
        device=args.device,
        bf16=args.bf16,
    )
    result = train(model, triplets, triplets, features, config)
    tps = result.triples_per_second

    # useful FLOPs of that epoch: replay its batch cuts (same seed) and count unique items
    ts = _TripleSet(triplets, ~triplets.is_validation, True, False)
    order = np.random.default_rng(config.seed).permutation(len(ts))
    item_macs = user_macs = 0
    cuts = ts.cuts(order, config.max_profile_items_per_batch, config.batch_triples)
    for a, b in cuts:
        idx = order[a:b]
        prof = np.concatenate(
            [ts.items[ts.offsets[p] : ts.offsets[p + 1]] for p in ts.profile[idx]]
        )
        n_unique = len(np.unique(np.concatenate([prof, ts.positive[idx], ts.negative[idx]])))
        i_m, u_m = forward_macs(model, n_unique, len(idx))
        item_macs, user_macs = item_macs + i_m, user_macs + u_m
    flops_per_triple = 3 * 2 * (item_macs + user_macs) / len(ts)
    achieved = flops_per_triple * tps / 1e9
    log.info(
        "optimized%s: %.0f triples/s (%d batches of <= %d triples, budget %d profile items)",
        " (bf16 autocast)" if config.bf16 else " (fp32)", tps, len(cuts), config.batch_triples,
        config.max_profile_items_per_batch,
    )  # fmt: skip
    log.info(
        "useful FLOPs/triple %.2f MFLOP (item tower %.0f%%), achieved %.1f GFLOP/s = %.0f%% of peak",
        flops_per_triple / 1e6, 100 * item_macs / (item_macs + user_macs), achieved,
        100 * achieved / peak,
    )  # fmt: skip
    log.info("projected 10M-triple epoch: %.1f min", 1e7 / tps / 60)

    torch.manual_seed(0)
    naive_model = CuratorNet(CuratorNetConfig())
    naive_model.fit_scaler(features)
    naive_tps = bench_naive(naive_model, triplets, features, 20_000, args.naive_batches)
    log.info(
        "naive fp32 (per-triple item tower, padded, grouped by size): %.0f triples/s", naive_tps
    )
    log.info("speedup over naive: %.1fx; target 20,000 triples/s: %s", tps / naive_tps,
             "met" if tps >= 20_000 else "NOT met")  # fmt: skip


if __name__ == "__main__":
    main()
