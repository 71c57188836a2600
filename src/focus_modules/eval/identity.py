"""What produced a results file, so that a rerun never mixes in another run's answers.

Every row of a results file carries ``run``: the facts that determine its answer (model and its
config hash or revision, dataset and the identity of its files, method, FOCUS config, protocol,
answer scheme, package version, ...). A rerun into the same file resumes only when its own
``run`` is the same; otherwise :func:`identity_differences` names what changed.

Fingerprints are cheap on multi-gigabyte files: a file is identified by its name, size and a
hash of its first and last MiB; a folder by the relative path and size of every file in it.
Neither depends on where the data lives, so a moved data folder still resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Bytes hashed at each end of a data file.
_EDGE_BYTES = 1 << 20
# Model config entries that do not change the answers (where it was loaded from, how it was saved).
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "_commit_hash", "transformers_version", "torch_dtype", "dtype")


def file_fingerprint(path: str | Path) -> str:
    """``"NAME: N bytes, sha1 HEX"`` of a file (hash of its first and last MiB), or
    ``"NAME/: F files, N bytes, sha1 HEX"`` of a folder (hash of each file's relative path and
    size).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    digest = hashlib.sha1()
    if path.is_file():
        size = path.stat().st_size
        with open(path, "rb") as handle:
            digest.update(handle.read(_EDGE_BYTES))
            if size > _EDGE_BYTES:
                handle.seek(max(size - _EDGE_BYTES, _EDGE_BYTES))
                digest.update(handle.read())
        return f"{path.name}: {size} bytes, sha1 {digest.hexdigest()[:12]}"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    total = 0
    for file in files:
        size = file.stat().st_size
        total += size
        digest.update(f"{file.relative_to(path).as_posix()}\t{size}\n".encode())
    return f"{path.name}/: {len(files)} files, {total} bytes, sha1 {digest.hexdigest()[:12]}"


def model_fingerprint(model: Any) -> dict[str, str | None]:
    """``{"config_sha1": ..., "revision": ...}`` of a HF model: a hash of its config (without
    where it was loaded from or its dtype) and the hub commit it was downloaded at, if known.
    Both ``None`` for an object without a ``config``."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return {"config_sha1": None, "revision": None}
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    for key, value in data.items():  # nested sub-configs (vision, text) carry the same entries
        if isinstance(value, dict):
            data[key] = {k: v for k, v in value.items() if k not in _VOLATILE_CONFIG_KEYS}
    text = json.dumps(data, sort_keys=True, default=str)
    return {
        "config_sha1": hashlib.sha1(text.encode()).hexdigest()[:12],
        "revision": getattr(config, "_commit_hash", None),
    }


def identity_id(identity: Mapping[str, Any]) -> str:
    """Short hash of a run identity (each row's ``run_id``)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def identity_differences(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a recorded identity and the current one, e.g.
    ``["method: 'focus' in the file, 'vanilla' now", "config.k: 30 in the file, 3 now"]``."""
    if recorded is None:
        return ["the file's rows carry no run record (written by an older focus_modules)"]
    return _differences(recorded, current, "")


def _differences(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in list(old) + [k for k in new if k not in old]:
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    if _normal(old) == _normal(new):
        return []
    return [f"{prefix[:-1]}: {_short(old)} in the file, {_short(new)} now"]


def _normal(value: Any) -> Any:
    """JSON round trip, so that a tuple equals the list it was recorded as."""
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
