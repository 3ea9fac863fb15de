"""The append-only history of applied batches (``<data>/batches/``: numbered base, batch
and rollback entries, never changed once written), and the dataset files rendered from it.

The dataset's CSV files are always the *rendering* of the history: the base files, then
the rows of every batch in force appended in order, so applying a batch and rolling it
back give the dataset back byte for byte, and a crash between writing an entry and writing
the dataset is finished on the next call. Layout and rules: ``docs/data-format.md``,
"History and rollback".
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
from dataclasses import dataclass
from pathlib import Path

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.core.data.incoming import file_key
from curatornet_pipeline.core.hashing import file_sha256

logger = logging.getLogger(__name__)

CSV_FILES = ("inventory.csv", "purchases.csv")
_KIND_TARGET = {"inventory": "inventory.csv", "purchases": "purchases.csv"}


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


def append_rows(target: bytes, new_file: bytes) -> bytes:
    """``target`` CSV bytes with ``new_file``'s data rows appended in target's column order.

    Columns the new file lacks are left empty, extra ones are not carried.
    Deterministic: the same inputs always give the same bytes.
    """

    def rows(content: bytes) -> Iterator[list[str]]:
        return csv.reader(io.StringIO(content.decode("utf-8-sig"), newline=""))

    header = [h.strip() for h in next(rows(target), [])]
    reader = rows(new_file)
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
        return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]

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

    def _write_entry(self, kind: str, suffix: str, manifest: dict, files: dict[str, Path]) -> Entry:
        """Write an entry into a temporary folder, then rename it into place (the commit)."""
        entries = self.entries()
        seq = entries[-1].seq + 1 if entries else 1
        final = self.folder / f"{seq:06d}-{suffix}"
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=".entry-"))
        try:
            for name, source in files.items():
                dest = tmp / "files" / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            manifest = {"kind": kind, "seq": seq, "at": at, **manifest}
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
