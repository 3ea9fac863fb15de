"""The embedding store: vectors kept per (image content, backbone, weights), so a nightly
run embeds only new images and shard workers share what the others made."""

import io
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from upath import UPath

logger = logging.getLogger(__name__)

#: (artwork id, image content hash, backbone, weights id): what a stored vector was made of.
EmbeddingKey = tuple[str, str, str, str]


def _load_npz(path: "UPath"):
    with path.open("rb") as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


class EmbeddingStore:
    """A folder of immutable ``.npz`` shards of keyed float32 vectors.

    Every :meth:`add` writes a new shard (atomically, under a unique name), so
    separate workers can add to the same folder. The key index is loaded lazily
    and refreshed with shards written since; vectors are read per shard on demand.
    """

    _COLUMNS = ("artwork_id_hash", "content_hash", "backbone", "weights_id")

    def __init__(self, root: str | Path) -> None:
        self.root = UPath(root)  # a local folder or any fsspec URI (s3://, gs://, ...)
        self.root.mkdir(parents=True, exist_ok=True)
        self._index: dict[EmbeddingKey, tuple[int, int]] = {}  # key -> (shard, row)
        self._shards: list[UPath] = []
        self._cache: dict[int, np.ndarray] = {}

    def _refresh(self) -> None:
        known = set(self._shards)
        for path in sorted(self.root.glob("shard-*.npz")):
            if path in known:
                continue
            with _load_npz(path) as npz:
                columns = [npz[c].tolist() for c in self._COLUMNS]
            shard = len(self._shards)
            self._shards.append(path)
            for row, key in enumerate(zip(*columns, strict=True)):
                self._index[key] = (shard, row)

    def _vectors(self, shard: int) -> np.ndarray:
        if shard not in self._cache:
            with _load_npz(self._shards[shard]) as npz:
                self._cache[shard] = npz["vectors"]
        return self._cache[shard]

    def __len__(self) -> int:
        self._refresh()
        return len(self._index)

    def lookup(self, keys: Sequence[EmbeddingKey]) -> tuple[np.ndarray, np.ndarray]:
        """``(found (n,) bool, vectors (n, d) float32)``; rows not found are zero.

        ``d`` is 0 when no key is found.
        """
        self._refresh()
        where = [self._index.get(tuple(k)) for k in keys]
        found = np.array([w is not None for w in where], dtype=bool)
        dim = next((self._vectors(w[0]).shape[1] for w in where if w is not None), 0)
        out = np.zeros((len(keys), dim), dtype=np.float32)
        for i, w in enumerate(where):
            if w is not None:
                out[i] = self._vectors(w[0])[w[1]]
        return found, out

    def add(self, keys: Sequence[EmbeddingKey], vectors: np.ndarray) -> Path | None:
        """Write ``vectors`` (n, d) under ``keys`` as a new shard; returns its path."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(keys) != len(vectors) or vectors.ndim != 2:
            raise ValueError(f"{len(keys)} keys for vectors of shape {vectors.shape}")
        if not len(keys):
            return None
        arrays = {c: np.array([k[j] for k in keys], dtype=str) for j, c in enumerate(self._COLUMNS)}
        name = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, vectors=vectors, **arrays)
        if self.root.protocol in ("", "file", "local"):
            tmp = Path(self.root) / f".{name}.tmp"  # rename: readers never see half a shard
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, Path(self.root) / name)
        else:  # object stores publish an object whole
            with (self.root / name).open("wb") as f:
                f.write(buffer.getvalue())
        return self.root / name
