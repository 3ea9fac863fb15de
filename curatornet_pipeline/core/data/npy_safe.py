"""Read a numpy object array from a ``.npy`` file without running code from it: the header
is parsed with :mod:`numpy.lib.format` and the pickle read by an unpickler that resolves
only :data:`ALLOWED_GLOBALS` (what numpy writes for such an array); any other global is
refused before it is called, with a :class:`~curatornet_pipeline.core.types.DataError`.
Why: docs/data-format.md ("Why a separate command, and why it is safe").
"""

import io
import os
import pickle

import numpy as np
from numpy.lib import format as npy_format

from curatornet_pipeline.core.types import DataError

#: (module, name) pairs a genuine object-array ``.npy`` refers to, on numpy 1.x and 2.x.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles: encode(text, "latin1")
    }
)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`."""

    def __init__(self, module: str, name: str) -> None:
        self.qualified = f"{module}.{name}"
        super().__init__(self.qualified)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; no other codec is looked up."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise RefusedGlobal("_codecs", f"encode(..., {encoding!r})")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(module, name)
        if module == "_codecs":
            return _latin1_encode
        if name in ("ndarray", "dtype"):
            return getattr(np, name)
        try:
            from numpy._core import multiarray, numeric  # numpy >= 2; numpy.core is its alias
        except ImportError:  # numpy 1.x
            from numpy.core import multiarray, numeric

        return getattr(numeric if name == "_frombuffer" else multiarray, name)


def load_object_array(path: str | os.PathLike) -> np.ndarray:
    """The array stored in a ``.npy`` file; object arrays through the restricted unpickler.

    Raises :class:`DataError` for a missing, truncated or malformed file, and
    for any global outside :data:`ALLOWED_GLOBALS`.
    """
    name = str(path)
    try:
        raw = open(path, "rb").read()
    except FileNotFoundError:
        raise DataError("file not found", name) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", name) from None
    handle = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy_format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, SyntaxError) as exc:
        raise DataError(f"not a .npy file (bad header: {exc})", name) from None
    if not dtype.hasobject:
        try:  # plain numbers: numpy reads them without pickle
            return npy_format.read_array(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise DataError(f"malformed .npy data: {exc}", name) from None
    try:
        array = _RestrictedUnpickler(handle, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise DataError(
            f"refused to load: the pickle names {exc.qualified}, which an array of "
            "(id, vector) never needs (a crafted file could run code)",
            name,
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"truncated or malformed .npy data: {type(exc).__name__}: {exc}", name
        ) from None
    except (IndexError, KeyError, MemoryError, RecursionError, OverflowError) as exc:
        raise DataError(f"malformed .npy data: {type(exc).__name__}", name) from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"the pickle holds a {type(array).__name__}, not an array", name)
    if array.shape != tuple(shape):
        raise DataError(
            f"the pickled array has shape {array.shape}, the header says {tuple(shape)}", name
        )
    return array
