"""Features for a whole collection: map a per-file loader over many files in parallel
(local processes, in-process, or a Dask cluster), resize each result to the model input,
and skip bad files with a one-line reason."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.config import to_plain
from coverid.core.errors import BadInputError, CoveridError
from coverid.core.skips import SkipLog
from coverid.data.audio_dir import AUDIO_EXTENSIONS, scan_audio_dir, usable_items
from coverid.data.store import FeatureSet
from coverid.features.extract import FEATURES, extract_features
from coverid.features.transform import feature_parts, input_feature, input_rows, stacked_input

log = logging.getLogger(__name__)

Item = tuple  # (path, work_id, perf_id)
Result = tuple[int, dict[str, np.ndarray] | None, int, str | None]  # (index, inputs, T, skip reason)


# ---------------------------------------------------------------- the generic map


def build_feature_set(items: Sequence[Item], load_fn: Callable[[Any], np.ndarray], pcfg: dict[str, Any],
                      source: str, feature: str, skips: SkipLog) -> FeatureSet:
    """Map `load_fn(path) -> (T, 12)` over `items` = [(path, work_id, perf_id), ...] with
    pcfg's scheduler, resize each result to the model input, and collect a FeatureSet.

    `load_fn` must be picklable (a module-level function or a functools.partial of one).
    Only fixed-size model inputs travel back from the workers, so memory stays at
    N x F x spect_len floats. Failures are added to `skips` (their one-line reason) and the
    rest goes on; raises CoveridError when more than pcfg["max_failed_fraction"] failed.
    """
    load_all = partial(_single, load_fn=load_fn, feature=feature)
    return build_feature_sets(items, load_all, pcfg, source, [feature], skips)[feature]


def build_feature_sets(items: Sequence[Item], load_fn: Callable[[Any], dict[str, np.ndarray]],
                       pcfg: dict[str, Any], source: str, features: list[str],
                       skips: SkipLog) -> dict[str, FeatureSet]:
    """build_feature_set for several features from one load: `load_fn(path)` returns
    {feature: (T, 12)} for every part of `features` (a stacked one, 'hpcp+melody', gets its
    parts' inputs one above the other); a file that fails for any feature is skipped for all."""
    items = [tuple(it) for it in items]
    skips.total += len(items)
    n = len(items)
    spect_len = int(pcfg["spect_len"])
    arrays = {f: np.empty((n, input_rows(f, pcfg["tile"]), spect_len), np.float32) for f in features}
    lengths = np.zeros(n, np.int32)
    ok = np.zeros(n, bool)
    task = partial(_featurize, load_fn=load_fn, features=tuple(features), spect_len=spect_len,
                   max_frames=pcfg["max_frames"], tile=bool(pcfg["tile"]))
    for i, xs, t, reason in _progress(_run(task, items, pcfg), n, "+".join(features)):
        if reason is None:
            for f in features:
                arrays[f][i] = xs[f]
            lengths[i], ok[i] = t, True
        else:
            skips.add(items[i][0], reason)
            log.warning("skipped %s: %s", items[i][0], reason)
    skips.check(pcfg["max_failed_fraction"])
    if not ok.any():
        raise CoveridError(f"no usable inputs among {n} files (see the skipped-files report)")
    keep = np.nonzero(ok)[0]
    audio = pcfg["audio"]
    return {f: FeatureSet(
        features=_compact(arrays[f], keep),
        work_id=[items[i][1] for i in keep],
        perf_id=[items[i][2] for i in keep],
        length_frames=lengths[keep],
        feature=f,
        source=source,
        frame_rate_hz=audio["sample_rate"] / audio["hop_size"],
        params=to_plain(pcfg),
    ) for f in features}


def _compact(arr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Rows `keep` (ascending) moved to the front in place: no second copy of a large set."""
    for dst, src in enumerate(keep):
        if dst != src:
            arr[dst] = arr[src]
    return arr[:len(keep)]


def _single(path: Any, load_fn: Callable[[Any], np.ndarray], feature: str) -> dict[str, np.ndarray]:
    """Adapt a one-feature loader to the {feature: array} form."""
    return {feature: load_fn(path)}


def _featurize(indexed: tuple[int, Item], load_fn: Callable[[Any], dict[str, np.ndarray]],
               features: tuple[str, ...], spect_len: int, max_frames: int | None, tile: bool) -> Result:
    """Worker side: load one item and resize it; any failure becomes a one-line reason."""
    i, (path, _, _) = indexed
    try:
        loaded = load_fn(path)
        out, length = {}, None
        parts = {}
        for p in dict.fromkeys(p for f in features for p in feature_parts(f)):
            x = np.asarray(loaded[p], dtype=np.float32)
            if x.ndim != 2 or x.shape[1] != 12 or len(x) == 0:
                raise BadInputError(path, f"expected (T, 12) {p} features, got shape {x.shape}")
            if not np.all(np.isfinite(x)):
                raise BadInputError(path, f"{p} features hold NaN or infinite values")
            parts[p] = x
            length = len(x) if length is None else length
        out = {f: stacked_input(parts, f, spect_len, max_frames, tile) for f in features}
        return i, out, int(length), None
    except BadInputError as e:
        return i, None, 0, e.problem
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the collection
        return i, None, 0, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'failed'}"


def _progress(results: Iterator[Result], total: int, feature: str) -> Iterator[Result]:
    """tqdm over the results (to stderr; silent when not a terminal and not asked for)."""
    from tqdm import tqdm

    yield from tqdm(results, total=total, desc=f"preprocess {feature}", unit="file",
                    mininterval=1.0, disable=None)


def _run(task: Callable[[tuple[int, Item]], Result], items: list[Item], pcfg: dict[str, Any]) -> Iterator[Result]:
    """Yield task results for every item with the scheduler pcfg names."""
    scheduler = str(pcfg["scheduler"])
    indexed = list(enumerate(items))
    workers = max(1, int(pcfg["workers"]))
    if scheduler == "single" or (scheduler == "processes" and (workers == 1 or len(items) <= 1)):
        with _single_thread_blas():
            yield from map(task, indexed)
    elif scheduler == "processes":
        yield from _run_processes(task, indexed, workers)
    elif "://" in scheduler:
        yield from _run_dask(task, indexed, scheduler)
    else:
        raise CoveridError(f"preprocess.scheduler: {scheduler!r} is not processes, single "
                           f"or a Dask scheduler address (tcp://host:port)")


def _run_processes(task: Callable, indexed: list[tuple[int, Item]], workers: int) -> Iterator[Result]:
    """A local process pool; results come back in input order."""
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(16, len(indexed) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        yield from pool.map(task, indexed, chunksize=chunk)


def _run_dask(task: Callable, indexed: list[tuple[int, Item]], address: str) -> Iterator[Result]:
    """The same task on a Dask cluster (every worker needs coverid installed)."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise CoveridError("a Dask scheduler address needs the 'distributed' package") from None
    try:
        client = Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise CoveridError(f"cannot reach the Dask scheduler at {address} ({e})") from None
    with client:  # Dask's nanny already starts workers with one BLAS thread
        futures = client.map(task, indexed, pure=False)
        for future in as_completed(futures, loop=client.loop):
            result = future.result()
            future.release()  # drop the result from the cluster as soon as we hold it
            yield result


def _init_worker() -> None:
    """Per-worker set-up: one BLAS thread (parallelism comes from the workers)."""
    _limit_blas(1)


def _limit_blas(n: int) -> Any:
    """Limit BLAS/OpenMP threads in this process; returns the limiter (None when unavailable)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed depends on it
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(n))
        return None
    return threadpool_limits(n)


class _single_thread_blas:
    """Context manager: BLAS limited to one thread in-process, restored afterwards."""

    def __enter__(self) -> None:
        self._limiter = _limit_blas(1)

    def __exit__(self, *exc: object) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()


# ---------------------------------------------------------------- audio folders


def _load_audio_features(path: Path, pcfg: dict[str, Any], features: tuple[str, ...],
                         extensions: list[str] | None) -> dict[str, np.ndarray]:
    """load_fn for audio files: decode once, compute every feature (essentia loads in the worker)."""
    return extract_features(path, pcfg, features, extensions)


def extract_audio_dir(audio_dir: str | Path, pcfg: dict[str, Any], source: str, skips: SkipLog,
                      feature: str | None = None, extensions: list[str] | None = None) -> FeatureSet:
    """Features of every performance in an audio folder (SPEC.md section 2) as a FeatureSet
    (default feature: the model input's, input_feature(pcfg))."""
    feature = feature or input_feature(pcfg)
    return extract_audio_dir_features(audio_dir, pcfg, source, skips, [feature], extensions)[feature]


def extract_audio_dir_features(audio_dir: str | Path, pcfg: dict[str, Any], source: str, skips: SkipLog,
                               features: list[str], extensions: list[str] | None = None) -> dict[str, FeatureSet]:
    """extract_audio_dir for several features at once (each file is decoded once)."""
    parts = tuple(dict.fromkeys(p for f in features for p in feature_parts(f)))
    for part in parts:
        if part not in FEATURES:
            raise CoveridError(f"feature {part!r} cannot be computed from audio "
                               f"(choose from {', '.join(FEATURES)})")
    extensions = list(extensions or AUDIO_EXTENSIONS)
    scanned = scan_audio_dir(audio_dir, extensions)
    items = usable_items(scanned, skips)
    n_unknown = sum(not it.known_work for it in scanned)
    log.info("%s: %d performances (%d of unknown work), %d not usable", audio_dir, len(items),
             n_unknown, len(scanned) - len(items))
    if not items:
        skips.check(pcfg["max_failed_fraction"])
        raise CoveridError(f"{audio_dir}: no usable audio files")
    load = partial(_load_audio_features, pcfg=pcfg, features=parts, extensions=extensions)
    return build_feature_sets(items, load, pcfg, source, features, skips)
