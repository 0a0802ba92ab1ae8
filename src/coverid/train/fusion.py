"""Late fusion: one encoder per stacked feature of the input (preprocess.feature, then each of
preprocess.fusion), each trained as `fit` trains a plain one, joined by `fuse_encoders` into
the one model the pipeline saves, evaluates and serves.

Why late fusion: the HPCP model hears a mix whose chords dominate its chroma and all but never
matches a solo version to an accompanied one, while a model of the predominant melody does;
the two fail on different pairs, so their joined embedding beats each (docs/results.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.errors import CoveridError
from coverid.data.store import FeatureSet
from coverid.eval.distance import pairwise
from coverid.eval.metrics import retrieval_metrics
from coverid.model.embedder import Embedder, metric_for
from coverid.model.encoders import Projection, embedding_size, fuse_encoders, set_projection
from coverid.model.whiten import fit_head, whitening
from coverid.train.fit import FitResult, fit, train_report

log = logging.getLogger(__name__)

EpochHook = Callable[[str, int, dict[str, float]], None]  # (feature, epoch, metrics)


@dataclass
class FusedFit:
    """The model to save (a plain encoder when the input holds one feature), its BCE head, and
    each feature's own training (by feature, in input order)."""

    encoder: Any
    head: tuple[np.ndarray, float] | None
    parts: dict[str, FitResult]
    val_map: float  # of the saved model on the val songs (-1: no val work with two versions)

    @property
    def fused(self) -> bool:
        return len(self.parts) > 1


def part_weights(params: dict[str, Any], n_parts: int) -> list[float]:
    """Each part's weight: 1 for preprocess.feature's, model.fusion_weight for the others."""
    return [1.0] + [float(params["model"]["fusion_weight"])] * (n_parts - 1)


def part_checkpoints(checkpoint_dir: str | Path | None, parts: list[str], part: str) -> Path | None:
    """Where `part`'s checkpoints go: the dir itself for a plain input, DIR/<part> when fused."""
    if checkpoint_dir is None:
        return None
    return Path(checkpoint_dir) if len(parts) == 1 else Path(checkpoint_dir) / part


def fit_fused(params: dict[str, Any], train_fs: FeatureSet, val_fs: FeatureSet,
              checkpoint_dir: str | Path | None = None, setup: Any = None, run_id: str | None = None,
              on_epoch: EpochHook | None = None) -> FusedFit:
    """Train one encoder per feature of the input (as `fit`), then join them (fuse_encoders),
    refit the BCE head, if any, on the joined training embeddings, and measure val MAP."""
    parts = train_fs.parts()
    results = {}
    for part in parts:
        hook = None if on_epoch is None else (lambda e, m, part=part: on_epoch(part, e, m))
        if len(parts) > 1:
            log.info("fusion: training the %s encoder (%d of %d)", part, len(results) + 1, len(parts))
        results[part] = fit(params, train_fs.part(part), val_fs.part(part),
                            part_checkpoints(checkpoint_dir, parts, part), setup, run_id, hook)
    if len(parts) > 1 and checkpoint_dir is not None and Path(checkpoint_dir).is_dir():
        try:  # each encoder's checkpoints went with its success; drop the emptied parent
            Path(checkpoint_dir).rmdir()
        except OSError:
            pass
    if len(parts) == 1:
        only = results[parts[0]]
        return FusedFit(only.encoder, only.head, results, only.state.best_val_map)
    encoder = fuse_encoders({p: r.encoder for p, r in results.items()},
                            part_weights(params, len(parts)), tuple(train_fs.features.shape[1:]))
    metric = metric_for(params["train"]["loss"])
    batch = int(params["train"]["batch_size"])
    encoder = whiten_fused(params["model"], encoder, train_fs, batch)
    head = None
    if metric == "bce":
        bce = params["train"]["losses"]["bce"]
        head = fit_head(Embedder(encoder, {"metric": "euclidean"}).embed(train_fs.features, batch),
                        train_fs.work_id, bce["refit_negatives"], int(params["seed"]), bce["refit_c"])
    val_map = embedding_map(Embedder(encoder, {"metric": metric}, head), val_fs, batch)
    log.info("fusion: val MAP %.4f (%s)", val_map,
             ", ".join(f"{p} alone {r.state.best_val_map:.4f}" for p, r in results.items()))
    return FusedFit(encoder, head, results, val_map)


def whiten_fused(model: dict[str, Any], encoder: Any, train_fs: FeatureSet, batch_size: int) -> Any:
    """The joined encoder ending in a PCA whitening of its training songs' embeddings to
    model.fusion_dim dims (as model.projection: whiten does for one encoder); as is when null
    or not narrower."""
    import keras

    dim = model["fusion_dim"]
    if dim is None or dim >= embedding_size(encoder):
        return encoder
    e = Embedder(encoder, {"metric": "euclidean"}).embed(train_fs.features, batch_size)
    if len(e) < dim:
        raise CoveridError(f"model.fusion_dim {dim}: the whitening needs at least that many "
                           f"training songs, got {len(e)}")
    kernel, bias = whitening(e, int(dim), model["projection_shrinkage"])
    out = Projection(int(dim), trainable=False, dtype="float32", name="projection")(encoder.output)
    whitened = keras.Model(encoder.input, out, name=encoder.name)
    set_projection(whitened, kernel, bias)
    log.info("fusion: PCA whitening of %d training songs, %d -> %d dims", len(e), e.shape[1], dim)
    return whitened


def embedding_map(embedder: Embedder, fs: FeatureSet, batch_size: int) -> float:
    """MAP of `fs`'s songs against each other under `embedder` (-1 when no work has two)."""
    if len(fs) < 2 or len(np.unique(fs.work_id)) == len(fs.work_id):
        return -1.0
    e = embedder.embed(fs.features, batch_size)
    return float(retrieval_metrics(pairwise(e, e, embedder.metric, embedder.head), fs.work_id)["map"])


def fused_report(ff: FusedFit, n_train: int, n_val: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train.json metrics, timings) as `train_report`'s; a fused model's best_val_map is the
    joined model's, and each encoder's own figures follow, prefixed by its feature."""
    if not ff.fused:
        return train_report(next(iter(ff.parts.values())), n_train, n_val)
    metrics: dict[str, Any] = {"best_val_map": round(ff.val_map, 6) if ff.val_map >= 0 else None,
                               "n_train": n_train, "n_val": n_val}
    seconds = pairs = 0.0
    for part, result in ff.parts.items():
        own, _ = train_report(result, n_train, n_val)
        metrics.update({f"{part}_{k}": v for k, v in own.items() if k not in ("n_train", "n_val")})
        seconds, pairs = seconds + result.state.seconds, pairs + result.state.pairs
    return metrics, {"train_seconds": round(seconds, 2),
                     "pairs_per_second": round(pairs / seconds, 2) if seconds else 0.0}
