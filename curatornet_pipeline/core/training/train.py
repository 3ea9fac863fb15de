"""Training loop for CuratorNet and VBPR on sampled triples.

Follows the reference settings of CuratorNet (Messina et al., "CuratorNet: Visually-aware
Recommendation of Art Images", 2020): Adam, learning rate decaying by 0.6 per epoch from
1e-4 towards 1e-6, early stopping after 2 epochs without validation improvement, and
mini-batches cut by a budget of profile items. VBPR (He & McAuley, AAAI 2016) goes through
the same loop on the triples of real users.

Batches hold every unique item and every distinct profile once (see
:class:`~curatornet_pipeline.core.models.networks.TripletBatch`): the item tower runs once per item of a
batch, the pooling and user tower once per profile, however many triples share them.
Checkpoints after every epoch carry all state (weights, Adam, RNGs, history, best epoch), so
a killed run resumed from its checkpoint ends with the same weights as an uninterrupted one.

An optional ``evaluator`` (model -> named validation figures, e.g. a ranking AUC over
held-out baskets) runs after every epoch; ``TrainConfig.monitor`` names the figure that picks
the best epoch.

Training and scoring on the CPU flush subnormal floats to zero (:func:`flush_denormals`).
"""

import contextlib
import copy
import functools
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

from curatornet_pipeline.core import ragged
from curatornet_pipeline.core.models.networks import VBPR, CuratorNet, TripletBatch
from curatornet_pipeline.core.types import Triplets
from curatornet_pipeline.kernels import machine, retain_freed_memory

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
# a CuratorNet batch touching at least this fraction of the catalogue runs its item tower on
# the whole catalogue instead of gathering the features of its items (see _TripleSet): at
# most 1/0.9 - 1 = 11% more first-layer work, in exchange for no (U, 2048) copy
WHOLE_CATALOGUE_AT = 0.9


#: Flush subnormal floats to zero in training and scoring on the CPU (FTZ and DAZ): the one
#: setting behind :func:`flush_denormals`. Benchmarks and tests turn it off to compare.
FLUSH_DENORMALS = True


def flush_denormals() -> None:
    """Make this thread, and the OpenMP workers it uses, read and write subnormal floats as
    zero, unless :data:`FLUSH_DENORMALS` is off. Called where training and scoring start;
    the mode stays for the thread's life (a check after the first call).

    Subnormals (magnitudes below 1.2e-38 in float32) send x86 float units to a slow path.
    Real, sparse post-ReLU ResNet vectors made a backward pass several times slower with
    them (issue 31; the measured shares and costs are in docs/benchmarks.md). Nothing in
    training or scoring needs values that small."""
    if FLUSH_DENORMALS and not machine.denormals_flushed():
        machine.set_flush_denormal(True)


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

    def update(self, stats_without_improved: dict, model: torch.nn.Module) -> EpochStats:
        value = _monitored(
            self.monitor, stats_without_improved["val_accuracy"], stats_without_improved["metrics"]
        )
        improved = value > self.best["value"]
        if improved:
            self.best = {
                "epoch": stats_without_improved["epoch"],
                "value": value,
                "accuracy": stats_without_improved["val_accuracy"],
                "metrics": dict(stats_without_improved["metrics"]),
            }
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.stale = 0
        else:
            self.stale += 1
        stats = EpochStats(**stats_without_improved, improved=improved)
        self.history.append(stats)
        return stats

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


# ----------------------------------------------------------------------------- batching


def _select(t: Triplets, mask: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "profile": t.profile[mask].astype(np.int64),
        "positive": t.positive[mask].astype(np.int64),
        "negative": t.negative[mask].astype(np.int64),
        "user": t.user[mask].astype(np.int64),
    }


class _TripleSet:
    """The triples of one split as flat arrays, with a batch builder.

    ``whole_catalogue_at``: when a batch touches at least this fraction of the catalogue,
    its item tower runs on every catalogue item (``items`` is ``arange(n)`` and ``x`` the
    feature matrix itself, a view), which saves the (U, F) gather of the features: a third
    of the first layer's own time at UGallery scale, where a default batch touches nearly
    every item (docs/benchmarks.md). Gradients are unchanged: rows no triple uses get
    zero gradient. With ``own_items`` (VBPR, whose per-item rows must stay the batch's own for
    SparseAdam) ``items`` stays the batch's and only ``x`` is the whole feature matrix
    (``catalogue_x``): the model computes every item's visual terms and keeps its rows.
    """

    def __init__(
        self,
        t: Triplets,
        mask: np.ndarray,
        with_profiles: bool,
        with_users: bool,
        whole_catalogue_at: float = math.inf,
        own_items: bool = False,
    ):
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
        self.whole_catalogue_at = whole_catalogue_at
        self.own_items = own_items
        self.scaled = False  # the features given to batch() are already z-scored
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
        profile_of = None
        if self.with_profiles:
            p = self.profile[idx]
            distinct, inverse_p = np.unique(p, return_inverse=True)
            if len(distinct) < b:  # triples share profiles: pool and run g once per profile
                p, profile_of = distinct, torch.from_numpy(inverse_p.reshape(-1)).to(device)
            offsets, prof = ragged.take_rows(self.offsets, self.items, p)
        else:
            offsets = np.zeros(b + 1, dtype=np.int64)
            prof = np.zeros(0, dtype=np.int64)
        referenced = np.concatenate([prof, pos, neg])
        n_items = features.shape[0]
        used = np.zeros(n_items, dtype=bool)
        used[referenced] = True
        n_used = int(np.count_nonzero(used))
        s = len(prof)
        whole = n_used >= self.whole_catalogue_at * n_items
        catalogue_x = False
        if whole and not self.own_items:
            items_t = torch.arange(n_items, device=device)
            x, inverse = features, referenced
        else:
            items = np.flatnonzero(used)
            local = np.cumsum(used, dtype=np.int64) - 1  # catalogue index -> row of ``items``
            inverse = local[referenced]
            items_t = torch.from_numpy(items).to(device)
            if whole:  # the batch's own item rows, the features read in place
                x, catalogue_x = features, True
            else:
                x = features.index_select(0, items_t)
        return TripletBatch(
            items=items_t,
            x=x,
            profile_offsets=torch.from_numpy(offsets).to(device),
            profile_items=torch.from_numpy(inverse[:s]).to(device),
            positive=torch.from_numpy(inverse[s : s + b]).to(device),
            negative=torch.from_numpy(inverse[s + b :]).to(device),
            users=torch.from_numpy(self.user[idx]).to(device),
            scaled=self.scaled,
            profile_of=profile_of,
            catalogue_x=catalogue_x,
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


def bf16_native(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 products run natively on ``device``: always on CUDA, and on CPUs with
    oneDNN's bf16 support (AVX-512 or AMX). Elsewhere (an AVX2-only CPU) PyTorch emulates
    them far slower than float32 (docs/benchmarks.md)."""
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type != "cpu":
        return True
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _training_device(config: TrainConfig) -> torch.device:
    """The device of a training run; refuses a bf16 run that would crawl on this CPU."""
    device = resolve_device(config.device)
    if config.bf16 and not bf16_native(device):
        raise ValueError(
            f"TrainConfig.bf16 is set but this CPU has no native bfloat16 products "
            f"(capability {torch.backends.cpu.get_cpu_capability()}): they would run about "
            f"100x slower than float32; set bf16=False"
        )
    return device


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


def _triple_sets(
    model: CuratorNet | VBPR, train: Triplets, validation: Triplets
) -> tuple["_TripleSet", "_TripleSet"]:
    with_profiles = bool(model.needs_profiles)
    with_users = isinstance(model, VBPR)
    # VBPR's per-item rows (gamma_i, beta_i) stay the batch's own: only its features are read
    # from the whole catalogue
    sets = functools.partial(
        _TripleSet,
        with_profiles=with_profiles,
        with_users=with_users,
        whole_catalogue_at=WHOLE_CATALOGUE_AT,
        own_items=model.kind == "vbpr",
    )
    train_set = sets(train, ~np.asarray(train.is_validation, bool))
    val_mask = (
        np.asarray(validation.is_validation, bool)
        if validation is train
        else np.ones(len(validation), dtype=bool)
    )
    val_set = sets(validation, val_mask)
    if len(train_set) == 0:
        what = "triples of real users (user >= 0)" if with_users else "training triples"
        raise ValueError(f"no {what} to train {type(model).__name__} on")
    if len(val_set) == 0:
        raise ValueError("no validation triples (is_validation) to select the best epoch")
    return train_set, val_set


@torch.no_grad()
def _scaled_features(model, features: np.ndarray, device, *sets: "_TripleSet") -> torch.Tensor:
    """The catalogue's features z-scored once by the model's fixed scaler (frozen inputs),
    so batches skip the per-batch (U, F) subtract and divide."""
    raw = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
    for s in sets:
        s.scaled = True
    return model.scale(raw)


def _lr_factor(config: TrainConfig, epoch: int) -> float:
    """lr_e / lr: decay per epoch down to lr_min (0-based epoch)."""
    return max(config.lr_min / config.lr, config.lr_decay**epoch)


def _diverged(model_name: str, loss: float, epoch: int, lr: float, l2: float) -> None:
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"{model_name} loss is {loss} in epoch {epoch + 1} "
            f"(lr={lr:g}, l2={l2:g}); lower the learning rate or check the features"
        )


def _train(
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
    device = _training_device(config)
    retain_freed_memory()  # no fresh pages to fault on every step (kernels/malloc.py)
    monitor = resolve_monitor(config, evaluator)
    train_set, val_set = _triple_sets(model, train, validation)

    model.to(device).train()
    features_t = _scaled_features(model, features, device, train_set, val_set)
    optimizer = _Optimizer(model, config)
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
        optimizer.load_state_dict(ckpt["optimizer"])
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
        lr = config.lr * _lr_factor(config, epoch)
        optimizer.set_lr(lr)
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
        _diverged(type(model).__name__, epoch_loss, epoch, lr, config.l2)
        t_train = time.perf_counter() - t0
        val_acc = accuracy(model, val_set, config, features_t, device)
        metrics = _evaluate(model, evaluator)
        epoch_seconds = time.perf_counter() - t0
        seconds += epoch_seconds
        train_seconds += t_train
        n_trained += len(train_set)
        stats = tracker.update(
            {
                "epoch": epoch + 1,
                "loss": epoch_loss,
                "val_accuracy": val_acc,
                "lr": lr,
                "triples_per_second": len(train_set) / max(t_train, 1e-9),
                "seconds": epoch_seconds,
                "metrics": metrics,
            },
            model,
        )
        _log_epoch(type(model).__name__, stats)
        if ckpt_path is not None:
            _save_checkpoint(
                ckpt_path,
                {
                    "kind": model.kind,
                    "train_config": asdict(config),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
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


class _Optimizer:
    """Adam, or for VBPR with ``sparse_rows`` SparseAdam on the latent tables + Adam on the rest."""

    def __init__(self, model, config: TrainConfig):
        sparse = model.kind == "vbpr" and config.sparse_rows
        if model.kind == "vbpr":
            model.sparse_grad = sparse
        tables = {id(p) for p in model.sparse_parameters()} if sparse else set()
        params = list(model.parameters())
        self.parts = [torch.optim.Adam([p for p in params if id(p) not in tables], lr=config.lr)]
        if sparse:
            self.parts.append(
                torch.optim.SparseAdam([p for p in params if id(p) in tables], lr=config.lr)
            )

    def set_lr(self, lr: float) -> None:
        for part in self.parts:
            for group in part.param_groups:
                group["lr"] = lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> list[dict]:
        return [part.state_dict() for part in self.parts]

    def load_state_dict(self, states: list[dict]) -> None:
        for part, state in zip(self.parts, states, strict=True):
            part.load_state_dict(state)


def _log_epoch(name: str, stats: EpochStats) -> None:
    extra = "".join(f", {k} {v:.4f}" for k, v in stats.metrics.items())
    logger.info(
        "%s epoch %d: loss %.5f, val acc %.4f%s, lr %.2e, %.0f triples/s",
        name, stats.epoch, stats.loss, stats.val_accuracy, extra, stats.lr,
        stats.triples_per_second,
    )  # fmt: skip


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
    Deterministic kernels when configured, subnormals flushed (:func:`flush_denormals`).
    Raises :class:`TrainingDivergedError` on a NaN loss.
    """
    flush_denormals()
    with _deterministic_kernels(config):
        return _train(
            model, train, validation, features, config, callback, checkpoint_dir, resume, evaluator
        )
