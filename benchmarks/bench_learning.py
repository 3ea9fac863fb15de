"""Speed that learns: held-out ranking AUC and validation accuracy against training wall time,
for the default batching and smaller batches, on UGallery-scale data with a planted signal.

13,297 items whose 2048-d features carry their style: by default shaped like pooled
post-ReLU ResNet-50 vectors (non-negative, a third zeros;
``core.synth_vectors.resnet_like_vectors``), as real ones are; with ``--features normal``,
Gaussian, the style in a 16-d subspace buried in noise (signal-to-noise 1:1 there, noise
alone elsewhere; the figures before issue 31); 2,919 training users who each like 3 of
40 styles; triples (profile, liked positive, uniform negative) with heavy-tailed profiles
(mean 4); 300 held-out users, each with a 5-item profile and 5 held-out liked items. After
every epoch the training loop's evaluator hook scores all items for the held-out profiles and
reports the AUC of the held-out items against every other item (as the evaluation computes
AUC) and Recall@100. Training time excludes the evaluator.

    .venv/bin/python benchmarks/bench_learning.py --epochs 5
"""

import argparse
import logging
import sys
from dataclasses import replace

# the package before torch: it sets the OpenMP runtime's defaults of the pipeline's processes
import curatornet_pipeline  # noqa: F401

# isort: split

import numpy as np
import torch

from curatornet_pipeline.core.data.synth_vectors import resnet_like_vectors
from curatornet_pipeline.core.models.networks import CuratorNet, CuratorNetConfig
from curatornet_pipeline.core.training.train import TrainConfig, train
from curatornet_pipeline.core.types import Triplets
from curatornet_pipeline.kernels import machine
from curatornet_pipeline.kernels.machine import runtime

N_ITEMS, N_USERS, D_IN, N_STYLES, D_STYLE = 13_297, 2_919, 2048, 40, 16
N_HELD, HELD_PROFILE, HELD_POS = 300, 5, 5

log = logging.getLogger("bench_learning")


def world(n_triples: int, seed: int = 0, kind: str = "resnet"):
    rng = np.random.default_rng(seed)
    style = rng.integers(0, N_STYLES, N_ITEMS)
    if kind == "resnet":
        features = resnet_like_vectors(style, rng, D_IN)
    else:
        basis = np.linalg.qr(rng.standard_normal((D_IN, D_STYLE)))[0].T
        basis *= np.sqrt(D_IN / D_STYLE)
        centers = rng.standard_normal((N_STYLES, D_STYLE)).astype(np.float32)
        latent = centers[style] + rng.standard_normal((N_ITEMS, D_STYLE)).astype(np.float32)
        features = (latent @ basis).astype(np.float32)
        features += rng.standard_normal((N_ITEMS, D_IN), dtype=np.float32) * 1.0
    by_style = [np.flatnonzero(style == s) for s in range(N_STYLES)]
    n_all = N_USERS + N_HELD
    tastes = np.stack([rng.choice(N_STYLES, 3, replace=False) for _ in range(n_all)])

    def liked(u: int, k: int) -> np.ndarray:
        s = tastes[u, rng.integers(0, 3, k)]
        return np.array([by_style[x][rng.integers(0, len(by_style[x]))] for x in s])

    sizes = np.minimum(rng.zipf(2.2, n_triples), 60)
    sizes = np.maximum(1, np.round(sizes * 4.0 / sizes.mean())).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    users = rng.integers(0, N_USERS, n_triples)
    # profile items: a liked style of the user per slot
    slot_user = np.repeat(users, sizes)
    slot_style = tastes[slot_user, rng.integers(0, 3, len(slot_user))]
    counts = np.array([len(b) for b in by_style])
    pick = (rng.random(len(slot_user)) * counts[slot_style]).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    flat_by_style = np.concatenate(by_style)
    profile_items = flat_by_style[starts[slot_style] + pick]
    pos_style = tastes[users, rng.integers(0, 3, n_triples)]
    positive = flat_by_style[
        starts[pos_style] + (rng.random(n_triples) * counts[pos_style]).astype(np.int64)
    ]
    negative = rng.integers(0, N_ITEMS, n_triples)
    triplets = Triplets(
        profile_offsets=offsets.astype(np.int64),
        profile_items=profile_items.astype(np.int32),
        profile=np.arange(n_triples, dtype=np.int64),
        positive=positive.astype(np.int32),
        negative=negative.astype(np.int32),
        user=users.astype(np.int32),
        strategy=np.zeros(n_triples, np.int8),
        hash=np.arange(n_triples, dtype=np.uint64),
        is_validation=rng.random(n_triples) < 0.05,
    )
    held = [(liked(u, HELD_PROFILE), liked(u, HELD_POS)) for u in range(N_USERS, n_all)]
    return triplets, features, held


def make_evaluator(features: np.ndarray, held):
    x = torch.from_numpy(features)
    prof = [torch.from_numpy(p) for p, _ in held]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum([len(p) for p in prof])]))
    flat = torch.cat(prof)

    def evaluate(model: CuratorNet) -> dict[str, float]:
        h = model.embed_items(x)  # (N, D)
        u = model.embed_users(h, flat, offsets)  # (H, D)
        scores = (u @ h.T).numpy()  # (H, N)
        aucs, recalls = [], []
        for k, (p, pos) in enumerate(held):
            s = scores[k].copy()
            s[p] = -np.inf  # profile items are not candidates
            pos = np.setdiff1d(pos, p)
            if len(pos) == 0:
                continue
            mask = np.ones(len(s), bool)
            mask[p] = False
            mask[pos] = False
            neg = s[mask]
            ranks = np.searchsorted(np.sort(neg), s[pos])  # negatives below each positive
            aucs.append(float(ranks.mean() / len(neg)))
            top = np.argpartition(-s, 100)[:100]
            recalls.append(len(np.intersect1d(top, pos)) / len(pos))
        return {"val_auc": float(np.mean(aucs)), "val_recall@100": float(np.mean(recalls))}

    return evaluate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triples", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batches", default="32768,4096,1024", help="batch_triples caps to compare")
    ap.add_argument("--bf16", action="store_true",
                    help="each cap also with bfloat16 autocast (TrainConfig.bf16)")  # fmt: skip
    ap.add_argument("--features", choices=["resnet", "normal"], default="resnet",
                    help="resnet: shaped like pooled post-ReLU ResNet-50 vectors; normal: "
                         "Gaussian, the style in a 16-d subspace (before issue 31)")  # fmt: skip
    ap.add_argument("--keep-subnormals", action="store_true",
                    help="train with subnormal floats kept (no FTZ/DAZ), as before issue 31")  # fmt: skip
    args = ap.parse_args(argv)
    if args.keep_subnormals:
        machine.FLUSH_DENORMALS = False
        machine.set_flush_denormal(False)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    logging.getLogger("curatornet_pipeline").setLevel(logging.WARNING)
    triplets, features, held = world(args.triples, kind=args.features)
    evaluate = make_evaluator(features, held)
    log.info("%s; %d triples, %s features, %d held-out users, subnormals %s", runtime(),
             len(triplets), args.features, len(held),
             "kept" if args.keep_subnormals else "flushed")  # fmt: skip
    log.info("| batch_triples | precision | epoch | train s (cum.) | loss | val acc | "
             "held-out AUC | Recall@100 |")  # fmt: skip
    log.info("|---|---|---|---|---|---|---|---|")
    runs = [
        (int(c), bf16) for c in args.batches.split(",") for bf16 in (False, True)[: 1 + args.bf16]
    ]
    for cap, bf16 in runs:
        torch.manual_seed(0)
        model = CuratorNet(CuratorNetConfig())
        model.fit_scaler(features)
        config = replace(TrainConfig(), epochs=args.epochs, patience=args.epochs,
                         batch_triples=cap, device="cpu", bf16=bf16)  # fmt: skip
        n_train = int((~triplets.is_validation).sum())
        cum = [0.0]

        def show(stats, cap=cap, cum=cum, n_train=n_train, bf16=bf16) -> None:
            cum[0] += n_train / stats.triples_per_second
            log.info("| %d | %s | %d | %.1f | %.4f | %.4f | %.4f | %.3f |", cap,
                     "bf16" if bf16 else "fp32", stats.epoch, cum[0], stats.loss,
                     stats.val_accuracy, stats.metrics["val_auc"],
                     stats.metrics["val_recall@100"])  # fmt: skip

        train(model, triplets, triplets, features, config, show, evaluator=evaluate)


if __name__ == "__main__":
    main()
