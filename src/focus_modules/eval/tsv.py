"""Tab-separated benchmark files (VLMEvalKit / lmms-eval style) read without holding images.

HR-Bench 8K's TSV holds gigabytes of base64 images. :class:`TsvTable` parses the file once,
keeps the small columns and the byte offset of every row, and re-reads a single row's large
field (the image) on demand, so memory stays at one image however large the file is.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path

# Base64 images are far longer than csv's default 128 KiB field limit.
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


@contextlib.contextmanager
def _large_fields():
    previous = csv.field_size_limit(_FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


class TsvTable:
    """A TSV file with a header row; small columns in memory, ``lazy_columns`` read per row.

    Args:
        path: the ``.tsv`` file.
        lazy_columns: columns not kept in memory (e.g. ``("image",)``); read them with
            :meth:`lazy_field`.

    Attributes:
        header: column names in file order.
        rows: one ``dict`` per data row with every column; a lazy column's value is kept only
            when it is at most ``INLINE_CHARS`` long (HR-Bench's references to the image of an
            earlier row) and is ``None`` otherwise (on disk, see :meth:`lazy_field`).
        digests: ``(row, column)`` -> SHA-1 hex digest of each lazy value left on disk, so that
            equal images can be recognised without keeping them.
    """

    INLINE_CHARS = 64

    def __init__(self, path: str | Path, lazy_columns: tuple[str, ...] = ()):
        self.path = Path(path)
        self._offsets: list[int] = []
        self.rows: list[dict[str, str]] = []
        self.digests: dict[tuple[int, str], str] = {}
        with open(self.path, "rb") as handle, _large_fields():
            lines = _LineReader(handle)
            reader = csv.reader(lines, delimiter="\t")
            try:
                self.header = [name.strip() for name in next(reader)]
                self.header[0] = self.header[0].lstrip("\ufeff")
            except StopIteration:
                raise ValueError(f"{self.path} is empty; expected a header row of tab-separated column names") from None
            self._lazy = {name: self.header.index(name) for name in lazy_columns if name in self.header}
            while True:
                start = lines.offset
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                if not fields:
                    continue
                if len(fields) != len(self.header):
                    raise ValueError(
                        f"{self.path} row {len(self.rows) + 1} has {len(fields)} fields, the header has "
                        f"{len(self.header)} ({self.header})"
                    )
                self._offsets.append(start)
                row = dict(zip(self.header, fields))
                for name in self._lazy:
                    if len(row[name]) > self.INLINE_CHARS:
                        self.digests[(len(self.rows), name)] = hashlib.sha1(row[name].encode()).hexdigest()
                        row[name] = None
                self.rows.append(row)

    def lazy_field(self, row: int, column: str) -> str:
        """Value of ``column`` in data row ``row`` (0-based), read from disk unless kept inline."""
        if self.rows[row][column] is not None:
            return self.rows[row][column]
        with open(self.path, "rb") as handle, _large_fields():
            handle.seek(self._offsets[row])
            fields = next(csv.reader(_LineReader(handle), delimiter="\t"))
        return fields[self._lazy[column]]


class _LineReader(Iterator[str]):
    """Decoded lines of a binary file that remember the byte offset of the next line."""

    def __init__(self, handle: io.BufferedReader):
        self._handle = handle
        self.offset = handle.tell()

    def __next__(self) -> str:
        line = self._handle.readline()
        if not line:
            raise StopIteration
        self.offset += len(line)
        return line.decode("utf-8")
