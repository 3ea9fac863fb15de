"""Serving latency of cold-start recommendation on a UGallery-sized catalogue (CPU).

A CuratorNet with the paper's dimensions (2048 -> 200 -> 200 item tower, 400 -> 300 ->
200 -> 200 user tower, untrained: latency does not depend on the weights) over 13,297
items with 2048 random features. Prints the median latency of a top-20 for a new
5-item profile (target < 50 ms on 2 cores), of a batch of 1,000 profiles (target < 2 s),
of adding 100 new artworks, and of a profile with a new image's features.

    .venv/bin/python benchmarks/bench_recommend.py --threads 2
"""

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.models.networks import CuratorNet, CuratorNetConfig
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.recommend.recommender import Recommender
from curatornet_pipeline.core.types import NEVER
from curatornet_pipeline.kernels.machine import runtime

N_ITEMS, D_IN = 13_297, 2048


def build(seed: int = 0) -> tuple[Recommender, np.random.Generator]:
    rng = np.random.default_rng(seed)
    features = rng.random((N_ITEMS, D_IN), dtype=np.float32)
    torch.manual_seed(seed)
    model = CuratorNet(CuratorNetConfig(input_dim=D_IN))
    model.fit_scaler(features)
    one = rng.random(N_ITEMS) < 0.8  # most artworks are one-of-a-kind; a third of them sold
    sold = np.where(one & (rng.random(N_ITEMS) < 0.35), 1_000, NEVER)
    catalogue = Catalogue.from_arrays(
        [f"item{i:05d}" for i in range(N_ITEMS)],
        features,
        artists=[f"artist{a}" for a in rng.integers(0, 573, N_ITEMS)],
        clusters=rng.integers(0, 100, N_ITEMS),
        sold_out_timestamp=sold,
        one_of_a_kind=one,
    )
    return Recommender(CuratorNetScorer(model.eval(), features), catalogue), rng


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(runtime())

    start = time.perf_counter()
    rec, rng = build()
    setup = time.perf_counter() - start
    ids = rec.catalogue.ids
    profiles = [list(rng.choice(ids, 5, replace=False)) for _ in range(args.repeats)]
    it = iter(profiles * 2)
    single = median_ms(lambda: rec.recommend(next(it), k=20), args.repeats)
    in_stock = median_ms(lambda: rec.recommend(profiles[0], k=20, in_stock_only=True), 50)
    image = rng.random((1, D_IN), dtype=np.float32)
    with_image = median_ms(
        lambda: rec.recommend(profiles[1][:4], k=20, extra_profile_features=image), 50
    )
    sizes = rng.integers(1, 11, 1000)
    batch = [list(rng.choice(ids, s, replace=False)) for s in sizes]
    batch_ms = median_ms(lambda: rec.recommend_batch(batch, k=20), 5)
    new = rng.random((100, D_IN), dtype=np.float32)
    start = time.perf_counter()
    rec.add_items([f"new{i}" for i in range(100)], new)
    add_ms = 1000 * (time.perf_counter() - start)
    after_add = median_ms(lambda: rec.recommend(profiles[2], k=20), 50)

    print(
        f"catalogue {N_ITEMS} items x {D_IN} features, CuratorNet (200-d), "
        f"{args.threads} torch threads; setup (item tower over the catalogue) {setup:.2f} s"
    )
    print(
        f"top-20, new 5-item profile           : {single:7.2f} ms median of {args.repeats}"
        f"  (target < 50 ms)"
    )
    print(f"top-20, in stock only                : {in_stock:7.2f} ms")
    print(f"top-20, 4 items + 1 new image vector : {with_image:7.2f} ms")
    print(f"batch of 1,000 profiles (1-10 items) : {batch_ms:7.1f} ms median of 5  (target < 2 s)")
    print(f"add 100 new artworks (item tower)    : {add_ms:7.2f} ms")
    print(f"top-20 after adding them             : {after_add:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
