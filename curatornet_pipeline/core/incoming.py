"""Intake of new files dropped in an ``incoming/`` folder: validate, then append.

New ``inventory*.csv`` and ``purchases*.csv`` files (published format, header
included) and image files under ``incoming/images/`` are validated against the
dataset as it is plus what arrives with them. A good file is appended to the
dataset (rewritten atomically) and moved to ``incoming/processed/``; a bad
file is rejected whole: moved to ``incoming/rejected/`` with its error written
next to it as ``<name>.error.txt``. Nothing already in the dataset changes
when a file is rejected.
"""

import csv
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from curatornet_pipeline.core import data

logger = logging.getLogger(__name__)


@dataclass
class IntakeReport:
    """What one intake pass did."""

    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # file name -> error
    new_items: int = 0
    new_purchase_rows: int = 0
    new_images: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.accepted)


def pending(incoming: Path) -> list[Path]:
    """Files waiting in ``incoming`` (inventory first, so purchases can refer to new items)."""
    if not incoming.is_dir():
        return []
    inv = sorted(incoming.glob("inventory*.csv"))
    pur = sorted(incoming.glob("purchases*.csv"))
    images = incoming / "images"
    extra = [p for p in sorted(images.iterdir()) if p.is_file()] if images.is_dir() else []
    return inv + pur + extra


def _check_image(path: Path, inventory: pd.DataFrame, dataset: data.DatasetPaths) -> None:
    """A new image must name a known artwork, have a known extension and decode."""
    from PIL import Image

    if path.suffix.lower().lstrip(".") not in data.IMAGE_EXTENSIONS:
        raise data.DataError(
            f"extension {path.suffix!r} is not one of {data.IMAGE_EXTENSIONS}",
            path,
            field="file name",
        )
    if path.stem not in set(inventory["artwork_id_hash"]):
        raise data.DataError(
            "image of an artwork id absent from inventory", path, field="file name"
        )
    existing = [p for p in dataset.images.glob(f"{path.stem}.*") if p.name != path.name]
    if existing:
        raise data.DataError(
            f"artwork {path.stem!r} already has an image ({existing[0].name})",
            path,
            field="file name",
        )
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # PIL raises many types for broken files
        raise data.DataError(f"cannot decode image: {exc}", path) from exc


def _append_csv(target: Path, new_file: Path, columns: tuple[str, ...]) -> int:
    """Append ``new_file``'s rows to ``target`` in target's column order, atomically."""
    with target.open(newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f))
    rows = []
    with new_file.open(newline="", encoding="utf-8-sig") as f:
        for record in csv.DictReader(f):
            rows.append([record.get(col, "") for col in header])
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            with target.open(newline="", encoding="utf-8-sig") as f:
                text = f.read()
            out.write(text if text.endswith("\n") else text + "\n")
            writer = csv.writer(out, lineterminator="\n")
            writer.writerows(rows)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)


def _reject(incoming: Path, path: Path, error: Exception) -> str:
    folder = incoming / "rejected"
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    dest = folder / f"{stamp}-{path.name}"
    shutil.move(str(path), dest)
    message = f"{type(error).__name__}: {error}\n"
    dest.with_name(dest.name + ".error.txt").write_text(message)
    logger.warning("rejected %s: %s", path.name, error)
    return message.strip()


def _processed(incoming: Path, path: Path) -> None:
    folder = incoming / "processed"
    folder.mkdir(exist_ok=True)
    shutil.move(str(path), folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{path.name}")


def intake(incoming: Path, dataset: data.DatasetPaths) -> IntakeReport:
    """Validate and append every pending file; reject bad ones whole."""
    report = IntakeReport()
    inventory = data.read_inventory(dataset.inventory)
    for path in pending(incoming):
        try:
            if path.parent.name == "images":
                _check_image(path, inventory, dataset)
                dataset.images.mkdir(exist_ok=True)
                shutil.move(str(path), dataset.images / path.name)
                report.new_images += 1
                report.accepted.append(path.name)
                continue
            if path.name.startswith("inventory"):
                new = data.read_inventory(path)
                clash = new[new["artwork_id_hash"].isin(inventory["artwork_id_hash"])]
                if len(clash):
                    row = clash.iloc[0]
                    raise data.DataError(
                        f"artwork id {row['artwork_id_hash']!r} is already in the inventory",
                        path,
                        line=int(row["line"]),
                        field="artwork_id_hash",
                    )
                report.new_items += _append_csv(dataset.inventory, path, data.INVENTORY_COLUMNS)
                inventory = pd.concat([inventory, new], ignore_index=True)
            else:
                data.read_purchases(path, inventory)  # raises DataError on any bad row
                report.new_purchase_rows += _append_csv(
                    dataset.purchases, path, data.PURCHASE_COLUMNS
                )
            _processed(incoming, path)
            report.accepted.append(path.name)
        except (data.DataError, ValueError, OSError, csv.Error) as exc:
            report.rejected[path.name] = _reject(incoming, path, exc)
    return report
