"""Encoders (input (F, L) pitch x time features -> embedding) and the BCE pair head.

- `seed`: the seed project's network (fixed 512-d sigmoid embedding, needs F = 23 and L >= 222).
- `move`: MOVE-style (Yesiler et al. 2020): a first convolution spanning 12 pitch rows of the
  23-row tiled input, max-pooled over the 12 pitch positions (so a transposition only rolls which
  position wins: invariance), dilated 1-D convolutions over time, pooling over time (any L),
  a linear embedding and optional L2 normalisation.

Any encoder whose embedding is wider than `model.projection_dim` ends in a linear projection
`Projection` (x W + b, L2-normalised) to that many dimensions: the bag's 16,384 dims become 512,
so a million songs take 2 GB instead of 64 GB. `model.projection` picks W and b: `whiten`
(default) leaves training to the full embedding and then sets them to the PCA whitening of the
training songs' embeddings (whiten.py, train/fit.py); `random` is a fixed seeded orthogonal
map (`init_projection`, Johnson-Lindenstrauss); `trained` learns them jointly with the loss
(benchmarks/bench_projection.py).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from coverid.core.errors import CoveridError
from coverid.features.transform import PITCH, TILED_ROWS, is_tiled, part_rows
from coverid.model.bag import build_bag, init_codebook
from coverid.model.layers import KeyRoll, PitchTile, untiled

ARCHS = ("seed", "move", "bag")
SEED_DIM = 512
SEED_DILATIONS = (20, 13, 7)
POOLINGS = ("attention", "mean", "max")
PITCH_POOLS = ("early", "late", "gram", "key")


@keras.saving.register_keras_serializable(package="coverid")
class PitchMaxPool(layers.Layer):
    """Max over the pitch positions (axis 1): (B, P, T, C) -> (B, T, C), (B, P, C) -> (B, C)."""

    def call(self, x):
        return ops.max(x, axis=1)

    def compute_output_shape(self, shape):
        return (shape[0], *shape[2:])


@keras.saving.register_keras_serializable(package="coverid")
class PitchGram(layers.Layer):
    """(B, P, C) -> (B, C (C + 1) / 2): the upper triangle of X'X / P over the pitch positions.

    A transposition permutes the P rows of X, which leaves X'X unchanged, yet X'X still says
    which channels fire together under the same transposition (their relative roots).
    """

    def call(self, x):
        c = x.shape[-1]
        gram = ops.einsum("bpc,bpd->bcd", x, x) / ops.cast(ops.shape(x)[1], x.dtype)
        rows, cols = np.triu_indices(c)
        flat = ops.reshape(gram, (-1, c * c))
        return ops.take(flat, rows * c + cols, axis=1)

    def compute_output_shape(self, shape):
        return (shape[0], shape[-1] * (shape[-1] + 1) // 2)


@keras.saving.register_keras_serializable(package="coverid")
class TimePooling(layers.Layer):
    """Pool the time axis (the one before channels): (B, [P,] T, C) -> (B, [P,] C).

    attention: softmax-over-time weights from a learned 1x1 projection, weighted sum;
    mean / max: plain global pooling.
    """

    def __init__(self, mode: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in POOLINGS:
            raise CoveridError(f"unknown model.move.pooling {mode!r}; expected one of {POOLINGS}")
        self.mode = mode

    def build(self, shape):
        if self.mode == "attention":
            self.score = layers.Dense(1, name="score")
            self.score.build(shape)

    def call(self, x):
        if self.mode == "mean":
            return ops.mean(x, axis=-2)
        if self.mode == "max":
            return ops.max(x, axis=-2)
        weights = ops.softmax(self.score(x), axis=-2)
        return ops.sum(weights * x, axis=-2)

    def compute_output_shape(self, shape):
        return (*shape[:-2], shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="coverid")
class L2Normalize(layers.Layer):
    """Scale each embedding to unit Euclidean norm."""

    def call(self, x):
        return unit_rows(x)


def unit_rows(x):
    """Each row of x scaled to unit Euclidean norm (zero rows stay zero)."""
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


TINY = 1e-30  # Projection.through's floor under the power (float32's smallest normal: 1.2e-38)


@keras.saving.register_keras_serializable(package="coverid")
class Projection(layers.Layer):
    """(B, D) -> (B, dim): x W + b, scaled to unit L2 norm; with `power` != 1, x is first
    power-normalised (whiten.power_normalise). A non-trainable projection passes x through
    unchanged while training (the loss sees the full embedding)."""

    def __init__(self, dim: int, power: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.power = int(dim), float(power)

    def build(self, shape):
        # nearly orthogonal columns of norm ~sqrt(D / dim) (drawn from Keras's seed, like every
        # other start); training starts from `init_projection`'s exactly orthogonal one
        std = 1.0 / np.sqrt(self.dim)
        self.kernel = self.add_weight(name="kernel", shape=(shape[-1], self.dim),
                                      initializer=keras.initializers.RandomNormal(0.0, std))
        self.bias = self.add_weight(name="bias", shape=(self.dim,), initializer="zeros")

    def call(self, x, training=False):
        if training and not self.trainable:
            return x  # a fixed projection: the loss trains the full embedding it approximates
        return self._map(x, fixed=False)

    def through(self, x):
        """The fixed projection applied while training (model.projection_refit_every): as `call`
        at inference, with |x| floored at TINY under the power so that its gradient stays finite
        at the bag's exact zeros (the same values: sign(0) = 0)."""
        return self._map(x, fixed=True)

    def _map(self, x, fixed: bool):
        """The power, x W + b and the unit norm; `fixed`: gradient-safe power, W and b constant."""
        if self.power != 1.0:
            a = ops.maximum(ops.abs(x), TINY) if fixed else ops.abs(x)
            x = unit_rows(ops.sign(x) * ops.power(a, self.power))
        kernel, bias = ops.cast(self.kernel, x.dtype), ops.cast(self.bias, x.dtype)
        if fixed:
            kernel, bias = ops.stop_gradient(kernel), ops.stop_gradient(bias)
        return unit_rows(ops.matmul(x, kernel) + bias)

    def compute_output_shape(self, shape):
        return (shape[0], self.dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "power": self.power}


def projection_matrix(d_in: int, dim: int, seed: int) -> np.ndarray:
    """(d_in, dim) float32 with orthogonal columns of norm sqrt(d_in / dim), from `seed`:
    distances between embeddings are kept on average (Johnson-Lindenstrauss), and the entries
    are large enough that Adam's steps refine the projection rather than replace it."""
    a = np.random.default_rng(seed).standard_normal((d_in, dim))
    # a (a'a)^(-1/2): the orthonormal frame nearest to a Gaussian matrix (a QR is 20x slower)
    w, v = np.linalg.eigh(a.T @ a)
    q = a @ (v / np.sqrt(w)) @ v.T
    return (q * np.sqrt(d_in / dim)).astype(np.float32)


def add_projection(encoder: keras.Model, dim: int | None, trainable: bool,
                   power: float = 1.0) -> keras.Model:
    """`encoder` ending in a `Projection` to `dim` dims when its embedding is wider; else as is."""
    width = embedding_size(encoder)
    if dim is None or width <= dim:
        return encoder
    out = Projection(dim, power, trainable=trainable, dtype="float32", name="projection")(encoder.output)
    return keras.Model(encoder.input, out, name=encoder.name)


def projection_of(encoder: keras.Model) -> Projection | None:
    """The encoder's Projection layer, if it has one."""
    return next((layer for layer in encoder.layers if isinstance(layer, Projection)), None)


def init_projection(encoder: keras.Model, seed: int) -> None:
    """Set the encoder's projection, if it has one, to `projection_matrix` from `seed`."""
    proj = projection_of(encoder)
    if proj is not None:
        d_in, dim = proj.kernel.shape
        proj.kernel.assign(projection_matrix(int(d_in), int(dim), seed))


def set_projection(encoder: keras.Model, kernel: np.ndarray, bias: np.ndarray) -> None:
    """Set the encoder's projection to x kernel + bias (e.g. a fitted whitening)."""
    proj = projection_of(encoder)
    if proj is None:
        raise ValueError("the encoder has no projection")
    proj.kernel.assign(kernel)
    proj.bias.assign(bias)


def has_fixed_projection(encoder: keras.Model) -> bool:
    """Whether the encoder ends in a non-trainable projection (training sees the full embedding)."""
    proj = projection_of(encoder)
    return proj is not None and not proj.trainable


def full_embedding(encoder: keras.Model) -> keras.Model:
    """The encoder without its projection (the embedding the projection maps), or itself."""
    proj = projection_of(encoder)
    return encoder if proj is None else keras.Model(encoder.input, proj.input, name=encoder.name)


@keras.saving.register_keras_serializable(package="coverid")
class Rows(layers.Layer):
    """(B, F, L) -> (B, stop - start, L): one stacked feature's rows of a fused input."""

    def __init__(self, start: int, stop: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[:, self.start:self.stop]

    def compute_output_shape(self, shape):
        return (shape[0], self.stop - self.start, shape[2])

    def get_config(self) -> dict:
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package="coverid")
class Scale(layers.Layer):
    """x times a fixed factor (a fused part's weight)."""

    def __init__(self, factor: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, x):
        return x * self.factor

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor}


def fuse_encoders(parts: dict[str, keras.Model], weights: list[float],
                  input_shape: tuple[int, int | None]) -> keras.Model:
    """One encoder of a stacked input (rows of each feature in `parts`' order): part i's rows go
    through its encoder, and the unit-norm embeddings, scaled by w_i / sqrt(sum w^2), are
    concatenated. The result has unit norm, and its squared distance is sum_i w_i^2 d_i^2 /
    sum w^2: late fusion of models that fail on different pairs (docs/results.md)."""
    if len(weights) != len(parts):
        raise CoveridError(f"{len(parts)} fused encoders need as many weights, got {weights}")
    rows = part_rows(input_shape[0], len(parts))
    norm = float(np.sqrt(np.sum(np.square(weights))))
    inp = keras.Input(shape=input_shape, name="features")
    outs = []
    for i, ((name, encoder), w) in enumerate(zip(parts.items(), weights)):
        x = Rows(i * rows, (i + 1) * rows, name=f"{name}_rows")(inp)
        named = keras.Model(encoder.input, encoder.output, name=f"{name}_encoder")
        outs.append(Scale(w / norm, dtype="float32", name=f"{name}_weight")(named(x)))
    return keras.Model(inp, layers.Concatenate(name="fused")(outs), name="fused_encoder")


def fused_parts(encoder: keras.Model) -> dict[str, keras.Model]:
    """The part encoders of a `fuse_encoders` model by feature ({} for a plain encoder)."""
    return {layer.name.removesuffix("_encoder"): layer for layer in encoder.layers
            if isinstance(layer, keras.Model)} if encoder.name == "fused_encoder" else {}


def _pitch_rows(x, n_rows: int):
    """Tile untiled (12-row) input to 23 rows; reject other row counts."""
    return x if is_tiled(n_rows) else PitchTile(name="pitch_tile")(x)


def seed_encoder(input_shape: tuple[int, int | None]) -> keras.Model:
    """The seed network: input (F, L) -> 512-d sigmoid embedding."""
    n_rows, length = input_shape
    if length is None or length < min_length_seed():
        raise CoveridError(f"the seed encoder needs spect_len >= {min_length_seed()}, got {length}")
    conv = {"kernel_initializer": keras.initializers.RandomNormal(0.0, 0.01),
            "bias_initializer": keras.initializers.RandomNormal(0.5, 0.01)}
    inp = keras.Input(shape=input_shape, name="features")
    x = _pitch_rows(inp, n_rows)
    x = layers.Reshape((TILED_ROWS, length, 1))(x)
    x = layers.Conv2D(32, (12, 50), activation="relu", **conv)(x)
    x = layers.MaxPooling2D((12, 1))(x)
    x = layers.BatchNormalization()(x)
    for d in SEED_DILATIONS:
        x = layers.Conv2D(32, (1, 5), **conv)(x)
        x = layers.Conv2D(64, (1, 5), dilation_rate=(1, d), activation="relu", **conv)(x)
        x = layers.BatchNormalization()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.1)(x)
    out = layers.Dense(SEED_DIM, activation="sigmoid",
                       kernel_initializer=keras.initializers.RandomNormal(0.0, 0.2),
                       bias_initializer=keras.initializers.RandomNormal(0.5, 0.01),
                       dtype="float32", name="embedding")(x)
    return keras.Model(inp, out, name="seed_encoder")


def min_length_seed() -> int:
    """Shortest time axis the seed network accepts (its valid convolutions shrink time)."""
    return 50 + sum(4 + 4 * d for d in SEED_DILATIONS)


def move_encoder(input_shape: tuple[int, int | None], embedding_dim: int, channels: int,
                 first_kernel: int, kernel: int, dilations: list[int], pooling: str,
                 l2_normalize: bool, dropout: float, time_pool: int, downsample: int,
                 pitch_pool: str) -> keras.Model:
    """MOVE-style network: input (F, L or None) -> `embedding_dim` embedding.

    The first convolution spans 12 pitch rows of the tiled input, so its 12 output rows are
    the 12 transpositions. `pitch_pool` "early" takes their max at once (MOVE); "late" keeps
    them through the time convolutions and the time pooling and takes the max at the end, so
    chords further apart than `first_kernel` keep their relative roots (12x the compute);
    "gram" does the same but ends with `PitchGram` (channel co-activations across the 12
    transpositions) instead of the max.
    `downsample` > 1 averages blocks of frames first (cheaper, and a wider first kernel);
    `time_pool` > 1 max-pools time after the first convolution.
    """
    if pitch_pool not in PITCH_POOLS:
        raise CoveridError(f"unknown model.move.pitch_pool {pitch_pool!r}; expected {PITCH_POOLS}")
    n_rows = input_shape[0]
    inp = keras.Input(shape=(n_rows, None), name="features")
    if pitch_pool == "key":
        x = KeyRoll(name="key_roll")(untiled(inp, n_rows))
        x = layers.Reshape((PITCH, -1, 1))(x)
    else:
        x = _pitch_rows(inp, n_rows)
        x = layers.Reshape((TILED_ROWS, -1, 1))(x)
    if downsample > 1:
        x = layers.AveragePooling2D((1, downsample), padding="same", name="downsample")(x)
    # pad time only ("same" over time; the 12 pitch positions stay the valid windows)
    pad = (first_kernel - 1) // 2, first_kernel - 1 - (first_kernel - 1) // 2
    x = layers.ZeroPadding2D(((0, 0), pad), name="time_pad")(x)
    x = layers.Conv2D(channels, (PITCH, first_kernel), padding="valid", name="pitch_conv")(x)
    if time_pool > 1:
        x = layers.MaxPooling2D((1, time_pool), padding="same", name="time_pool")(x)
    if pitch_pool in ("early", "key"):
        x = PitchMaxPool(name="pitch_max")(x)  # one position when "key": a squeeze
    x = layers.BatchNormalization()(layers.ReLU()(x))
    for i, d in enumerate(dilations):
        if pitch_pool in ("early", "key"):
            x = layers.Conv1D(channels, kernel, dilation_rate=d, padding="same", name=f"conv{i}")(x)
        else:
            x = layers.Conv2D(channels, (1, kernel), dilation_rate=(1, d), padding="same",
                              name=f"conv{i}")(x)
        x = layers.BatchNormalization()(layers.ReLU()(x))
    x = TimePooling(pooling, name="time_pooling")(x)
    if pitch_pool == "late":
        x = PitchMaxPool(name="pitch_max")(x)
    elif pitch_pool == "gram":
        x = PitchGram(name="pitch_gram")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(embedding_dim, dtype="float32", name="embedding")(x)
    if l2_normalize:
        x = L2Normalize(dtype="float32", name="l2")(x)
    return keras.Model(inp, x, name="move_encoder")


def build_encoder(model: dict[str, Any], input_shape: tuple[int, int | None]) -> keras.Model:
    """The encoder chosen by `model.arch`, for inputs of shape (F, L), projected down to
    `model.projection_dim` when wider; outputs are float32 even under a mixed-precision policy.
    """
    arch = model["arch"]
    dim, trainable = model["projection_dim"], model["projection"] == "trained"
    power = model["projection_power"]
    if dim is not None and dim < 1:
        raise CoveridError(f"model.projection_dim must be >= 1 or null, got {dim}")
    if not 0 < power <= 1:
        raise CoveridError(f"model.projection_power must be in (0, 1], got {power}")
    refit = model["projection_refit_every"]
    if refit < 0 or (refit and model["projection"] != "whiten"):
        raise CoveridError(f"model.projection_refit_every must be 0, or >= 1 with model.projection: "
                           f"whiten, got {refit} with {model['projection']}")
    if trainable:
        power = 1.0  # a whiten | random setting, as the shrinkage is whiten's (|x|^p has no gradient at 0)
    if arch == "seed":
        return add_projection(seed_encoder(input_shape), dim, trainable, power)
    if arch == "move":
        m = model["move"]
        return add_projection(move_encoder(
            input_shape, model["embedding_dim"], m["channels"], m["first_kernel"], m["kernel"],
            list(m["dilations"]), m["pooling"], m["l2_normalize"], m["dropout"], m["time_pool"],
            m["downsample"], m["pitch_pool"]), dim, trainable, power)
    if arch == "bag":
        return add_projection(build_bag(model["bag"], input_shape), dim, trainable, power)
    raise CoveridError(f"unknown model.arch {arch!r}; expected one of {ARCHS}")


def init_encoder(model: dict[str, Any], encoder: keras.Model, features: np.ndarray,
                 seed: int) -> None:
    """Set the encoder's seeded and data-dependent starting weights: the projection, if any
    (`init_projection`), and the bag's k-means pattern codebook from the training features."""
    init_projection(encoder, seed)
    if model["arch"] == "bag":
        init_codebook(encoder, features, model["bag"]["kmeans_iters"], seed)


def embedding_size(encoder: keras.Model) -> int:
    """The encoder's output dimension."""
    return int(encoder.output_shape[-1])


def build_head(dim: int) -> keras.layers.Dense:
    """The BCE head: |e1 - e2| (D,) -> one logit (the sigmoid is applied in the loss)."""
    head = layers.Dense(1, dtype="float32", name="bce_head")
    head.build((None, dim))
    return head


def head_logits(head, e1, e2):
    """Logits (B,) of the BCE head for pairs of embeddings."""
    return ops.squeeze(head(ops.abs(e1 - e2)), axis=-1)


def head_arrays(head) -> tuple:
    """(weights (D,), bias) of a built BCE head, as numpy (the distance module's format)."""
    w, b = head.get_weights()
    return w[:, 0].astype("float32"), float(b[0])
