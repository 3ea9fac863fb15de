"""Applying an incoming batch whole (or rejecting or skipping it whole), and rolling one back.

Both write an entry to the dataset's history (:mod:`~curatornet_pipeline.core.data.history`)
and re-render the dataset's CSV files from it, so applying a batch and rolling it back give
the dataset back byte for byte. See ``docs/data-format.md``, "Incoming batches".
"""

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.core.data.csv_rows import read_rows
from curatornet_pipeline.core.data.history import Entry, History
from curatornet_pipeline.core.data.incoming import LOOSE, Batch, Validated, validate_batch

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one batch."""

    status: str  # "applied" | "skipped" | "rejected"
    batch: str  # folder name under incoming/
    content_hash: str
    entry: str | None = None  # history entry written, or holding the content already
    error: str | None = None  # the DataError, for a rejected batch
    moved_to: str | None = None  # where the batch's files went (incoming/processed|rejected/...)
    report: dict = field(default_factory=dict)  # new_items, new_purchase_rows, new_images, skipped


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def _move_batch(batch: Batch, incoming: Path, where: str, note: str) -> Path:
    """Move a batch's files to ``incoming/<where>/<stamp>-<name>/`` with a note beside it."""
    label = "loose" if batch.name == LOOSE else batch.name
    folder = incoming / where
    folder.mkdir(exist_ok=True)
    dest = folder / f"{_stamp()}-{label}"
    n = 1
    while dest.exists():
        n += 1
        dest = folder / f"{_stamp()}-{label}-{n}"
    if batch.name == LOOSE:
        dest.mkdir()
        names = [f.name for f in batch.files] + (["READY"] if batch.marked else [])
        for name in names:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(batch.root / name), dest / name)
    else:
        shutil.move(str(batch.root), dest)
    suffix = ".error.txt" if where == "rejected" else ".txt"
    dest.with_name(dest.name + suffix).write_text(note)
    return dest


def apply_batch(batch: Batch, dataset: data.DatasetPaths, incoming: Path) -> Outcome:
    """Validate ``batch`` against the dataset and apply it whole, or reject or skip it whole.

    Applied: a history entry is written, the dataset re-rendered, the batch
    moved to ``incoming/processed/``. Rejected (any :class:`DataError`): the
    dataset is untouched and the batch moved to ``incoming/rejected/`` with
    its error in ``<stamp>-<name>.error.txt``. Skipped: its content (or every
    file of it) was applied before; moved to ``processed/`` with a note.
    """
    history = History(dataset)
    outcome = Outcome("rejected", batch.name, batch.content_hash)
    with history.lock():
        history.sync()
        already = history.applied_batches().get(batch.content_hash)
        if already:
            outcome.status, outcome.entry = "skipped", already
            outcome.report = {"skipped": [f.name for f in batch.files], "applied_in": already}
            note = f"skipped: this content was applied before, as {already}\n"
            outcome.moved_to = str(_move_batch(batch, incoming, "processed", note))
            logger.warning("batch %s skipped: already applied as %s", batch.name, already)
            return outcome
        try:
            valid = validate_batch(batch, dataset, history.applied_files())
        except (data.DataError, OSError, UnicodeDecodeError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.moved_to = str(_move_batch(batch, incoming, "rejected", outcome.error + "\n"))
            logger.warning("batch %s rejected whole: %s", batch.name, exc)
            return outcome
        outcome.report = {
            "new_items": valid.new_items,
            "new_purchase_rows": valid.new_purchase_rows,
            "new_images": len(valid.images),
            "skipped": [s["name"] for s in valid.skipped],
            "skipped_applied_in": sorted({s["applied_in"] for s in valid.skipped}),
        }
        if valid.empty:
            outcome.status = "skipped"
            outcome.entry = valid.skipped[0]["applied_in"] if valid.skipped else None
            lines = [f"{s['name']}: applied before, in {s['applied_in']}" for s in valid.skipped]
            note = "skipped: every file was applied before\n" + "\n".join(lines) + "\n"
            outcome.moved_to = str(_move_batch(batch, incoming, "processed", note))
            return outcome
        if history.render() is None:
            history._take_base("before the first batch")
        entry = _write_batch_entry(history, batch, valid)
        history.materialize()
        outcome.status, outcome.entry = "applied", entry.id
        note = f"applied as {entry.id}\n" + "".join(
            f"{s['name']}: skipped, applied before in {s['applied_in']}\n" for s in valid.skipped
        )
        outcome.moved_to = str(_move_batch(batch, incoming, "processed", note))
        logger.info("batch %s applied as %s: %s", batch.name, entry.id, outcome.report)
    return outcome


def _write_batch_entry(history: History, batch: Batch, valid: Validated) -> Entry:
    chosen = [*valid.inventory_files, *valid.purchases_files, *valid.images]
    manifest = {
        "source": batch.name,
        "content_hash": batch.content_hash,
        "files": [
            {"name": f.name, "kind": f.kind, "sha256": f.sha256, "size": f.size} for f in chosen
        ],
        "skipped_files": valid.skipped,
        "images": [f.name for f in valid.images],
        "new_items": valid.new_items,
        "new_purchase_rows": valid.new_purchase_rows,
    }
    return history._write_entry(
        "batch", batch.content_hash[:12], manifest, {f.name: f.path for f in chosen}
    )


def rollback(dataset: data.DatasetPaths, ref: str, reason: str = "") -> Entry:
    """Undo the batch ``ref`` (id, number or content-hash prefix); returns the rollback entry.

    The dataset is rebuilt from the history without that batch: byte for byte
    what it would be had the batch never come. Refused (``ValueError``) when
    the batch is not in force, or a later batch in force refers to its items.
    """
    history = History(dataset)
    with history.lock():
        history.sync()
        target = history.find(ref)
        entries = history.entries()
        base, active, undone = History._epoch(entries)
        if target.kind != "batch":
            raise ValueError(f"{target.id} is a {target.kind}, not a batch: nothing to roll back")
        if target.id in undone:
            raise ValueError(f"{target.id} was rolled back already, by {undone[target.id]}")
        if target not in active:
            raise ValueError(
                f"{target.id} is older than the current base {base.id if base else '?'} "
                "(the dataset files were replaced after it): it cannot be rolled back"
            )
        items = _new_items(target)
        dependents = [e.id for e in active if e.seq > target.seq and _refers_to(e, items)]
        if dependents:
            raise ValueError(
                f"later batch(es) {', '.join(dependents)} refer to items of {target.id}: "
                "roll them back first"
            )
        manifest = {"target": target.id, "reason": reason, "content_hash": ""}
        entry = history._write_entry("rollback", "rollback", manifest, {})
        history.materialize()
        logger.info("rolled back %s as %s", target.id, entry.id)
        return entry


def _new_items(entry: Entry) -> set[str]:
    items: set[str] = set()
    for f in entry.manifest["files"]:
        if f["kind"] == "inventory":
            items |= set(data.read_inventory(entry.file(f["name"]))["artwork_id_hash"])
    return items


def _refers_to(entry: Entry, items: set[str]) -> bool:
    """Whether a batch's purchases or images name any of ``items``."""
    if not items:
        return False
    for f in entry.manifest["files"]:
        if f["kind"] == "image" and Path(f["name"]).name.rpartition(".")[0] in items:
            return True
        if f["kind"] == "purchases":
            for _, values in read_rows(entry.file(f["name"]), data.PURCHASE_COLUMNS):
                text = values["purchased_artwork_ids_hash"]
                if any(i in text for i in items):  # substring: conservative, refuses when unsure
                    return True
    return False
