"""Pickle-free storage of the dataclasses in :mod:`curatornet_pipeline.core.types`.

Arrays go into an ``.npz`` file (``allow_pickle=False``); other fields are stored
as one JSON document. Only classes of this package can be rebuilt, so loading a
bundle never runs foreign code.
"""

import dataclasses
import importlib
import io
import json
from typing import Any, BinaryIO

import numpy as np

_META_KEY = "__bundle__"
_ALLOWED_PREFIX = "curatornet_pipeline."


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def save_bundle(obj: Any, file: BinaryIO) -> None:
    """Write a dataclass instance to ``file`` as npz."""
    if not dataclasses.is_dataclass(obj):
        raise TypeError(f"expected a dataclass instance, got {type(obj).__name__}")
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                value = value.astype(str)
            arrays[f.name] = value
        else:
            scalars[f.name] = _to_jsonable(value)
    cls = type(obj)
    header = {"class": f"{cls.__module__}:{cls.__qualname__}", "fields": scalars}
    arrays[_META_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    file.write(buffer.getvalue())


def load_bundle(file: BinaryIO) -> Any:
    """Read back an object written by :func:`save_bundle`."""
    with np.load(io.BytesIO(file.read()), allow_pickle=False) as npz:
        header = json.loads(npz[_META_KEY].tobytes().decode())
        arrays = {k: npz[k] for k in npz.files if k != _META_KEY}
    module_name, qualname = header["class"].split(":")
    if not module_name.startswith(_ALLOWED_PREFIX):
        raise ValueError(f"refusing to rebuild {header['class']}: not a class of this package")
    cls = getattr(importlib.import_module(module_name), qualname)
    return cls(**arrays, **header["fields"])
