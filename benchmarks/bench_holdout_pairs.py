"""Benchmark: which real-melody hold-out pairs the model and Qmax find, by what differs.

For every ordered pair (query, another version of its work) of the hold-out (data.extra's test
works), the rank of that version among all the other hold-out songs, by the model at `--model`
(plain embedding distance) and by Qmax (baseline: settings, all queries). Pairs are grouped by
what the two renderings share, from data/raw/melodies/metadata.json: the same corpus
transcription or two variants of the tune family, and the same accompaniment style, two
styles, or one or both without accompaniment (solo). Per group: pairs, mean reciprocal rank,
median rank, share in the top 10. Writes reports/bench/holdout_pairs.json.

    .venv/bin/python benchmarks/bench_holdout_pairs.py [--model data/models/encoder] [--no-qmax]
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from coverid.core.config import load_params  # noqa: E402
from coverid.core.io import read_json, write_json  # noqa: E402

OUT = Path("reports/bench/holdout_pairs.json")


def pair_ranks(dist: np.ndarray, work_id: np.ndarray) -> list[tuple[int, int, int]]:
    """(query, relevant, rank) for every ordered same-work pair; rank 1-based among the
    query's candidates (every other song), ties in index order."""
    out = []
    for q in range(len(dist)):
        order = np.argsort(np.where(np.arange(len(dist)) == q, np.inf, dist[q]), kind="stable")
        pos = np.empty(len(dist), int)
        pos[order] = np.arange(1, len(dist) + 1)
        out += [(q, r, int(pos[r])) for r in np.flatnonzero(work_id == work_id[q]) if r != q]
    return out


def pair_group(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, str]:
    """(transcription, accompaniment) group of two performances' metadata entries."""
    same = "same transcription" if a["tune"] == b["tune"] else "other variant"
    solo = (a["accompaniment"] is None) + (b["accompaniment"] is None)
    if solo:
        return same, "both solo" if solo == 2 else "one solo"
    return same, "same style" if a["accompaniment"] == b["accompaniment"] else "two styles"


def summarise(ranks: list[int]) -> dict[str, float]:
    """pairs, mean reciprocal rank, median rank, share in the top 10."""
    r = np.asarray(ranks, float)
    return {"pairs": len(r), "mrr": round(float(np.mean(1 / r)), 3),
            "median_rank": float(np.median(r)), "top10": round(float(np.mean(r <= 10)), 3)}


def breakdown(triples: list[tuple[int, int, int]], groups: list[tuple[str, str]]
              ) -> dict[str, dict[str, float]]:
    """summarise() per transcription group, per (transcription, accompaniment) group, and all."""
    by: dict[str, list[int]] = defaultdict(list)
    for (q, r, rank), (tr, acc) in zip(triples, groups):
        for key in ("all", tr, f"{tr} / {acc}"):
            by[key].append(rank)
    return {k: summarise(v) for k, v in sorted(by.items())}


def melody_rows(params: dict[str, Any], songs: Any) -> list[dict[str, Any]]:
    """Each hold-out song's entry in the melody corpus' metadata.json."""
    from coverid.data.splits import extra_params

    extra = extra_params(params)
    if extra is None or extra["data"]["source"] != "melodies":
        raise SystemExit("the hold-out breakdown needs data.extra.source: melodies")
    meta_file = Path(extra["data"]["raw_dir"]) / "melodies" / "metadata.json"
    meta = {f"melodies/{w}/{p}": row for w, perfs in read_json(meta_file, "melody metadata").items()
            for p, row in perfs.items()}
    return [meta[f"{w}/{p.split('/', 1)[1]}"] for w, p in zip(songs.work_id, songs.perf_id)]


def method_breakdown(dist: np.ndarray, songs: Any, rows: list[dict[str, Any]]
                     ) -> dict[str, dict[str, float]]:
    """breakdown() of one method's distances over the hold-out songs."""
    triples = pair_ranks(dist, songs.work_id)
    return breakdown(triples, [pair_group(rows[q], rows[r]) for q, r, _ in triples])


def main() -> None:
    """Rank the hold-out with the model (and Qmax); break the pairs' ranks down; record."""
    from coverid.data.splits import HOLDOUT, load_split
    from coverid.eval.baselines import distance_rows, to_chroma
    from coverid.eval.distance import pairwise
    from coverid.model.embedder import load_embedder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("data/models/encoder"))
    ap.add_argument("--no-qmax", action="store_true", help="the model only")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    songs = load_split(params, HOLDOUT)
    rows = melody_rows(params, songs)
    emb = load_embedder(args.model).embed(songs.features)
    dists = {"model": pairwise(emb, emb)}
    if not args.no_qmax:
        cfg = params["baseline"]
        dists["qmax"], _ = distance_rows("qmax", to_chroma(songs.features, int(cfg["downsample"])),
                                         np.arange(len(songs)), cfg, int(cfg["workers"]))
    result: dict[str, Any] = {"model": str(args.model), "songs": len(songs),
                              "works": len(set(songs.work_id)), "methods": {}}
    for name, d in dists.items():
        result["methods"][name] = method_breakdown(d, songs, rows)
        for key, row in result["methods"][name].items():
            print(f"{name:6s} {key:40s} {row}", flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
