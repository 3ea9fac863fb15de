"""Readers and validation of the published UGallery file format.

The dataset folder holds ``purchases.csv``, ``inventory.csv`` and either an
``images/`` folder or ``embeddings.npz`` (imported once from the published
``resnet_embeddings.npy`` by :func:`import_embeddings`). The files are read
unchanged; every problem raises :class:`DataError` naming the file, the line
(as a text editor numbers it, header = line 1) and the field. See
``docs/data-format.md``.
"""

import ast
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from curatornet_pipeline.core.data.csv_rows import (
    check_safe_id,
    parse_timestamp,
    read_rows,
    require,
    show,
)
from curatornet_pipeline.core.hashing import file_sha256
from curatornet_pipeline.core.types import DataError

logger = logging.getLogger(__name__)

INVENTORY_COLUMNS: tuple[str, ...] = ("artwork_id_hash", "artist_id_hash", "upload_timestamp")
PURCHASE_COLUMNS: tuple[str, ...] = (
    "user_id_hash",
    "purchased_artwork_ids_hash",
    "purchase_timestamp",
)
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
MANIFEST_COLUMNS: tuple[str, ...] = ("artwork_id_hash", "path", "content_hash", "size_bytes")
BASKET_COLUMNS: tuple[str, ...] = ("user_id_hash", "purchase_timestamp", "items", "basket", "line")

_MAX_BASKET_TEXT = 100_000  # characters; longer basket literals are refused unparsed
N_EXAMPLES = 5  # dropped ids listed in a report


@dataclass(frozen=True)
class ReadOptions:
    """What to do with rows that refer to things that are not there."""

    # "drop": purchases of artwork ids absent from inventory are dropped and counted
    on_unknown_items: str = "error"
    # "drop": inventory items without an image file are left out and counted
    on_missing_images: str = "error"

    def __post_init__(self) -> None:
        for name in ("on_unknown_items", "on_missing_images"):
            if getattr(self, name) not in ("error", "drop"):
                raise ValueError(f"{name} must be 'error' or 'drop', got {getattr(self, name)!r}")


@dataclass
class Drops:
    """Rows that name an item that is not there: an error, or dropped and counted."""

    policy: str  # "error" or "drop"
    count: int = 0
    examples: list[dict] = field(default_factory=list)  # the first N_EXAMPLES

    def add(self, reason: str, file: str, line: int | None, field: str, artwork: str) -> None:
        if self.policy == "error":
            raise DataError(reason, file, line, field)
        self.count += 1
        if len(self.examples) < N_EXAMPLES:
            self.examples.append({"line": line, "artwork_id_hash": artwork})

    def report(self, key: str) -> dict:
        return {key: self.count, f"{key}_examples": self.examples}

    def warn(self, message: str, where: object) -> None:
        """Log ``message % (where, count, examples)`` when anything was dropped."""
        if self.count:
            logger.warning(message, where, self.count, self.examples)


def inventory_rows(inventory: pd.DataFrame) -> Iterator[tuple[str, int | None]]:
    """``(artwork_id_hash, source line or None)`` of every inventory row."""
    lines = inventory["line"] if "line" in inventory else [None] * len(inventory)
    for artwork, line in zip(inventory["artwork_id_hash"], lines, strict=True):
        yield artwork, None if line is None else int(line)


def _frame(name: str, columns: tuple[str, ...], rows: list[tuple]) -> pd.DataFrame:
    """``rows`` as a table: ``*_hash`` columns str, the others int64; ``attrs["source"] = name``."""
    values = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    df = pd.DataFrame(
        {
            c: pd.Series(v, dtype=str) if c.endswith("_hash") else np.asarray(v, dtype=np.int64)
            for c, v in zip(columns, values, strict=True)
        }
    )
    df.attrs["source"] = name
    return df


def read_inventory(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``inventory.csv``: one row per artwork, in file order.

    Columns: ``artwork_id_hash``, ``artist_id_hash`` (str), ``upload_timestamp``
    and ``line`` (int64, source line). Raises :class:`DataError` on any problem.
    """
    name = str(path)
    rows: list[tuple] = []
    first_line: dict[str, int] = {}
    for line, values in read_rows(path, INVENTORY_COLUMNS):
        artwork = check_safe_id(values["artwork_id_hash"], name, line, "artwork_id_hash")
        if artwork in first_line:
            raise DataError(
                f"duplicate id {show(artwork)} (first on line {first_line[artwork]})",
                name,
                line,
                "artwork_id_hash",
            )
        first_line[artwork] = line
        artist = require(
            values["artist_id_hash"],
            name,
            line,
            "artist_id_hash",
            "missing value (item without artist)",
        )
        stamp = parse_timestamp(values["upload_timestamp"], name, line, "upload_timestamp")
        rows.append((artwork, artist, stamp, line))
    df = _frame(name, (*INVENTORY_COLUMNS, "line"), rows)
    logger.info(
        "read %d items by %d artists from %s", len(df), df["artist_id_hash"].nunique(), name
    )
    return df


def _parse_basket(text: str, file: str, line: int) -> list[str]:
    """The basket column: a non-empty Python list (or tuple) literal of id strings.

    Parsed with :func:`ast.literal_eval`, which evaluates literals only and
    never calls anything.
    """
    field = "purchased_artwork_ids_hash"
    require(text, file, line, field)
    if len(text) > _MAX_BASKET_TEXT:
        raise DataError(f"basket text longer than {_MAX_BASKET_TEXT} characters", file, line, field)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise DataError(f"not a list literal: {show(text)}", file, line, field) from None
    if not isinstance(value, list | tuple):
        raise DataError(f"not a list literal: {show(text)}", file, line, field)
    if not value:
        raise DataError("empty basket: []", file, line, field)
    items = []
    for item in value:
        if not isinstance(item, str):
            raise DataError(
                f"basket item {show(repr(item))} is not a string in {show(text)}",
                file,
                line,
                field,
            )
        if not item.strip():
            raise DataError(f"empty id in basket {show(text)}", file, line, field)
        items.append(item.strip())
    return items


def read_purchases(
    path: str | os.PathLike, inventory: pd.DataFrame, options: ReadOptions = ReadOptions()
) -> tuple[pd.DataFrame, dict]:
    """Read ``purchases.csv`` as a long table, one row per purchased item.

    Columns: ``user_id_hash``, ``artwork_id_hash`` (str), ``purchase_timestamp``,
    ``line`` (int64). Items absent from ``inventory`` raise :class:`DataError`,
    or are dropped and counted when ``options.on_unknown_items == "drop"``.
    The report counts ``rows``, ``purchases``, ``users``, ``baskets`` (rows of
    one user with equal timestamps merged) and ``dropped_unknown`` (with the
    first few in ``dropped_unknown_examples``).
    """
    name = str(path)
    known = set(inventory["artwork_id_hash"])
    field = "purchased_artwork_ids_hash"
    rows: list[tuple] = []
    drops = Drops(options.on_unknown_items)
    n_rows = 0
    for line, values in read_rows(path, PURCHASE_COLUMNS):
        n_rows += 1
        user = require(
            values["user_id_hash"], name, line, "user_id_hash", "missing value (empty id)"
        )
        basket = _parse_basket(values[field], name, line)
        stamp = parse_timestamp(values["purchase_timestamp"], name, line, "purchase_timestamp")
        for item in basket:
            if item in known:
                rows.append((user, item, stamp, line))
            else:
                drops.add(
                    f"unknown artwork id {show(item)} (not in inventory; "
                    "on_unknown_items='drop' drops such purchases)",
                    name,
                    line,
                    field,
                    item,
                )
    df = _frame(name, ("user_id_hash", "artwork_id_hash", "purchase_timestamp", "line"), rows)
    n_baskets = int(df.groupby(["user_id_hash", "purchase_timestamp"]).ngroups) if len(df) else 0
    report = {
        "rows": n_rows,
        "purchases": len(df),
        "users": int(df["user_id_hash"].nunique()),
        "baskets": n_baskets,
        **drops.report("dropped_unknown"),
    }
    drops.warn("%s: dropped %d purchases of unknown artwork ids, e.g. %s", name)
    logger.info("read %s from %s", report, name)
    return df, report


def baskets(purchases_long: pd.DataFrame) -> pd.DataFrame:
    """One row per basket: the purchases of one user with the same timestamp.

    Columns: ``user_id_hash``, ``purchase_timestamp``, ``items`` (tuple of ids
    in file order), ``basket`` (0-based number within the user, in time order)
    and ``line`` (first source line). Sorted by timestamp, then user.
    """
    if purchases_long.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in BASKET_COLUMNS})
    ordered = purchases_long.sort_values("line", kind="stable")
    grouped = ordered.groupby(["user_id_hash", "purchase_timestamp"], sort=False)
    out = grouped.agg(items=("artwork_id_hash", tuple), line=("line", "min")).reset_index()
    out = out.sort_values(["purchase_timestamp", "user_id_hash"], kind="stable", ignore_index=True)
    out["basket"] = out.groupby("user_id_hash", sort=False).cumcount().astype(np.int64)
    return out[list(BASKET_COLUMNS)]


def image_manifest(
    images_dir: str | os.PathLike, inventory: pd.DataFrame, options: ReadOptions = ReadOptions()
) -> tuple[pd.DataFrame, dict]:
    """Find ``images/<artwork_id_hash>.<jpg|jpeg|png|webp>`` for every inventory item.

    Returns columns ``artwork_id_hash``, ``path`` (absolute), ``content_hash``
    (sha256 hex), ``size_bytes`` in inventory order, and a report with
    ``images``, ``dropped_missing`` (+ examples) and ``unmatched_files``.
    Images are not decoded here; the embedding stage does that.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise DataError("image folder not found", folder)
    root = folder.resolve()
    source = inventory.attrs.get("source", "inventory.csv")
    candidates: dict[str, list[str]] = {}
    n_files = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                continue
            n_files += 1
            stem, dot, ext = entry.name.rpartition(".")
            if dot and ext.lower() in IMAGE_EXTENSIONS:
                candidates.setdefault(stem, []).append(entry.name)
    rows: list[tuple[str, str, str, int]] = []
    drops = Drops(options.on_missing_images)
    for artwork, line in inventory_rows(inventory):
        names = candidates.get(artwork, [])
        if len(names) > 1:
            raise DataError(
                f"several images for {show(artwork)} in {root}: {', '.join(sorted(names))}",
                source,
                line,
                "artwork_id_hash",
            )
        if not names:
            drops.add(
                f"no image for {show(artwork)} in {root} "
                f"(looked for <id>.{'|'.join(IMAGE_EXTENSIONS)}; "
                "on_missing_images='drop' leaves such items out)",
                source,
                line,
                "artwork_id_hash",
                artwork,
            )
            continue
        resolved = (folder / names[0]).resolve()
        if not resolved.is_relative_to(root):
            raise DataError(f"resolves outside the image folder, to {resolved}", folder / names[0])
        if not resolved.is_file():
            raise DataError("not a regular file (broken link?)", folder / names[0])
        try:
            digest = file_sha256(resolved)
            size = resolved.stat().st_size
        except OSError as exc:
            raise DataError(f"cannot read: {exc.strerror}", resolved) from None
        rows.append((artwork, str(resolved), digest, size))
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    df["size_bytes"] = df["size_bytes"].astype(np.int64)
    report = {
        "source": "images",
        "images": len(df),
        **drops.report("dropped_missing"),
        "unmatched_files": n_files - len(df),
        "total_bytes": int(df["size_bytes"].sum()),
    }
    drops.warn("%s: %d inventory items have no image, e.g. %s", root)
    logger.info("image manifest of %s: %s", root, report)
    return df, report


@dataclass(frozen=True)
class DatasetPaths:
    """Where the files of one dataset folder are."""

    root: Path  # folder with purchases.csv, inventory.csv, images/ or embeddings.npz

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def purchases(self) -> Path:
        return self.root / "purchases.csv"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.csv"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def imported_embeddings(self) -> Path:
        return self.root / "embeddings.npz"

    @property
    def published_embeddings(self) -> Path:
        return self.root / "resnet_embeddings.npy"

    def uses_imported_vectors(self) -> bool:
        """No images/ folder, and vectors of the dataset's own (bundle or published file)."""
        return not self.images.is_dir() and (
            self.imported_embeddings.is_file() or self.published_embeddings.is_file()
        )

    def exists(self) -> bool:
        """True when both CSV files are there."""
        return self.purchases.is_file() and self.inventory.is_file()

    def describe(self) -> dict[str, dict]:
        """Path and presence of every file, JSON-able (for metadata and logs)."""
        names = ("purchases", "inventory", "images", "imported_embeddings", "published_embeddings")
        return {
            n: {"path": str(getattr(self, n)), "exists": getattr(self, n).exists()} for n in names
        }
