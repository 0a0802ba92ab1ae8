"""Training batches: seeded sampling (numpy) and augmentation (stateless TF ops) in tf.data.

Every epoch's indices and per-song augmentation seeds come from numpy's generator seeded with
(seed, epoch), so an epoch's batches are the same whether or not training was resumed.

Modes:
- `pairs`: batches of `batch_size` (x1, x2, y) with half positive pairs (two versions of one
  work) and half negatives (songs of two different works, noise songs included).
- `positives`: batches of positive pairs with both songs' work labels; negatives are mined in
  the batch by the train step (`train.negative_sampling: hardest`).
- `pk`: batches of P works x K versions (`works_per_batch`, `versions_per_work`) with labels,
  for the triplet loss and for pair losses mined in the batch (`train.negative_sampling:
  batch`); versions are drawn without replacement when the work has K or more.
With `train.singleton_positives`, single-version (noise) songs of the train split also act as
works whose "versions" are independent augmentations of the one song (more works to learn
from; the augmentations stand in for real version differences).

Augmentations (each with its probability in `train.augment`), on the (F, L) features:
transpose (roll the 12 pitch classes before re-tiling), stretch (resample time by a factor in
1 +- stretch_range, then crop at a random offset or wrap-pad to L), crop (a random window of
crop_min..1 of L, resampled to L), warp (each frame dropped, duplicated or silenced with
probability warp_rate / 3 each, then cropped or wrap-padded to L), notes (`note_moves` spans of
`note_frames` frames in which one pitch class moves a step or two: a varied melody note or a
substituted chord, the content differences between versions that a model trained on few
works is most thrown by; benchmarks/bench_nuisance.py).
New works (`p_remap`, `p_reverse`): every version of a work in a batch gets the same random
permutation of its 12 pitch classes (in the work's key, found by OTI, so versions stay
transpositions of each other), or the same time reversal. A permuted work is a work the
encoder has never seen, so it cannot just memorise the few training works.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coverid.core.errors import CoveridError
from coverid.features.transform import PITCH, is_tiled

MODES = ("pairs", "positives", "pk")


# ---------------------------------------------------------------- sampling (numpy)

def encode_labels(work_id: np.ndarray) -> np.ndarray:
    """Work ids -> int32 labels (index of the work among the sorted unique ids)."""
    _, labels = np.unique(np.asarray(work_id), return_inverse=True)
    return labels.astype(np.int32)


def work_groups(labels: np.ndarray, singletons: bool = False) -> list[np.ndarray]:
    """Row indices of each work that has at least two versions (every work with `singletons`)."""
    labels = np.asarray(labels)
    groups = [np.flatnonzero(labels == w) for w in np.unique(labels)]
    return [g for g in groups if singletons or len(g) >= 2]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator for one epoch's sampling."""
    return np.random.default_rng([int(seed), int(epoch)])


def _groups_or_fail(labels: np.ndarray, need: int, singletons: bool) -> list[np.ndarray]:
    """Work groups for sampling positives; a clear error when fewer than `need` multi-version
    works exist (single-version works only ever come on top of real ones)."""
    if len(work_groups(labels)) < need:
        raise CoveridError(f"training needs at least {need} work(s) with two or more versions, "
                           f"found {len(work_groups(labels))}")
    return work_groups(labels, singletons)


def sample_positive_pairs(labels: np.ndarray, n: int, rng: np.random.Generator,
                          singletons: bool) -> tuple[np.ndarray, np.ndarray]:
    """`n` pairs of two different versions of one work (works drawn uniformly); with
    `singletons`, a single-version work pairs its song with itself (two augmentations)."""
    groups = _groups_or_fail(labels, 1, singletons)
    i, j = np.empty(n, np.int64), np.empty(n, np.int64)
    for t, g in enumerate(rng.integers(0, len(groups), size=n)):
        rows = groups[g]
        i[t], j[t] = rng.choice(rows, size=2, replace=len(rows) < 2)
    return i, j


def sample_negative_pairs(labels: np.ndarray, n: int, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray]:
    """`n` pairs of songs of two different works (uniform over songs, rejection sampled)."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise CoveridError("training needs songs of at least two works")
    i, j = rng.integers(0, len(labels), size=n), rng.integers(0, len(labels), size=n)
    while (bad := labels[i] == labels[j]).any():
        j[bad] = rng.integers(0, len(labels), size=int(bad.sum()))
    return i, j


def sample_pairs(labels: np.ndarray, batches: int, batch_size: int, rng: np.random.Generator,
                 singletons: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`batches` x `batch_size` pairs (i, j, y), each batch half positive, half negative."""
    n_pos = batch_size // 2
    out_i, out_j, out_y = [], [], []
    for _ in range(batches):
        pi, pj = sample_positive_pairs(labels, n_pos, rng, singletons)
        ni, nj = sample_negative_pairs(labels, batch_size - n_pos, rng)
        y = np.r_[np.ones(n_pos), np.zeros(batch_size - n_pos)].astype(np.float32)
        order = rng.permutation(batch_size)
        out_i.append(np.r_[pi, ni][order])
        out_j.append(np.r_[pj, nj][order])
        out_y.append(y[order])
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_y)


def sample_pk(labels: np.ndarray, batches: int, p: int, k: int, rng: np.random.Generator,
              singletons: bool) -> np.ndarray:
    """`batches` x (P works x K versions) row indices, grouped by work within each batch;
    versions are drawn with replacement only when a work has fewer than K."""
    groups = _groups_or_fail(labels, 2, singletons)
    p = min(p, len(groups))
    out = []
    for _ in range(batches):
        for g in rng.choice(len(groups), size=p, replace=False):
            rows = groups[g]
            out.append(rng.choice(rows, size=k, replace=len(rows) < k))
    return np.concatenate(out)


# ---------------------------------------------------------------- augmentation (TF)

def _resample(x, new_len):
    """Linear interpolation of (F, T) along time to (F, new_len)."""
    import tensorflow as tf

    t = tf.shape(x)[1]
    pos = tf.linspace(0.0, tf.cast(t - 1, tf.float32), new_len)
    lo = tf.cast(tf.floor(pos), tf.int32)
    hi = tf.minimum(lo + 1, t - 1)
    w = pos - tf.cast(lo, tf.float32)
    return tf.gather(x, lo, axis=1) * (1.0 - w) + tf.gather(x, hi, axis=1) * w


def _fit_length(x, length: int, u):
    """Crop (F, T) to `length` at offset u * (T - length) when longer, else wrap-pad."""
    import tensorflow as tf

    t = tf.shape(x)[1]
    reps = length // t + 1
    tiled = tf.tile(x, [1, reps])
    start = tf.cast(tf.floor(u * tf.cast(tf.maximum(t - length + 1, 1), tf.float32)), tf.int32)
    start = tf.minimum(start, tf.maximum(t - length, 0))
    return tiled[:, start:start + length]


def _retile(base, tiled: bool):
    """The 12 pitch rows `base`, re-tiled to 23 rows when the input was tiled."""
    import tensorflow as tf

    return tf.concat([base, base[: PITCH - 1]], axis=0) if tiled else base


def transpose(x, shift, tiled: bool):
    """Roll the 12 pitch classes by `shift` semitones (untile, roll, re-tile when tiled)."""
    import tensorflow as tf

    base = tf.roll(x[:PITCH], shift, axis=0)
    return _retile(base, tiled)


def stretch(x, factor, u):
    """Resample time by `factor`, then crop at offset `u` or wrap-pad back to the input length."""
    import tensorflow as tf

    length = x.shape[1]
    new_len = tf.maximum(tf.cast(tf.round(length * factor), tf.int32), 2)
    return _fit_length(_resample(x, new_len), length, u)


def crop(x, fraction, u):
    """A window of `fraction` of the time axis, starting at offset `u`, resampled to full length."""
    import tensorflow as tf

    length = x.shape[1]
    w = tf.clip_by_value(tf.cast(tf.round(length * fraction), tf.int32), 2, length)
    start = tf.cast(tf.floor(u * tf.cast(length - w + 1, tf.float32)), tf.int32)
    start = tf.minimum(start, length - w)
    return _resample(x[:, start:start + w], length)


def warp(x, u, rate: float):
    """Drop, duplicate or silence frames (u: per-frame uniforms), then crop/wrap-pad to length."""
    import tensorflow as tf

    length = x.shape[1]
    drop = u < rate / 3
    dup = (u >= rate / 3) & (u < 2 * rate / 3)
    silence = (u >= 2 * rate / 3) & (u < rate)
    x = x * tf.cast(~silence, x.dtype)[None, :]
    counts = tf.where(drop, 0, tf.where(dup, 2, 1))
    idx = tf.repeat(tf.range(length), counts)
    idx = tf.cond(tf.size(idx) > 0, lambda: idx, lambda: tf.range(length))
    return _fit_length(tf.gather(x, idx, axis=1), length, 0.0)


def relative_keys(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per song, the semitone shift s such that rolling its pitch classes by -s aligns it with
    the first song of its work (OTI of the mean pitch-class profiles, Serra et al. 2008)."""
    profile = np.asarray(x, np.float64)[:, :PITCH].mean(axis=2)
    keys = np.zeros(len(profile), np.int32)
    for w in np.unique(labels):
        rows = np.flatnonzero(labels == w)
        ref = profile[rows[0]]
        rolled = np.stack([np.roll(ref, s) for s in range(PITCH)])  # (12, 12)
        keys[rows] = np.argmax(profile[rows] @ rolled.T, axis=1)
    return keys


def move_notes(x, seed, n_moves: int, min_frames: int, max_frames: int, tiled: bool):
    """Content variation as between versions (a melody note sung a step higher, a substituted
    chord): `n_moves` times, in a random span of min..max frames, move one pitch class's
    energy (drawn by its energy there) 1 or 2 semitones up or down."""
    import tensorflow as tf

    base = x[:PITCH]
    length = tf.shape(base)[1]
    t = tf.range(length)
    for i in range(n_moves):
        s = tf.random.experimental.stateless_fold_in(seed, i)
        u = tf.random.stateless_uniform([3], seed=s)
        span = min_frames + tf.cast(u[0] * (max_frames - min_frames + 1), tf.int32)
        start = tf.cast(u[1] * tf.cast(tf.maximum(length - span, 1), tf.float32), tf.int32)
        mask = tf.cast((t >= start) & (t < start + span), x.dtype)[None, :]  # (1, L)
        energy = tf.reduce_sum(base * mask, axis=1)  # (12,)
        src = tf.random.stateless_categorical(tf.math.log(energy + 1e-6)[None], 1,
                                              seed=tf.random.experimental.stateless_fold_in(s, 1))
        src = tf.cast(src[0, 0], tf.int32)
        step = tf.gather([-2, -1, 1, 2], tf.cast(u[2] * 4, tf.int32) % 4)
        dst = (src + step) % PITCH
        moved = base[src][None, :] * mask  # (1, L)
        base = (base - moved * tf.one_hot(src, PITCH, dtype=x.dtype)[:, None]
                + moved * tf.one_hot(dst, PITCH, dtype=x.dtype)[:, None])
    return _retile(base, tiled)


def remap(x, perm, key, tiled: bool):
    """A new work from a song: permute its 12 pitch classes by `perm` in its work's key frame
    (roll by -key, permute, roll back), so the versions of a work stay transpositions of each
    other."""
    import tensorflow as tf

    base = tf.roll(x[:PITCH], -key, axis=0)
    base = tf.roll(tf.gather(base, perm, axis=0), key, axis=0)
    return _retile(base, tiled)


def augment(x, seed, aug: dict[str, Any], work_seed=None, key=None):
    """Random augmentation of one (F, L) song with stateless ops seeded by `seed` (2,).

    With `work_seed` (shared by every song of one work in a batch) and the song's relative
    `key`, the work becomes a new one with probability `p_remap`: its pitch classes are permuted
    (`remap`) and, with probability `p_reverse`, its time axis is reversed. The new work's
    labels stay those of the original, which is never in the same batch.
    """
    import tensorflow as tf

    shape = x.shape
    tiled = is_tiled(shape[0])
    if work_seed is not None and (aug["p_remap"] or aug["p_reverse"]):
        w = tf.random.stateless_uniform([2], seed=work_seed)
        perm = tf.random.experimental.stateless_shuffle(tf.range(PITCH), seed=work_seed)
        x = tf.ensure_shape(tf.cond(w[0] < aug["p_remap"],
                                    lambda: remap(x, perm, key, tiled), lambda: x), shape)
        x = tf.ensure_shape(tf.cond(w[1] < aug["p_reverse"],
                                    lambda: tf.reverse(x, axis=[1]), lambda: x), shape)
    u = tf.random.stateless_uniform([9], seed=seed)
    sub = tf.random.experimental.stateless_fold_in(seed, 1)
    shift = tf.cast(tf.floor(1.0 + u[1] * (PITCH - 1)), tf.int32)  # 1..11
    r = aug["stretch_range"]
    factor = 1.0 - r + 2.0 * r * u[3]
    fraction = aug["crop_min"] + (1.0 - aug["crop_min"]) * u[6]
    frames = tf.random.stateless_uniform([shape[1] + 1], seed=sub)
    steps = [
        (u[0] < aug["p_transpose"], lambda v: transpose(v, shift, tiled)),
        (u[2] < aug["p_stretch"], lambda v: stretch(v, factor, u[4])),
        (u[5] < aug["p_crop"], lambda v: crop(v, fraction, u[7])),
        (frames[0] < aug["p_warp"], lambda v: warp(v, frames[1:], aug["warp_rate"])),
        (u[8] < aug["p_notes"],
         lambda v: move_notes(v, tf.random.experimental.stateless_fold_in(seed, 2),
                              int(aug["note_moves"]), *aug["note_frames"],
                              tiled)),
    ]
    for apply, fn in steps:
        x = tf.ensure_shape(tf.cond(apply, lambda: fn(x), lambda: x), shape)
    return x


# ---------------------------------------------------------------- datasets

def mode_for(train: dict[str, Any]) -> str:
    """The batch mode the loss and negative sampling call for."""
    if train["loss"] == "triplet" or train["negative_sampling"] == "batch":
        return "pk"
    if train["negative_sampling"] == "hardest":
        return "positives"
    if train["negative_sampling"] != "random":
        raise CoveridError(f"unknown train.negative_sampling {train['negative_sampling']!r}; "
                           "expected batch | random | hardest")
    return "pairs"


def batch_items(train: dict[str, Any], labels: np.ndarray | None = None) -> int:
    """Songs embedded per batch (two per pair; P x K in P x K batches, P at most the number of
    works in `labels` when given, as `sample_pk` draws)."""
    if mode_for(train) == "pk":
        p = train["works_per_batch"]
        if labels is not None:
            p = min(p, len(work_groups(labels, bool(train["singleton_positives"]))))
        return p * train["versions_per_work"]
    return 2 * train["batch_size"]


def _epoch_indices(labels: np.ndarray, train: dict[str, Any], mode: str, rng: np.random.Generator
                   ) -> tuple[np.ndarray, ...]:
    """One epoch's sampled rows, the label/target part, and per-song seeds (rows, extra, seeds)."""
    steps = train["steps_per_epoch"]
    single = bool(train["singleton_positives"])
    if mode == "pk":
        k = train["versions_per_work"]
        idx = sample_pk(labels, steps, train["works_per_batch"], k, rng, single)
        song_seeds = rng.integers(0, 2**31 - 1, size=(len(idx), 1, 2))
        work_seeds = np.repeat(rng.integers(0, 2**31 - 1, size=(len(idx) // k, 1, 2)), k, axis=0)
        return idx[:, None], labels[idx], np.concatenate([song_seeds, work_seeds], axis=1)
    if mode == "pairs":
        i, j, extra = sample_pairs(labels, steps, train["batch_size"], rng, single)
    else:
        i, j = sample_positive_pairs(labels, steps * train["batch_size"], rng, single)
        extra = np.stack([labels[i], labels[j]], axis=1)
    seeds = rng.integers(0, 2**31 - 1, size=(len(i), 3, 2))  # song i, song j, the pair's work
    return np.stack([i, j], axis=1), extra, seeds


def make_dataset(x: np.ndarray, labels: np.ndarray, train: dict[str, Any], seed: int,
                 epochs: int | range, augment_on: bool = True):
    """The batches of one epoch (int) or of consecutive epochs (range), in order; each epoch has
    `train.steps_per_epoch` batches of the mode `mode_for(train)`. One dataset for many epochs
    keeps tf.data from re-tracing its functions every epoch."""
    import tensorflow as tf

    mode = mode_for(train)
    epochs = range(epochs, epochs + 1) if isinstance(epochs, int) else epochs
    parts = [_epoch_indices(labels, train, mode, epoch_rng(seed, e)) for e in epochs]
    rows, extra, seeds = (np.concatenate([p[k] for p in parts]) for k in range(3))
    feats = tf.constant(np.asarray(x, np.float32))
    keys = tf.constant(relative_keys(x, labels))
    aug = dict(train["augment"])

    def load(i, s, ws):
        song = tf.gather(feats, i)
        return augment(song, s, aug, ws, tf.gather(keys, i)) if augment_on else song

    ds = tf.data.Dataset.from_tensor_slices((rows, extra, seeds))
    if mode == "pk":
        ds = ds.map(lambda r, e, s: (load(r[0], s[0], s[1]), e), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        bsize = len(rows) // (len(epochs) * train["steps_per_epoch"])
    else:
        ds = ds.map(lambda r, e, s: ((load(r[0], s[0], s[2]), load(r[1], s[1], s[2])), e),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        bsize = train["batch_size"]
    return ds.batch(bsize, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
