"""Benchmark the song index and `identify`; figures go to reports/bench/index.json.

Three parts (each can be skipped):
  identify  one synthetic 4-minute WAV against an index of 10,000 random 512-d embeddings,
            with a random-weights seed encoder saved by save_embedder: seconds for decode,
            features, model input, embedding and search, and the whole `identify()` call.
  pilot     index kinds on a subset (default 100,000 vectors) of random-uniform and clustered
            512-d data: exact search, HNSW (efSearch sweep), IVF-Flat (nprobe sweep) and the
            4-bit PQ fast-scan codes (candidate sweep), all followed by the same exact
            re-ranking; recall@10 against exact search and ms per single query.
  ann       the library's own path (build_index / load_index / SongIndex.search) at 1,000,000
            vectors with params.yaml's index section: build time, index/embedding sizes, peak
            memory, recall@10 and ms per query for a sweep of `candidates`.

  real      (with --model DIR) the same library path on a trained model's real embeddings
            (reports/bench/index_real.json, see `real_collection`): the processed corpus's songs
            plus rounds of new works made from them as in training (every work's pitch classes
            permuted, each version then augmented: transpose, stretch, crop, warp; pairs.py),
            all embedded by the model; queries are held-out real songs and fresh versions of the
            new works. Each --real-n size is measured with each --kinds index kind; with
            --tile-to, the largest real set is also tiled to that size (copies rotated by seeded
            random orthogonal matrices: real distances within a copy, not new model outputs).
            --storages float16,float32 measures each index.storage on the same vectors;
            --expansion-k K also times each search with query expansion (stand-in expanded rows)
            and, at each --real-n size, measures the expanded search's recall@10 against the
            exact expanded ranking (expansion_recall).

All FAISS work runs on `--threads` OpenMP threads (default 2, the target machine).

    .venv/bin/python benchmarks/bench_index.py [--skip identify,pilot,ann] [--n 1000000]
        [--pilot-n 100000] [--queries 100] [--data random,clustered] [--threads 2]
        [--model DIR --real-n 10000 100000 --kinds flat,pqfs,hnsw --tile-to 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.config import load_params
from coverid.core.io import write_json

OUT = Path("reports/bench/index.json")
REAL_OUT = Path("reports/bench/index_real.json")
DIM = 512
K = 10


def rss_gb() -> float:
    """Current resident memory of this process (GB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def load_avg() -> list[float]:
    """1, 5 and 15-minute load averages (the machine is shared: timings depend on it)."""
    return [round(x, 2) for x in os.getloadavg()]


def make_data(kind: str, n: int, nq: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(database (n, dim), queries (nq, dim)) float32.

    random: uniform in [0, 1) (no structure: the hardest case for any ANN index).
    clustered: n / 10 "works" with uniform centres, each point centre + N(0, 0.1^2) per
    dimension (a cover's embedding is near its work's); queries are new points of random works.
    """
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random((n, dim), dtype=np.float32), rng.random((nq, dim), dtype=np.float32)
    n_works = max(1, n // 10)
    centres = rng.random((n_works, dim), dtype=np.float32)
    xb = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):  # in chunks: bounded temporaries
        e = min(n, s + 100_000)
        xb[s:e] = centres[np.arange(s, e) % n_works] + 0.1 * rng.standard_normal((e - s, dim), dtype=np.float32)
    xq = centres[rng.integers(0, n_works, nq)] + 0.1 * rng.standard_normal((nq, dim), dtype=np.float32)
    return xb, xq


def ground_truth(xb: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Exact top-K rows per query (FAISS flat, batched)."""
    import faiss

    flat = faiss.IndexFlatL2(xb.shape[1])
    flat.add(xb)
    return flat.search(xq, K)[1]


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean |found top-K & exact top-K| / K."""
    return float(np.mean([len(set(f[:K].tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)]))


# ---------------------------------------------------------------- identify end to end


def synth_song(path: Path, seconds: float, sr: int = 44100, seed: int = 0) -> None:
    """A chord progression of sines plus noise, 16-bit mono WAV."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * 2.0)) / sr
    blocks = []
    for i in range(int(np.ceil(seconds / 2.0))):
        root = 220.0 * 2 ** (rng.integers(0, 12) / 12)
        chord = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 2 ** (4 / 12), 2 ** (7 / 12)))
        blocks.append(chord / 4)
    y = np.concatenate(blocks)[: int(sr * seconds)]
    y = y + 0.01 * rng.standard_normal(len(y))
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")


def bench_identify(params: dict[str, Any], n_index: int, work: Path) -> dict[str, Any]:
    """Time identify for one 4-minute song against `n_index` random embeddings."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from coverid.core.config import params_hash
    from coverid.features.extract import compute_feature, load_audio
    from coverid.features.transform import to_model_input
    from coverid.model.embedder import save_embedder
    from coverid.model.encoders import build_encoder
    from coverid.search import identify as ident
    from coverid.search.index import Song, build_index, load_index

    pre = params["preprocess"]
    song = work / "song.wav"
    synth_song(song, 240.0)
    rows = 23 if pre["tile"] else 12
    encoder = build_encoder(params["model"], (rows, int(pre["spect_len"])))
    config = {"arch": params["model"]["arch"], "loss": params["train"]["loss"],
              "embedding_dim": int(encoder.output_shape[-1]), "metric": "euclidean",
              "feature": pre["feature"], "spect_len": int(pre["spect_len"]), "tile": bool(pre["tile"]),
              "max_frames": pre["max_frames"], "preprocess": pre, "train_run_id": None,
              "params_hash": params_hash(params)}
    save_embedder(work / "model", encoder, config)

    t0 = time.perf_counter()
    embedder = ident.open_model(work / "model")
    t_model = time.perf_counter() - t0
    identity = ident.model_identity(embedder, ident.model_source(work / "model"))
    dim = identity["dim"]
    rng = np.random.default_rng(1)
    emb = rng.random((n_index, dim), dtype=np.float32)  # sigmoid-range, like the seed encoder's
    songs = [Song(perf_id=f"P_{i}", work_id=f"W_{i // 10}") for i in range(n_index)]
    build_index(work / "idx", emb, songs, identity, ident.feature_config(embedder), params["index"])
    t0 = time.perf_counter()
    index = load_index(work / "idx")
    t_index = time.perf_counter() - t0

    pcfg = ident.preprocess_config(embedder)
    cfg, sr = pcfg["audio"], int(pcfg["audio"]["sample_rate"])
    # warm-up: essentia import, the first decode and the embedding function's tracing are
    # once-per-process costs, reported apart from the per-song split
    t0 = time.perf_counter()
    load_audio(song, sr, 0.0, 0.0)
    t_first_decode = time.perf_counter() - t0
    embedder.embed(ident.probe_input(ident.feature_config(embedder)))
    t = {}
    t0 = time.perf_counter()
    audio = load_audio(song, sr, float(cfg["min_duration_s"]), float(cfg["silence_rms"]))
    t["decode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = compute_feature(audio, sr, pcfg["feature"], cfg)
    t["features_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inp = to_model_input(x, pcfg["spect_len"], pcfg["max_frames"], pcfg["tile"])
    t["model_input_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = embedder.embed(inp[None])
    t["embed_s"] = time.perf_counter() - t0
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        index.search(q, K, [index.self_matches(song, None)])
    t["search_s"] = (time.perf_counter() - t0) / reps
    t["sha1_s"] = _timed(lambda: ident.file_sha1(song))
    t["sum_s"] = sum(t.values())
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ident.identify([song], index, embedder, K, None, timings)
    whole = time.perf_counter() - t0
    return {"song_seconds": 240.0, "index_songs": n_index, "index_kind": index.kind, "dim": dim,
            "arch": params["model"]["arch"], "frames": int(len(x)), **{k: round(v, 4) for k, v in t.items()},
            "identify_call_s": round(whole, 4),
            "identify_call_split_s": {k: round(v, 4) for k, v in timings.items()},
            "once_per_process_s": {"load_model": round(t_model, 3), "load_index": round(t_index, 3),
                                   "first_decode_with_essentia_import": round(t_first_decode, 3)}}


def _timed(fn) -> float:
    """Seconds one call of `fn` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- pilot: index kinds on a subset


def single_query_ms(search, xq: np.ndarray, n: int = 30) -> float:
    """Mean ms of `search(one query)` over the first n queries."""
    t0 = time.perf_counter()
    for i in range(min(n, len(xq))):
        search(xq[i:i + 1])
    return (time.perf_counter() - t0) / min(n, len(xq)) * 1e3


def rerank(xb: np.ndarray, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Exact top-K of the candidate rows."""
    cand = cand[cand >= 0]
    d = ((xb[cand] - q) ** 2).sum(1)
    return cand[np.argsort(d, kind="stable")[:K]]


def bench_pilot(n: int, nq: int, data: str) -> dict[str, Any]:
    """Recall@10 / ms per query of each index kind on `n` vectors (all re-ranked exactly)."""
    import faiss

    xb, xq = make_data(data, n, nq, DIM)
    truth = ground_truth(xb, xq)
    out: dict[str, Any] = {"n": n, "data": data}
    flat = faiss.IndexFlatL2(DIM)
    flat.add(xb)
    out["flat_ms"] = round(single_query_ms(lambda q: flat.search(q, K), xq), 2)

    def sweep(index, name: str, setter, values, n_cand) -> list[dict[str, float]]:
        rows = []
        for v in values:
            setter(index, v)
            kc = n_cand(v)
            _, cand = index.search(xq, kc)
            rec = recall([rerank(xb, xq[i], cand[i]) for i in range(nq)], truth)
            ms = single_query_ms(lambda q: rerank(xb, q[0], index.search(q, kc)[1][0]), xq)
            rows.append({name: v, "recall@10": round(rec, 4), "ms": round(ms, 2)})
            print(f"  {data} {type(index).__name__} {name}={v}: recall {rec:.3f}, {ms:.2f} ms", flush=True)
        return rows

    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, 32)
    hnsw.hnsw.efConstruction = 40
    hnsw.add(xb)
    out["hnsw32"] = {"build_s": round(time.perf_counter() - t0, 1), "sweep": sweep(
        hnsw, "ef_search", lambda i, v: setattr(i.hnsw, "efSearch", v), (64, 128, 256, 512, 1024), lambda v: 100)}
    del hnsw
    nlist = int(4 * np.sqrt(n))
    t0 = time.perf_counter()
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(DIM), DIM, nlist)
    ivf.train(xb[:max(nlist * 39, 50_000)])
    ivf.add(xb)
    out[f"ivf{nlist}_flat"] = {"build_s": round(time.perf_counter() - t0, 1), "sweep": sweep(
        ivf, "nprobe", lambda i, v: setattr(i, "nprobe", v),
        [p for p in (8, 32, 64, 128, 256) if p <= nlist], lambda v: 100)}
    del ivf
    for m in (DIM // 4, DIM // 2):
        t0 = time.perf_counter()
        pq = faiss.IndexPQFastScan(DIM, m, 4)
        pq.train(xb[:100_000])
        pq.add(xb)
        out[f"pq{m}x4fs"] = {"build_s": round(time.perf_counter() - t0, 1), "bytes_per_vector": m // 2,
                             "sweep": sweep(pq, "candidates", lambda i, v: None, (100, 300, 1000, 3000), lambda v: v)}
    return out


# ---------------------------------------------------------------- ann: the library at 1M


def bench_ann(n: int, nq: int, data: str, icfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """build_index / load_index / SongIndex.search on `n` vectors, candidates sweep."""
    from coverid.search.index import Song, build_index, load_index

    rss0 = rss_gb()
    t0 = time.perf_counter()
    xb, xq = make_data(data, n, nq, DIM)
    t_gen = time.perf_counter() - t0
    print(f"{data}: generated {n} x {DIM} in {t_gen:.0f} s", flush=True)
    t0 = time.perf_counter()
    truth = ground_truth(xb, xq)
    t_truth = time.perf_counter() - t0
    print(f"{data}: exact top-{K} of {nq} queries in {t_truth:.0f} s", flush=True)
    songs = [Song(perf_id=f"P_{i}", work_id=f"W_{i // 10}") for i in range(n)]
    model = {"source": "random", "metric": "euclidean", "dim": DIM, "config_hash": "bench", "head": None}
    rss1 = rss_gb()
    t0 = time.perf_counter()
    build_index(work / "idx", xb, songs, model, {"feature": "none"}, icfg)
    t_build = time.perf_counter() - t0
    peak_build = peak_rss_gb()
    print(f"{data}: built in {t_build:.0f} s", flush=True)
    sizes = {p.name: round(p.stat().st_size / 1e6, 1) for p in (work / "idx").iterdir()}
    del songs
    t0 = time.perf_counter()
    index = load_index(work / "idx")
    t_load = time.perf_counter() - t0
    rss_loaded = rss_gb()
    exact_ms = single_query_ms(lambda q: _flat_once(xb, q), xq, 5)
    rows = []
    for cand in sorted({250, 500, 1000, 2000, int(icfg["candidates"])}):
        index.meta["index"]["candidates"] = cand
        found = [np.array([h.row for h in index.search(xq[i:i + 1], K)[0]]) for i in range(nq)]
        rec = recall(found, truth)
        ms = single_query_ms(lambda q: index.search(q, K), xq, 50)
        rows.append({"candidates": cand, "recall@10": round(rec, 4), "ms_per_query": round(ms, 2)})
        print(f"  {data} n={n} candidates={cand}: recall@10 {rec:.3f}, {ms:.1f} ms/query", flush=True)
    return {"n": n, "dim": DIM, "data": data, "kind": index.kind, "queries": nq,
            "settings": {k: icfg[k] for k in ("approx", "pq_dims", "train_max", "candidates")},
            "build_s": round(t_build, 1), "load_s": round(t_load, 2), "file_mb": sizes,
            "faiss_index_mb": sizes.get("index.faiss"),
            "rss_gb": {"data": round(rss1 - rss0, 2), "peak_process": round(peak_build, 2),
                       "after_load": round(rss_loaded, 2)},
            "exact_flat_ms_per_query_numpy": round(exact_ms, 1), "sweep": rows}


def _flat_once(xb: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact single-query search with FAISS (no index kept: knn on the raw array)."""
    import faiss

    return faiss.knn(q, xb, K)[1]


# ---------------------------------------------------------------- real: a trained model's embeddings


def augmented_batches(x: np.ndarray, keys: np.ndarray, rows: np.ndarray, seeds: np.ndarray,
                      work_seeds: np.ndarray, aug: dict[str, Any], n_parts: int, batch: int = 256):
    """A tf.data dataset of songs `x[rows]` augmented by pairs.augment (`seeds`; `work_seeds`:
    the remapping to a new work when aug's p_remap), every stacked feature of a fused input
    alike, in batches of `batch`."""
    import tensorflow as tf

    from coverid.train.pairs import augment

    feats, tkeys = tf.constant(x), tf.constant(keys)
    part = x.shape[1] // n_parts

    def one(i, s, ws):
        """A fused input's features (stacked rows) each get the same seeded augmentation."""
        song, key = tf.gather(feats, i), tf.gather(tkeys, i)
        return tf.concat([augment(song[j * part:(j + 1) * part], s, aug, ws, key)
                          for j in range(n_parts)], axis=0)

    return tf.data.Dataset.from_tensor_slices((rows, seeds, work_seeds)).map(
        one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch).prefetch(2)


def augmented_embeddings(embedder: Any, x: np.ndarray, keys: np.ndarray, rows: np.ndarray,
                         seeds: np.ndarray, work_seeds: np.ndarray, aug: dict[str, Any],
                         batch: int = 256) -> np.ndarray:
    """Embeddings of songs `x[rows]`, each remapped to a new work (its pitch classes permuted
    by `work_seeds`) and augmented (`seeds`) by pairs.augment, every stacked feature of a fused
    input alike; (len(rows), D) float32."""
    from tqdm import tqdm

    from coverid.features.transform import feature_parts
    from coverid.model.embedder import make_embed_fn

    n_parts = len(feature_parts(embedder.config["feature"]))
    ds = augmented_batches(x, keys, rows, seeds, work_seeds, aug, n_parts, batch)
    fn = make_embed_fn(embedder.encoder)
    out = np.empty((len(rows), embedder.dim), np.float32)
    start = 0
    for b in tqdm(ds, total=-(-len(rows) // batch), desc="embed", unit="batch", mininterval=10):
        out[start:start + len(b)] = np.asarray(fn(b))
        start += len(b)
    return out


def real_collection(embedder: Any, fs: Any, aug: dict[str, Any], n: int, nq: int, n_query_pool: int,
                    seed: int = 0) -> dict[str, Any]:
    """A database of `n` real model outputs and `nq` queries, with their work labels.

    Round 0 is the corpus itself, less nq / 2 held-out songs of works with other versions
    (the real queries). Round r >= 1 makes a new work of every corpus work: one permutation
    of its pitch classes for all its versions (seeded by (r, work)), then each version
    augmented on its own (transpose, stretch, crop, warp with train.augment's probabilities);
    the rounds run until the database has `n` songs. The other nq / 2 queries are fresh
    versions (new augmentation seeds, the same permutation) of new works with versions among
    the first `n_query_pool` database rows, so every size measured holds their works.
    """
    from coverid.train.pairs import encode_labels, relative_keys

    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(fs.features, np.float32)
    labels = encode_labels(fs.work_id)
    keys = relative_keys(x, labels)
    counts = np.bincount(labels)
    covered = np.flatnonzero(counts[labels] >= 2)  # songs whose work has another version
    held = np.sort(rng.choice(covered, nq // 2, replace=False))
    keep = np.setdiff1d(np.arange(len(x)), held)
    aug = {**aug, "p_remap": 1.0, "p_reverse": 0.0}
    n_new = max(0, n - len(keep))
    rounds = 1 + np.arange(n_new) // len(x)
    src = np.arange(n_new) % len(x)

    def seeds_of(r: np.ndarray, i: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray]:
        song = np.stack([r * len(x) + i, np.full_like(r, salt)], axis=1)
        work = np.stack([r, labels[i] + 1_000_000], axis=1)
        return song.astype(np.int64), work.astype(np.int64)

    t0 = time.perf_counter()
    real = embedder.embed(x)
    t_real = time.perf_counter() - t0
    t0 = time.perf_counter()
    s, ws = seeds_of(rounds, src, seed)
    new = augmented_embeddings(embedder, x, keys, src, s, ws, aug)
    t_new = time.perf_counter() - t0
    xb = np.concatenate([real[keep], new])[:n]
    work = np.concatenate([labels[keep], rounds * (labels.max() + 1) + labels[src]])[:n]
    # synthetic queries: new works with another version in the first n_query_pool rows
    pool = np.flatnonzero((np.arange(n_new) + len(keep) < n_query_pool) & (counts[labels[src]] >= 2))
    pick = np.sort(rng.choice(pool, nq - nq // 2, replace=False))
    s, ws = seeds_of(rounds[pick], src[pick], seed + 1)
    xq = np.concatenate([real[held], augmented_embeddings(embedder, x, keys, src[pick], s, ws, aug)])
    wq = np.concatenate([labels[held], rounds[pick] * (labels.max() + 1) + labels[src[pick]]])
    return {"xb": xb, "work": work, "xq": xq, "work_q": wq,
            "embed": {"corpus_songs": len(x), "corpus_s": round(t_real, 2),
                      "corpus_songs_per_s": round(len(x) / t_real, 1),
                      "new_songs": n_new, "new_s": round(t_new, 1),
                      "new_songs_per_s": round(n_new / max(t_new, 1e-9), 1)}}


def rotated_tiles(xb: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`xb` tiled to `n` rows: copy c > 0 is xb times a seeded random orthogonal matrix, so
    distances within a copy are the real ones and the copies overlap on the sphere."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, xb.shape[1]), np.float32)
    out[:len(xb)] = xb[:n]
    for c, start in enumerate(range(len(xb), n, len(xb)), start=1):
        q, r = np.linalg.qr(rng.standard_normal((xb.shape[1], xb.shape[1])))
        rot = (q * np.sign(np.diag(r))).astype(np.float32)
        m = min(len(xb), n - start)
        out[start:start + m] = xb[:m] @ rot
    return out


def bench_kind(xb: np.ndarray, work: np.ndarray, xq: np.ndarray, work_q: np.ndarray, kind: str,
               icfg: dict[str, Any], model: dict[str, Any], path: Path,
               candidates: tuple[int, ...], expansion_k: int = 0) -> dict[str, Any]:
    """build_index / load_index / SongIndex.search of one kind on `xb`: build seconds, sizes,
    memory, and per `candidates`: recall@10 against exact search, same-work@1, ms per query.
    With `expansion_k`, also ms per query of the search with query expansion (k nearest), on
    stand-in expanded rows (a copy of the embeddings: the same work per query, not the same
    answers), since expanding a million songs takes about an hour here."""
    from coverid.search.index import Song, build_index, load_index

    n = len(xb)
    cfg = {**icfg, "exact_max": n if kind == "flat" else 0, "approx": kind if kind != "flat" else icfg["approx"]}
    truth = ground_truth(xb, xq)
    songs = [Song(perf_id=f"P_{i}", work_id=f"W_{w}") for i, w in enumerate(work.tolist())]
    shutil.rmtree(path, ignore_errors=True)
    rss0 = rss_gb()
    t0 = time.perf_counter()
    build_index(path, xb, songs, model, {"feature": "bench"}, cfg)
    t_build = time.perf_counter() - t0
    del songs
    t0 = time.perf_counter()
    index = load_index(path)
    t_load = time.perf_counter() - t0
    sizes = {p.name: round(p.stat().st_size / 1e6, 1) for p in path.iterdir()}
    rows = []
    for cand in (candidates if kind != "flat" else (0,)):
        index.meta["index"]["candidates"] = cand
        found = [np.array([h.row for h in index.search(xq[i:i + 1], K)[0]]) for i in range(len(xq))]
        ms = single_query_ms(lambda q: index.search(q, K), xq, len(xq))
        top1 = float(np.mean([work[f[0]] == w for f, w in zip(found, work_q)]))
        rows.append({**({"candidates": cand} if kind != "flat" else {}),
                     "recall@10": round(recall(found, truth), 4), "same_work@1": round(top1, 4),
                     "ms_per_query": round(ms, 2)})
        print(f"  n={n} {kind} {rows[-1]}", flush=True)
    out = {"n": n, "kind": index.kind, "storage": str(index.embeddings.dtype),
           "build_s": round(t_build, 1), "load_s": round(t_load, 2),
           "file_mb": sizes, "bytes_per_song": {"faiss": round(sizes["index.faiss"] * 1e6 / n, 1),
                                                "embeddings": xb.shape[1] * index.embeddings.itemsize},
           "rss_gb_after_load": round(rss_gb() - rss0, 2), "sweep": rows}
    if expansion_k:
        out["expansion_timing"] = expansion_timing(path, xq, candidates if kind != "flat" else (0,),
                                                   expansion_k)
    del index
    shutil.rmtree(path, ignore_errors=True)
    return out


def expansion_timing(path: Path, xq: np.ndarray, candidates: tuple[int, ...],
                     k: int) -> list[dict[str, Any]]:
    """ms per query of the index at `path` searched with query expansion (k nearest, alpha 1)
    per number of candidates, its expanded rows stood in for by a copy of its embeddings
    (timing only)."""
    from coverid.search.index import EMB_FILE, EXPANDED_FILE, META_FILE, load_index

    meta = json.loads((path / META_FILE).read_text())
    meta["expansion"] = {"k": k, "alpha": 1.0}
    (path / META_FILE).write_text(json.dumps(meta))
    np.save(path / EXPANDED_FILE, np.load(path / EMB_FILE))
    qe = load_index(path)
    rows = []
    for cand in candidates:
        qe.meta["index"]["candidates"] = cand
        ms = single_query_ms(lambda q: qe.search(q, K), xq, len(xq))
        rows.append({**({"candidates": cand} if cand else {}), "k": k, "ms_per_query": round(ms, 2)})
        print(f"  n={len(qe.songs)} {qe.kind} with expansion {rows[-1]}", flush=True)
    return rows


def expansion_recall(xb: np.ndarray, xq: np.ndarray, icfg: dict[str, Any], model: dict[str, Any],
                     path: Path, k: int, candidates: tuple[int, ...]) -> dict[str, Any]:
    """The approximate index (icfg's kind) built with query expansion (k nearest, alpha 1) on
    `xb`: recall@10 of its expanded search against the exact expanded ranking (evaluate's:
    every song expanded with its exact k nearest, coverid.eval.expansion.augment, and the query
    with its exact k nearest), and ms per query, per number of candidates."""
    from coverid.eval.distance import pairwise
    from coverid.eval.expansion import augment, expand, nearest
    from coverid.search.index import Song, build_index

    cfg = {**icfg, "exact_max": 0}
    songs = [Song(perf_id=f"P_{i}") for i in range(len(xb))]
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    index = build_index(path, xb, songs, model, {"feature": "bench"}, cfg,
                        {"value": None, "expansion": {"k": k, "alpha": 1.0}})
    t_build = time.perf_counter() - t0
    idx, sims = nearest(xq, xb, k, 4096)
    exact = pairwise(expand(xq, xb[idx], sims, 1.0), augment(xb, k, 1.0, 4096))
    truth = np.argsort(exact, axis=1)[:, :K]
    rows = []
    for cand in candidates:
        index.meta["index"]["candidates"] = cand
        found = [np.array([h.row for h in index.search(xq[i:i + 1], K)[0]]) for i in range(len(xq))]
        ms = single_query_ms(lambda q: index.search(q, K), xq, len(xq))
        rows.append({"candidates": cand, "recall@10": round(recall(found, truth), 4),
                     "ms_per_query": round(ms, 2)})
        print(f"  n={len(xb)} {index.kind} expanded, against exact expansion {rows[-1]}", flush=True)
    del index
    shutil.rmtree(path, ignore_errors=True)
    return {"n": len(xb), "kind": cfg["approx"], "storage": cfg["storage"], "k": k,
            "build_s": round(t_build, 1), "sweep": rows}


def bench_real(params: dict[str, Any], model_dir: Path, sizes: list[int], nq: int, kinds: list[str],
               tile_to: int | None, work: Path, storages: list[str] | None = None,
               expansion_k: int = 0) -> dict[str, Any]:
    """Index kinds on real model outputs at each size (and tiled to `tile_to`, approximate
    kinds only), with each of `storages` (index.storage; default params.yaml's); with
    `expansion_k`, each also timed with query expansion (bench_kind)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from coverid.core import paths
    from coverid.data.store import read_features
    from coverid.model.embedder import load_embedder

    embedder = load_embedder(model_dir)
    fs = read_features(paths.processed_file(params), embedder.config["feature"])  # stacked if fused
    col = real_collection(embedder, fs, dict(params["train"]["augment"]), max(sizes), nq, min(sizes))
    print(f"embedded: {col['embed']}", flush=True)
    model = {"source": str(model_dir), "metric": embedder.metric, "dim": embedder.dim,
             "config_hash": embedder.fingerprint, "head": None}
    out: dict[str, Any] = {
        "model": {"dir": str(model_dir), "fingerprint": embedder.fingerprint, "dim": embedder.dim,
                  "arch": embedder.config["arch"], "embedding_dim": embedder.config["embedding_dim"]},
        "vectors": " ".join((real_collection.__doc__ or "").split()),
        "corpus": {"songs": len(fs), "works": int(len(np.unique(fs.work_id)))},
        "queries": {"n": nq, "held_out_real": nq // 2, "fresh_versions_of_new_works": nq - nq // 2},
        "embed": col["embed"], "index_settings": dict(params["index"]), "measured": [], "tiled": []}
    candidates = tuple(sorted({250, 500, 1000, int(params["index"]["candidates"])}))
    configs = [{**params["index"], "storage": s} for s in storages or [params["index"]["storage"]]]
    for n in sorted(sizes):
        for kind in kinds:
            if kind == "hnsw" and n > 300_000:
                continue  # its build alone would take most of an hour on two cores
            for icfg in configs:
                out["measured"].append({**bench_kind(col["xb"][:n], col["work"][:n], col["xq"], col["work_q"],
                                                     kind, icfg, model, work / "idx", candidates,
                                                     expansion_k), "load_avg": load_avg()})
    if expansion_k:
        out["expansion_recall"] = [
            expansion_recall(col["xb"][:n], col["xq"], configs[0], model, work / "idx", expansion_k,
                             candidates) for n in sorted(sizes)]
    if tile_to:
        xb = rotated_tiles(col["xb"], tile_to)
        work_ids = np.concatenate([col["work"] + c * (col["work"].max() + 1)
                                   for c in range(-(-tile_to // len(col["xb"])))])[:tile_to]
        for kind in [k for k in kinds if k != "hnsw"]:
            for icfg in configs:
                out["tiled"].append({**bench_kind(xb, work_ids, col["xq"], col["work_q"], kind, icfg,
                                                  model, work / "idx", candidates,
                                                  expansion_k if kind != "flat" else 0),
                                     "real_rows": len(col["xb"]), "load_avg": load_avg()})
    return out


def main() -> None:
    """Run the chosen parts and write reports/bench/index.json (merging earlier parts), and
    with --model the real part to reports/bench/index_real.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", default="", help="comma list of parts to skip: identify,pilot,ann")
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the ann part")
    ap.add_argument("--pilot-n", type=int, default=100_000, help="vectors in the pilot part")
    ap.add_argument("--index-songs", type=int, default=10_000, help="songs in the identify part's index")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--data", default="random,clustered", help="data kinds: random,clustered")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--model", type=Path, default=None, help="a model dir: run the real part")
    ap.add_argument("--real-n", type=int, nargs="+", default=[10_000, 100_000],
                    help="database sizes of the real part")
    ap.add_argument("--kinds", default="flat,pqfs,hnsw", help="index kinds of the real part")
    ap.add_argument("--tile-to", type=int, default=None, help="real part: also tile to this size")
    ap.add_argument("--real-out", default=str(REAL_OUT))
    ap.add_argument("--expansion-k", type=int, default=0,
                    help="real part: also time searches with query expansion of this k (0: off)")
    ap.add_argument("--storages", default=None,
                    help="real part: comma list of index.storage values to measure (default params.yaml's)")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    params = load_params(args.params)
    skip = set(filter(None, args.skip.split(",")))
    machine = {"threads": args.threads, "cpus": os.cpu_count(), "load_avg_at_start": list(os.getloadavg())}
    work = Path(tempfile.mkdtemp(prefix="bench_index."))
    try:
        if args.model is not None:
            real = {"machine": machine, **bench_real(params, args.model, args.real_n, args.queries,
                                                     args.kinds.split(","), args.tile_to, work,
                                                     args.storages.split(",") if args.storages else None,
                                                     args.expansion_k)}
            real["machine"]["load_avg_at_end"] = list(os.getloadavg())
            write_json(Path(args.real_out), real)
            print(f"wrote {args.real_out}")
        if {"identify", "pilot", "ann"} <= skip:
            return
        out_path = Path(args.out)
        report: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
        report["machine"] = dict(machine)
        if "identify" not in skip:
            report["identify"] = {**bench_identify(params, args.index_songs, work), "load_avg": load_avg()}
            print(json.dumps(report["identify"], indent=2), flush=True)
            write_json(out_path, report)
        for data in args.data.split(","):
            if "pilot" not in skip:
                report.setdefault("pilot", {})[data] = {**bench_pilot(args.pilot_n, args.queries, data),
                                                        "load_avg": load_avg()}
                write_json(out_path, report)
            if "ann" not in skip:
                shutil.rmtree(work / "idx", ignore_errors=True)
                report.setdefault("ann", {})[data] = {**bench_ann(args.n, args.queries, data, params["index"], work),
                                                      "load_avg": load_avg()}
                print(json.dumps(report["ann"][data], indent=2), flush=True)
                write_json(out_path, report)
        report["machine"]["load_avg_at_end"] = list(os.getloadavg())
        write_json(out_path, report)
        print(f"wrote {out_path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
