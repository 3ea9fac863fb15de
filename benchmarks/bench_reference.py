"""This project's training loop against a reference-style CuratorNet at equal batch sizes.

The authors' lab PyTorch implementation (the "tutorial") computes each triple on its own:
it looks up the 2048-d vectors of the profile items, positive and negative of every triple
(profiles padded to the batch's longest), runs the item tower on all of them, pools the
profile with max and average over the padded axis, and scores with batched dot products.
``ReferenceStyle`` below does the same computation (written for this benchmark, same layer
sizes as ``CuratorNetConfig``), trained with Adam on batches built before the clock starts:
the tutorial's fastest setting. The project's loop (``core.train.train``) runs the item
tower once per unique item of a batch and pools ragged profiles with ``F.embedding_bag``;
its batch preparation is inside the timed epoch.

Same triples (``bench_train.synthetic``: UGallery-shaped, heavy-tailed profiles), one epoch
per repeat, medians of ``--repeats``, same process; the ratio is project / reference
triples per second.

    .venv/bin/python benchmarks/bench_reference.py --triples 50000 --batches 128,512 \
        --profile-cap 4

``--profile-cap`` cuts profiles to the reference sampler's scale; without it the heavy
tail (max ~270 items) makes every padded batch as wide as its longest profile.
"""

import argparse
import logging
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

# the package before torch: it sets the OpenMP runtime's defaults of the pipeline's processes
import curatornet_pipeline  # noqa: F401

# isort: split

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import curatornet, synthetic  # noqa: E402

from curatornet_pipeline.core.models.networks import CuratorNetConfig  # noqa: E402
from curatornet_pipeline.core.training.train import TrainConfig, train  # noqa: E402
from curatornet_pipeline.kernels.machine import runtime  # noqa: E402

log = logging.getLogger("bench_reference")


class ReferenceStyle(nn.Module):
    """Per-triple CuratorNet: no sharing of item vectors between triples of a batch."""

    def __init__(self, features: torch.Tensor, config: CuratorNetConfig | None = None):
        super().__init__()
        config = config or CuratorNetConfig()
        self.features = features  # frozen, z-scored once
        sizes_i = [config.input_dim, *config.item_layers]
        sizes_u = [2 * config.item_layers[-1], *config.user_layers]
        self.item = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes_i[:-1], sizes_i[1:], strict=True)
        )
        self.user = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes_u[:-1], sizes_u[1:], strict=True)
        )

    def _item_tower(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.item:
            x = F.selu(layer(x))
        return x

    def forward(self, profile: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, neg):
        p = self._item_tower(self.features[profile])  # (B, P, D): every profile item
        hp = self._item_tower(self.features[pos])  # (B, D)
        hn = self._item_tower(self.features[neg])
        m = mask.unsqueeze(-1)
        mean = (p * m).sum(1) / m.sum(1)
        amax = p.masked_fill(~m, float("-inf")).amax(1)
        u = torch.cat([mean, amax], dim=1)
        for layer in self.user:
            u = F.selu(layer(u))
        return (u * hp).sum(1) - (u * hn).sum(1)


def cap_profiles(triplets, cap: int):
    """Every profile cut to its first ``cap`` items (the reference sampler's profiles are
    short: mean 1.96 items on UGallery), so padding measures the method, not a heavy tail."""
    offsets, items = triplets.profile_offsets, triplets.profile_items
    sizes = np.minimum(np.diff(offsets), cap)
    new_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    keep = np.concatenate([np.arange(s, s + n) for s, n in zip(offsets[:-1], sizes, strict=True)])
    return replace(triplets, profile_offsets=new_offsets, profile_items=items[keep])


def prebuilt_batches(triplets, batch: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Padded (profile, mask, positive, negative) batches in a shuffled order."""
    train_rows = np.flatnonzero(~triplets.is_validation)
    order = np.random.default_rng(seed).permutation(train_rows)
    offsets, items = triplets.profile_offsets, triplets.profile_items
    out = []
    for a in range(0, len(order), batch):
        rows = order[a : a + batch]
        prof = triplets.profile[rows]
        starts, ends = offsets[prof], offsets[prof + 1]
        width = int((ends - starts).max())
        idx = np.zeros((len(rows), width), np.int64)
        mask = np.zeros((len(rows), width), bool)
        for r, (s, e) in enumerate(zip(starts, ends, strict=True)):
            idx[r, : e - s] = items[s:e]
            mask[r, : e - s] = True
        out.append(
            (
                torch.from_numpy(idx),
                torch.from_numpy(mask),
                torch.from_numpy(triplets.positive[rows].astype(np.int64)),
                torch.from_numpy(triplets.negative[rows].astype(np.int64)),
            )
        )
    return out


def reference_epoch_seconds(features: torch.Tensor, batches, lr: float) -> float:
    torch.manual_seed(0)
    model = ReferenceStyle(features)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    t = time.perf_counter()
    for profile, mask, pos, neg in batches:
        loss = F.softplus(-model(profile, mask, pos, neg)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triples", type=int, default=50_000)
    ap.add_argument("--batches", default="128,512", help="comma list of batch sizes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--profile-cap",
        type=int,
        default=0,
        help="cut every profile to this many items (0: keep the heavy tail, max ~270)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    logging.getLogger("curatornet_pipeline").setLevel(logging.WARNING)

    triplets, features = synthetic(args.triples)
    if args.profile_cap:
        triplets = cap_profiles(triplets, args.profile_cap)
    n_train = int((~triplets.is_validation).sum())
    sizes = np.diff(triplets.profile_offsets)[triplets.profile]
    log.info("%s; %d training triples; profile size mean %.2f max %d", runtime(), n_train,
             sizes.mean(), sizes.max())  # fmt: skip
    x = torch.from_numpy(features)
    scaled = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    base = replace(TrainConfig(), epochs=1, device="cpu", patience=1)

    def project(batch: int | None) -> float:
        config = base if batch is None else replace(base, batch_triples=batch)
        r = train(curatornet(features), triplets, triplets, features, config)
        return n_train / r.triples_per_second

    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        batches = prebuilt_batches(triplets, batch)
        ref = statistics.median(
            reference_epoch_seconds(scaled, batches, base.lr) for _ in range(args.repeats)
        )
        own = statistics.median(project(batch) for _ in range(args.repeats))
        rows.append((f"batches of {batch}", n_train / own, n_train / ref))
    own_default = statistics.median(project(None) for _ in range(args.repeats))
    rows.append(("project default vs reference at 512", n_train / own_default, rows[-1][2]))
    log.info("%-38s %14s %14s %7s", "setting", "project t/s", "reference t/s", "ratio")
    for name, own_tps, ref_tps in rows:
        log.info("%-38s %14.0f %14.0f %6.2fx", name, own_tps, ref_tps, own_tps / ref_tps)


if __name__ == "__main__":
    main()
