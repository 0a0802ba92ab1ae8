"""Train/val/test split by work: seeded, no work in two splits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from coverid.core import paths
from coverid.core.config import Params, with_overrides
from coverid.core.errors import BadInputError, CoveridError
from coverid.core.io import read_json, write_json
from coverid.data.store import FeatureSet, concat, read_features

SPLITS = ("train", "val", "test")
HOLDOUT = "holdout"  # the extra corpus' test works (data.extra), evaluated on their own


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
    bad = {v for v in splits.values() if v not in (*SPLITS, HOLDOUT)}
    if bad:
        raise BadInputError(path, f"unknown split names {sorted(bad)}")
    return splits


def split_mask(work_id: np.ndarray, splits: dict[str, str], name: str) -> np.ndarray:
    """Boolean mask of rows whose work is in split `name`."""
    return np.array([splits.get(w) == name for w in work_id], dtype=bool)


def extra_params(params: Params) -> Params | None:
    """The params of the extra corpus (data.extra) as if it were data.source, with its own split
    fractions; None when there is none."""
    extra, source = params["data"]["extra"], params["data"]["source"]
    if extra["source"] is None:
        return None
    if extra["source"] == source:
        raise CoveridError(f"params data.extra.source: {source!r} is data.source already "
                           "(set another source or null)")
    return with_overrides(params, {"data.source": extra["source"], "data.split": extra["split"]})


def extra_splits_file(params: Params) -> Path:
    """data/processed/splits_<extra source>.json: the extra corpus' work -> split map."""
    return Path(params["data"]["processed_dir"]) / f"splits_{params['data']['extra']['source']}.json"


def load_dataset(params: Params) -> tuple[FeatureSet, dict[str, str]]:
    """Every processed song and its split: data.source's, then the extra corpus' with work and
    perf ids prefixed `<source>/` (ids of two corpora may collide) and its test works in the
    HOLDOUT split."""
    fs, splits = read_features(paths.processed_file(params)), read_splits(paths.splits_file(params))
    extra = extra_params(params)
    if extra is None:
        return fs, splits
    tag = f"{extra['data']['source']}/"
    more = read_features(paths.processed_file(extra))
    more.work_id = np.char.add(tag, more.work_id)
    more.perf_id = np.char.add(tag, more.perf_id)
    more_splits = {tag + w: HOLDOUT if s == "test" else s
                   for w, s in read_splits(extra_splits_file(params)).items()}
    return concat([fs, more]), {**splits, **more_splits}


def load_split(params: Params, name: str) -> FeatureSet:
    """The rows of the processed songs (load_dataset) whose work is in split `name`."""
    fs, splits = load_dataset(params)
    mask = split_mask(fs.work_id, splits, name)
    if not mask.any():
        raise CoveridError(f"{paths.splits_file(params)}: no performance in the {name} split")
    return fs.take(mask)


def has_holdout(params: Params) -> bool:
    """Whether params name an extra corpus, whose test works form the HOLDOUT split."""
    return params["data"]["extra"]["source"] is not None
