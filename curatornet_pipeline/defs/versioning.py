"""Code versions that change when the code an asset runs changes.

Each asset's ``code_version`` is a short hash of the source of the core modules
it calls (and of its own module), computed when the code location loads. Edit
``core/sampling/triples.py`` and the ``triplets`` partitions (and everything below them)
show as stale in the UI, while the ingestion assets stay fresh; reformatting a
comment also changes the version -- a deliberate over-approximation: a false
"stale" costs a re-run, a missed one a wrong result.
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
