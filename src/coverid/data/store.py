"""The HDF5 feature store (SPEC.md section 3): the one place that reads and writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from coverid import __version__
from coverid.core.errors import BadInputError
from coverid.core.io import atomic_path
from coverid.features.transform import feature_parts, part_rows

SOURCES = ("datacos", "audio", "synth", "melodies")
_STR = h5py.string_dtype(encoding="utf-8")


@dataclass
class FeatureSet:
    """N performances' fixed-size features with their ids (rows sorted by work, perf)."""

    features: np.ndarray  # (N, F, L) float32
    work_id: np.ndarray  # (N,) str
    perf_id: np.ndarray  # (N,) str
    length_frames: np.ndarray  # (N,) int32: original T before resizing
    feature: str
    source: str
    frame_rate_hz: float = 44100 / 512
    params: dict[str, Any] = field(default_factory=dict)
    created_by: str = f"coverid {__version__}"

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.work_id = np.asarray(self.work_id, dtype=str)
        self.perf_id = np.asarray(self.perf_id, dtype=str)
        self.length_frames = np.asarray(self.length_frames, dtype=np.int32)
        n = len(self.features)
        if self.features.ndim != 3:
            raise ValueError(f"features must be (N, F, L), got shape {self.features.shape}")
        for name in ("work_id", "perf_id", "length_frames"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, features {n}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    def __len__(self) -> int:
        return len(self.features)

    def parts(self) -> list[str]:
        """The features stacked in each row: ['hpcp'], or ['hpcp', 'melody'] for 'hpcp+melody'."""
        return feature_parts(self.feature)

    def part(self, name: str) -> FeatureSet:
        """The same songs with only the rows of one stacked feature."""
        parts = self.parts()
        if name not in parts:
            raise ValueError(f"{self.feature} features hold no {name!r} rows")
        rows = part_rows(self.features.shape[1], len(parts))
        i = parts.index(name)
        return replace(self, features=self.features[:, i * rows:(i + 1) * rows], feature=name)

    @property
    def spect_len(self) -> int:
        """Frames per performance after resizing."""
        return int(self.features.shape[2])

    def sorted(self) -> FeatureSet:
        """The same rows sorted by (work_id, perf_id), as the file stores them."""
        order = np.lexsort((self.perf_id, self.work_id))
        return self.take(order)

    def take(self, idx: np.ndarray) -> FeatureSet:
        """A new set holding rows `idx` (bool mask or indices)."""
        return FeatureSet(
            features=self.features[idx],
            work_id=self.work_id[idx],
            perf_id=self.perf_id[idx],
            length_frames=self.length_frames[idx],
            feature=self.feature,
            source=self.source,
            frame_rate_hz=self.frame_rate_hz,
            params=self.params,
            created_by=self.created_by,
        )


def concat(sets: list[FeatureSet]) -> FeatureSet:
    """The rows of several sets, in order; they must share feature, frame rate and shape (the
    result carries the first set's source and params)."""
    first = sets[0]
    for other in sets[1:]:
        if (other.feature, other.frame_rate_hz, other.features.shape[1:]) != (
                first.feature, first.frame_rate_hz, first.features.shape[1:]):
            raise ValueError(f"cannot join {other.source} features {other.feature} "
                             f"{other.features.shape[1:]} to {first.source} features "
                             f"{first.feature} {first.features.shape[1:]}")
    return FeatureSet(
        features=np.concatenate([fs.features for fs in sets]),
        work_id=np.concatenate([fs.work_id for fs in sets]),
        perf_id=np.concatenate([fs.perf_id for fs in sets]),
        length_frames=np.concatenate([fs.length_frames for fs in sets]),
        feature=first.feature, source=first.source, frame_rate_hz=first.frame_rate_hz,
        params=first.params, created_by=first.created_by)


def stack_sets(sets: list[FeatureSet]) -> FeatureSet:
    """The songs that every set holds, each with the sets' rows one above the other (feature
    'a+b'; lengths and metadata from the first set); one set is returned as it is."""
    if len(sets) == 1:
        return sets[0]
    common = set.intersection(*(set(fs.perf_id) for fs in sets))
    sets = [fs.take(np.isin(fs.perf_id, list(common))).sorted() for fs in sets]
    first = sets[0]
    return replace(first, features=np.concatenate([fs.features for fs in sets], axis=1),
                   feature="+".join(fs.feature for fs in sets))


def _create_untimed(path: Path) -> h5py.File:
    """A new HDF5 file (creation order tracked) whose root group records no creation time,
    so that the same features always give the same bytes."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    order = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
    fcpl.set_link_creation_order(order)
    fcpl.set_attr_creation_order(order)
    fcpl.set_obj_track_times(False)
    return h5py.File(h5py.h5f.create(str(path).encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl))


def write_features(path: str | Path, fs: FeatureSet) -> None:
    """Write `fs` sorted by (work_id, perf_id) to `path`, atomically; a stacked feature
    ('hpcp+melody') as one dataset per part, the `feature` attribute naming the stack."""
    fs = fs.sorted()
    with atomic_path(path) as tmp:
        with _create_untimed(tmp) as f:
            for part, x in zip(fs.parts(), np.split(fs.features, len(fs.parts()), axis=1)):
                f.create_dataset(f"features/{part}", data=x, track_times=False)
            f.create_dataset("work_id", data=fs.work_id.astype(object), dtype=_STR,
                             track_times=False)
            f.create_dataset("perf_id", data=fs.perf_id.astype(object), dtype=_STR,
                             track_times=False)
            f.create_dataset("length_frames", data=fs.length_frames, track_times=False)
            f.attrs["feature"] = fs.feature
            f.attrs["spect_len"] = fs.spect_len
            f.attrs["source"] = fs.source
            f.attrs["frame_rate_hz"] = float(fs.frame_rate_hz)
            f.attrs["created_by"] = fs.created_by
            f.attrs["params"] = json.dumps(fs.params, sort_keys=True)


def read_features(path: str | Path, feature: str | None = None) -> FeatureSet:
    """Read a feature store; `feature` defaults to the file's `feature` attribute; a stacked
    one ('hpcp+melody') is its parts' datasets one above the other."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(path, "feature file not found")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise BadInputError(path, "not a readable HDF5 file") from None
    with f:
        try:
            feature = feature or str(f.attrs["feature"])
            for key in (f"features/{part}" for part in feature_parts(feature)):
                if key not in f:
                    have = sorted(f["features"].keys()) if "features" in f else []
                    raise BadInputError(path, f"no dataset {key!r} (has {have})")
            for name in ("work_id", "perf_id", "length_frames"):
                if name not in f:
                    raise BadInputError(path, f"missing dataset {name!r}")
            return FeatureSet(
                features=np.concatenate([f[f"features/{part}"][()] for part in feature_parts(feature)],
                                        axis=1),
                work_id=f["work_id"].asstr()[()],
                perf_id=f["perf_id"].asstr()[()],
                length_frames=f["length_frames"][()],
                feature=feature,
                source=str(f.attrs.get("source", "audio")),
                frame_rate_hz=float(f.attrs.get("frame_rate_hz", 44100 / 512)),
                params=json.loads(f.attrs.get("params", "{}")),
                created_by=str(f.attrs.get("created_by", "")),
            )
        except KeyError as e:
            raise BadInputError(path, f"missing attribute or dataset {e}") from None
        except ValueError as e:
            raise BadInputError(path, str(e)) from None
