"""Atomic, reproducible file writes (temp file beside the target, then rename) and the one
JSON encoder: the same content always gives the same bytes, so DVC's hashes reproduce."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coverid.core.errors import BadInputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temp dir beside `target`; on success it replaces `target`, else is removed.

    The swap is two renames (old out, new in); the old directory is restored if the second
    fails, and deleted once the new one is in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; outputs are ordinary folders
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old)  # onto an empty directory: allowed by rename(2)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing or malformed one is a one-line BadInputError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(path, f"{what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"not valid JSON ({getattr(e, 'msg', e)})") from None


def json_default(obj: Any) -> Any:
    """numpy scalars and arrays, paths and config sections as plain JSON values."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """`obj` as JSON text (numpy, paths and config sections included); keys keep their
    (deterministic) insertion order unless `sort_keys`."""
    return json.dumps(obj, indent=indent, sort_keys=sort_keys, default=json_default)


def write_json(path: str | Path, obj: Any, sort_keys: bool = False) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_text(path, to_json(obj, sort_keys=sort_keys) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: no wall-clock time in archives


def write_npz(path: str | Path, **arrays: Any) -> None:
    """np.savez_compressed with fixed member timestamps (np.savez stamps the current time)."""
    import numpy as np

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, value in arrays.items():
            with z.open(zipfile.ZipInfo(f"{name}.npy", ZIP_EPOCH), "w") as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def restamp_zip(path: str | Path, replace: dict[str, bytes] | None = None) -> None:
    """Rewrite a zip archive in place with its members sorted and every timestamp fixed;
    members named in `replace` get the given bytes instead."""
    path, replace = Path(path), replace or {}
    with zipfile.ZipFile(path) as src:
        members = sorted(src.infolist(), key=lambda i: i.filename)
        payload = [(m, replace.get(m.filename) or src.read(m)) for m in members]
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as dst:
        for m, data in payload:
            info = zipfile.ZipInfo(m.filename, ZIP_EPOCH)
            info.compress_type, info.external_attr = m.compress_type, m.external_attr
            dst.writestr(info, data)
