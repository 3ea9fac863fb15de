"""Time ``evaluate`` for one model under both protocols at the real catalogue size.

Synthetic data shaped like UGallery: 13,297 items, ~700 test users with
training profiles of ~3 items on average and hidden baskets of 1-21 items; the
scorer is a real matmul of precomputed 200-d user and item vectors.

    .venv/bin/python benchmarks/bench_eval.py [--users 700] [--runs 5]

Target: under 2 s in total for both protocols on 2 cores (median of runs).
"""

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from curatornet_pipeline.core.evaluation.evaluate import EvalConfig, build_timeline, evaluate
from curatornet_pipeline.core.types import TrainTestSplit
from curatornet_pipeline.kernels.machine import runtime

N_ITEMS = 13_297
DIM = 200


class MatmulScorer:
    """Dot product of precomputed user and item vectors (VBPR-like)."""

    name = "matmul"

    def __init__(self, n_users: int, rng: np.random.Generator):
        self.users = rng.standard_normal((n_users, DIM)).astype(np.float32)
        self.items = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)

    def score(self, profile_offsets, profile_items, users):
        return self.users[users] @ self.items.T  # (B, n_items) float32


def synthetic(n_users: int, seed: int = 0):
    """A split where every user has training baskets and a hidden last basket."""
    rng = np.random.default_rng(seed)
    baskets, users, stamps = [], [], []
    for u in range(n_users):
        n_train = rng.geometric(0.5)  # 2 training baskets on average
        sizes = np.minimum(rng.geometric(0.6, n_train + 1), 21)  # 1-21 items, mostly 1
        t = np.sort(rng.integers(1_400_000_000, 1_550_000_000, n_train + 1))
        for size, ts in zip(sizes, t, strict=True):
            baskets.append(rng.choice(N_ITEMS, size, replace=False).astype(np.int32))
            users.append(u)
            stamps.append(ts)
    sizes = np.array([len(b) for b in baskets])
    users, stamps = np.array(users), np.array(stamps, dtype=np.int64)
    last = np.r_[users[1:] != users[:-1], True]  # last basket of each user is hidden
    item_offsets = lambda m: np.r_[0, np.cumsum(sizes[m])]  # noqa: E731
    split = TrainTestSplit(
        user_ids=np.array([f"u{u}" for u in range(n_users)]),
        user_basket_offsets=np.r_[0, np.cumsum(np.bincount(users[~last], minlength=n_users))],
        basket_item_offsets=item_offsets(~last),
        basket_items=np.concatenate([b for b, h in zip(baskets, last, strict=True) if not h]),
        basket_timestamps=stamps[~last],
        test_users=np.arange(n_users, dtype=np.int32),
        test_item_offsets=item_offsets(last),
        test_items=np.concatenate([b for b, h in zip(baskets, last, strict=True) if h]),
        test_timestamps=stamps[last],
        n_items=N_ITEMS,
    )
    ids = np.array([f"a{i}" for i in range(N_ITEMS)])
    purchases = pd.DataFrame(
        {
            "user_id_hash": np.repeat(users, sizes).astype(str),
            "artwork_id_hash": ids[np.concatenate(baskets)],
            "purchase_timestamp": np.repeat(stamps, sizes),
        }
    )
    first_sale = purchases.groupby("artwork_id_hash")["purchase_timestamp"].min()
    upload = rng.integers(1_300_000_000, 1_550_000_000, N_ITEMS)
    sold = pd.Index(ids).get_indexer(first_sale.index)
    upload[sold] = np.minimum(upload[sold], first_sale.to_numpy())  # listed before sold
    inventory = pd.DataFrame({"artwork_id_hash": ids, "artist_id_hash": "x",
                              "upload_timestamp": upload})  # fmt: skip
    return split, build_timeline(ids, inventory, purchases), rng


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=700)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(runtime())
    split, timeline, rng = synthetic(args.users)
    scorer = MatmulScorer(len(split.user_ids), rng)
    profile_sizes = np.diff(split.basket_item_offsets[split.user_basket_offsets])
    print(
        f"{len(split.test_users)} test users, {N_ITEMS} items, profile mean "
        f"{profile_sizes.mean():.2f}, hidden basket mean {np.diff(split.test_item_offsets).mean():.2f}"
    )
    total = 0.0
    for protocol in ("unbought", "in_stock"):
        config = EvalConfig(protocol=protocol)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = evaluate(scorer, split, config, timeline)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        total += median
        auc, se = result.summary["auc"]
        print(
            f"{protocol:9s}: {median:.3f} s median of {args.runs} "
            f"({result.n_users} users, {result.skipped} skipped, "
            f"mean candidates {result.per_user['n_candidates'].mean():.0f}, AUC {auc:.4f} ± {se:.4f})"
        )
    print(f"total    : {total:.3f} s (target < 2 s)")


if __name__ == "__main__":
    main()
