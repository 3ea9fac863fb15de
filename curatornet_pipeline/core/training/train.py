"""Training loop for CuratorNet and VBPR on sampled triples.

Follows the reference settings of CuratorNet (Messina et al., "CuratorNet: Visually-aware
Recommendation of Art Images", 2020): Adam, learning rate decaying by 0.6 per epoch from
1e-4 towards 1e-6, early stopping after 2 epochs without validation improvement, and
mini-batches cut by a budget of profile items. VBPR (He & McAuley, AAAI 2016) goes through
the same loop on the triples of real users.

Batches come from :mod:`~curatornet_pipeline.core.training.batching`. Checkpoints after every epoch carry all state (weights, Adam, RNGs, history, best epoch), so
a killed run resumed from its checkpoint ends with the same weights as an uninterrupted one.

An optional ``evaluator`` (model -> named validation figures, e.g. a ranking AUC over
held-out baskets) runs after every epoch; ``TrainConfig.monitor`` names the figure that picks
the best epoch.

Training and scoring on the CPU flush subnormal floats to zero (:func:`~curatornet_pipeline.kernels.machine.flush_denormals`).
"""

import contextlib
import copy
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from curatornet_pipeline.core.models.networks import VBPR, CuratorNet
from curatornet_pipeline.core.training.batching import TripleSet, scaled_features, triple_sets
from curatornet_pipeline.core.types import Triplets
from curatornet_pipeline.kernels import retain_freed_memory
from curatornet_pipeline.kernels.machine import flush_denormals

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
    bf16: bool = False  # bfloat16 autocast of the matmuls (not in the paper; docs/benchmarks.md)
    # VBPR: sparse gradients of the user/item latent tables, updated by SparseAdam (only the
    # rows of a batch move, as in BPR's per-sample SGD); dense Adam for the rest
    sparse_rows: bool = True
    # the validation figure that drives early stopping and the best epoch (higher is better):
    # "auto" is "val_auc" when an evaluator is given, else "val_accuracy"
    monitor: str = "auto"


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean training loss (ranking + L2) over the epoch's triples
    val_accuracy: float  # fraction of validation triples with s_pos > s_neg
    lr: float  # learning rate used during the epoch
    triples_per_second: float  # training triples / training seconds (validation excluded)
    seconds: float  # wall time of the epoch, validation included
    improved: bool  # the monitored validation figure improved on the best so far
    metrics: dict[str, float] = field(default_factory=dict)  # the evaluator's, if any


@dataclass
class TrainResult:
    history: list[EpochStats]
    best_epoch: int  # 1-based epoch whose weights the model holds
    best_val_accuracy: float  # triple accuracy of that epoch
    seconds: float  # total training wall time (over resumed runs too)
    triples_per_second: float  # over all training epochs
    model: CuratorNet | VBPR = field(repr=False)
    monitor: str = "val_accuracy"  # the figure that chose the best epoch
    best_value: float = math.nan  # its value at the best epoch
    best_metrics: dict[str, float] = field(default_factory=dict)  # evaluator's, best epoch


Evaluator = Callable[[CuratorNet | VBPR], Mapping[str, float]]


def resolve_monitor(config: TrainConfig, evaluator: Evaluator | None) -> str:
    if config.monitor == "auto":
        return "val_auc" if evaluator is not None else "val_accuracy"
    if config.monitor != "val_accuracy" and evaluator is None:
        raise ValueError(
            f"monitor {config.monitor!r} needs an evaluator (only val_accuracy without)"
        )
    return config.monitor


def _monitored(monitor: str, val_accuracy: float, metrics: Mapping[str, float]) -> float:
    if monitor == "val_accuracy":
        return val_accuracy
    if monitor not in metrics:
        raise ValueError(
            f"monitor {monitor!r} is not among the evaluator's metrics {sorted(metrics)}"
        )
    return float(metrics[monitor])


def _evaluate(model: CuratorNet | VBPR, evaluator: Evaluator | None) -> dict[str, float]:
    if evaluator is None:
        return {}
    model.eval()
    try:
        with torch.no_grad():
            return {str(k): float(v) for k, v in evaluator(model).items()}
    finally:
        model.train()


class _Tracker:
    """Best epoch, patience and history of the trained model (plain, checkpointable state)."""

    def __init__(self, monitor: str):
        self.monitor = monitor
        self.history: list[EpochStats] = []
        self.best: dict = {"epoch": 0, "value": -math.inf, "accuracy": -math.inf, "metrics": {}}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def update(self, model: torch.nn.Module, **stats) -> EpochStats:
        """Record an epoch's ``stats`` (the fields of :class:`EpochStats` but ``improved``)."""
        value = _monitored(self.monitor, stats["val_accuracy"], stats["metrics"])
        improved = value > self.best["value"]
        if improved:
            self.best = {"epoch": stats["epoch"], "value": value,
                         "accuracy": stats["val_accuracy"], "metrics": dict(stats["metrics"])}  # fmt: skip
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.stale = 0
        else:
            self.stale += 1
        self.history.append(EpochStats(**stats, improved=improved))
        return self.history[-1]

    def state(self) -> dict:
        return {
            "history": [asdict(h) for h in self.history],
            "best": self.best,
            "best_state": self.best_state,
            "stale": self.stale,
        }

    def load(self, state: dict) -> None:
        self.history = [EpochStats(**h) for h in state["history"]]
        self.best, self.best_state, self.stale = state["best"], state["best_state"], state["stale"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_native(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 products run natively on ``device``: always on CUDA, and on CPUs with
    oneDNN's bf16 support (AVX-512 or AMX). Elsewhere (an AVX2-only CPU) PyTorch emulates
    them far slower than float32 (docs/benchmarks.md)."""
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type != "cpu":
        return True
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@torch.no_grad()
def accuracy(
    model: CuratorNet | VBPR,
    triples: TripleSet,
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


def checkpoint_path(checkpoint_dir) -> "os.PathLike | None":
    """The checkpoint file in ``checkpoint_dir``: a local folder or any fsspec URI (a
    ``UPath``), so that a step resumed on another worker finds it in shared storage."""
    from upath import UPath

    return UPath(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None


def _is_local(path) -> bool:
    return isinstance(path, Path)  # UPath of a local folder is a pathlib.Path; remote is not


def _save_checkpoint(path, state: dict) -> None:
    """Write ``state``; a kill during the write keeps the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if _is_local(path):
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic rename
        return
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with tmp.open("wb") as f:  # object stores write the object whole on close
        f.write(buffer.getvalue())
    tmp.fs.mv(tmp.path, path.path)


def load_checkpoint(path, device: "torch.device | str" = "cpu") -> dict | None:
    """The checkpoint at ``path`` (local or fsspec), or None when there is none."""
    if path is None or not path.exists():
        return None
    if _is_local(path):
        return torch.load(path, map_location=device, weights_only=True)
    with path.open("rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location=device, weights_only=True)


def optimizers(model, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam, or for VBPR with ``sparse_rows`` SparseAdam on the latent tables + Adam on the rest."""
    sparse = model.kind == "vbpr" and config.sparse_rows
    if model.kind == "vbpr":
        model.sparse_grad = sparse
    tables = {id(p) for p in model.sparse_parameters()} if sparse else set()
    params = list(model.parameters())
    parts = [torch.optim.Adam([p for p in params if id(p) not in tables], lr=config.lr)]
    if sparse:
        parts.append(torch.optim.SparseAdam([p for p in params if id(p) in tables], lr=config.lr))
    return parts


@contextlib.contextmanager
def _deterministic_kernels(config: TrainConfig) -> Iterator[None]:
    """Deterministic kernels (when configured) for the duration of training."""
    previous = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(config.deterministic, warn_only=True)
    # deterministic mode would NaN-fill every torch.empty (a tenth of an epoch's time);
    # the training kernels write every element they allocate
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def train(
    model: CuratorNet | VBPR,
    train: Triplets,
    validation: Triplets,
    features: np.ndarray,
    config: TrainConfig = TrainConfig(),
    callback: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    evaluator: Evaluator | None = None,
) -> TrainResult:
    """Train ``model`` in place with Adam; return it holding its best-validation weights.

    Training uses the triples of ``train`` not flagged ``is_validation``. Validation uses
    the flagged triples of ``validation`` when it is the same object as ``train`` (the
    sampling stage's single output), else all of its triples. VBPR uses the triples of
    real users only (``user >= 0``). ``features`` (n_items, input_dim) follow the catalogue
    item index. ``evaluator(model)``, when given, runs after every epoch (model in eval
    mode, no grad) and returns named validation figures (e.g. ``val_auc``); the figure
    named by ``config.monitor`` chooses the best epoch and drives early stopping.
    Deterministic kernels when configured, subnormals flushed (:func:`~curatornet_pipeline.kernels.machine.flush_denormals`).
    Raises :class:`TrainingDivergedError` on a NaN loss.
    """
    flush_denormals()
    with _deterministic_kernels(config):
        device = resolve_device(config.device)
        if config.bf16 and not bf16_native(device):  # emulated bf16 would crawl on this CPU
            raise ValueError(
                f"TrainConfig.bf16 is set but this CPU has no native bfloat16 products "
                f"(capability {torch.backends.cpu.get_cpu_capability()}): they would run about "
                f"100x slower than float32; set bf16=False"
            )
        retain_freed_memory()  # no fresh pages to fault on every step (kernels/malloc.py)
        monitor = resolve_monitor(config, evaluator)
        train_set, val_set = triple_sets(model, train, validation)

        model.to(device).train()
        features_t = scaled_features(model, features, device, train_set, val_set)
        parts = optimizers(model, config)
        rng = np.random.default_rng(config.seed)
        tracker = _Tracker(monitor)
        seconds, train_seconds, n_trained = 0.0, 0.0, 0
        start_epoch = 0

        ckpt_path = checkpoint_path(checkpoint_dir)
        ckpt = load_checkpoint(ckpt_path, device) if resume else None
        if ckpt is not None:
            if ckpt.get("train_config") != asdict(config) or ckpt.get("kind") != model.kind:
                raise ValueError(f"{ckpt_path}: checkpoint of another configuration; delete it")
            model.load_state_dict(ckpt["model"])
            for part, state in zip(parts, ckpt["optimizer"], strict=True):
                part.load_state_dict(state)
            torch.set_rng_state(ckpt["torch_rng"].cpu())
            rng.bit_generator.state = ckpt["numpy_rng"]
            tracker.load(ckpt["tracker"])
            seconds, train_seconds = ckpt["seconds"], ckpt["train_seconds"]
            n_trained, start_epoch = ckpt["n_trained"], ckpt["epoch"]
            logger.info("resumed from %s after epoch %d", ckpt_path, start_epoch)
        if tracker.best_state is None:
            tracker.best_state = copy.deepcopy(model.state_dict())

        for epoch in range(start_epoch, config.epochs):
            if tracker.stale >= config.patience:
                break
            t0 = time.perf_counter()
            lr = config.lr * max(config.lr_min / config.lr, config.lr_decay**epoch)  # decayed
            for group in (g for part in parts for g in part.param_groups):
                group["lr"] = lr
            order = rng.permutation(len(train_set))
            loss_sum = torch.zeros((), device=device)
            for batch in train_set.batches(order, config, features_t, device):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                    loss = model.loss(batch, config.l2)
                for part in parts:
                    part.zero_grad(set_to_none=True)
                loss.backward()
                for part in parts:
                    part.step()
                loss_sum += loss.detach() * len(batch)
            epoch_loss = float(loss_sum) / len(train_set)
            if not math.isfinite(epoch_loss):
                raise TrainingDivergedError(
                    f"{type(model).__name__} loss is {epoch_loss} in epoch {epoch + 1} (lr={lr:g}, "
                    f"l2={config.l2:g}); lower the learning rate or check the features"
                )
            t_train = time.perf_counter() - t0
            val_acc = accuracy(model, val_set, config, features_t, device)
            metrics = _evaluate(model, evaluator)
            epoch_seconds = time.perf_counter() - t0
            seconds += epoch_seconds
            train_seconds += t_train
            n_trained += len(train_set)
            stats = tracker.update(
                model, epoch=epoch + 1, loss=epoch_loss, val_accuracy=val_acc, lr=lr,
                triples_per_second=len(train_set) / max(t_train, 1e-9), seconds=epoch_seconds,
                metrics=metrics,
            )  # fmt: skip
            logger.info(
                "%s epoch %d: loss %.5f, val acc %.4f%s, lr %.2e, %.0f triples/s",
                type(model).__name__, stats.epoch, stats.loss, stats.val_accuracy,
                "".join(f", {k} {v:.4f}" for k, v in metrics.items()), lr,
                stats.triples_per_second,
            )  # fmt: skip
            if ckpt_path is not None:
                _save_checkpoint(
                    ckpt_path,
                    {
                        "kind": model.kind,
                        "train_config": asdict(config),
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": [part.state_dict() for part in parts],
                        "torch_rng": torch.get_rng_state(),
                        "numpy_rng": rng.bit_generator.state,
                        "tracker": tracker.state(),
                        "seconds": seconds,
                        "train_seconds": train_seconds,
                        "n_trained": n_trained,
                    },
                )
            if callback is not None:
                callback(stats)

        if isinstance(model, VBPR):
            model.sparse_grad = False
        model.load_state_dict(tracker.best_state)
        model.eval()
        return TrainResult(
            history=tracker.history,
            best_epoch=tracker.best["epoch"],
            best_val_accuracy=tracker.best["accuracy"],
            seconds=seconds,
            triples_per_second=n_trained / max(train_seconds, 1e-9),
            model=model,
            monitor=tracker.monitor,
            best_value=tracker.best["value"],
            best_metrics=dict(tracker.best["metrics"]),
        )
