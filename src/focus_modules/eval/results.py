"""Crash-safe JSON-lines result files.

A row is written with one ``write`` of its line and its newline, then flushed and fsynced, so
after ``kill -9`` the file holds every finished question plus at most one torn last line.
Readers drop such a torn last line; the appender truncates it before writing, so the file
stays valid JSON lines. Any other malformed line is an error (it means the file is not ours).

Under ``torchrun`` each rank appends to its own shard file ``RESULTS.jsonl.rank{R}``; rank 0
merges the shards into ``RESULTS.jsonl`` (:func:`merge_shards`).

One run at a time writes a results file: :func:`exclusive` holds a lock on ``RESULTS.jsonl.lock``
(left beside it) for the whole run, so a second run on the same file fails at once instead of
answering every question a second time.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ResultsLockedError(ValueError):
    """Another process is writing the same results file."""


def lock_path(out: Path) -> Path:
    """The lock file of results file ``out``."""
    return out.with_name(f"{out.name}.lock")


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold the lock of results file ``out`` (``fcntl.flock`` on ``OUT.lock``) until the block
    ends; the lock goes with the process, also on ``kill -9``.

    Raises:
        ResultsLockedError: at once, if another process holds it.
    """
    import fcntl

    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ResultsLockedError(
            f"{out} is being written by another focus eval ({holder}); wait for it to finish or use another --out"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def shard_path(out: Path, rank: int) -> Path:
    """The file rank ``rank`` appends to under ``torchrun``."""
    return out.with_name(f"{out.name}.rank{rank}")


def shard_paths(out: Path) -> list[Path]:
    """Every shard file of ``out`` on disk, whatever world size wrote it, in rank order."""
    found = [p for p in out.parent.glob(f"{out.name}.rank*") if p.name[len(out.name) + 5 :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(out.name) + 5 :]))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a results file (``[]`` if it does not exist), without a torn last line."""
    rows, _ = _read(path)
    return rows


def _read(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows and the byte length of the valid prefix of the file."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    body, newline, _torn = data.rpartition(b"\n")  # text after the last newline is a torn write
    lines = body.split(b"\n") if newline else []
    rows, valid = [], 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "id" not in row:
                    raise ValueError("not a result object")
            except ValueError as err:
                if number == len(lines):
                    break  # the last line, damaged by a crash: the question is answered again
                raise ValueError(f"{path} line {number} is not a result row ({err}); is this a results file?") from err
            rows.append(row)
        valid += len(line) + 1
    return rows, valid


@contextmanager
def appender(path: Path) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Open ``path`` for appending rows durably; yields ``write(row)``.

    A torn last line left by a killed run is cut off first.
    """
    _, valid = _read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        if handle.tell() != valid:
            handle.truncate(valid)
            handle.seek(valid)

        def write(row: dict[str, Any]) -> None:
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

        yield write


def merge_shards(out: Path) -> list[dict[str, Any]]:
    """Fold every shard file of ``out`` into ``out`` and delete the shards.

    Rows are deduplicated by ``id`` (the first one read wins: ``out`` before the shards) and
    sorted by ``index``. ``out`` is replaced atomically, so a kill during the merge leaves
    either the old file and the shards, or the merged file (and possibly the shards, whose
    rows the next merge drops as duplicates).

    Returns:
        the merged rows.
    """
    shards = shard_paths(out)
    rows: dict[str, dict[str, Any]] = {}
    for path in [out, *shards]:
        for row in read_rows(path):
            rows.setdefault(str(row["id"]), row)
    merged = sorted(rows.values(), key=lambda r: r.get("index", 0))
    if not shards:
        return merged
    tmp = out.with_name(out.name + ".merging")
    with open(tmp, "wb") as handle:
        for row in merged:
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out)
    _fsync_dir(out.parent)
    for path in shards:
        path.unlink()
    return merged


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
