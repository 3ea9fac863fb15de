"""Item vectors the dataset brings: the published ``resnet_embeddings.npy`` (read safely,
no code from the file runs), the pickle-free bundle ``embeddings.npz`` that
``curatornet import-embeddings`` writes from it, and their alignment with the inventory."""

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from curatornet_pipeline.core.bundle import load_bundle, save_bundle
from curatornet_pipeline.core.data.csv_rows import show
from curatornet_pipeline.core.data.formats import DatasetPaths, Drops, inventory_rows
from curatornet_pipeline.core.data.npy_safe import load_object_array
from curatornet_pipeline.core.hashing import file_sha256
from curatornet_pipeline.core.types import DataError, ItemVectors

logger = logging.getLogger(__name__)


def read_published_embeddings(npy_path: str | os.PathLike) -> ItemVectors:
    """Read the published ``resnet_embeddings.npy`` as it is, safely.

    The published file is a numpy *object* array, stored as a pickle. It is
    read by :func:`curatornet_pipeline.core.data.npy_safe.load_object_array`, whose
    unpickler resolves only the globals such an array needs and refuses any
    other with a :class:`DataError`, so no code from the file runs.

    Rows are ``[artwork_id_hash, vector]``; ids must be unique non-empty
    strings, vectors of equal length and finite. Errors name the 0-based row.
    """
    name = str(npy_path)
    array = load_object_array(npy_path)
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.shape[1] != 2:
        shape = getattr(array, "shape", type(array).__name__)
        raise DataError(f"expected an array of shape (n, 2) [id, vector], got {shape}", name)
    if len(array) == 0:
        raise DataError("no rows", name)
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    seen: dict[str, int] = {}

    def bad(reason: str, row: int, field: str = "vector") -> DataError:
        return DataError(reason, name, field=field, row=row)

    for row, (artwork, vector) in enumerate(array):
        if not isinstance(artwork, str) or not artwork.strip():
            raise bad(
                f"id is not a non-empty string: {show(repr(artwork))}", row, "artwork_id_hash"
            )
        artwork = artwork.strip()
        if artwork in seen:
            raise bad(
                f"duplicate id {show(artwork)} (first in row {seen[artwork]})",
                row,
                "artwork_id_hash",
            )
        seen[artwork] = row
        try:
            values = np.asarray(vector, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad("vector is not numeric", row) from None
        if values.ndim != 1 or (vectors and len(values) != len(vectors[0])):
            expected = len(vectors[0]) if vectors else "a 1-d vector"
            raise bad(f"vector of shape {values.shape}, expected ({expected},) as in row 0", row)
        values = values.astype(np.float32)
        if not np.isfinite(values).all():
            raise bad("vector has NaN or infinite values (in float32)", row)
        ids.append(artwork)
        vectors.append(values)
    return ItemVectors(
        ids=np.asarray(ids, dtype=str),
        vectors=np.stack(vectors).astype(np.float32),
        meta={
            "source": "imported",
            "file": Path(name).name,
            "file_sha256": file_sha256(name),
            "dims": len(vectors[0]),
        },
    )


def import_embeddings(npy_path: str | os.PathLike, out_path: str | os.PathLike) -> ItemVectors:
    """Convert the published ``resnet_embeddings.npy`` into a pickle-free bundle once, so
    later runs skip the row-by-row checks (:func:`read_published_embeddings`)."""
    result = read_published_embeddings(npy_path)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "wb") as handle:
        save_bundle(result, handle)
    os.replace(partial, out)
    logger.info("imported %d vectors from %s into %s", len(result.ids), npy_path, out)
    return result


def load_vectors(
    paths: "DatasetPaths", inventory: pd.DataFrame, on_missing: str = "error"
) -> tuple[ItemVectors, dict]:
    """The dataset's own vectors for the inventory's items, in inventory order.

    The one loader of imported vectors (the graph's ``item_embeddings`` and
    ``curatornet reproduce`` call it): the bundle ``embeddings.npz`` written by
    ``curatornet import-embeddings`` when present, else the published
    ``resnet_embeddings.npy`` read as it is. ``on_missing`` as in
    :func:`align_imported_embeddings`; the report adds ``file``.
    """
    if paths.imported_embeddings.is_file():
        source = paths.imported_embeddings
        vectors = read_imported_embeddings(source)
    elif paths.published_embeddings.is_file():
        source = paths.published_embeddings
        vectors = read_published_embeddings(source)
    else:
        raise DataError(
            f"no vectors: neither {paths.published_embeddings.name} nor "
            f"{paths.imported_embeddings.name}",
            paths.root,
        )
    aligned, report = align_imported_embeddings(vectors, inventory, on_missing, source)
    aligned.meta["source"] = f"imported {vectors.meta.get('file', source.name)}"
    return aligned, {**report, "file": str(source)}


def read_imported_embeddings(path: str | os.PathLike) -> ItemVectors:
    """Read a bundle written by :func:`import_embeddings` (no pickle involved)."""
    try:
        with open(path, "rb") as handle:
            value = load_bundle(handle)
    except FileNotFoundError:
        raise DataError("file not found (run `curatornet import-embeddings FILE`)", path) from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"not an embeddings bundle: {exc}", path) from None
    if not isinstance(value, ItemVectors):
        raise DataError(f"holds a {type(value).__name__}, not ItemVectors", path)
    return value


def align_imported_embeddings(
    vectors: ItemVectors,
    inventory: pd.DataFrame,
    on_missing: str = "error",
    source_file: str | os.PathLike = "embeddings.npz",
) -> tuple[ItemVectors, dict]:
    """The imported vectors of the inventory's items, in inventory order.

    An inventory item without a vector raises :class:`DataError` naming the
    inventory file, line and id; with ``on_missing="drop"`` it is left out and
    counted. Vectors of ids absent from the inventory are ignored (counted as
    ``unmatched_vectors``). The report: ``items``, ``dropped_missing``,
    ``dropped_missing_examples``, ``unmatched_vectors``.
    """
    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing_vectors must be 'error' or 'drop', got {on_missing!r}")
    source = inventory.attrs.get("source", "inventory.csv")
    position = {str(item): i for i, item in enumerate(vectors.ids)}
    keep: list[int] = []
    drops = Drops(on_missing)
    for artwork, line in inventory_rows(inventory):
        if artwork in position:
            keep.append(position[artwork])
        else:
            drops.add(
                f"no vector for {show(artwork)} in {source_file} "
                "(on_missing_vectors='drop' leaves such items out)",
                source,
                line,
                "artwork_id_hash",
                artwork,
            )
    aligned = ItemVectors(
        ids=np.asarray(vectors.ids)[keep],
        vectors=np.asarray(vectors.vectors)[keep],
        meta=dict(vectors.meta),
    )
    report = {
        "items": len(keep),
        **drops.report("dropped_missing"),
        "unmatched_vectors": len(position) - len(keep),
    }
    drops.warn("%s: %d inventory items have no imported vector, e.g. %s", source)
    return aligned, report
