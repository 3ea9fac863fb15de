"""Benchmark triple sampling at UGallery scale: 10M training triples + 5% validation.

Data: the synthetic ``ugallery`` scale of :mod:`curatornet_pipeline.core.data.synth`
(2,919 users, 13,297 items, 573 artists, 6,535 purchases in 4,897 baskets, a
271-purchase user, a 21-item basket), random cluster labels (k=100) and random
PCA vectors (d=200). Targets: >= 1M triples/s overall, 10M in <= 15 s, peak
memory < 1.5 GB. Also times a plain per-triple Python loop of strategy 1.

Run: ``.venv/bin/python benchmarks/bench_sampling.py [--total 10000002]``
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.core.data.synth import SynthConfig, generate
from curatornet_pipeline.core.sampling.triples import (
    SamplingConfig,
    SamplingContext,
    build_context,
    merge_triplets,
    sample_strategy,
)
from curatornet_pipeline.core.split.baskets import split_train_test
from curatornet_pipeline.core.types import GUIDELINE_STRATEGIES
from curatornet_pipeline.kernels.machine import runtime


def load_ugallery(seed: int = 0, visuals: str = "artist"):
    """Synthetic UGallery-scale split, artists, clusters (k=100) and PCA vectors (d=200).

    ``visuals="random"``: i.i.d. Gaussian vectors and uniform labels (the worst
    case for s4: same-artist items are no more alike than any two). ``"artist"``:
    an artist's items scatter around the artist's direction and clusters are the
    nearest of 100 random centres, closer to real embeddings.
    """
    with tempfile.TemporaryDirectory() as tmp:
        generate(SynthConfig(scale="ugallery", seed=seed, images=False), Path(tmp))
        inventory = data.read_inventory(Path(tmp) / "inventory.csv")
        purchases, _ = data.read_purchases(Path(tmp) / "purchases.csv", inventory)
    ids = inventory["artwork_id_hash"].to_numpy().astype(str)
    artist = inventory["artist_id_hash"].astype("category").cat.codes.to_numpy(np.int32)
    rng = np.random.default_rng(seed)
    pca = rng.standard_normal((len(ids), 200)).astype(np.float32)
    if visuals == "random":
        clusters = rng.integers(0, 100, len(ids)).astype(np.int32)
    else:
        pca += 1.5 * rng.standard_normal((artist.max() + 1, 200)).astype(np.float32)[artist]
        clusters = np.argmax(
            pca @ rng.standard_normal((200, 100)).astype(np.float32), axis=1
        ).astype(np.int32)
    return split_train_test(purchases, ids), artist, clusters, pca


def loop_strategy1(ctx: SamplingContext, n: int, seed: int = 0) -> list[tuple]:
    """Strategy 1 one triple at a time in plain Python: the baseline to beat."""
    rng = np.random.default_rng(seed)
    profiles = [
        set(ctx.profile_items[ctx.profile_offsets[u] : ctx.profile_offsets[u + 1]].tolist())
        for u in range(ctx.n_users)
    ]
    by_cluster = [
        ctx.cluster_items[ctx.cluster_offsets[c] : ctx.cluster_offsets[c + 1]].tolist()
        for c in range(len(ctx.cluster_offsets) - 1)
    ]
    nonempty = [c for c, items in enumerate(by_cluster) if items]
    cluster = ctx.cluster.tolist()
    seen, out = set(), []
    while len(out) < n:
        u = int(rng.integers(ctx.n_users))
        profile = sorted(profiles[u])
        pos = profile[int(rng.integers(len(profile)))]
        while True:
            c = cluster[pos] if rng.random() < 0.6 else nonempty[int(rng.integers(len(nonempty)))]
            neg = by_cluster[c][int(rng.integers(len(by_cluster[c])))]
            if neg not in profiles[u]:
                break
        key = hash((tuple(profile), pos, neg))
        if key not in seen:
            seen.add(key)
            out.append((u, pos, neg))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--total", type=int, default=10_000_002, help="training triples over six strategies"
    )
    parser.add_argument("--visuals", choices=["artist", "random"], default="artist")
    parser.add_argument(
        "--loop", type=int, default=100_000, help="triples for the Python-loop baseline"
    )
    args = parser.parse_args()
    print(runtime())

    t0 = time.perf_counter()
    split, artist, clusters, pca = load_ugallery(visuals=args.visuals)
    t1 = time.perf_counter()
    ctx = build_context(split, artist, clusters, pca)
    t2 = time.perf_counter()
    print(
        f"data: {len(split.user_ids)} users, {split.n_items} items, "
        f"{len(split.basket_items)} train purchases ({t1 - t0:.1f} s); context {t2 - t1:.2f} s"
    )

    config = SamplingConfig(n_per_strategy=-(-args.total // 6))
    parts = {}
    start = time.perf_counter()
    for name in GUIDELINE_STRATEGIES:
        t = time.perf_counter()
        parts[name] = sample_strategy(ctx, name, config)
        dt = time.perf_counter() - t
        m = parts[name].meta
        print(
            f"{name:18s} {len(parts[name]):>10,d} triples ({m['produced']:,d} train + "
            f"{m['produced_validation']:,d} val, target {m['target']:,d}) {dt:5.2f} s "
            f"{len(parts[name]) / dt:>12,.0f} triples/s  dup-rejected {m['rejected_duplicates']:,d}"
        )
    t = time.perf_counter()
    merged = merge_triplets(parts)
    merge_s = time.perf_counter() - t
    total_s = time.perf_counter() - start
    n_train = int((~merged.is_validation).sum())
    print(
        f"merge {merge_s:.2f} s, rejected across strategies {merged.meta['rejected_cross_strategy']}"
    )
    print(
        f"TOTAL {len(merged):,d} triples ({n_train:,d} train + {len(merged) - n_train:,d} val) "
        f"in {total_s:.2f} s incl. dedup/merge = {len(merged) / total_s:,.0f} triples/s; "
        f"{len(merged.profile_offsets) - 1:,d} distinct profiles"
    )
    del parts, merged

    t = time.perf_counter()
    loop = loop_strategy1(ctx, args.loop)
    loop_rate = len(loop) / (time.perf_counter() - t)
    t = time.perf_counter()
    vec = sample_strategy(
        ctx, "s1_user_profile", SamplingConfig(n_per_strategy=args.loop, validation_fraction=0)
    )
    vec_rate = len(vec) / (time.perf_counter() - t)
    print(
        f"strategy 1, {args.loop:,d} triples: Python loop {loop_rate:,.0f}/s, vectorised "
        f"{vec_rate:,.0f}/s, ratio {vec_rate / loop_rate:.0f}x"
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (maxrss) {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
