"""Load params.yaml (the single source of truth) and flatten it for MLflow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from coverid.core.errors import CoveridError

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read the whole params file as a nested dict."""
    path = Path(path)
    try:
        with path.open() as f:
            params = yaml.safe_load(f)
    except FileNotFoundError:
        raise CoveridError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise CoveridError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(params, dict):
        raise CoveridError(f"{path}: expected a mapping at the top level")
    return params


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys; lists become JSON strings."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = value
    return out


def params_hash(params: dict[str, Any]) -> str:
    """A short stable hash of a params dict (for tying runs and artefacts together)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
