"""Train/val/test split by work: seeded, no work in two splits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core import paths
from coverid.core.errors import BadInputError, CoveridError
from coverid.core.io import read_json, write_json
from coverid.data.store import FeatureSet, read_features

SPLITS = ("train", "val", "test")


def split_works(work_ids: Iterable[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Map each work to a split; multi-version works and single-version (noise) works are
    each divided by `fractions` so every split gets its share of both."""
    counts = Counter(work_ids)
    rng = np.random.default_rng(seed)
    total = sum(fractions[s] for s in SPLITS)
    out: dict[str, str] = {}
    for group in (sorted(w for w, c in counts.items() if c > 1), sorted(w for w, c in counts.items() if c == 1)):
        order = rng.permutation(len(group))
        bounds = np.cumsum([fractions[s] / total for s in SPLITS]) * len(group)
        cuts = np.round(bounds).astype(int)
        for rank, i in enumerate(order):
            out[group[i]] = SPLITS[int(np.searchsorted(cuts, rank, side="right"))]
    return out


def write_splits(path: str | Path, splits: dict[str, str]) -> None:
    """Write the work -> split map as JSON, atomically."""
    write_json(path, dict(sorted(splits.items())))


def read_splits(path: str | Path) -> dict[str, str]:
    """Read a work -> split map and check its values."""
    path = Path(path)
    splits = read_json(path, "splits file")
    bad = {v for v in splits.values() if v not in SPLITS}
    if bad:
        raise BadInputError(path, f"unknown split names {sorted(bad)}")
    return splits


def split_mask(work_id: np.ndarray, splits: dict[str, str], name: str) -> np.ndarray:
    """Boolean mask of rows whose work is in split `name`."""
    return np.array([splits.get(w) == name for w in work_id], dtype=bool)


def load_split(params: dict[str, Any], name: str) -> FeatureSet:
    """The rows of the processed feature file whose work is in split `name`."""
    fs = read_features(paths.processed_file(params))
    mask = split_mask(fs.work_id, read_splits(paths.splits_file(params)), name)
    if not mask.any():
        raise CoveridError(f"{paths.splits_file(params)}: no performance in the {name} split")
    return fs.take(mask)
