"""The library behind `coverid index`, `identify` and `compare`: audio -> embeddings -> answers.

The model (`coverid.model.embedder.load_embedder`: a model dir or an MLflow model URI) fixes the
feature configuration: its config's feature, spect_len, tile, max_frames and preprocess
section (essentia parameters) are used to extract every song, and are recorded in the index
sidecar together with the model's identity (see `model_identity`), so that an index is only
ever searched with the model and features it was built with.

Thresholds (reports/threshold.json from the tune stage: {"threshold", "metric", ...}): a
threshold applies to the distance it was tuned on, so an index built with one ranks by that
distance (cosine or euclidean for embedding models, bce for bce models). `identify` uses
--threshold, else the one stored in the index at build time (--threshold-file, default
reports/threshold.json when present and tuned for the model), else reports/threshold.json
when it matches the index's distance and model; `compare` uses --threshold, else
reports/threshold.json. A threshold tuned for another training run is not used (a warning;
an error for an explicit --threshold-file). Without one, results carry `is_cover: null`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.config import Preprocess, params_hash, parse_section, to_plain
from coverid.core.errors import BadInputError, CoveridError
from coverid.core.io import read_json
from coverid.core.paths import REPORTS
from coverid.core.skips import SkipLog
from coverid.data.audio_dir import AUDIO_EXTENSIONS, scan_audio_dir, usable_items
from coverid.data.metadata import read_metadata
from coverid.data.store import read_features
from coverid.eval.distance import paired
from coverid.features.collection import build_feature_sets
from coverid.features.extract import extract_features
from coverid.features.transform import feature_parts, input_feature, input_rows, stacked_input
from coverid.model.embedder import load_embedder
from coverid.search.index import (
    Hit,
    Song,
    SongIndex,
    add_songs,
    build_index,
    check_compatible,
    load_index,
)

log = logging.getLogger(__name__)

THRESHOLD_FILE = REPORTS / "threshold.json"
EMBED_CHUNK = 256  # songs turned into model inputs and embedded at once (bounds memory)
_PROBE_SEED = 1234  # fixed input whose embedding fingerprints the model's weights


# ---------------------------------------------------------------- model and features


def open_model(model: str | Path) -> Any:
    """Load an embedder from a model dir or an MLflow model URI."""
    return load_embedder(model)


def model_source(model: str | Path) -> str:
    """How the sidecar names a model: URIs as given, directories as absolute paths."""
    text = str(model)
    if ":/" in text:
        return text
    return str(Path(text).resolve())


def feature_config(embedder: Any) -> dict[str, Any]:
    """The feature settings a model was trained with (what every query must be extracted with)."""
    pcfg = preprocess_config(embedder)
    return {"feature": input_feature(pcfg),
            **{key: to_plain(pcfg[key]) for key in ("spect_len", "tile", "max_frames", "audio")}}


def model_identity(embedder: Any, source: str) -> dict[str, Any]:
    """What the sidecar records to recognise a model: config hash, metric, dim, a probe embedding."""
    cfg = embedder.config
    fc = feature_config(embedder)
    probe = np.asarray(embedder.embed(probe_input(fc)), dtype=np.float32)[0]
    head = None
    if embedder.head is not None:
        w, bias = embedder.head
        head = [np.asarray(w, dtype=np.float32).ravel().tolist(), float(bias)]
    return {
        "source": source,
        "arch": cfg.get("arch"),
        "params_hash": cfg.get("params_hash"),
        "model": getattr(embedder, "fingerprint", None),
        "config_hash": params_hash(cfg),
        "metric": str(embedder.metric),
        "dim": int(probe.shape[-1]),
        "head": head,
        "probe": [round(float(v), 6) for v in probe],
    }


def probe_input(fc: dict[str, Any]) -> np.ndarray:
    """A fixed (1, F, L) input in [0, 1] whose embedding fingerprints a model."""
    rows = input_rows(fc["feature"], fc["tile"])
    return np.random.default_rng(_PROBE_SEED).random((1, rows, fc["spect_len"]), dtype=np.float32)


def load_features(path: str | Path, pcfg: dict[str, Any], feature: str) -> dict[str, np.ndarray]:
    """{part: (T, 12)} features of one audio file (essentia decode + chroma), for each feature
    that `feature` ('hpcp' or a stack such as 'hpcp+melody') is made of."""
    return extract_features(path, pcfg, feature_parts(feature))


def preprocess_config(embedder: Any) -> Preprocess:
    """The model's saved preprocess section with the feature(s), length, tiling and crop it was
    trained on; one line naming the key when the model's config lacks one."""
    cfg = embedder.config
    try:
        saved, top = cfg["preprocess"], {key: cfg[key] for key in ("spect_len", "tile", "max_frames")}
        first, *fused = feature_parts(cfg["feature"])
    except KeyError as e:
        raise CoveridError(f"the model's config lacks {e}; was it saved by coverid?") from None
    top.update(feature=first, fusion=fused)
    return parse_section(Preprocess, {**to_plain(saved), **top}, "the model's config", "preprocess")


def model_input(path: str | Path, embedder: Any) -> np.ndarray:
    """One audio file -> (F, spect_len) model input, with the model's feature settings."""
    pcfg = preprocess_config(embedder)
    feature = input_feature(pcfg)
    return stacked_input(load_features(path, pcfg, feature), feature, pcfg["spect_len"],
                         pcfg["max_frames"], pcfg["tile"])


def embed_files(paths: Sequence[str | Path], embedder: Any,
                timings: dict[str, float] | None = None) -> np.ndarray:
    """Embeddings (N, D) of audio files; timings gets 'features' and 'embed' seconds."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    x = np.stack([model_input(p, embedder) for p in paths])
    t1 = time.perf_counter()
    emb = np.asarray(embedder.embed(x), dtype=np.float32)
    _add_time(timings, "features", t1 - t0)
    _add_time(timings, "embed", time.perf_counter() - t1)
    return emb


def _add_time(timings: dict[str, float], step: str, seconds: float) -> None:
    """Accumulate a step's seconds."""
    timings[step] = timings.get(step, 0.0) + seconds


def file_sha1(path: str | Path) -> str:
    """sha1 of a file's bytes (recognises a song that is already indexed)."""
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise BadInputError(path, "audio file not found") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a directory, not an audio file") from None
    return h.hexdigest()


# ---------------------------------------------------------------- songs to index


def song_metadata(path: str | Path) -> dict[str, dict[str, Any]]:
    """perf_id -> {work_id, title, artist} from a Da-TACOS-schema metadata JSON."""
    meta = read_metadata(path)
    out = {}
    for work, perfs in meta.items():
        for perf, info in perfs.items():
            out[str(info.get("perf_id", perf))] = {
                "work_id": str(info.get("work_id", work)),
                "title": info.get("perf_title") or info.get("work_title"),
                "artist": info.get("perf_artist") or info.get("work_artist"),
            }
    return out


def songs_from_audio_dir(audio_dir: str | Path, embedder: Any,
                         metadata: str | Path | None = None) -> tuple[list[Song], np.ndarray, SkipLog]:
    """Extract (in parallel, per the model's preprocess workers/scheduler) and embed every
    performance of an audio folder; unusable files are skipped and recorded, up to the
    model's preprocess.max_failed_fraction."""
    pcfg = preprocess_config(embedder)
    feature = input_feature(pcfg)
    scanned = scan_audio_dir(audio_dir, AUDIO_EXTENSIONS)
    skips = SkipLog()
    items = usable_items(scanned, skips)
    if not items:
        raise BadInputError(audio_dir, "no usable audio files")
    fs = build_feature_sets(items, partial(load_features, pcfg=pcfg, feature=feature), pcfg, "audio",
                            [feature], skips)[feature]
    by_perf = {it.perf_id: it for it in scanned if it.skip is None}
    extra = song_metadata(metadata) if metadata else {}
    songs = []
    for perf in fs.perf_id:
        it = by_perf[str(perf)]
        song = Song(perf_id=it.perf_id, work_id=it.work_id, title=it.title or None,
                    artist=it.artist or None, path=str(Path(it.path).resolve()), sha1=file_sha1(it.path))
        _apply_metadata(song, extra)
        songs.append(song)
    return songs, _embed_rows(embedder, fs.features), skips


def _embed_rows(embedder: Any, x: np.ndarray) -> np.ndarray:
    """Embed (N, F, L) model inputs in chunks of EMBED_CHUNK songs."""
    chunks = [np.asarray(embedder.embed(x[s:s + EMBED_CHUNK]), dtype=np.float32)
              for s in range(0, len(x), EMBED_CHUNK)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _apply_metadata(song: Song, extra: dict[str, dict[str, Any]]) -> None:
    """Fill a song's work id, title and artist from a metadata map (perf_id keyed)."""
    info = extra.get(song.perf_id)
    if info:
        song.work_id = info["work_id"] or song.work_id
        song.title = info["title"] or song.title
        song.artist = info["artist"] or song.artist


def songs_from_features(h5: str | Path, embedder: Any,
                        metadata: str | Path | None = None) -> tuple[list[Song], np.ndarray]:
    """Embed every row of a processed feature file (SPEC section 3)."""
    fc = feature_config(embedder)
    fs = read_features(h5, fc["feature"]) if _has_feature(h5, fc["feature"]) else read_features(h5)
    check_feature_file(h5, fs, fc)
    extra = song_metadata(metadata) if metadata else {}
    songs = [Song(perf_id=str(p), work_id=str(w)) for p, w in zip(fs.perf_id, fs.work_id)]
    for song in songs:
        _apply_metadata(song, extra)
    return songs, _embed_rows(embedder, fs.features)


def _has_feature(h5: str | Path, feature: str) -> bool:
    """Whether a feature file holds features/<feature> (an unreadable file answers False)."""
    import h5py

    try:
        with h5py.File(h5, "r") as f:
            return all(f"features/{part}" in f for part in feature_parts(feature))
    except OSError:
        return False


def check_feature_file(h5: str | Path, fs: Any, fc: dict[str, Any]) -> None:
    """A feature file must hold the model's feature, length, pitch rows and crop."""
    rows = input_rows(fc["feature"], fc["tile"])
    if fs.feature != fc["feature"]:
        raise BadInputError(h5, f"holds {fs.feature!r} features, the model uses {fc['feature']!r}")
    if fs.spect_len != fc["spect_len"] or fs.features.shape[1] != rows:
        raise BadInputError(h5, f"features are {fs.features.shape[1]} x {fs.spect_len}, the model "
                                f"expects {rows} x {fc['spect_len']}")
    pre = fs.params.get("preprocess", fs.params) if isinstance(fs.params, dict) else {}
    if "max_frames" in pre and pre["max_frames"] != fc["max_frames"]:
        raise BadInputError(h5, f"made with max_frames {pre['max_frames']}, the model uses {fc['max_frames']}")


# ---------------------------------------------------------------- building and extending


def read_threshold_file(path: str | Path) -> dict[str, Any]:
    """{value, source, ...} from a threshold JSON with a numeric "threshold" key."""
    path = Path(path)
    obj = read_json(path, "threshold file")
    value = obj.get("threshold") if isinstance(obj, dict) else None
    if isinstance(value, dict):
        value = value.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
        raise BadInputError(path, "no numeric 'threshold' value")
    keep = {k: obj[k] for k in ("objective", "metric", "model", "params_hash", "expansion")
            if k in obj}
    return {"value": float(value), "source": str(path), **keep}


def threshold_problem(threshold: dict[str, Any], embedder: Any, distance: str | None = None) -> str | None:
    """Why a tuned threshold does not apply to this model (and distance), or None when it does."""
    metric = threshold.get("metric")
    allowed = ("bce",) if embedder.metric == "bce" else ("euclidean", "cosine")
    if metric is not None and metric not in allowed:
        return f"tuned on the {metric} distance, which a {embedder.metric} model does not use"
    if distance is not None and metric is not None and metric != distance:
        return f"tuned on the {metric} distance, results are ranked by {distance}"
    model = getattr(embedder, "fingerprint", None)
    if threshold.get("model") and model and threshold["model"] != model:
        return f"tuned for model {threshold['model']}, this model is {model}"
    return None


def default_threshold(embedder: Any, distance: str | None = None) -> dict[str, Any] | None:
    """reports/threshold.json when present and tuned for this model, else None (with a warning)."""
    if not THRESHOLD_FILE.exists():
        return None
    threshold = read_threshold_file(THRESHOLD_FILE)
    problem = threshold_problem(threshold, embedder, distance)
    if problem:
        log.warning("%s not used: %s", THRESHOLD_FILE, problem)
        return None
    return threshold


def build_from(model: str | Path, out: str | Path, icfg: dict[str, Any], audio_dir: str | Path | None = None,
               features: str | Path | None = None, metadata: str | Path | None = None,
               threshold_file: str | Path | None = None) -> SongIndex:
    """`coverid index build`: embed an audio folder or a feature file into a new index."""
    embedder = open_model(model)
    if threshold_file:
        threshold = read_threshold_file(threshold_file)
        problem = threshold_problem(threshold, embedder)
        if problem:
            raise BadInputError(threshold_file, problem)
    else:
        threshold = default_threshold(embedder)
    identity = model_identity(embedder, model_source(model))
    songs, emb, extra = _songs(embedder, audio_dir, features, metadata)
    distance = (threshold or {}).get("metric") or embedder.metric
    return build_index(out, emb, songs, identity, feature_config(embedder), icfg, threshold, extra, distance)


def add_from(index_dir: str | Path, model: str | Path | None = None, audio_dir: str | Path | None = None,
             features: str | Path | None = None, metadata: str | Path | None = None,
             skip_existing: bool = False) -> tuple[SongIndex, int, list[str]]:
    """`coverid index add`: append songs; returns (index, songs added, perf ids skipped)."""
    old = load_index(index_dir)
    model = model or old.meta["model"]["source"]
    embedder = open_model(model)
    identity = model_identity(embedder, model_source(model))
    fc = feature_config(embedder)
    check_compatible(old.meta, identity, fc, old.path)  # before the (slow) extraction
    songs, emb, _ = _songs(embedder, audio_dir, features, metadata)
    index, skipped = add_songs(index_dir, emb, songs, identity, fc, skip_existing)
    return index, index.count - old.count, skipped


def _songs(embedder: Any, audio_dir: str | Path | None, features: str | Path | None,
           metadata: str | Path | None) -> tuple[list[Song], np.ndarray, dict[str, Any]]:
    """Songs and embeddings from exactly one of an audio folder or a feature file."""
    if (audio_dir is None) == (features is None):
        raise CoveridError("give exactly one of --audio-dir or --features")
    if audio_dir is not None:
        songs, emb, skips = songs_from_audio_dir(audio_dir, embedder, metadata)
        return songs, emb, {"skipped": skips.skipped}
    songs, emb = songs_from_features(features, embedder, metadata)
    return songs, emb, {}


# ---------------------------------------------------------------- answering


def resolve_threshold(explicit: float | None, index: SongIndex, embedder: Any) -> float | None:
    """--threshold, else the index's stored threshold, else reports/threshold.json, else None."""
    if explicit is not None:
        return float(explicit)
    stored = index.meta.get("threshold")
    if stored:
        return float(stored["value"])
    default = default_threshold(embedder, index.metric)
    return None if default is None else default["value"]


def open_for_search(index_dir: str | Path, model: str | Path | None = None) -> tuple[SongIndex, Any]:
    """Load an index and the model to query it with (default: the one it was built with), checked."""
    index = load_index(index_dir)
    model = model or index.meta["model"]["source"]
    embedder = open_model(model)
    check_compatible(index.meta, model_identity(embedder, model_source(model)), feature_config(embedder),
                     index.path)
    return index, embedder


def identify(paths: Sequence[str | Path], index: SongIndex, embedder: Any, k: int,
             threshold: float | None = None, timings: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Ranked candidates per query song, nearest first; a song never matches its own index entry."""
    timings = timings if timings is not None else {}
    paths = [Path(p) for p in paths]
    emb = embed_files(paths, embedder, timings)
    t0 = time.perf_counter()
    exclude = [index.self_matches(p, file_sha1(p)) for p in paths]
    hits = index.search(emb, k, exclude)
    _add_time(timings, "search", time.perf_counter() - t0)
    return [{"query": str(p), "threshold": threshold, "results": [hit_record(h, threshold) for h in hs]}
            for p, hs in zip(paths, hits)]


def hit_record(hit: Hit, threshold: float | None) -> dict[str, Any]:
    """One result as JSON: ids, distance, decision, and title/artist when known."""
    rec: dict[str, Any] = {
        "perf_id": hit.song.perf_id,
        "work_id": hit.song.work_id,
        "distance": round(hit.distance, 6),
        "is_cover": None if threshold is None else bool(hit.distance <= threshold),
    }
    for key in ("title", "artist"):
        if getattr(hit.song, key):
            rec[key] = getattr(hit.song, key)
    return rec


def compare(a: str | Path, b: str | Path, embedder: Any, threshold: float | None = None) -> dict[str, Any]:
    """The distance between two audio files and the cover decision.

    The distance is the one reports/threshold.json was tuned on when that file applies to the
    model, else the model's own; `threshold` (--threshold) overrides the tuned value.
    """
    tuned = default_threshold(embedder)
    metric = (tuned or {}).get("metric") or embedder.metric
    threshold = threshold if threshold is not None else (tuned or {}).get("value")
    emb = embed_files([a, b], embedder)
    d = float(paired(emb[:1], emb[1:], metric, embedder.head)[0])
    return {"a": str(a), "b": str(b), "metric": metric, "distance": round(d, 6),
            "threshold": threshold, "is_cover": None if threshold is None else bool(d <= threshold)}


def check_files_exist(paths: Iterable[str | Path]) -> None:
    """Fail fast, before loading a model, on the first query that is not a file."""
    for p in paths:
        if not Path(p).is_file():
            raise BadInputError(p, "audio file not found" if not Path(p).exists() else "not a file")
