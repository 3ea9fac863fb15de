"""Training loop for CuratorNet and VBPR on sampled triples.

Follows the reference settings of CuratorNet (Messina et al., "CuratorNet: Visually-aware
Recommendation of Art Images", 2020): Adam, learning rate decaying by 0.6 per epoch from
1e-4 towards 1e-6, early stopping after 2 epochs without validation improvement, and
mini-batches cut by a budget of profile items. VBPR (He & McAuley, AAAI 2016) goes through
the same loop on the triples of real users.

Batches hold every unique item once (see :class:`~curatornet_pipeline.core.models.TripletBatch`).
Checkpoints after every epoch carry all state (weights, Adam, scheduler, RNGs, history), so a
killed run resumed from its checkpoint ends with the same weights as an uninterrupted one.
"""

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from curatornet_pipeline.core.models import VBPR, CuratorNet, TripletBatch
from curatornet_pipeline.core.types import Triplets

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4  # Adam learning rate of the first epoch
    lr_min: float = 1e-6  # floor of the decayed learning rate
    lr_decay: float = 0.6  # per epoch: lr_e = max(lr_min, lr * lr_decay**e)
    l2: float = 1e-4  # lambda, paper grid {0, 1e-4, 1e-3, 1e-2}
    epochs: int = 10
    patience: int = 2  # early stopping: epochs without validation-accuracy improvement
    max_profile_items_per_batch: int = 100_000  # reference: batches cut by profile items
    # cap on triples per batch; by default the profile-item budget governs, as in the
    # reference (~24k triples at a mean profile of 4): the item tower then runs on
    # ~0.55 unique items per triple. Small datasets need smaller batches for enough steps.
    batch_triples: int = 32_768
    seed: int = 0  # shuffling of the triples
    device: str = "auto"  # "auto": cuda when available, else cpu
    # bit-identical weights for identical inputs (CPU), so an unchanged nightly
    # re-run keeps the model's data version; costs little on CPU
    deterministic: bool = True
    bf16: bool = False  # bfloat16 autocast of the matmuls (not in the paper; ~4x on AVX512-BF16)


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean training loss (ranking + L2) over the epoch's triples
    val_accuracy: float  # fraction of validation triples with s_pos > s_neg
    lr: float  # learning rate used during the epoch
    triples_per_second: float  # training triples / training seconds (validation excluded)
    seconds: float  # wall time of the epoch, validation included
    improved: bool  # validation accuracy improved on the best so far


@dataclass
class TrainResult:
    history: list[EpochStats]
    best_epoch: int  # 1-based epoch whose weights the model holds
    best_val_accuracy: float
    seconds: float  # total training wall time (over resumed runs too)
    triples_per_second: float  # over all training epochs
    model: CuratorNet | VBPR = field(repr=False)


# ----------------------------------------------------------------------------- batching


def _select(t: Triplets, mask: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "profile": t.profile[mask].astype(np.int64),
        "positive": t.positive[mask].astype(np.int64),
        "negative": t.negative[mask].astype(np.int64),
        "user": t.user[mask].astype(np.int64),
    }


class _TripleSet:
    """The triples of one split as flat arrays, with a batch builder."""

    def __init__(self, t: Triplets, mask: np.ndarray, with_profiles: bool, with_users: bool):
        sel = _select(t, mask)
        if with_users:
            known = sel["user"] >= 0
            sel = {k: v[known] for k, v in sel.items()}
        self.profile, self.positive, self.negative, self.user = (
            sel["profile"],
            sel["positive"],
            sel["negative"],
            sel["user"],
        )
        self.with_profiles = with_profiles
        self.offsets = np.asarray(t.profile_offsets, dtype=np.int64)
        self.items = np.asarray(t.profile_items, dtype=np.int64)
        if with_profiles:
            self.sizes = self.offsets[self.profile + 1] - self.offsets[self.profile]  # (N,)
            if len(self.sizes) and self.sizes.min() < 1:
                raise ValueError("CuratorNet triples need non-empty profiles")
        else:
            self.sizes = np.zeros(len(self.positive), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positive)

    def cuts(self, order: np.ndarray, budget: int, cap: int) -> list[tuple[int, int]]:
        """Consecutive ranges of ``order``: sum of profile sizes <= budget, count <= cap."""
        csum = np.concatenate([[0], np.cumsum(self.sizes[order])])
        ranges, start, n = [], 0, len(order)
        while start < n:
            stop = int(np.searchsorted(csum, csum[start] + budget, side="right")) - 1
            stop = min(max(stop, start + 1), start + cap, n)  # a lone giant profile still goes
            ranges.append((start, stop))
            start = stop
        return ranges

    def batch(self, idx: np.ndarray, features: torch.Tensor, device: torch.device) -> TripletBatch:
        pos, neg = self.positive[idx], self.negative[idx]
        b = len(idx)
        if self.with_profiles:
            p = self.profile[idx]
            lengths = self.sizes[idx]
            offsets = np.zeros(b + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            # flat positions of every profile's items in t.profile_items
            flat = np.repeat(self.offsets[p] - offsets[:-1], lengths) + np.arange(offsets[-1])
            prof = self.items[flat]
        else:
            offsets = np.zeros(b + 1, dtype=np.int64)
            prof = np.zeros(0, dtype=np.int64)
        items, inverse = np.unique(np.concatenate([prof, pos, neg]), return_inverse=True)
        s = len(prof)
        items_t = torch.from_numpy(items).to(device)
        return TripletBatch(
            items=items_t,
            x=features[items_t],
            profile_offsets=torch.from_numpy(offsets).to(device),
            profile_items=torch.from_numpy(inverse[:s]).to(device),
            positive=torch.from_numpy(inverse[s : s + b]).to(device),
            negative=torch.from_numpy(inverse[s + b :]).to(device),
            users=torch.from_numpy(self.user[idx]).to(device),
        )

    def batches(
        self, order: np.ndarray, config: TrainConfig, features: torch.Tensor, device: torch.device
    ) -> Iterator[TripletBatch]:
        for start, stop in self.cuts(
            order, config.max_profile_items_per_batch, config.batch_triples
        ):
            yield self.batch(order[start:stop], features, device)


# ----------------------------------------------------------------------------- training


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def accuracy(
    model: CuratorNet | VBPR,
    triples: _TripleSet,
    config: TrainConfig,
    features: torch.Tensor,
    device: torch.device,
) -> float:
    """Fraction of triples with s_pos > s_neg."""
    model.eval()
    correct = 0
    order = np.arange(len(triples))
    for batch in triples.batches(order, config, features, device):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            s_pos, s_neg = model.score_pairs(batch)
        correct += int((s_pos > s_neg).sum())
    model.train()
    return correct / max(len(triples), 1)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill during the write keeps the previous checkpoint


def _train(
    model: CuratorNet | VBPR,
    train: Triplets,
    validation: Triplets,
    features: np.ndarray,
    config: TrainConfig = TrainConfig(),
    callback: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` in place with Adam; return it holding its best-validation weights.

    Training uses the triples of ``train`` not flagged ``is_validation``. Validation uses
    the flagged triples of ``validation`` when it is the same object as ``train`` (the
    sampling stage's single output), else all of its triples. VBPR uses the triples of
    real users only (``user >= 0``). ``features`` (n_items, input_dim) follow the catalogue
    item index. Raises :class:`TrainingDivergedError` on a NaN loss.
    """
    device = resolve_device(config.device)
    with_profiles = bool(model.needs_profiles)
    with_users = isinstance(model, VBPR)
    train_set = _TripleSet(train, ~np.asarray(train.is_validation, bool), with_profiles, with_users)
    val_mask = (
        np.asarray(validation.is_validation, bool)
        if validation is train
        else np.ones(len(validation), dtype=bool)
    )
    val_set = _TripleSet(validation, val_mask, with_profiles, with_users)
    if len(train_set) == 0:
        what = "triples of real users (user >= 0)" if with_users else "training triples"
        raise ValueError(f"no {what} to train {type(model).__name__} on")
    if len(val_set) == 0:
        raise ValueError("no validation triples (is_validation) to select the best epoch")

    model.to(device).train()
    features_t = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    floor = config.lr_min / config.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: max(floor, config.lr_decay**e)
    )
    rng = np.random.default_rng(config.seed)
    history: list[EpochStats] = []
    best = {"epoch": 0, "accuracy": -math.inf, "state": copy.deepcopy(model.state_dict())}
    stale, seconds, train_seconds, n_trained = 0, 0.0, 0.0, 0
    start_epoch = 0

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt["train_config"] != asdict(config) or ckpt["kind"] != model.kind:
            raise ValueError(f"{ckpt_path}: checkpoint of another configuration; delete it")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        rng.bit_generator.state = ckpt["numpy_rng"]
        history = [EpochStats(**h) for h in ckpt["history"]]
        best = ckpt["best"]
        stale, seconds = ckpt["stale"], ckpt["seconds"]
        train_seconds, n_trained = ckpt["train_seconds"], ckpt["n_trained"]
        start_epoch = ckpt["epoch"]
        logger.info("resumed from %s after epoch %d", ckpt_path, start_epoch)

    for epoch in range(start_epoch, config.epochs):
        if stale >= config.patience:
            break
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        order = rng.permutation(len(train_set))
        loss_sum = torch.zeros((), device=device)
        for batch in train_set.batches(order, config, features_t, device):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                loss = model.loss(batch, config.l2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
        epoch_loss = float(loss_sum) / len(train_set)
        if not math.isfinite(epoch_loss):
            raise TrainingDivergedError(
                f"{type(model).__name__} loss is {epoch_loss} in epoch {epoch + 1} "
                f"(lr={lr:g}, l2={config.l2:g}); lower the learning rate or check the features"
            )
        t_train = time.perf_counter() - t0
        val_acc = accuracy(model, val_set, config, features_t, device)
        scheduler.step()
        improved = val_acc > best["accuracy"]
        if improved:
            best = {
                "epoch": epoch + 1,
                "accuracy": val_acc,
                "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            }
            stale = 0
        else:
            stale += 1
        epoch_seconds = time.perf_counter() - t0
        seconds += epoch_seconds
        train_seconds += t_train
        n_trained += len(train_set)
        stats = EpochStats(
            epoch=epoch + 1,
            loss=epoch_loss,
            val_accuracy=val_acc,
            lr=lr,
            triples_per_second=len(train_set) / max(t_train, 1e-9),
            seconds=epoch_seconds,
            improved=improved,
        )
        history.append(stats)
        logger.info(
            "epoch %d: loss %.5f, val acc %.4f, lr %.2e, %.0f triples/s",
            stats.epoch, stats.loss, stats.val_accuracy, lr, stats.triples_per_second,
        )  # fmt: skip
        if ckpt_path is not None:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            _save_checkpoint(
                ckpt_path,
                {
                    "kind": model.kind,
                    "train_config": asdict(config),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "numpy_rng": rng.bit_generator.state,
                    "history": [asdict(h) for h in history],
                    "best": best,
                    "stale": stale,
                    "seconds": seconds,
                    "train_seconds": train_seconds,
                    "n_trained": n_trained,
                },
            )
        if callback is not None:
            callback(stats)

    model.load_state_dict(best["state"])
    model.eval()
    return TrainResult(
        history=history,
        best_epoch=best["epoch"],
        best_val_accuracy=best["accuracy"],
        seconds=seconds,
        triples_per_second=n_trained / max(train_seconds, 1e-9),
        model=model,
    )


def train(
    model: CuratorNet | VBPR,
    train: Triplets,
    validation: Triplets,
    features: np.ndarray,
    config: TrainConfig = TrainConfig(),
    callback: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` (see :func:`_train`), with deterministic kernels when configured."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(config.deterministic, warn_only=True)
    try:
        return _train(model, train, validation, features, config, callback, checkpoint_dir, resume)
    finally:
        torch.use_deterministic_algorithms(previous)
