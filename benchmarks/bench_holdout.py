"""Benchmark: the model's MAP on the real-melody hold-out as more melody works join training.

The pipeline's hold-out (the test works of data.extra, reports/baseline_holdout.json's Qmax
and DTW queries) stays fixed: a melody corpus of `--works N` works begins with the same
data.extra.melodies.n_works works (plan_works draws them first, the same bytes), so its works
beyond those are new and go to train and val in the pipeline's train : val proportion (seeded),
while the pipeline's own melody works keep their splits. Each N (cached under --scratch) trains
the params.yaml model (`--set key=value` overrides) on synth train + melody train, early-stopped
on synth val + melody val, and ranks the synth test split and the hold-out (plain and with the
query expansion picked on val, as the tune stage does). Writes reports/bench/holdout.json.
A `--set data.synth.KEY=VALUE` override generates that synth corpus under --scratch (cached, split
as the preprocess stage splits it) in place of the pipeline's; the hold-out stays the same.

    .venv/bin/python benchmarks/bench_holdout.py --works 100 400 [--set train.epochs=30]
    .venv/bin/python benchmarks/bench_holdout.py --works 100 --set data.synth.p_solo=0.2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from bench_holdout_pairs import melody_rows, method_breakdown  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params, parse_overrides, with_overrides  # noqa: E402
from coverid.core.io import read_json, write_json  # noqa: E402

OUT = Path("reports/bench/holdout.json")


def melody_corpus(params: dict, n_works: int, scratch: Path):
    """The processed melody corpus of n_works works (generated and cached under scratch)."""
    from coverid.core.skips import SkipLog
    from coverid.data.sources import features_for_source, fetch_source
    from coverid.data.splits import extra_params
    from coverid.data.store import read_features, write_features

    extra = extra_params(params)
    root = scratch / f"works{n_works}"
    p = with_overrides(extra, {"data.raw_dir": str(root / "raw"),
                               "data.processed_dir": str(root / "processed"),
                               "data.melodies.n_works": n_works})
    if not paths.processed_file(p).exists():
        fetch_source(p)
        write_features(paths.processed_file(p), features_for_source(p, SkipLog()))
    return read_features(paths.processed_file(p))


def synth_changed(params: dict) -> bool:
    """Whether params' generated corpus differs from params.yaml's (the pipeline's)."""
    return params["data"]["source"] == "synth" and (
        params["data"]["synth"].to_dict() != load_params()["data"]["synth"].to_dict())


def synth_corpus(params: dict, scratch: Path):
    """The processed main corpus under params' data.synth with its split (generated and cached
    under scratch, keyed by the settings), or None when data.synth is params.yaml's."""
    import hashlib
    import json

    from coverid.core.skips import SkipLog
    from coverid.data.sources import features_for_source, fetch_source
    from coverid.data.splits import read_splits, split_works, write_splits
    from coverid.data.store import read_features, write_features

    if not synth_changed(params):
        return None
    key = hashlib.sha1(json.dumps(params["data"]["synth"].to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    root = scratch / f"synth-{key}"
    p = with_overrides(params, {"data.raw_dir": str(root / "raw"),
                                "data.processed_dir": str(root / "processed")})
    if not paths.splits_file(p).exists():
        fetch_source(p)
        fs = features_for_source(p, SkipLog())
        write_features(paths.processed_file(p), fs)
        write_splits(paths.splits_file(p), split_works(fs.work_id, p["data"]["split"], p["seed"]))
    return read_features(paths.processed_file(p)), read_splits(paths.splits_file(p))


def datasets(params: dict, n_works: int, scratch: Path) -> dict[str, Any]:
    """train, val, test (synth) and holdout FeatureSets, with N melody works in train + val."""
    from coverid.data.splits import (
        HOLDOUT,
        extra_params,
        load_dataset,
        split_mask,
        split_works,
    )
    from coverid.data.store import concat

    fs, splits = load_dataset(params)
    synth = synth_corpus(params, scratch)
    if synth is not None:
        keep = np.char.startswith(fs.work_id, f"{params['data']['extra']['source']}/")
        fs, splits = concat([synth[0], fs.take(keep)]), {**splits, **synth[1]}
    base_works = extra_params(params)["data"]["melodies"]["n_works"]
    if n_works > base_works:
        more = melody_corpus(params, n_works, scratch)
        tag = f"{params['data']['extra']['source']}/"
        more.work_id, more.perf_id = np.char.add(tag, more.work_id), np.char.add(tag, more.perf_id)
        known = {p: i for i, p in enumerate(fs.perf_id)}
        shared = [i for i, p in enumerate(more.perf_id) if p in known]
        if not np.array_equal(more.features[shared], fs.features[[known[more.perf_id[i]] for i in shared]]):
            raise SystemExit(f"the {n_works}-work corpus does not begin with the pipeline's works")
        new = more.take(np.array([p not in known for p in more.perf_id]))
        frac = params["data"]["extra"]["split"]
        new_splits = split_works(new.work_id, {"train": frac["train"], "val": frac["val"], "test": 0.0},
                                 int(params["seed"]))
        fs, splits = concat([fs, new]), {**splits, **new_splits}
    return {name: fs.take(split_mask(fs.work_id, splits, name)) for name in ("train", "val", "test", HOLDOUT)}


def rank(embedder: Any, songs: Any, qe: dict, chunk: int, queries: np.ndarray | None) -> dict:
    """MAP (± SE) plain and expanded, on every query and on the baseline's queries."""
    from coverid.eval.evaluate import on_queries
    from coverid.eval.expansion import augment
    from coverid.eval.metrics import query_stats_from_embeddings

    emb = embedder.embed(songs.features)
    n = len(emb) - 1
    out = {}
    for name, e in (("plain", emb), ("expanded", augment(emb, qe["k"], qe["alpha"], chunk) if qe["k"] else None)):
        if e is None:
            continue
        head = embedder.head if name == "plain" else None
        metric = embedder.metric if name == "plain" else "euclidean"
        stats = query_stats_from_embeddings(e, songs.work_id, metric, head, chunk_size=chunk)
        out[f"map_{name}"] = round(on_queries(stats, stats["query"], n, songs.work_id)["map"], 4)
        if queries is not None:
            sub = on_queries(stats, queries, n, songs.work_id)
            out[f"map_{name}_baseline_queries"] = round(sub["map"], 4)
            out[f"map_se_{name}_baseline_queries"] = round(sub["map_se"], 4)
    return out


def train_and_rank(params: dict, sets: dict, save: Path | None = None) -> dict[str, Any]:
    """Fit on sets' train, early-stop on val; rank test and holdout. `save`: also write the
    model dir there (as the train stage writes data/models/encoder), for later benchmarks."""
    from coverid.data.splits import HOLDOUT
    from coverid.eval.evaluate import baseline_queries
    from coverid.eval.expansion import select_expansion
    from coverid.model.embedder import Embedder, metric_for
    from coverid.train.fusion import fit_fused

    t0 = time.perf_counter()
    result = fit_fused(params, sets["train"], sets["val"])  # one encoder per fused feature, as train
    embedder = Embedder(result.encoder, {"metric": metric_for(params["train"]["loss"])}, result.head)
    if save is not None:
        from coverid.model.embedder import save_embedder
        from coverid.train.fit import embedder_config

        save_embedder(save, result.encoder, embedder_config(params, sets["train"], result.encoder),
                      result.head)
    chunk = int(params["evaluate"]["chunk_size"])
    qe = select_expansion(embedder.embed(sets["val"].features), sets["val"].work_id, embedder.metric,
                          embedder.head, params["tune"]["expansion"], chunk)
    row: dict[str, Any] = {"train_songs": len(sets["train"]), "val_songs": len(sets["val"]),
                           "best_val_map": result.val_map,
                           "best_epoch": {p: r.state.best_epoch for p, r in result.parts.items()},
                           "expansion": qe}
    for split, report in (("test", "baseline.json"), (HOLDOUT, "baseline_holdout.json")):
        if split == "test" and synth_changed(params):
            # another generated corpus: the pipeline's Qmax queries and figures are not its own
            row[split] = rank(embedder, sets[split], qe, chunk, None)
            continue
        baseline = read_json(paths.REPORTS / report, "baseline report")
        # the baseline stage's queries: drawn with the pipeline's seed, whatever --set seed= says
        queries = baseline_queries(load_params(), sets[split].work_id, baseline)
        row[split] = rank(embedder, sets[split], qe, chunk, queries)
        row[split]["baseline"] = {m: round(v["map"], 4) for m, v in baseline.items()}
    # which hold-out pairs it finds (bench_holdout_pairs.py: Qmax's figures are in its report)
    from coverid.eval.distance import pairwise

    songs = sets[HOLDOUT]
    emb = embedder.embed(songs.features)
    groups = method_breakdown(pairwise(emb, emb), songs, melody_rows(params, songs))
    row[HOLDOUT]["pairs_mrr"] = {k: v["mrr"] for k, v in groups.items()}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    """Train once per --works entry; print and record the hold-out MAP next to Qmax's."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--works", nargs="+", type=int, default=[100, 400],
                    help="melody works in the corpus (the first ones are the pipeline's)")
    ap.add_argument("--set", action="append", default=[], help="overrides, key=YAML value")
    ap.add_argument("--scratch", type=Path, default=Path("data/bench/holdout"),
                    help="where the bigger melody corpora are generated (cached)")
    ap.add_argument("--save-model", type=Path, default=None,
                    help="also write each trained model dir to DIR/works<N> (e.g. for bench_compact)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    overrides = parse_overrides(args.set)
    params = with_overrides(load_params(), overrides)
    runs = read_json(args.out, "bench report")["runs"] if args.out.exists() else []
    for n in args.works:
        row = {"melody_works": n, "overrides": overrides,
               **train_and_rank(params, datasets(params, n, args.scratch),
                                 args.save_model and args.save_model / f"works{n}")}
        runs.append(row)
        print(f"{n} melody works {overrides}: hold-out MAP {row['holdout']} | test {row['test']}",
              flush=True)
        write_json(args.out, {"seed": params["seed"], "runs": runs})


if __name__ == "__main__":
    main()
