"""Benchmark: MAP/MR1/P@10 over 15,000 random 512-d embeddings (1,000 works x 13 + 2,000
noise songs), chunked; prints the time and peak memory and writes reports/bench/metrics.json."""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.eval.metrics import retrieval_metrics_from_embeddings

OUT = Path("reports/bench/metrics.json")


def corpus(n_works: int, versions: int, n_noise: int, dim: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Random embeddings and work labels: `n_works` x `versions` plus `n_noise` singletons."""
    rng = np.random.default_rng(seed)
    work = np.r_[np.repeat(np.arange(n_works), versions), n_works + np.arange(n_noise)]
    emb = rng.standard_normal((len(work), dim), dtype=np.float32)
    return emb, np.array([f"W_{w}" for w in work])


def main() -> None:
    """Time the chunked retrieval metrics and record peak resident memory."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--works", type=int, default=1000)
    ap.add_argument("--versions", type=int, default=13)
    ap.add_argument("--noise", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--metric", default="euclidean")
    args = ap.parse_args()
    chunk = int(load_params()["evaluate"]["chunk_size"])
    emb, work = corpus(args.works, args.versions, args.noise, args.dim, seed=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    m = retrieval_metrics_from_embeddings(emb, work, args.metric, chunk_size=chunk)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"n_songs": len(emb), "dim": args.dim, "metric": args.metric, "chunk_size": chunk,
           "seconds": round(seconds, 3), "peak_rss_mb": round(peak_mb, 1),
           "rss_before_mb": round(rss_before, 1), **m}
    for k, v in out.items():
        print(f"{k:>14}: {v}")
    write_json(OUT, out)


if __name__ == "__main__":
    main()
