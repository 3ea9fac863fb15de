"""Content hashes: the data versions that let a metric point at its exact inputs."""

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd


def _update(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, pd.DataFrame):
        h.update(json.dumps([str(c) for c in obj.columns]).encode())
        h.update(pd.util.hash_pandas_object(obj, index=False).to_numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        arr = obj.astype(str) if obj.dtype == object else obj
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(type(obj).__qualname__.encode())
        for f in dataclasses.fields(obj):
            if f.name == "meta":  # descriptive (counts, timings): not content
                continue
            h.update(f.name.encode())
            _update(h, getattr(obj, f.name))
    elif isinstance(obj, bytes | bytearray):
        h.update(bytes(obj))
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            h.update(str(key).encode())
            _update(h, obj[key])
    elif isinstance(obj, list | tuple):
        h.update(f"seq{len(obj)}".encode())
        for item in obj:
            _update(h, item)
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())


def content_hash(obj: Any, length: int = 16) -> str:
    """A stable hex digest of a DataFrame, array, dataclass, dict, list or bytes.

    Equal content gives an equal hash across runs and machines. A dataclass
    field named ``meta`` (counts, timings) is not content and is skipped.
    """
    h = hashlib.sha256()
    _update(h, obj)
    return h.hexdigest()[:length]


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (``hashlib.file_digest``)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
