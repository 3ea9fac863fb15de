"""Code versions that change when the code an asset runs changes.

A comment edit changes the version too, on purpose: a false "stale" costs a re-run, a
missed one a wrong result (docs/architecture.md, "Code versions").
"""

import hashlib
import inspect
import types


def source_hash(*parts: types.ModuleType | object) -> str:
    """12 hex digits of the SHA-256 of the source of modules, classes or functions."""
    digest = hashlib.sha256()
    for part in parts:
        try:
            text = inspect.getsource(part)
        except (OSError, TypeError) as exc:
            raise ValueError(f"no source for {part!r}: cannot derive a code version") from exc
        digest.update(getattr(part, "__name__", repr(part)).encode())
        digest.update(text.encode())
    return digest.hexdigest()[:12]
