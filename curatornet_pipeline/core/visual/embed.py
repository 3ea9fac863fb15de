"""Image embeddings: penultimate features of a torchvision classifier, cached per image.

The paper embeds every artwork with ResNet-50 (ImageNet weights), global-average
pooled, 2048 dimensions. :func:`embed_manifest` runs the images of an ingestion
manifest through such a backbone; an :class:`EmbeddingStore` keeps every vector
keyed by ``(artwork_id_hash, content_hash, backbone, weights id)`` so a nightly
re-run only forwards new or changed images.

The backbone and the preprocessing its weights state live in :mod:`.backbone`.
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from curatornet_pipeline.core.types import ItemVectors
from curatornet_pipeline.core.visual.backbone import (
    Preprocess,
    build_backbone,
    preprocess_for,
    weights_id,
)
from curatornet_pipeline.core.visual.store import EmbeddingKey, EmbeddingStore

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("artwork_id_hash", "path", "content_hash")


@dataclass(frozen=True)
class EmbedConfig:
    """How images become vectors."""

    backbone: str = "resnet50"  # any torchvision classification model (paper: ResNet-50)
    # "imagenet" (torchvision's published weights, downloaded to the torch cache),
    # "none" (random init: tests only, warned loudly), or a path to a local
    # state_dict file, loaded with torch.load(weights_only=True)
    weights: str = "imagenet"
    batch_size: int = 8  # images per forward pass
    num_workers: int = 2  # DataLoader processes decoding/resizing beside the forward pass
    # None: the weights' own transform (see preprocess_for); an int overrides it:
    # shorter side resized to this, then centre crop (square), ImageNet mean/std
    image_size: int | None = None
    channels_last: bool = True  # NHWC memory format, faster convolutions on CPU
    on_unreadable: str = "error"  # "error" or "drop" an image that cannot be decoded
    shard_size: int = 1024  # vectors per store shard file written during a run

    def __post_init__(self) -> None:
        if self.on_unreadable not in ("error", "drop"):
            raise ValueError(f"on_unreadable must be 'error' or 'drop', not {self.on_unreadable!r}")
        small = self.image_size is not None and self.image_size < 8
        if self.batch_size < 1 or self.num_workers < 0 or small:
            raise ValueError(f"invalid EmbedConfig {self}")


@dataclass
class EmbedResult:
    """Vectors of a manifest and what it cost to get them."""

    vectors: ItemVectors  # ids in manifest order, dropped items removed
    n_embedded: int  # images forward-passed by this call
    n_reused: int  # vectors taken from the store
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (artwork_id_hash, reason)
    weights: str = ""  # human description of the weights
    images_per_second: float = 0.0  # of the embedded images, decode to vector


def imported_meta(meta: dict) -> dict:
    """What imported vectors were made with, for metadata and MLflow params.

    ``meta`` is the imported ``ItemVectors.meta`` (``file``, ``file_sha256``).
    Imported vectors are not made by this pipeline's backbone: say which file
    and hash they are, not a weights setting the embedding stage never used.
    """
    name, digest = meta.get("file", "unknown file"), meta.get("file_sha256", "unknown")
    return {
        "source": "imported",
        "weights": f"imported:{name} sha256:{digest}",
        "imported_file": name,
        "imported_sha256": digest,
        "transform": "as made by the file's producer (published: ResNet-50, ImageNet weights)",
    }


# --------------------------------------------------------------------------- images


class _ImageDataset(Dataset):
    """Decoded, resized, normalised images; a decode failure yields its error message."""

    def __init__(self, paths: Sequence[str], preprocess: Preprocess) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            with Image.open(self.paths[i]) as img:
                img = img.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return i, None, f"cannot decode image: {type(exc).__name__}: {exc}"
        p = self.preprocess
        from torchvision.transforms.v2 import functional as TF  # see backbone.py

        mode = TF.InterpolationMode(p.interpolation)
        x = TF.resize(TF.pil_to_tensor(img), [p.resize_size], interpolation=mode, antialias=True)
        x = TF.center_crop(x, [p.crop_size, p.crop_size])
        x = TF.to_dtype(x, torch.float32, scale=True)
        return i, TF.normalize(x, list(p.mean), list(p.std)), None  # (3, S, S)


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    ok = [(i, x) for i, x, err in items if err is None]
    failed = [(i, err) for i, _, err in items if err is not None]
    batch = torch.stack([x for _, x in ok]) if ok else None
    return [i for i, _ in ok], batch, failed


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the forward pass


def _shard_mask(content_hashes: pd.Series, shard: tuple[int, int] | None) -> np.ndarray:
    if shard is None:
        return np.ones(len(content_hashes), dtype=bool)
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    return np.array([int(h[:8], 16) % n == i for h in content_hashes], dtype=bool)


def embed_manifest(
    manifest: pd.DataFrame,
    config: EmbedConfig,
    store: EmbeddingStore | None = None,
    shard: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EmbedResult:
    """Vectors of the manifest's images, forwarding only those not already in ``store``.

    ``shard=(i, n)`` keeps the items with ``int(content_hash[:8], 16) % n == i``.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"image manifest lacks columns {missing}")
    rows = manifest.loc[_shard_mask(manifest["content_hash"], shard)]
    ids = rows["artwork_id_hash"].astype(str).to_numpy()
    paths = rows["path"].astype(str).to_numpy()
    model, description = build_backbone(config)
    preprocess = preprocess_for(config)
    # the preprocessing changes the vector as much as the weights do
    wid = f"{weights_id(config)}@{preprocess.key}"
    keys = [
        (a, str(h), config.backbone, wid) for a, h in zip(ids, rows["content_hash"], strict=True)
    ]

    found = np.zeros(len(keys), dtype=bool)
    stored = np.zeros((len(keys), 0), dtype=np.float32)
    if store is not None and keys:
        found, stored = store.lookup(keys)
    todo = np.flatnonzero(~found)
    embedded: tuple[np.ndarray, np.ndarray] = (np.zeros(0, dtype=np.int64), stored[:0])
    keep = np.ones(len(keys), dtype=bool)
    dropped: list[tuple[str, str]] = []
    seconds = 0.0
    if len(todo):
        logger.info(
            "embedding %d images (%d reused) with %s %s",
            len(todo),
            int(found.sum()),
            config.backbone,
            description,
        )
        started = time.perf_counter()
        embedded, failures = _run(
            model, config, preprocess, paths[todo], todo, keys, store, progress
        )
        seconds = time.perf_counter() - started
        for i, reason in failures:
            message = f"{paths[i]} (artwork_id_hash {ids[i]!r}): {reason}"
            if config.on_unreadable == "error":
                raise ValueError(message)
            logger.warning("dropped %s", message)
            dropped.append((str(ids[i]), reason))
            keep[i] = False
    dims = {a.shape[1] for a, n in ((stored, found.sum()), (embedded[1], len(embedded[0]))) if n}
    if len(dims) > 1:
        raise ValueError(f"store vectors and model outputs differ in dimension: {sorted(dims)}")
    dim = dims.pop() if dims else _feature_dim(model, preprocess)
    vectors = np.zeros((len(keys), dim), dtype=np.float32)
    if found.any():
        vectors[found] = stored[found]
    vectors[embedded[0]] = embedded[1]
    n_embedded = len(todo) - len(dropped)
    meta = {
        "backbone": config.backbone,
        "weights": description,
        "weights_id": weights_id(config),
        "image_size": config.image_size,
        "transform": preprocess.as_dict(),
        "dim": dim,
    }
    return EmbedResult(
        vectors=ItemVectors(ids=ids[keep].astype(str), vectors=vectors[keep], meta=meta),
        n_embedded=n_embedded,
        n_reused=int(found.sum()),
        dropped=dropped,
        weights=description,
        images_per_second=n_embedded / seconds if seconds > 0 else 0.0,
    )


def _feature_dim(model: torch.nn.Module, preprocess: Preprocess) -> int:
    with torch.inference_mode():
        x = torch.zeros(1, 3, preprocess.crop_size, preprocess.crop_size)
        return int(model(x).reshape(1, -1).shape[1])


def _run(
    model: torch.nn.Module,
    config: EmbedConfig,
    preprocess: Preprocess,
    paths: np.ndarray,
    rows: np.ndarray,
    keys: list[EmbeddingKey],
    store: EmbeddingStore | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[tuple[np.ndarray, np.ndarray], list[tuple[int, str]]]:
    """Forward the images at ``paths`` (manifest rows ``rows``).

    Returns ``((rows embedded, their vectors (m, d)), [(row, reason) of unreadable images])``.
    """
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    loader = DataLoader(
        _ImageDataset(paths, preprocess),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if config.num_workers else None,
        prefetch_factor=4 if config.num_workers else None,
    )
    failures: list[tuple[int, str]] = []
    out_rows: list[np.ndarray] = []
    out_vectors: list[np.ndarray] = []
    written = 0  # batches of out_rows already in the store
    done, total, next_log = 0, len(paths), 0.1
    started = time.perf_counter()

    def flush() -> int:
        if store is not None and len(out_rows) > written:
            r = np.concatenate(out_rows[written:])
            store.add([keys[i] for i in r], np.concatenate(out_vectors[written:]))
        return len(out_rows)

    with torch.inference_mode():
        for positions, batch, failed in loader:
            failures += [(int(rows[p]), reason) for p, reason in failed]
            if failed and config.on_unreadable == "error":
                break
            if batch is not None:
                out = model(batch.contiguous(memory_format=memory_format))  # (B, d)
                out_rows.append(rows[positions])
                out_vectors.append(out.reshape(len(positions), -1).float().numpy())
            done += len(positions) + len(failed)
            if sum(len(r) for r in out_rows[written:]) >= config.shard_size:
                written = flush()
            if progress is not None:
                progress(done, total)
            if done / total >= next_log or done == total:
                rate = done / max(time.perf_counter() - started, 1e-9)
                logger.info("embedded %d/%d images (%.1f images/s)", done, total, rate)
                next_log = done / total + 0.1
    flush()
    if not out_rows:
        return (np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)), failures
    return (np.concatenate(out_rows), np.concatenate(out_vectors)), failures
