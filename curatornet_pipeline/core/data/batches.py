"""Applying incoming batches, and the append-only history that can undo them.

The history is a folder ``<data>/batches/`` of numbered entries, never
changed once written:

- ``000001-base/``: the dataset's ``inventory.csv`` and ``purchases.csv`` as
  they were before the first batch (a new base is taken when the files are
  found changed by something other than a batch);
- ``000002-<hash12>/``: an applied batch: ``manifest.json`` (source folder,
  content hash, each file's sha256, what it added, the sha256 of the dataset
  files after it) and ``files/`` (copies of the batch's files);
- ``000003-rollback/``: a rollback: ``manifest.json`` naming the batch it undoes.

The dataset's CSV files are always the *rendering* of the history: the base
files, then the rows of every batch of the current base that was not rolled
back, appended in order (header order of the base file, ``\\n`` line ends).
So applying a batch and rolling it back give the dataset back byte for byte,
and a crash between writing an entry and writing the dataset is finished
on the next call. See ``docs/data-format.md``, "Incoming batches".
"""

import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.core.data.incoming import LOOSE, Batch, Validated, file_key, validate_batch
from curatornet_pipeline.core.hashing import file_sha256

logger = logging.getLogger(__name__)

CSV_FILES = ("inventory.csv", "purchases.csv")
_KIND_TARGET = {"inventory": "inventory.csv", "purchases": "purchases.csv"}


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _file_sha(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def _write_atomic(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _header(content: bytes) -> list[str]:
    text = content.decode("utf-8-sig")
    row = next(csv.reader(io.StringIO(text, newline="")), [])
    return [h.strip() for h in row]


def append_rows(target: bytes, new_file: bytes) -> bytes:
    """``target`` CSV bytes with ``new_file``'s data rows appended in target's column order.

    Columns the new file lacks are left empty, extra ones are not carried.
    Deterministic: the same inputs always give the same bytes.
    """
    header = _header(target)
    reader = csv.reader(io.StringIO(new_file.decode("utf-8-sig"), newline=""))
    source = [h.strip() for h in next(reader, [])]
    where = {name: i for i, name in enumerate(source)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in reader:
        if not row:
            continue
        writer.writerow(
            [row[where[c]] if c in where and where[c] < len(row) else "" for c in header]
        )
    glue = b"" if not target or target.endswith(b"\n") else b"\n"
    return target + glue + out.getvalue().encode("utf-8")


@dataclass(frozen=True)
class Entry:
    """One entry of the history."""

    seq: int  # position in the history, from 1
    kind: str  # "base" | "batch" | "rollback"
    folder: Path
    manifest: dict

    @property
    def id(self) -> str:
        return self.folder.name

    def file(self, name: str) -> Path:
        return self.folder / "files" / name


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


class History:
    """The append-only history of one dataset folder (``<root>/batches``)."""

    def __init__(self, dataset: data.DatasetPaths) -> None:
        self.dataset = dataset
        self.folder = dataset.root / "batches"

    # --- reading ------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in sorted(self.folder.iterdir()):
            number, dash, _ = p.name.partition("-")
            if not (dash and number.isdigit() and (p / "manifest.json").is_file()):
                continue  # temporaries of an interrupted write
            manifest = json.loads((p / "manifest.json").read_text())
            out.append(Entry(int(number), manifest["kind"], p, manifest))
        return out

    @staticmethod
    def _epoch(entries: list[Entry]) -> tuple[Entry | None, list[Entry], dict[str, str]]:
        """The latest base, the batches after it still in force, and {rolled back id: by id}."""
        bases = [e for e in entries if e.kind == "base"]
        if not bases:
            return None, [], {}
        base = bases[-1]
        later = [e for e in entries if e.seq > base.seq]
        undone = {e.manifest["target"]: e.id for e in later if e.kind == "rollback"}
        active = [e for e in later if e.kind == "batch" and e.id not in undone]
        return base, active, undone

    def active(self) -> list[Entry]:
        return self._epoch(self.entries())[1]

    def applied_files(self) -> dict[str, str]:
        """:func:`file_key` of every file in force -> the entry that applied it."""
        return {
            file_key(f["kind"], f["name"], f["sha256"]): e.id
            for e in self.active()
            for f in e.manifest["files"]
        }

    def applied_batches(self) -> dict[str, str]:
        """content hash of every batch in force -> its entry."""
        return {e.manifest["content_hash"]: e.id for e in self.active()}

    def render(self, entries: list[Entry] | None = None) -> dict[str, bytes] | None:
        """The CSV files the history makes (``None`` before the first base)."""
        base, active, _ = self._epoch(self.entries() if entries is None else entries)
        if base is None:
            return None
        out = {name: base.file(name).read_bytes() for name in CSV_FILES}
        for entry in active:
            for f in entry.manifest["files"]:
                if f["kind"] in _KIND_TARGET:
                    target = _KIND_TARGET[f["kind"]]
                    out[target] = append_rows(out[target], entry.file(f["name"]).read_bytes())
        return out

    def state(self) -> str:
        """A hash of the history entries in force (the intake asset's data version)."""
        base, active, _ = self._epoch(self.entries())
        ids = [e.id for e in ([base] if base else []) + active]
        return _sha("\n".join(ids).encode())[:16]

    def find(self, ref: str) -> Entry:
        """An entry by id (``000002-1a2b…``), number (``2``) or content-hash prefix."""
        entries = self.entries()
        for e in entries:
            if ref in (e.id, str(e.seq)) or (ref.isdigit() and int(ref) == e.seq):
                return e
        hits = [
            e
            for e in entries
            if e.kind == "batch" and len(ref) >= 6 and e.manifest["content_hash"].startswith(ref)
        ]
        if len(hits) == 1:
            return hits[0]
        known = ", ".join(e.id for e in entries) or "none"
        if len(hits) > 1:
            why = f"the prefix {ref!r} matches {len(hits)} batches: give more of it"
        elif len(ref) < 6 and not ref.isdigit():
            why = f"no history entry {ref!r}: a content-hash prefix needs at least 6 characters"
        else:
            why = f"no history entry {ref!r}"
        raise KeyError(f"{why} in {self.folder} (entries: {known})")

    def describe(self) -> list[dict]:
        """One row per entry, for ``curatornet batches list`` and metadata."""
        entries = self.entries()
        base, active, undone = self._epoch(entries)
        in_force = {e.id for e in active} | ({base.id} if base else set())
        rows = []
        for e in entries:
            m = e.manifest
            if e.kind == "batch":
                status = (
                    "applied"
                    if e.id in in_force
                    else f"rolled back by {undone[e.id]}"
                    if e.id in undone
                    else "before the current base"
                )
            elif e.kind == "base":
                status = "current base" if e.id in in_force else "older base"
            else:
                status = f"undoes {m['target']}"
            rows.append(
                {
                    "id": e.id,
                    "kind": e.kind,
                    "at": m.get("at", ""),
                    "source": m.get("source", ""),
                    "new_items": m.get("new_items", 0),
                    "new_purchase_rows": m.get("new_purchase_rows", 0),
                    "new_images": len(m.get("images", [])),
                    "status": status,
                }
            )
        return rows

    # --- writing ------------------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time (two intake runs, or a run and a rollback)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _next_seq(self) -> int:
        entries = self.entries()
        return entries[-1].seq + 1 if entries else 1

    def _write_entry(self, kind: str, suffix: str, manifest: dict, files: dict[str, Path]) -> Entry:
        """Write an entry into a temporary folder, then rename it into place (the commit)."""
        seq = self._next_seq()
        final = self.folder / f"{seq:06d}-{suffix}"
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=".entry-"))
        try:
            for name, source in files.items():
                dest = tmp / "files" / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            manifest = {"kind": kind, "seq": seq, "at": _now(), **manifest}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Entry(seq, kind, final, manifest)

    def _take_base(self, reason: str) -> Entry:
        files = {name: self.dataset.root / name for name in CSV_FILES}
        for path in files.values():
            if not path.is_file():
                raise data.DataError("file not found (a batch needs a dataset to go into)", path)
        manifest = {
            "reason": reason,
            "files": [{"name": n, "sha256": _file_sha(p)} for n, p in files.items()],
        }
        entry = self._write_entry("base", "base", manifest, files)
        logger.info("history %s: new base %s (%s)", self.folder, entry.id, reason)
        return entry

    def _images_in_force(self, entries: list[Entry]) -> tuple[dict, dict]:
        """{file name: (source path, sha256)} of images in force and of rolled-back batches."""
        _, active, undone = self._epoch(entries)
        keep, drop = {}, {}
        for e in entries:
            if e.kind != "batch":
                continue
            target = keep if e in active else drop if e.id in undone else None
            if target is None:
                continue
            for f in e.manifest["files"]:
                if f["kind"] == "image":
                    target[Path(f["name"]).name] = (e.file(f["name"]), f["sha256"])
        return keep, drop

    def materialize(self) -> None:
        """Write the dataset as the history renders it (CSV files and batch images)."""
        entries = self.entries()
        rendered = self.render(entries)
        if rendered is None:
            return
        keep, drop = self._images_in_force(entries)
        for name, (_, digest) in drop.items():
            path = self.dataset.images / name
            if name not in keep and _file_sha(path) == digest:
                path.unlink()
        for name, (source, _) in keep.items():
            path = self.dataset.images / name
            if not path.exists():  # a batch image changed by hand afterwards is left alone
                path.parent.mkdir(exist_ok=True)
                tmp = path.with_name(f".{name}.partial")
                shutil.copyfile(source, tmp)
                os.replace(tmp, path)
        for name, content in rendered.items():
            path = self.dataset.root / name
            if not path.is_file() or path.read_bytes() != content:
                _write_atomic(path, content)

    def sync(self) -> None:
        """Make the dataset agree with the history before a change.

        Files equal to the rendering: nothing to do. Equal to the rendering
        without the last entry: an interrupted apply or rollback, finished
        now. Anything else: the files were changed outside the intake, and
        they become a new base (so rollbacks never undo a hand edit).
        """
        entries = self.entries()
        rendered = self.render(entries)
        if rendered is None:
            return
        for name in CSV_FILES:
            if not (self.dataset.root / name).is_file():
                raise data.DataError(
                    f"file not found (`curatornet batches list`: the history in {self.folder} "
                    "can tell what it held)",
                    self.dataset.root / name,
                )
        current = {n: (self.dataset.root / n).read_bytes() for n in CSV_FILES}
        if current == rendered:
            self.materialize()  # images too (cheap when nothing is missing)
            return
        if entries[-1].kind != "base" and current == self.render(entries[:-1]):
            logger.warning("history %s: finishing interrupted %s", self.folder, entries[-1].id)
            self.materialize()
            return
        logger.warning("history %s: dataset files changed outside the intake", self.folder)
        self._take_base("dataset files changed outside the intake")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
        outcome.report = _report(valid)
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


def _report(valid: Validated) -> dict:
    return {
        "new_items": valid.new_items,
        "new_purchase_rows": valid.new_purchase_rows,
        "new_images": len(valid.images),
        "skipped": [s["name"] for s in valid.skipped],
        "skipped_applied_in": sorted({s["applied_in"] for s in valid.skipped}),
    }


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
            for _, values in data._read_rows(entry.file(f["name"]), data.PURCHASE_COLUMNS):
                text = values["purchased_artwork_ids_hash"]
                if any(i in text for i in items):  # substring: conservative, refuses when unsure
                    return True
    return False
