"""`coverid index build | add | info`: a FAISS index of song embeddings with a JSON sidecar."""

from __future__ import annotations

import argparse

from coverid.commands import MODEL_HELP


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `index` sub-command and its own sub-commands."""
    p = sub.add_parser("index", help="build, extend or describe a song index",
                       description="Embed songs with a trained model into a searchable index.")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    b = isub.add_parser("build", help="embed songs into a new index (replaces INDEX_DIR atomically)")
    _source_args(b)
    b.add_argument("--model", help=MODEL_HELP)
    b.add_argument("--out", required=True, metavar="INDEX_DIR", help="index directory to write")
    b.add_argument("--threshold-file", metavar="FILE",
                   help="tuned threshold JSON stored in the index (default reports/threshold.json if present)")
    b.add_argument("--params", default="params.yaml", help="params file with the index section (default params.yaml)")
    b.set_defaults(func=_build)

    a = isub.add_parser("add", help="append songs to an index (same model required)")
    a.add_argument("--index", required=True, metavar="INDEX_DIR", help="index directory to extend")
    _source_args(a)
    a.add_argument("--model", help="model dir or MLflow URI (default: the one the index was built with)")
    a.add_argument("--skip-existing", action="store_true",
                   help="skip songs whose perf id is already indexed (default: refuse)")
    a.set_defaults(func=_add)

    i = isub.add_parser("info", help="describe an index")
    i.add_argument("--index", required=True, metavar="INDEX_DIR")
    i.add_argument("--json", action="store_true", help="print the sidecar summary as JSON")
    i.set_defaults(func=_info)


def _source_args(p: argparse.ArgumentParser) -> None:
    """--audio-dir | --features, and --metadata."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio-dir", metavar="DIR", help="audio folder: DIR/<work>/<performance>.<ext>")
    src.add_argument("--features", metavar="FILE.h5", help="processed feature file (data/processed/*.h5)")
    p.add_argument("--metadata", metavar="JSON",
                   help="Da-TACOS-schema metadata adding work ids, titles and artists")


def _build(args: argparse.Namespace) -> int:
    """Build a new index."""
    from coverid.core.config import project_params
    from coverid.model.registry import default_model
    from coverid.search.identify import build_from

    icfg = project_params(args.params)["index"]
    index = build_from(args.model or default_model(args.params), args.out, icfg, args.audio_dir, args.features, args.metadata,
                       args.threshold_file)
    print(f"indexed {index.count} songs in {index.path} ({index.kind}, {index.metric})")
    return 0


def _add(args: argparse.Namespace) -> int:
    """Append songs to an index."""
    from coverid.search.identify import add_from

    index, added, skipped = add_from(args.index, args.model, args.audio_dir, args.features,
                                     args.metadata, args.skip_existing)
    extra = f", skipped {len(skipped)} already indexed" if skipped else ""
    print(f"added {added} songs to {index.path}: {index.count} in all ({index.kind}){extra}")
    return 0


def _info(args: argparse.Namespace) -> int:
    """Print what an index holds and how it was built."""
    import json

    from coverid.search.index import load_index

    index = load_index(args.index)
    m = index.meta
    summary = {
        "path": str(index.path), "count": index.count, "kind": index.kind, "metric": index.metric,
        "dim": m["model"]["dim"], "storage": str(index.embeddings.dtype),
        "disk_mb": round(sum(f.stat().st_size for f in index.path.iterdir()) / 1e6, 1),
        "model": m["model"].get("source"),
        "params_hash": m["model"].get("params_hash"), "config_hash": m["model"].get("config_hash"),
        "feature": m["features"].get("feature"), "threshold": (m.get("threshold") or {}).get("value"),
        "works": len(set(index.songs.columns["work_id"]) - {None}),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:12s} {value}")
    return 0
