"""CSV rows read with errors that name the file, the line (as a text editor numbers it,
header = line 1) and the field: the reading every file of the published format goes through
(:mod:`.formats`), batches included.
"""

import csv
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from curatornet_pipeline.core.types import DataError

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INT64_MAX = 2**63


def show(text: str, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def read_rows(path: str | os.PathLike, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """Yield ``(line, {column: stripped text})`` for every data row of a CSV file.

    Accepts a UTF-8 BOM and extra columns; blank lines are skipped. ``line`` is
    the first line of the record as a text editor numbers it.
    """
    name = str(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("file not found", name) from None
    except OSError as exc:
        raise DataError(f"cannot open: {exc.strerror}", name) from None
    with handle:
        reader = csv.reader(handle)
        line = 1
        try:
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise DataError("empty file: no header", name, 1 if header is not None else None)
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"missing column(s) {', '.join(missing)}; found {', '.join(header)}", name, 1
                )
            doubled = sorted({c for c in required if header.count(c) > 1})
            if doubled:
                raise DataError(f"column(s) {', '.join(doubled)} appear twice", name, 1)
            index = {c: header.index(c) for c in required}
            n_rows = 0
            while True:
                line = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    break
                if not row:
                    continue
                if len(row) > len(header):
                    raise DataError(
                        f"{len(row)} fields but the header has {len(header)} "
                        "(an unquoted comma inside a value?)",
                        name,
                        line,
                    )
                n_rows += 1
                yield line, {c: (row[i].strip() if i < len(row) else "") for c, i in index.items()}
        except csv.Error as exc:
            raise DataError(f"malformed CSV: {exc}", name, line) from None
        except UnicodeDecodeError:
            bad_line, column, byte = _first_bad_utf8(path)
            raise DataError(
                f"not UTF-8 text: byte 0x{byte:02x} at byte {column} of the line", name, bad_line
            ) from None
        if n_rows == 0:
            raise DataError("no data rows after the header", name)


def _first_bad_utf8(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(line, column, byte)`` of the first byte that is not valid UTF-8 (1-based).

    The CSV reader decodes in blocks, so its position at the error is the
    start of a record, not the line of the bad byte; this rereads the bytes.
    """
    raw = Path(path).read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
        line_start = raw.rfind(b"\n", 0, start) + 1
        return raw.count(b"\n", 0, start) + 1, start - line_start + 1, raw[start]
    return 1, 1, 0  # decoded this time (file changed underneath): report the record start


def require(text: str, file: str, line: int, field: str, what: str = "missing value") -> str:
    if not text:
        raise DataError(what, file, line, field)
    return text


def parse_timestamp(text: str, file: str, line: int, field: str) -> int:
    """Unix seconds: an integer, or a number written as a whole one (``1.5e9``)."""
    require(text, file, line, field)
    if not _NUMBER.fullmatch(text):
        raise DataError(f"not a number: {show(text)}", file, line, field)
    value = Decimal(text)
    if abs(value) >= _INT64_MAX:
        raise DataError(f"out of range: {show(text)}", file, line, field)
    if value != value.to_integral_value():
        raise DataError(f"not a whole number of seconds: {show(text)}", file, line, field)
    return int(value)


def check_safe_id(text: str, file: str, line: int, field: str) -> str:
    """An artwork id must be a plain file name, so ``images/<id>.<ext>`` stays in images/."""
    require(text, file, line, field, "missing value (empty id)")
    if text in (".", "..") or any(c in text for c in "/\\:") or not text.isprintable():
        raise DataError(
            f"unsafe as a file name (path separator, '..', drive or control character): {show(text)}",
            file,
            line,
            field,
        )
    return text
