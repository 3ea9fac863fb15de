"""Incoming batches: files that arrive together in ``incoming/``, found and validated
together (what a batch holds, when it is ready: ``docs/data-format.md``, "Incoming
batches"). Detection (:func:`find_batches`, :func:`waiting_for_images`) and validation
(:func:`validate_batch`) only read; applying lives in :mod:`.batches`, the history in
:mod:`.history`.
"""

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.core.data import vectors as vectors_core
from curatornet_pipeline.core.hashing import file_sha256

logger = logging.getLogger(__name__)

MARKER = "READY"  # empty file the sender writes last: the batch is complete
LOOSE = "."  # name of the batch of loose files at the top of incoming/
RESERVED = ("processed", "rejected", "images")  # subfolders of incoming/ that are not batches
SETTLE_S = 60.0  # an unmarked batch is read once quiet this long
GRACE_S = 3600.0  # an unmarked batch whose inventory lacks images waits this long, then is rejected


@dataclass(frozen=True)
class BatchFile:
    """One file of a batch."""

    kind: str  # "inventory" | "purchases" | "image"
    name: str  # path inside the batch, '/'-separated: "purchases-06.csv", "images/a1.jpg"
    path: Path  # where it is now
    sha256: str  # hex digest of its bytes
    size: int  # bytes


@dataclass(frozen=True)
class Batch:
    """A group of files that arrived together in incoming/."""

    name: str  # folder name under incoming/, or LOOSE
    root: Path  # the folder (incoming/ itself for LOOSE)
    files: tuple[BatchFile, ...]  # inventory files first, then purchases, then images
    unexpected: tuple[str, ...]  # names that are no part of the format (the batch is rejected)
    marked: bool  # holds the READY marker
    changed_ns: int  # newest modification time of anything in it (ns since the epoch)
    content_hash: str  # sha256 of the sorted (name, file sha256) pairs: equal content, equal hash

    def of_kind(self, kind: str) -> list[BatchFile]:
        return [f for f in self.files if f.kind == kind]

    def quiet_s(self, now: float | None = None) -> float:
        """Seconds since anything in the batch changed."""
        return (now if now is not None else time.time()) - self.changed_ns / 1e9

    def ready(self, settle_s: float = SETTLE_S, now: float | None = None) -> bool:
        return self.marked or self.quiet_s(now) >= settle_s

    def describe(self) -> dict:
        """JSON-able summary (run tags, metadata, manifests)."""
        return {
            "name": self.name,
            "content_hash": self.content_hash,
            "files": [
                {"name": f.name, "kind": f.kind, "sha256": f.sha256, "size": f.size}
                for f in self.files
            ],
        }


def _kind(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".csv") and lower.startswith("inventory"):
        return "inventory"
    if lower.endswith(".csv") and lower.startswith("purchases"):
        return "purchases"
    return None


def file_key(kind: str, name: str, sha256: str) -> str:
    """What makes a file "already applied": a CSV's content; an image's content and file name."""
    return f"{Path(name).name}:{sha256}" if kind == "image" else sha256


def content_hash(pairs: list[tuple[str, str]]) -> str:
    """sha256 over sorted ``(name, sha256)`` pairs."""
    h = hashlib.sha256()
    for name, digest in sorted(pairs):
        h.update(f"{name}\t{digest}\n".encode())
    return h.hexdigest()


def read_batch(incoming: Path, name: str) -> Batch | None:
    """The batch ``name`` of ``incoming`` (``LOOSE`` for loose files); ``None`` when empty."""
    root = incoming if name == LOOSE else incoming / name
    if not root.is_dir():
        return None
    found: list[tuple[str, str, Path]] = []
    unexpected: list[str] = []
    stamps: list[int] = [] if name == LOOSE else [root.stat().st_mtime_ns]
    marked = False
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if entry.name == "images":
                stamps.append(entry.stat().st_mtime_ns)
                for image in sorted(entry.iterdir()):
                    if image.name.startswith("."):
                        continue
                    if not image.is_file():
                        unexpected.append(f"images/{image.name}")
                        continue
                    found.append(("image", f"images/{image.name}", image))
            elif name != LOOSE:
                unexpected.append(entry.name + "/")
            continue
        if entry.name == MARKER:
            marked = True
            stamps.append(entry.stat().st_mtime_ns)
            continue
        kind = _kind(entry.name)
        if kind is not None:
            found.append((kind, entry.name, entry))
        elif name != LOOSE:
            unexpected.append(entry.name)  # loose: other files at the top are not ours
    if not found and not unexpected:
        return None
    order = {"inventory": 0, "purchases": 1, "image": 2}
    found.sort(key=lambda f: (order[f[0]], f[1]))
    files = []
    for kind, rel, path in found:
        stat = path.stat()
        stamps.append(stat.st_mtime_ns)
        files.append(BatchFile(kind, rel, path, file_sha256(path), int(stat.st_size)))
    pairs = [(f.name, f.sha256) for f in files] + [(u, "?") for u in unexpected]
    return Batch(
        name=name,
        root=root,
        files=tuple(files),
        unexpected=tuple(unexpected),
        marked=marked,
        changed_ns=max(stamps, default=0),
        content_hash=content_hash(pairs),
    )


def find_batches(incoming: Path) -> list[Batch]:
    """Every batch in ``incoming`` (subfolders by name, then the loose files); reads only."""
    if not incoming.is_dir():
        return []
    names = [
        p.name
        for p in sorted(incoming.iterdir())
        if p.is_dir() and p.name not in RESERVED and not p.name.startswith(".")
    ]
    batches = [read_batch(incoming, n) for n in [*names, LOOSE]]
    return [b for b in batches if b is not None]


@dataclass
class Validated:
    """A batch that passed validation: what applying it adds."""

    inventory_files: list[BatchFile] = field(default_factory=list)
    purchases_files: list[BatchFile] = field(default_factory=list)
    images: list[BatchFile] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"name", "sha256", "applied_in"}
    new_items: int = 0
    new_purchase_rows: int = 0

    @property
    def empty(self) -> bool:
        return not (self.inventory_files or self.purchases_files or self.images)


def _image_stems(folder: Path) -> dict[str, str]:
    """``{artwork id: file name}`` of the images in a folder."""
    if not folder.is_dir():
        return {}
    out = {}
    for p in folder.iterdir():
        stem, dot, ext = p.name.rpartition(".")
        if dot and ext.lower() in data.IMAGE_EXTENSIONS and p.is_file():
            out[stem] = p.name
    return out


def _check_image(image: BatchFile, known: set[str], dataset_images: dict[str, str]) -> None:
    from PIL import Image

    stem, dot, ext = Path(image.name).name.rpartition(".")
    if not dot or ext.lower() not in data.IMAGE_EXTENSIONS:
        why = f"extension of {image.name!r} is not one of {', '.join(data.IMAGE_EXTENSIONS)}"
    elif stem not in known:
        why = f"image of artwork {stem!r}, which is neither in the inventory nor in this batch"
    elif stem in dataset_images:
        why = f"artwork {stem!r} already has an image in the dataset ({dataset_images[stem]})"
    else:
        why = None
    if why:
        raise data.DataError(why, image.path, field="file name")
    try:
        with Image.open(image.path) as decoded:
            decoded.verify()
    except Exception as exc:  # PIL raises many types for broken files
        raise data.DataError(f"cannot decode image: {exc}", image.path) from None


def missing_visuals(
    new_inventory: pd.DataFrame, batch_images: set[str], dataset: data.DatasetPaths
) -> list[tuple[str, int]]:
    """``(id, line)`` of new inventory rows with neither an image nor an imported vector.

    With an ``images/`` folder, a new item needs an image (in the batch or
    already in the dataset); with imported embeddings, a vector in
    ``embeddings.npz``; a dataset with neither asks nothing.
    """
    if dataset.images.is_dir():
        have = set(_image_stems(dataset.images)) | batch_images
    elif dataset.imported_embeddings.is_file():
        have = set(
            np.asarray(vectors_core.read_imported_embeddings(dataset.imported_embeddings).ids)
        )
    else:
        return []
    return [
        (a, int(line))
        for a, line in zip(new_inventory["artwork_id_hash"], new_inventory["line"], strict=True)
        if a not in have
    ]


def waiting_for_images(batch: Batch, dataset: data.DatasetPaths) -> list[str]:
    """Ids of the batch's new inventory rows that have no image yet (for the sensor; reads only).

    A file that does not parse gives nothing to wait for: validation rejects it.
    """
    stems = {Path(f.name).name.rpartition(".")[0] for f in batch.of_kind("image")}
    waiting: list[str] = []
    for f in batch.of_kind("inventory"):
        try:
            new = data.read_inventory(f.path)
            waiting += [a for a, _ in missing_visuals(new, stems, dataset)]
        except (data.DataError, OSError):
            return []
    return waiting


def validate_batch(
    batch: Batch,
    dataset: data.DatasetPaths,
    applied_files: dict[str, str] | None = None,
) -> Validated:
    """Check a batch against the dataset as it is plus the batch itself; reads only.

    ``applied_files`` maps the :func:`file_key` of every file already applied
    to the batch it came in: such files are skipped (and listed), not applied again.
    Raises :class:`~curatornet_pipeline.core.data.formats.DataError` naming the file,
    line and field of the first problem.
    """
    applied_files = applied_files or {}
    if batch.unexpected:
        raise data.DataError(
            f"not part of a batch: {', '.join(batch.unexpected)} (a batch holds "
            "inventory*.csv, purchases*.csv, images/<artwork_id_hash>.<ext> and READY)",
            batch.root / batch.unexpected[0],
        )
    out = Validated()
    fresh: list[BatchFile] = []
    for f in batch.files:
        key = file_key(f.kind, f.name, f.sha256)
        if key in applied_files:
            out.skipped.append(
                {"name": f.name, "sha256": f.sha256, "applied_in": applied_files[key]}
            )
        else:
            fresh.append(f)
    inventory = data.read_inventory(dataset.inventory)
    first_seen = {
        a: (dataset.inventory, int(n))
        for a, n in zip(inventory["artwork_id_hash"], inventory["line"], strict=True)
    }
    news: list[pd.DataFrame] = []
    for f in [f for f in fresh if f.kind == "inventory"]:
        new = data.read_inventory(f.path)
        for artwork, line in zip(new["artwork_id_hash"], new["line"], strict=True):
            if artwork in first_seen:
                where, at = first_seen[artwork]
                raise data.DataError(
                    f"artwork id {artwork!r} is already in {Path(where).name} (line {at})",
                    f.path,
                    int(line),
                    "artwork_id_hash",
                )
            first_seen[artwork] = (f.path, int(line))
        news.append(new)
        out.inventory_files.append(f)
        out.new_items += len(new)
    combined = pd.concat([inventory, *news], ignore_index=True) if news else inventory
    known = set(combined["artwork_id_hash"])
    images = [f for f in fresh if f.kind == "image"]
    if images and not dataset.images.is_dir():
        raise data.DataError(
            "the dataset has no images/ folder (it uses imported embeddings): "
            "images cannot be added to it",
            images[0].path,
        )
    dataset_images = _image_stems(dataset.images)
    batch_stems: dict[str, str] = {}
    for image in images:
        _check_image(image, known, dataset_images)
        stem = Path(image.name).name.rpartition(".")[0]
        if stem in batch_stems:
            raise data.DataError(
                f"two images for {stem!r} in the batch: {batch_stems[stem]}, {image.name}",
                image.path,
                field="file name",
            )
        batch_stems[stem] = image.name
        out.images.append(image)
    for new, f in zip(news, out.inventory_files, strict=True):
        missing = missing_visuals(new, set(batch_stems), dataset)
        if missing:
            artwork, line = missing[0]
            what = "image" if dataset.images.is_dir() else "imported vector"
            raise data.DataError(
                f"no {what} for {artwork!r}, neither in the batch nor in the dataset "
                f"({len(missing)} item(s) of this file lack one; the batch is rejected whole)",
                f.path,
                line,
                "artwork_id_hash",
            )
    for f in [f for f in fresh if f.kind == "purchases"]:
        df, _ = data.read_purchases(f.path, combined, data.ReadOptions())
        out.purchases_files.append(f)
        out.new_purchase_rows += int(df["line"].nunique())
    logger.info(
        "batch %s valid: %d new items, %d purchase rows, %d images, %d file(s) already applied",
        batch.name,
        out.new_items,
        out.new_purchase_rows,
        len(out.images),
        len(out.skipped),
    )
    return out
