"""The `bag` encoder: a song as a bag of local chroma patterns and of their ordered pairs.

Each song is rolled to its key signature (`KeyRoll`), averaged to a coarse frame rate and
resampled at a few tempo factors. With `key_rolls` n > 1 it is rolled to its n best key
signatures instead (`KeyRolls`) and the counts are mixed with softmax(key_sharpness x score)
weights (`MixRolls`): a song whose key signature is ambiguous (a fifth apart, 6 of 7 notes
shared) counts under both, so a version whose estimate falls on the other side still matches.
Training uses the best roll alone unless `key_rolls_train` (twice the cost, no gain measured).
Every window of `patch` frames is soft-assigned to a codebook of K patterns by cosine
similarity (a convolution and a softmax over the codes). The embedding holds how often each
pattern occurs (unigrams) and how often pattern j follows pattern i `lag` frames later
(bigrams, K x K per lag), power- and L2-normalised, so that two songs are close when they
share many patterns in the same order. The codebook starts as the spherical k-means
centroids of the training songs' windows (`init_codebook`) and is then trained with the
chosen loss like any other encoder.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from coverid.core.errors import CoveridError
from coverid.model.layers import PITCH, KeyRoll, roll_to_signatures, untiled

log = logging.getLogger(__name__)

EPS = 1e-6  # inside the square roots: finite gradients at zero counts
PREDICT_BATCH = 64  # songs per forward pass while collecting the codebook windows


@keras.saving.register_keras_serializable(package="coverid")
class TimeStretch(layers.Layer):
    """(B, T, C) -> (B, round(T * factor), C) by linear interpolation (any T)."""

    def __init__(self, factor: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, x):
        t = ops.shape(x)[1]
        n = ops.maximum(ops.cast(ops.round(ops.cast(t, "float32") * self.factor), "int32"), 2)
        pos = ops.arange(n, dtype="float32") * ops.cast(t - 1, "float32") / ops.cast(n - 1, "float32")
        i0 = ops.minimum(ops.cast(ops.floor(pos), "int32"), t - 1)
        i1 = ops.minimum(i0 + 1, t - 1)
        frac = ops.cast(pos - ops.cast(i0, "float32"), x.dtype)[None, :, None]
        return ops.take(x, i0, axis=1) * (1 - frac) + ops.take(x, i1, axis=1) * frac

    def compute_output_shape(self, shape):
        return (shape[0], None, shape[2])

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="coverid")
class KeyRolls(layers.Layer):
    """(B, 12, L) -> ((B n, 12, L) the song rolled to each of its n best key signatures,
    (B, n) softmax(sharpness x score) weights), score = the sum-normalised mean chroma in
    the signature's diatonic set. While training n = 1 unless `in_training` (the best roll,
    weight 1: what `KeyRoll` gives)."""

    def __init__(self, n: int, sharpness: float, in_training: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n, self.sharpness, self.in_training = int(n), float(sharpness), bool(in_training)

    def call(self, x, training=False):
        n = self.n if self.in_training or not training else 1
        scores, rolled = roll_to_signatures(x, n)
        rolled = ops.reshape(rolled, (-1, PITCH, ops.shape(x)[2]))
        weights = ops.softmax(self.sharpness * scores, axis=1) if n > 1 else ops.ones_like(scores)
        return rolled, weights

    def compute_output_shape(self, shape):
        return (None, PITCH, shape[2]), (shape[0], self.n)

    def get_config(self) -> dict:
        return {**super().get_config(), "n": self.n, "sharpness": self.sharpness,
                "in_training": self.in_training}


@keras.saving.register_keras_serializable(package="coverid")
class MixRolls(layers.Layer):
    """((B n, D) counts, (B, n) weights) -> (B, D): the weighted sum over each song's rolls."""

    def call(self, inputs):
        counts, weights = inputs
        n = ops.shape(weights)[1]
        counts = ops.reshape(counts, (-1, n, counts.shape[-1]))
        return ops.sum(counts * ops.cast(weights, counts.dtype)[:, :, None], axis=1)

    def compute_output_shape(self, shapes):
        return (shapes[1][0], shapes[0][-1])


@keras.saving.register_keras_serializable(package="coverid")
class PatchCodes(layers.Layer):
    """(B, T, C) -> (B, T - patch + 1, K): softmax(sharpness x cosine) of each window of
    `patch` frames against K learned patterns."""

    def __init__(self, codes: int, patch: int, sharpness: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.codes, self.patch, self.sharpness = int(codes), int(patch), float(sharpness)

    def build(self, shape):
        self.codebook = self.add_weight(name="codebook", shape=(self.patch, shape[-1], self.codes),
                                        initializer="random_normal")
        self.ones = ops.ones((self.patch, shape[-1], 1))

    def call(self, x):
        kernel = self.codebook / ops.sqrt(ops.sum(ops.square(self.codebook), axis=(0, 1),
                                                  keepdims=True) + EPS)
        dots = ops.conv(x, ops.cast(kernel, x.dtype), padding="valid")
        norms = ops.sqrt(ops.conv(ops.square(x), ops.cast(self.ones, x.dtype), padding="valid") + EPS)
        return ops.softmax(self.sharpness * dots / norms, axis=-1)

    def compute_output_shape(self, shape):
        return (shape[0], None, self.codes)

    def get_config(self) -> dict:
        return {**super().get_config(), "codes": self.codes, "patch": self.patch,
                "sharpness": self.sharpness}


@keras.saving.register_keras_serializable(package="coverid")
class NgramCounts(layers.Layer):
    """(B, T, K) soft codes -> (B, [K +] K*K*len(lags)): mean unigram and lagged-bigram counts."""

    def __init__(self, lags: list[int], unigrams: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lags = [int(v) for v in lags]
        self.unigrams = bool(unigrams)

    def call(self, a):
        parts = [ops.mean(a, axis=1)] if self.unigrams else []
        for lag in self.lags:
            pair = ops.einsum("btk,btl->bkl", a[:, :-lag], a[:, lag:])
            n = ops.cast(ops.maximum(ops.shape(a)[1] - lag, 1), a.dtype)
            parts.append(ops.reshape(pair, (-1, a.shape[-1] ** 2)) / n)
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, shape):
        return (shape[0], shape[-1] * self.unigrams + shape[-1] ** 2 * len(self.lags))

    def get_config(self) -> dict:
        return {**super().get_config(), "lags": self.lags, "unigrams": self.unigrams}


@keras.saving.register_keras_serializable(package="coverid")
class BagNormalize(layers.Layer):
    """Square-root (Hellinger) then unit L2 norm of each part (unigrams, each lag's bigrams),
    scaled so that the whole embedding has unit norm."""

    def __init__(self, sizes: list[int], weighted: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sizes = [int(v) for v in sizes]
        self.weighted = bool(weighted)

    def build(self, shape):
        if self.weighted:  # learned weight per entry (softplus, starts at 1): which counts matter
            self.logits = self.add_weight(name="weights", shape=(shape[-1],),
                                          initializer=keras.initializers.Constant(np.log(np.e - 1)))

    def call(self, x):
        x = ops.sqrt(x + EPS) - np.sqrt(EPS)
        if self.weighted:
            x = x * ops.softplus(self.logits)
        parts, start = [], 0
        for size in self.sizes:
            p = x[:, start:start + size]
            parts.append(p / ops.sqrt(ops.sum(ops.square(p), axis=-1, keepdims=True) + 1e-12))
            start += size
        return ops.concatenate(parts, axis=-1) / np.sqrt(len(self.sizes))

    def compute_output_shape(self, shape):
        return shape

    def get_config(self) -> dict:
        return {**super().get_config(), "sizes": self.sizes, "weighted": self.weighted}


def bag_encoder(input_shape: tuple[int, int | None], codes: int, patch: int, sharpness: float,
                lags: list[int], tempo_factors: list[float], downsample: int,
                unigrams: bool, weighted: bool, key_rolls: int, key_sharpness: float,
                key_rolls_train: bool) -> keras.Model:
    """Input (F, L) -> bag-of-patterns embedding of size K ([1 +] K len(lags))."""
    n_rows = input_shape[0]
    inp = keras.Input(shape=(n_rows, None), name="features")
    if key_rolls > 1:
        x, roll_weights = KeyRolls(key_rolls, key_sharpness, key_rolls_train,
                                   name="key_rolls")(untiled(inp, n_rows))
    else:
        x = KeyRoll(name="key_roll")(untiled(inp, n_rows))
    x = layers.Permute((2, 1), name="time_major")(x)
    if downsample > 1:
        x = layers.AveragePooling1D(downsample, padding="same", name="downsample")(x)
    coder = PatchCodes(codes, patch, sharpness, name="patch_codes")
    if not unigrams and not lags:
        raise CoveridError("model.bag needs unigrams or at least one lag")
    counter = NgramCounts(lags, unigrams, name="ngrams")
    stretched = [TimeStretch(f, name=f"stretch{i}")(x) for i, f in enumerate(tempo_factors)]
    counts = [counter(coder(s)) for s in stretched]
    total = counts[0] if len(counts) == 1 else layers.Add(name="scales")(counts)
    if key_rolls > 1:
        total = MixRolls(name="mix_rolls")([total, roll_weights])
    sizes = [codes] * unigrams + [codes * codes] * len(lags)
    out = BagNormalize(sizes, weighted, dtype="float32", name="embedding")(total)
    return keras.Model(inp, out, name="bag_encoder")


def build_bag(cfg: dict[str, Any], input_shape: tuple[int, int | None]) -> keras.Model:
    """The bag encoder from `model.bag`."""
    if not cfg["tempo_factors"]:
        raise CoveridError("model.bag.tempo_factors needs at least one factor")
    rolls = int(cfg["key_rolls"])
    if rolls not in range(1, PITCH + 1):
        raise CoveridError(f"model.bag.key_rolls must be in 1..{PITCH}, got {rolls}")
    if any(int(v) < 1 for v in cfg["lags"]):
        raise CoveridError(f"model.bag.lags must be >= 1, got {cfg['lags']}")
    length = input_shape[1]
    if length is not None and length < min_length_bag(cfg):
        raise CoveridError(f"the bag encoder needs spect_len >= {min_length_bag(cfg)} "
                           f"(model.bag patch, lags, tempo_factors, downsample), got {length}")
    return bag_encoder(input_shape, cfg["codes"], cfg["patch"], cfg["sharpness"], list(cfg["lags"]),
                       [float(v) for v in cfg["tempo_factors"]], int(cfg["downsample"]),
                       bool(cfg["unigrams"]), bool(cfg["weighted"]), rolls,
                       float(cfg["key_sharpness"]), bool(cfg["key_rolls_train"]))


def min_length_bag(cfg: dict[str, Any]) -> int:
    """Shortest time axis that leaves every tempo factor a bigram at the longest lag."""
    need = int(cfg["patch"]) + max([int(v) for v in cfg["lags"]], default=0)  # frames after stretch
    ds = max(int(cfg["downsample"]), 1)
    return int(np.ceil((need + 0.5) / min(float(v) for v in cfg["tempo_factors"]))) * ds


# ---------------------------------------------------------------- codebook initialisation

def windows(seq: np.ndarray, patch: int) -> np.ndarray:
    """(T, C) -> (T - patch + 1, patch * C) unit-norm windows (time-major, like the conv)."""
    t = seq.shape[0] - patch + 1
    if t < 1:
        return np.zeros((0, patch * seq.shape[1]), dtype=np.float32)
    w = np.lib.stride_tricks.sliding_window_view(seq, patch, axis=0)  # (t, C, patch)
    w = np.ascontiguousarray(w.transpose(0, 2, 1)).reshape(t, -1)
    return w / np.sqrt(np.sum(w * w, axis=1, keepdims=True) + EPS)


def spherical_kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """(k, D) unit centroids maximising the summed cosine of each row to its centroid."""
    rng = np.random.default_rng(seed)
    if len(x) < k:
        raise CoveridError(f"need at least {k} training windows for the codebook, got {len(x)}")
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        empty = np.flatnonzero(np.sum(sums * sums, axis=1) == 0)
        sums[empty] = x[rng.choice(len(x), len(empty), replace=False)]  # re-seed empty codes
        c = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return c


def init_codebook(encoder: keras.Model, features: np.ndarray, iters: int, seed: int) -> None:
    """Set the codebook to spherical k-means centroids of the windows of `features`."""
    coder = encoder.get_layer("patch_codes")
    stretch = [layer.output for layer in encoder.layers if isinstance(layer, TimeStretch)]
    front = keras.Model(encoder.input, stretch)
    seqs = front.predict(features, batch_size=PREDICT_BATCH, verbose=0)
    seqs = seqs if isinstance(seqs, list) else [seqs]
    rolls = len(seqs[0]) // len(features)  # key signatures per song, best first
    # each song's best roll only: its other rolls are the same windows under a wrong key
    x = np.concatenate([windows(s, coder.patch) for scale in seqs for s in scale[::rolls]])
    c = spherical_kmeans(x.astype(np.float32), coder.codes, iters, seed)
    channels = x.shape[1] // coder.patch
    coder.codebook.assign(c.reshape(coder.codes, coder.patch, channels).transpose(1, 2, 0))
    log.info("codebook: %d codes from %d windows", coder.codes, len(x))
