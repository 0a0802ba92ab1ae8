"""The one reader of Da-TACOS-schema metadata files: {work_id: {perf_id: {field: value}}}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coverid.core.errors import BadInputError

Metadata = dict[str, dict[str, dict[str, Any]]]


def read_metadata(path: str | Path, required: bool = True) -> Metadata:
    """Read and check a metadata JSON file; {} for a missing one that is not `required`.
    A malformed file is a one-line BadInputError naming it."""
    path = Path(path)
    if not path.exists() and not required:
        return {}
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(path, "metadata file not found") from None
    except OSError as e:
        raise BadInputError(path, f"cannot read metadata ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise BadInputError(path, "expected the Da-TACOS schema {work_id: {perf_id: {...}}}")
    for work, perfs in meta.items():
        if not isinstance(perfs, dict):
            raise BadInputError(path, f"work {work!r}: expected an object of performances")
        for perf, info in perfs.items():
            if not isinstance(info, dict):
                raise BadInputError(path, f"{work}/{perf}: expected an object of fields")
    return meta


def pairs(meta: Metadata) -> set[tuple[str, str]]:
    """{(work_id, perf_id)} listed in the metadata."""
    return {(w, p) for w, perfs in meta.items() for p in perfs}
