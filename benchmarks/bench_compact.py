"""Benchmark: a compact (<= --dim) embedding of the pipeline's fused model, against its joined one.

The pipeline's fused model (`--model`, preprocess.fusion) joins each feature's encoder, itself
whitened to model.projection_dim (512), into a 1,024-d embedding. This measures ways to bring
the joined embedding down to --dim dims, each fitted on the train songs only, with the same
trained weights:
- joint: PCA whitening of the joined (projected) embedding (model.fusion_dim's);
- joint_full: PCA whitening of the joined *full* embeddings (each encoder's 16,384-d bag counts,
  unit norm, weighted as in the joined one), so no information is dropped before the joint PCA;
- per_part: each encoder's full embedding whitened to --dim / n_parts dims, then joined;
- lda: joint_full's top `--lda-pca` whitened components, then the within-work covariance of the
  train songs whitened (WCCN) and the --dim directions that best separate the train works kept;
each at several eigenvalue shrinkages. With --augmented N, each is also fitted (suffix `_aug`)
on the train songs plus N augmented copies of each (train.augment's transpose, stretch, crop
and warp, both features of a song alike, no remapping: a copy keeps its song's work), and so is
the default's own per-encoder whitening to model.projection_dim (`default_aug`, 1,024 dims):
~1,000 train songs estimate at most ~1,000 principal axes of a 16,384-d bag. Rows: val MAP
plain and with the query expansion picked on val (as the tune stage does), test and hold-out
MAP on every query and on Qmax's queries. The variant with the best expanded val MAP is
`picked_on_val`; the hold-out is never used to choose. Writes reports/bench/compact.json.

Every full embedding is first power-normalised as the model's projection does it
(model.projection_power, whiten.power_normalise), or with `--power P` in its place (the
model's own projection is then refitted, as the train stage fits it, at that power: the
`joined` row is the default embedding at power P).

With --learned N, a linear map of the joined embedding to --dim is also trained (from its PCA
whitening) on the train songs and N augmented copies of each (`--remap`: each copy round a
new work, its pitch classes permuted), by the triplet loss and/or a relational distillation
(`learned_projection`); --skip-whitening leaves out the whitening variants.

    .venv/bin/python benchmarks/bench_compact.py [--model data/models/encoder] [--dim 512]
        [--shrinkages 0.03 0.1 0.3 1] [--augmented 8]
    .venv/bin/python benchmarks/bench_compact.py --learned 8 --skip-whitening --lr 1e-4
        --steps 0 500 2000 --triplet 1 --distill 0 1 --out reports/bench/compact_learned.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from bench_holdout import rank  # noqa: E402
from bench_projection import Precomputed  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params  # noqa: E402
from coverid.core.io import read_json, write_json  # noqa: E402

OUT = Path("reports/bench/compact.json")
SPLITS = ("train", "val", "test", "holdout")


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def joined(parts: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Unit-norm parts weighted by w_i / sqrt(sum w^2) and concatenated (as fuse_encoders)."""
    norm = float(np.sqrt(np.sum(np.square(weights))))
    return np.concatenate([unit(p) * (w / norm) for p, w in zip(parts, weights)], axis=1)


def pca_basis(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, principal axes (d, dim), their variances) of the rows of `x`, from the (n, n) Gram
    matrix of the centred rows: whiten.whitening's SVD in a fraction of the time when there are
    far more dims than rows."""
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    xc = x - mean
    lam, u = np.linalg.eigh(xc @ xc.T)
    top = np.argsort(lam)[::-1][:dim]
    lam, u = np.maximum(lam[top], 1e-30), u[:, top]
    return mean, (xc.T @ u) / np.sqrt(lam), lam / len(x)


def whiten_basis(basis: tuple[np.ndarray, np.ndarray, np.ndarray], dim: int,
                 shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of whiten.whitening to `dim` dims from a pca_basis (of at least `dim` axes)."""
    from coverid.model.whiten import whitening_of_axes

    return whitening_of_axes(basis[0], basis[1][:, :dim], basis[2][:dim], shrinkage)


def augmented_pool(full_models: list[Any], x: np.ndarray, originals: list[np.ndarray],
                   labels: np.ndarray, aug: dict[str, Any], copies: int, seed: int,
                   remap: bool = False, batch: int = 128, powers: list[float] | None = None
                   ) -> tuple[list[np.ndarray], np.ndarray]:
    """(each encoder's full embeddings, work labels) of `x`'s songs (stacked features; their
    embeddings by each model, `originals`, already computed) followed by `copies` augmented
    copies of every song (pairs.augment, both features alike). Without `remap` a copy keeps its
    song's work; with it, copy round r makes a new work of each work (its pitch classes
    permuted, the same way for all its versions, as bench_index's real_collection), so the pool
    holds (1 + copies) x as many works. `powers`: each encoder's power_normalise of the copies
    (as `originals` had)."""
    from bench_index import augmented_batches
    from tqdm import tqdm

    from coverid.model.embedder import make_embed_fn
    from coverid.model.whiten import power_normalise
    from coverid.train.pairs import encode_labels, relative_keys

    n, n_parts = len(x), len(full_models)
    x = np.ascontiguousarray(x, np.float32)
    codes = encode_labels(labels)
    rows = np.tile(np.arange(n), copies)
    rnd = np.repeat(np.arange(1, copies + 1), n)
    seeds = np.stack([rnd * n + rows, np.full_like(rows, seed)], axis=1).astype(np.int64)
    work_seeds = np.stack([rnd, codes[rows] + 1_000_000], axis=1).astype(np.int64)
    aug = {**aug, "p_remap": 1.0 if remap else 0.0, "p_reverse": 0.0}
    ds = augmented_batches(x, relative_keys(x, codes), rows, seeds, work_seeds, aug, n_parts, batch)
    fns = [make_embed_fn(m) for m in full_models]
    part = x.shape[1] // n_parts
    out = [[np.asarray(o, np.float32)] for o in originals]
    for b in tqdm(ds, total=-(-len(rows) // batch), desc="augmented", unit="batch", mininterval=10):
        for j, fn in enumerate(fns):
            e = np.asarray(fn(b[:, j * part:(j + 1) * part]), np.float32)
            out[j].append(e if powers is None else power_normalise(e, powers[j]))
    pool_labels = np.concatenate([codes, (rnd * (codes.max() + 1) if remap else 0) + codes[rows]])
    return [np.concatenate(o) for o in out], pool_labels


def learned_projection(x: np.ndarray, labels: np.ndarray, init: tuple[np.ndarray, np.ndarray],
                       steps: list[int], distill: float, seed: int, triplet: float = 1.0,
                       lr: float = 1e-3, p: int = 64, k: int = 4, temperature: float = 0.05
                       ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(step, W, b) after each of `steps` Adam steps (0: `init` itself) of a linear map x W + b
    (unit-normed) from `init`, trained on P x K batches of `x`'s rows (`labels`: their works)
    by `triplet` x the batch-hard soft-margin triplet loss plus `distill` x the KL divergence
    from the teacher's (x's own) softmax(cosine / temperature) neighbour distribution in the
    batch to the student's (a relational distillation, as Re-MOVE distils a wider model's
    distances into a compact one)."""
    import tensorflow as tf

    from coverid.model.losses import batch_hard_triplet_loss
    from coverid.train.pairs import sample_pk

    w, b = tf.Variable(init[0]), tf.Variable(init[1])
    opt = tf.keras.optimizers.Adam(lr)
    xs = tf.constant(x / np.linalg.norm(x, axis=1, keepdims=True), tf.float32)
    off = tf.constant(-1e9 * np.eye(p * k), tf.float32)

    @tf.function
    def step(rows, lab):
        t = tf.gather(xs, rows)
        with tf.GradientTape() as tape:
            y = tf.math.l2_normalize(t @ w + b, axis=1)
            loss = triplet * batch_hard_triplet_loss(lab, y, 0.0, True)
            if distill:
                pt = tf.nn.softmax((t @ tf.transpose(t)) / temperature + off, axis=1)
                ls = tf.nn.log_softmax((y @ tf.transpose(y)) / temperature + off, axis=1)
                loss += distill * tf.reduce_mean(tf.reduce_sum(pt * (tf.math.log(pt + 1e-12) - ls), 1))
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
        return loss

    rng = np.random.default_rng(seed)
    idx = sample_pk(labels, max(steps), p, k, rng, False).reshape(max(steps), -1)
    if 0 in steps:
        yield 0, w.numpy(), b.numpy()
    for i in range(1, max(steps) + 1):
        step(tf.constant(idx[i - 1]), tf.constant(labels[idx[i - 1]]))
        if i in steps:
            yield i, w.numpy(), b.numpy()


def lda_projection(x: np.ndarray, labels: np.ndarray, dim: int, pca: int, shrinkage: float,
                   basis: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(W, b): PCA whitening to `pca` dims, then the within-work covariance (of works with two or
    more train songs) whitened with shrinkage, then the top `dim` axes of the between-work
    scatter of the whitened work means; x W + b. `basis`: x's pca_basis, when already known."""
    w1, b1 = whiten_basis(basis or pca_basis(x, pca), pca, 0.0)
    y = x.astype(np.float64) @ w1 + b1
    works, inv = np.unique(labels, return_inverse=True)
    means = np.zeros((len(works), y.shape[1]))
    np.add.at(means, inv, y)
    counts = np.bincount(inv)
    means /= counts[:, None]
    multi = counts[inv] > 1
    r = y[multi] - means[inv[multi]]
    sw = r.T @ r / max(len(r) - int((counts > 1).sum()), 1)
    lam, v = np.linalg.eigh(sw)
    lam = np.maximum(lam, 0) + shrinkage * lam.mean()
    w2 = v / np.sqrt(lam)
    z = (means - means.mean(0)) @ w2
    _, _, vt = np.linalg.svd(z * np.sqrt(counts)[:, None], full_matrices=False)
    k = min(dim, vt.shape[0])
    w = w1.astype(np.float64) @ w2 @ vt[:k].T
    return w.astype(np.float32), (b1.astype(np.float64) @ w2 @ vt[:k].T).astype(np.float32)


def variants(full: dict, proj: dict, kernels: list[tuple[np.ndarray, np.ndarray]], weights: list[float],
             labels: np.ndarray, dim: int, shrinkages: list[float], lda_pca: int,
             pool: tuple[list[np.ndarray], np.ndarray] | None = None) -> Iterator[tuple[dict, dict]]:
    """(description, {split: embedding}) of each way to `dim` dims, fitted on the train songs
    (`labels`: their works, for the LDA) and, with `pool` (each encoder's full embeddings of the
    train songs and their augmented copies, as augmented_pool), on those too. `kernels`: each
    encoder's projection (W, b)."""
    from coverid.model.whiten import project

    n_parts = len(weights)
    joined_proj = {s: joined(proj[s], weights) for s in SPLITS}
    joined_full = {s: joined(full[s], weights) for s in SPLITS}
    yield {"method": "joined", "dims": int(joined_proj["val"].shape[1])}, joined_proj
    yield {"method": "joined_full", "dims": int(joined_full["val"].shape[1])}, joined_full
    fits = [("", full["train"], labels)]
    if pool is not None:
        fits.append(("_aug", *pool))
    proj_dims = [int(k0.shape[1]) for k0, _ in kernels]
    for suffix, fit_full, fit_labels in fits:
        fit_joined = joined(fit_full, weights)
        n_fit = {"fit_songs": len(fit_joined)}
        # each basis once, for every shrinkage
        bases = {"joint": pca_basis(joined([project(f, *kb) for f, kb in zip(fit_full, kernels)],
                                           weights), dim),
                 "joint_full": pca_basis(fit_joined, max(dim, lda_pca)),
                 "parts": [pca_basis(f, max(proj_dims) if suffix else dim // n_parts) for f in fit_full]}
        for s in shrinkages:
            if suffix:
                per = {n: [] for n in SPLITS}
                for i, basis in enumerate(bases["parts"]):
                    k, b = whiten_basis(basis, proj_dims[i], s)
                    for n in SPLITS:
                        per[n].append(project(full[n][i], k, b))
                yield ({"method": "default" + suffix, "shrinkage": s, **n_fit, "dims": sum(proj_dims)},
                       {n: joined(per[n], weights) for n in SPLITS})
            for method, src in (("joint", joined_proj), ("joint_full", joined_full)):
                k, b = whiten_basis(bases[method], dim, s)
                yield ({"method": method + suffix, "shrinkage": s, **n_fit, "dims": dim},
                       {n: project(src[n], k, b) for n in SPLITS})
            per = {n: [] for n in SPLITS}
            for i, basis in enumerate(bases["parts"]):
                k, b = whiten_basis(basis, dim // n_parts, s)
                for n in SPLITS:
                    per[n].append(project(full[n][i], k, b))
            yield ({"method": "per_part" + suffix, "shrinkage": s, **n_fit, "dims": dim},
                   {n: joined(per[n], weights) for n in SPLITS})
            k, b = lda_projection(fit_joined, fit_labels, dim, lda_pca, s, bases["joint_full"])
            yield ({"method": "lda" + suffix, "shrinkage": s, "pca": lda_pca, **n_fit,
                    "dims": int(k.shape[1])},
                   {n: project(joined_full[n], k, b) for n in SPLITS})


def learned_variants(full: dict, kernels: list[tuple[np.ndarray, np.ndarray]], weights: list[float],
                     pool: tuple[list[np.ndarray], np.ndarray], dim: int, steps: list[int],
                     distills: list[float], seed: int, triplet: float, lr: float, remap: bool
                     ) -> Iterator[tuple[dict, dict]]:
    """learned_projection of the joined (default) embedding to `dim` dims, trained on `pool`
    (augmented_pool), from the PCA whitening of the pool's joined embeddings; one
    variant per distillation weight and number of steps."""
    from coverid.model.whiten import project

    def joined_default(parts: list[np.ndarray]) -> np.ndarray:
        return joined([project(f, *kb) for f, kb in zip(parts, kernels)], weights)

    src = {n: joined_default(full[n]) for n in SPLITS}
    x = joined_default(pool[0])
    init = whiten_basis(pca_basis(x, dim), dim, 0.3)
    for distill in distills:
        for n_steps, w, b in learned_projection(x, pool[1], init, steps, distill, seed, triplet, lr):
            yield ({"method": "learned", "remap": remap, "triplet": triplet, "distill": distill, "lr": lr,
                    "steps": n_steps, "fit_songs": len(x),
                    "fit_works": int(len(np.unique(pool[1]))), "dims": dim},
                   {n: project(src[n], w, b) for n in SPLITS})


def scored(desc: dict, emb: dict, sets: dict, params: dict, baselines: dict) -> dict[str, Any]:
    """desc with the expansion picked on val and the test and hold-out MAP (all queries and
    Qmax's) of embeddings {split: (N, D)}, printed as it goes."""
    from coverid.data.splits import HOLDOUT
    from coverid.eval.evaluate import baseline_queries
    from coverid.eval.expansion import select_expansion

    chunk = int(params["evaluate"]["chunk_size"])
    qe = select_expansion(emb["val"], sets["val"].work_id, "euclidean", None, params["tune"]["expansion"],
                          chunk)
    row: dict[str, Any] = {**desc, "expansion": qe}
    for split in ("test", HOLDOUT):
        queries = baseline_queries(params, sets[split].work_id, baselines[split])
        row[split] = rank(Precomputed({id(sets[split].features): emb[split]}), sets[split], qe, chunk,
                          queries)
    print(f"{desc}: val {qe['val_map_plain']:.4f} (expanded {qe['val_map']:.4f}) "
          f"| test {row['test']} | hold-out {row[HOLDOUT]}", flush=True)
    return row


def main() -> None:
    """Embed every split with each encoder (full and projected), rank each compact variant."""
    from coverid.data.splits import HOLDOUT, load_dataset, split_mask
    from coverid.model.embedder import Embedder, load_embedder
    from coverid.model.encoders import full_embedding, fused_parts, projection_of
    from coverid.model.whiten import power_normalise, project, whitening
    from coverid.train.fusion import part_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=paths.MODEL_DIR)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shrinkages", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--lda-pca", type=int, default=768, help="whitened dims before the LDA")
    ap.add_argument("--augmented", type=int, default=0,
                    help="also fit on this many augmented copies of each train song (0: off)")
    ap.add_argument("--learned", type=int, default=0,
                    help="learned projections on this many augmented copies of the train songs")
    ap.add_argument("--steps", type=int, nargs="+", default=[500, 2000, 5000])
    ap.add_argument("--distill", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--triplet", type=float, default=1.0, help="the triplet loss's weight")
    ap.add_argument("--lr", type=float, default=1e-3, help="the learned projection's learning rate")
    ap.add_argument("--remap", action="store_true",
                    help="the learned projections' copies are new works (pitch classes permuted)")
    ap.add_argument("--skip-whitening", action="store_true", help="only the learned variants")
    ap.add_argument("--power", type=float, default=None,
                    help="power-normalise the full embeddings with this (default: the model's own)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    fs, splits = load_dataset(params)
    model = load_embedder(args.model)
    parts = fused_parts(model.encoder)
    if not parts:
        raise SystemExit(f"{args.model}: not a fused model (preprocess.fusion is empty)")
    names = fs.parts()
    sets = {n: fs.take(split_mask(fs.work_id, splits, n)) for n in SPLITS}
    t0 = time.perf_counter()
    full: dict[str, list] = {n: [] for n in SPLITS}
    proj: dict[str, list] = {n: [] for n in SPLITS}
    powers = [projection_of(parts[n]).power if args.power is None else args.power for n in names]
    for name, power in zip(names, powers):
        full_model = Embedder(full_embedding(parts[name]), {"metric": "euclidean"})
        for n in SPLITS:
            full[n].append(power_normalise(full_model.embed(sets[n].part(name).features), power))
    embed_seconds = round(time.perf_counter() - t0, 1)
    kernels = [(np.asarray(projection_of(parts[n]).kernel), np.asarray(projection_of(parts[n]).bias))
               for n in names]
    if args.power is not None:  # the default whitening refitted at that power
        shrinkage = params["model"]["projection_shrinkage"]
        kernels = [whitening(f, int(k.shape[1]), shrinkage) for f, (k, _) in zip(full["train"], kernels)]
    proj = {n: [project(f, *kb) for f, kb in zip(full[n], kernels)] for n in SPLITS}
    pool, pool_seconds = None, 0.0
    if args.augmented:
        t0 = time.perf_counter()
        pool = augmented_pool([full_embedding(parts[n]) for n in names], sets["train"].features,
                              full["train"], sets["train"].work_id, dict(params["train"]["augment"]),
                              args.augmented, int(params["seed"]), powers=powers)
        pool_seconds = round(time.perf_counter() - t0, 1)
    found = variants(full, proj, kernels, part_weights(params, len(names)), sets["train"].work_id,
                     args.dim, args.shrinkages, args.lda_pca, pool)
    if args.skip_whitening:
        found = itertools.islice(found, 2)  # the joined references only
    if args.learned:
        t0 = time.perf_counter()
        remapped = augmented_pool([full_embedding(parts[n]) for n in names], sets["train"].features,
                                  full["train"], sets["train"].work_id, dict(params["train"]["augment"]),
                                  args.learned, int(params["seed"]), remap=args.remap,
                                  powers=powers)
        pool_seconds += round(time.perf_counter() - t0, 1)
        found = itertools.chain(found, learned_variants(
            full, kernels, part_weights(params, len(names)), remapped, args.dim, args.steps,
            args.distill, int(params["seed"]), args.triplet, args.lr, args.remap))
    baselines = {"test": read_json(paths.REPORTS / "baseline.json", "baseline report"),
                 HOLDOUT: read_json(paths.REPORTS / "baseline_holdout.json", "baseline report")}
    rows = [scored(desc, emb, sets, params, baselines) for desc, emb in found]
    compact = [r for r in rows if r["dims"] <= args.dim]
    # --skip-whitening without --learned ranks the joined references only: nothing to pick
    best = max(compact, key=lambda r: (r["expansion"]["val_map"], r["expansion"]["val_map_plain"]),
               default={})
    write_json(args.out, {
        "seed": params["seed"], "model": str(args.model), "dim": args.dim, "power": powers,
        "embed_seconds": embed_seconds,
        "augmented": args.augmented, "learned": args.learned, "augmented_seconds": pool_seconds,
        "qmax": {s: round(b["qmax"]["map"], 4) for s, b in baselines.items()},
        "picked_on_val": {k: best[k] for k in ("method", "shrinkage", "triplet", "distill", "lr", "steps",
                                                   "dims")
                          if k in best} or None, "runs": rows})


if __name__ == "__main__":
    main()
