"""The training loop: Siamese encoder + loss + Lookahead(Adam), validation MAP, early stopping,
atomic checkpoints for resuming; what the train stage reports.

Determinism: `keras.utils.set_random_seed(seed)` and op determinism; every epoch's batches
come from (seed, epoch) (see pairs.py), and a checkpoint holds all model, head and optimiser
variables (the dropout seed state included), so a resumed run retraces the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.config import params_hash, to_plain
from coverid.core.errors import CoveridError
from coverid.core.io import atomic_path, write_text
from coverid.data.splits import split_mask
from coverid.data.store import FeatureSet
from coverid.eval.distance import pairwise
from coverid.eval.metrics import retrieval_metrics
from coverid.features.transform import is_tiled, part_rows
from coverid.model.embedder import (
    embed_batches,
    make_embed_fn,
    metric_for,
    stable_graphs,
)
from coverid.model.encoders import (
    build_encoder,
    build_head,
    embedding_size,
    full_embedding,
    has_fixed_projection,
    head_arrays,
    head_logits,
    init_encoder,
    projection_of,
    set_projection,
)
from coverid.model.losses import (
    bce_loss,
    contrastive_loss,
    euclidean,
    mined_bce_loss,
    mined_contrastive_loss,
    triplet_loss,
)
from coverid.model.whiten import fit_head, power_normalise, project, whitening
from coverid.train.devices import setup_devices
from coverid.train.lookahead import make_optimizer
from coverid.train.pairs import batch_items, encode_labels, make_dataset, mode_for

log = logging.getLogger(__name__)

LAST = "last.npz"
BEST = "best.npz"


@dataclass
class TrainState:
    """Progress saved with each checkpoint."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_map: float = -1.0
    best_epoch: int = 0
    bad_checks: int = 0
    seconds: float = 0.0  # time spent in training steps
    pairs: float = 0.0  # pairs trained on (songs embedded / 2)
    run_id: str | None = None
    stopped_early: bool = False


@dataclass
class FitResult:
    """What `fit` returns: the trained (best) encoder, the BCE head if any, and the progress."""

    encoder: Any
    head: Any
    state: TrainState
    devices: dict[str, Any]

    @property
    def pairs_per_second(self) -> float:
        return self.state.pairs / self.state.seconds if self.state.seconds else 0.0


# ---------------------------------------------------------------- the trainer

class Trainer:
    """Builds the models and optimiser in a strategy scope and runs training steps."""

    def __init__(self, params: dict[str, Any], input_shape: tuple[int, int], setup: Any) -> None:
        import tensorflow as tf

        self.params = params
        self.train = params["train"]
        self.setup = setup
        self.strategy = setup.strategy
        self.mode = mode_for(self.train)
        self.loss_name = self.train["loss"]
        if self.loss_name not in ("contrastive", "bce", "triplet"):
            raise CoveridError(f"unknown train.loss {self.loss_name!r}; "
                               "expected contrastive | bce | triplet")
        self.loss_cfg = self.train["losses"][self.loss_name]
        with self.strategy.scope():
            self.encoder = build_encoder(params["model"], input_shape)
            fixed = has_fixed_projection(self.encoder)
            # the loss (and the BCE head) sees the full embedding under a fixed projection, or
            # the projected one when the whitening is refitted while training
            self.trained_encoder = full_embedding(self.encoder) if fixed else self.encoder
            self.refit_every = int(params["model"]["projection_refit_every"]) if fixed else 0
            self.projection = projection_of(self.encoder) if self.refit_every else None
            self.val_encoder = self.encoder if self.refit_every else self.trained_encoder
            dim = embedding_size(self.val_encoder)
            self.head = build_head(dim) if self.loss_name == "bce" else None
            self.optimizer = make_optimizer(self.train, self.train["steps_per_epoch"],
                                            self.loss_cfg["learning_rate"])
            if setup.mixed_precision:
                import keras

                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.trainable_variables)
        self._grads = tf.function(self._grads_impl, jit_compile=setup.xla or None)
        self._step = tf.function(self._step_impl)
        self._full_fn = None

    def embed(self, x, training: bool):
        """The embedding the loss trains: the full one under a fixed projection (which passes it
        through while training), or the projected one when the whitening is refitted."""
        if self.projection is None:
            return self.encoder(x, training=training)
        return self.projection.through(self.trained_encoder(x, training=training))

    def projection_inputs(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        """The full embeddings of `x`, power-normalised as the Projection layer sees them."""
        if self._full_fn is None:
            self._full_fn = make_embed_fn(self.trained_encoder)
        full = embed_batches(self._full_fn, x, batch_size, embedding_size(self.trained_encoder))
        return power_normalise(full, self.params["model"]["projection_power"])

    def refit_projection(self, x: np.ndarray, batch_size: int) -> None:
        """Fit the whitening to the songs `x`' current full embeddings."""
        kernel, bias = fitted_whitening(self.params["model"], self.projection_inputs(x, batch_size))
        set_projection(self.encoder, kernel, bias)

    @property
    def trainable_variables(self) -> list:
        head = self.head.trainable_variables if self.head is not None else []
        return self.encoder.trainable_variables + head

    def state_variables(self) -> dict[str, list]:
        """Every variable a checkpoint must hold, by group."""
        return {"encoder": list(self.encoder.variables),
                "head": list(self.head.variables) if self.head is not None else [],
                "optimizer": list(self.optimizer.variables)}

    # -- losses
    def _pair_loss(self, y, e1, e2):

        if self.loss_name == "bce":
            return bce_loss(y, head_logits(self.head, e1, e2))
        return contrastive_loss(y, euclidean(e1, e2), self.loss_cfg["margin"])

    def _batch_loss(self, w, e):
        """The loss of a P x K batch of embeddings `e` with work labels `w`, mined in the batch."""
        cfg = self.loss_cfg
        if self.loss_name == "triplet":
            return triplet_loss(w, e, cfg["margin"], cfg["mining"], bool(cfg["soft_margin"]))
        if self.loss_name == "contrastive":
            return mined_contrastive_loss(w, e, cfg["margin"], cfg["mining"])
        return mined_bce_loss(w, e, lambda a, b: head_logits(self.head, a, b), cfg["mining"])

    def _score_matrix(self, a, b):
        """(len(a), len(b)) dissimilarity used to pick the hardest negatives."""
        from keras import ops

        diff = a[:, None, :] - b[None, :, :]
        if self.loss_name == "bce":
            return -ops.squeeze(self.head(ops.abs(diff)), axis=-1)
        return ops.sum(ops.square(diff), axis=-1)

    def loss(self, batch, training: bool = True):
        """The batch loss for this run's mode and loss."""
        from keras import ops

        if self.mode == "pk":
            x, w = batch
            return self._batch_loss(w, self.embed(x, training))
        (x1, x2), extra = batch
        n = ops.shape(x1)[0]
        e = self.embed(ops.concatenate([x1, x2], axis=0), training)
        e1, e2 = e[:n], e[n:]
        if self.mode == "pairs":
            return self._pair_loss(extra, e1, e2)
        # positives: each anchor's negative is the most similar other-work song in the batch
        cands = ops.concatenate([e1, e2], axis=0)
        cand_w = ops.concatenate([extra[:, 0], extra[:, 1]], axis=0)
        score = self._score_matrix(e1, cands)
        same = ops.equal(extra[:, 0][:, None], cand_w[None, :])
        score = ops.where(same, ops.max(score) + 1.0, score)
        neg = ops.take(cands, ops.argmin(score, axis=1), axis=0)
        y = ops.concatenate([ops.ones((n,)), ops.zeros((n,))], axis=0)
        return self._pair_loss(y, ops.concatenate([e1, e1], 0), ops.concatenate([e2, neg], 0))

    # -- steps
    def _grads_impl(self, batch):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = self.loss(batch, training=True)
            scaled = loss / self.strategy.num_replicas_in_sync
            if self.setup.mixed_precision:
                scaled = self.optimizer.scale_loss(scaled)
        return loss, tape.gradient(scaled, self.trainable_variables)

    def _replica_step(self, batch):
        loss, grads = self._grads(batch)
        self.optimizer.apply(grads, self.trainable_variables)
        return loss

    def _step_impl(self, batch):
        import tensorflow as tf

        per_replica = self.strategy.run(self._replica_step, args=(batch,))
        return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    def run_epoch(self, batches, steps: int) -> float:
        """Train on the next `steps` batches of an iterator over a (distributed) dataset; the mean
        batch loss."""
        losses = [float(self._step(next(batches))) for _ in range(steps)]
        if not losses:
            raise CoveridError("an epoch has no batches (train.steps_per_epoch must be >= 1)")
        if not all(math.isfinite(v) for v in losses):
            raise CoveridError("training diverged (non-finite loss); lower the loss's "
                               "learning_rate (train.losses)")
        return float(np.mean(losses))

    def learning_rate(self) -> float:
        """The current learning rate (the schedule at the current step)."""
        return float(np.asarray(self.optimizer.learning_rate))

    def head_arrays(self) -> tuple[np.ndarray, float] | None:

        return head_arrays(self.head) if self.head is not None else None


def init_head(trainer: Trainer, x: np.ndarray, seed: int, n: int = 256) -> None:
    """Start the BCE head as a standardised L1 distance, w = -1/s and bias = m/s (m, s: mean and
    spread of the L1 distances between `n` sampled training songs): a random start weighs
    thousands of dimensions at random, and the head does not unlearn that in a short training."""
    rows = np.random.default_rng(seed).permutation(len(x))[:n]
    e = np.asarray(trainer.val_encoder.predict(x[rows], batch_size=64, verbose=0), np.float64)
    l1 = np.concatenate([np.abs(e[i + 1:] - e[i]).sum(1) for i in range(len(e) - 1)])
    m, s = float(l1.mean()), float(l1.std()) or 1.0
    kernel, bias = trainer.head.get_weights()
    trainer.head.set_weights([np.full_like(kernel, -1.0 / s), np.full_like(bias, m / s)])


# ---------------------------------------------------------------- validation

def validation_map(trainer: Trainer, x: np.ndarray, work_id: np.ndarray, batch_size: int) -> float:
    """MAP of the val songs against each other (NaN when no val work has two versions), on the
    embedding the loss trains (the full one, or the projected one when the whitening is refitted
    while training)."""
    if len(x) < 2 or len(np.unique(work_id)) == len(work_id):
        return float("nan")
    fn = getattr(trainer, "_embed_fn", None) or make_embed_fn(trainer.val_encoder)
    trainer._embed_fn = fn
    e = embed_batches(fn, x, batch_size, embedding_size(trainer.val_encoder))
    head = trainer.head_arrays()
    dist = pairwise(e, e, "bce" if head is not None else "euclidean", head)
    return float(retrieval_metrics(dist, work_id)["map"])


# ---------------------------------------------------------------- checkpoints

def data_fingerprint(fs: FeatureSet) -> str:
    """A short hash of a feature set's contents (a checkpoint is only resumed on the same data)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(fs.features).tobytes())
    h.update("\n".join(fs.work_id.tolist() + fs.perf_id.tolist()).encode())
    return h.hexdigest()[:12]


def checkpoint_key(params: dict[str, Any], train_fs: FeatureSet, val_fs: FeatureSet) -> str:
    """What a checkpoint must match to be resumed: seed, model/train params (resume aside), data."""
    train = {k: v for k, v in params["train"].items() if k != "resume"}
    return params_hash({"seed": params["seed"], "model": params["model"], "train": train,
                        "data": [data_fingerprint(train_fs), data_fingerprint(val_fs)]})


def save_checkpoint(path: Path, trainer: Trainer, state: TrainState, key: str) -> None:
    """All variables + state in one .npz, written atomically."""
    arrays = {f"{group}/{i}": np.asarray(v.numpy())
              for group, vs in trainer.state_variables().items() for i, v in enumerate(vs)}
    arrays["state"] = np.array(json.dumps({"key": key, **asdict(state)}))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def read_checkpoint_state(path: Path) -> dict[str, Any] | None:
    """The state dict stored in a checkpoint, or None when absent/unreadable."""
    try:
        with np.load(path) as z:
            return json.loads(str(z["state"]))
    except (OSError, KeyError, ValueError):
        return None


def load_checkpoint(path: Path, trainer: Trainer,
                    groups: tuple[str, ...] = ("encoder", "head", "optimizer")) -> None:
    """Assign a checkpoint's variables of `groups` to the trainer's models and optimiser."""
    with np.load(path) as z:
        for group, vs in trainer.state_variables().items():
            if group not in groups:
                continue
            for i, v in enumerate(vs):
                name = f"{group}/{i}"
                if name not in z or z[name].shape != tuple(v.shape):
                    raise CoveridError(f"{path}: checkpoint does not match the model ({name})")
                v.assign(z[name])


def _weights(trainer: Trainer) -> list[np.ndarray]:
    """Copies of the model (encoder + head) variables."""
    vs = trainer.state_variables()
    return [np.array(v.numpy()) for v in vs["encoder"] + vs["head"]]


def _set_weights(trainer: Trainer, weights: list[np.ndarray]) -> None:
    vs = trainer.state_variables()
    for v, w in zip(vs["encoder"] + vs["head"], weights):
        v.assign(w)


# ---------------------------------------------------------------- fit

def seed_everything(seed: int, deterministic_ops: bool = True) -> None:
    """Seed Python, numpy, TF and Keras; optionally make TF ops deterministic (done on the CPU
    only: several GPU kernels have no deterministic version and would raise)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    stable_graphs()
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def _resume(ckpt: Path | None, trainer: Trainer, key: str, state: TrainState
            ) -> tuple[TrainState, list[np.ndarray] | None]:
    """Load `ckpt`/last.npz (and the best weights) when it matches `key`; else start afresh."""
    if ckpt is None or not (ckpt / LAST).exists():
        return state, None
    saved = read_checkpoint_state(ckpt / LAST)
    if saved is None or saved.pop("key", None) != key:
        log.warning("%s does not match these params/data: starting afresh", ckpt / LAST)
        return state, None
    load_checkpoint(ckpt / LAST, trainer)
    best = None
    if (ckpt / BEST).exists():
        # only the best weights: the optimiser's state must stay the last epoch's
        current = _weights(trainer)
        load_checkpoint(ckpt / BEST, trainer, groups=("encoder", "head"))
        best = _weights(trainer)
        _set_weights(trainer, current)
    log.info("resumed from %s after epoch %d", ckpt / LAST, saved["epoch"])
    return TrainState(**saved), best


def fit(params: dict[str, Any], train_fs: FeatureSet, val_fs: FeatureSet,
        checkpoint_dir: str | Path | None = None, setup: Any = None, run_id: str | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train on `train_fs`, validate (MAP) on `val_fs`; early stopping and best weights on val MAP.

    Checkpoints go to `checkpoint_dir` every `train.checkpoint_every` epochs; with
    `train.resume` a matching checkpoint there is continued. The dir is removed on success.
    `on_epoch(epoch, metrics)` is called after each epoch (MLflow logging).
    """
    from tqdm import tqdm

    train = params["train"]
    seed = int(params["seed"])
    setup = setup or setup_devices(train)
    seed_everything(seed, deterministic_ops=not setup.gpus)
    trainer = Trainer(params, tuple(train_fs.features.shape[1:]), setup)
    init_encoder(params["model"], trainer.encoder, train_fs.features, seed)
    items = batch_items(train, encode_labels(train_fs.work_id))
    if trainer.refit_every:
        trainer.refit_projection(train_fs.features, items)
    if trainer.head is not None:
        init_head(trainer, train_fs.features, seed)
    key = checkpoint_key(params, train_fs, val_fs)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    state, best_weights = _resume(ckpt if train["resume"] else None, trainer, key,
                                  TrainState(run_id=run_id))
    every = max(int(train["checkpoint_every"]), 0) if ckpt is not None else 0
    epochs = range(state.epoch, train["epochs"])
    if len(epochs):
        batches = iter(trainer.strategy.experimental_distribute_dataset(make_dataset(
            train_fs.features, encode_labels(train_fs.work_id), train, seed, epochs)))
    bar = tqdm(epochs, desc="train", unit="epoch", initial=state.epoch, total=train["epochs"])
    for epoch in bar:
        t0 = time.perf_counter()
        loss = trainer.run_epoch(batches, train["steps_per_epoch"])
        state.seconds += time.perf_counter() - t0
        state.pairs += train["steps_per_epoch"] * items / 2
        if trainer.refit_every and (epoch + 1) % trainer.refit_every == 0:
            trainer.refit_projection(train_fs.features, items)  # before val sees it
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": loss, "lr": trainer.learning_rate()}
        last = epoch + 1 == train["epochs"]
        if (epoch + 1) % train["val_every"] == 0 or last:
            row["val_map"] = validation_map(trainer, val_fs.features, val_fs.work_id, items)
            if math.isnan(row["val_map"]) or row["val_map"] > state.best_val_map:
                if not math.isnan(row["val_map"]):
                    state.best_val_map = row["val_map"]
                state.best_epoch, state.bad_checks = epoch + 1, 0
                best_weights = _weights(trainer)
                if every:
                    save_checkpoint(ckpt / BEST, trainer, state, key)
            else:
                state.bad_checks += 1
        state.history.append(row)
        state.epoch = epoch + 1
        stop = state.bad_checks >= train["patience"]
        state.stopped_early = stop and not last
        shown = {k: v for k, v in row.items() if k != "epoch"}
        bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 5) for k, v in shown.items()})
        if every and ((epoch + 1) % every == 0 or stop or last):
            save_checkpoint(ckpt / LAST, trainer, state, key)
        if on_epoch is not None:
            on_epoch(epoch + 1, {k: v for k, v in shown.items() if not math.isnan(v)})
        if stop:
            log.info("early stop: no val MAP gain in %d checks", state.bad_checks)
            break
    bar.close()
    if best_weights is not None:
        _set_weights(trainer, best_weights)
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)
    head = finish_projection(params, trainer, train_fs, items)
    return FitResult(trainer.encoder, head, state, setup.describe())


def fitted_whitening(model: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whitening (kernel, bias) of the projection's inputs `x` (Trainer.projection_inputs)."""
    if len(x) < model["projection_dim"]:
        raise CoveridError(f"model.projection_dim {model['projection_dim']}: the whitening needs "
                           f"at least that many training songs, got {len(x)} (lower it, or "
                           "set model.projection: random)")
    return whitening(x, int(model["projection_dim"]), model["projection_shrinkage"])


def finish_projection(params: dict[str, Any], trainer: Trainer, train_fs: FeatureSet,
                      batch_size: int) -> tuple[np.ndarray, float] | None:
    """Fit a `whiten` projection to the training songs' full embeddings and, under any fixed
    projection, refit the BCE head on the projected ones; the head's arrays (None: no head)."""
    if not has_fixed_projection(trainer.encoder):
        return trainer.head_arrays()
    model = params["model"]
    inputs = trainer.projection_inputs(train_fs.features, batch_size)
    if model["projection"] == "whiten":
        kernel, bias = fitted_whitening(model, inputs)
        set_projection(trainer.encoder, kernel, bias)
        log.info("projection: PCA whitening of %d training songs, %d -> %d dims", len(inputs),
                 inputs.shape[1], kernel.shape[1])
    if trainer.head is None:
        return None
    proj = trainer.encoder.get_layer("projection")
    projected = project(inputs, np.asarray(proj.kernel), np.asarray(proj.bias))
    bce = params["train"]["losses"]["bce"]
    return fit_head(projected, train_fs.work_id, bce["refit_negatives"], int(params["seed"]),
                    bce["refit_c"])


# ---------------------------------------------------------------- the stage's values

def split_sets(fs: FeatureSet, splits: dict[str, str]) -> tuple[FeatureSet, FeatureSet]:
    """(train, val) feature sets; a clear error when train is empty."""
    train_fs = fs.take(split_mask(fs.work_id, splits, "train"))
    val_fs = fs.take(split_mask(fs.work_id, splits, "val"))
    if len(train_fs) == 0:
        raise CoveridError("no training songs: the splits file puts no work in 'train'")
    return train_fs, val_fs


def embedder_config(params: dict[str, Any], fs: FeatureSet, encoder: Any) -> dict[str, Any]:
    """config.json of the model dir (COMMON contract); no run id or time, so the same
    training gives the same bytes (the MLflow run is found by the model's fingerprint)."""
    pre = to_plain(params["preprocess"])
    pre["feature"], *pre["fusion"] = fs.parts()  # what the model's input holds
    return {
        "arch": params["model"]["arch"],
        "loss": params["train"]["loss"],
        "embedding_dim": embedding_size(encoder),
        "metric": metric_for(params["train"]["loss"]),
        "feature": fs.feature,
        "spect_len": fs.spect_len,
        "tile": is_tiled(part_rows(int(fs.features.shape[1]), len(fs.parts()))),
        "max_frames": pre["max_frames"],
        "preprocess": pre,
        "params_hash": params_hash(params),
    }


def write_curve(history: list[dict[str, Any]], plot_dir: Path, best_epoch: int,
                heading: str, others: dict[str, list[dict[str, Any]]] | None = None) -> list[Path]:
    """plot_dir/train_curve.csv (epoch, loss), val_map.csv (epoch, val_map of the validated
    epochs only: DVC plots draw a missing value as 0) and train_curve.png of both, with the
    epoch whose weights were kept marked; `others` ({feature: history}, a fused model's other
    encoders) are drawn in the png too. Returns the three paths."""
    val = [(r["epoch"], r["val_map"]) for r in history
           if r.get("val_map") is not None and not math.isnan(r["val_map"])]
    out = [plot_dir / "train_curve.csv", plot_dir / "val_map.csv", plot_dir / "train_curve.png"]
    write_text(out[0], "epoch,loss\n" + "".join(f"{r['epoch']},{r['loss']:.6f}\n" for r in history))
    write_text(out[1], "epoch,val_map\n" + "".join(f"{e},{v:.6f}\n" for e, v in val))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["epoch"] for r in history], [r["loss"] for r in history], "C0-", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="C0")
    ax.set_title(heading)
    ax2 = ax.twinx()
    if val:
        ax2.plot(*zip(*val), "C1o-", label="val MAP")
    for i, (name, hist) in enumerate((others or {}).items()):
        ax.plot([r["epoch"] for r in hist], [r["loss"] for r in hist], "C0", linestyle=":",
                label=f"{name} loss")
        ax2.plot([r["epoch"] for r in hist if r.get("val_map") is not None],
                 [r["val_map"] for r in hist if r.get("val_map") is not None], "C1", marker="s",
                 linestyle=":", label=f"{name} val MAP")
    if others:
        ax.legend(loc="upper left", fontsize=7)
        ax2.legend(loc="upper right", fontsize=7)
    ax2.set_ylabel("val MAP", color="C1")
    if best_epoch:
        ax.axvline(best_epoch, color="k", linestyle="--", linewidth=1)
        ax.annotate(f"kept: epoch {best_epoch}", (best_epoch, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize=8)
    fig.tight_layout()
    with atomic_path(out[2]) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def resume_run_id(train: dict[str, Any], checkpoint_dir: Path) -> str | None:
    """The MLflow run of the checkpoint `train.resume` continues, if any."""
    if not train["resume"] or not (checkpoint_dir / LAST).exists():
        return None
    saved = read_checkpoint_state(checkpoint_dir / LAST)
    return saved.get("run_id") if saved else None


def train_report(result: FitResult, n_train: int, n_val: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train.json quality metrics, timings): timings vary from run to run, so they stay out
    of the DVC metrics file."""
    st = result.state
    metrics = {
        "best_val_map": None if st.best_val_map < 0 else round(st.best_val_map, 6),
        "best_epoch": st.best_epoch,
        "final_loss": round(st.history[-1]["loss"], 6) if st.history else None,
        "epochs_run": st.epoch,
        "stopped_early": st.stopped_early,
        "n_train": n_train,
        "n_val": n_val,
    }
    timings = {"train_seconds": round(st.seconds, 2),
               "pairs_per_second": round(result.pairs_per_second, 2)}
    return metrics, timings
