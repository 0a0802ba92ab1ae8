"""`coverid dataset`: statistics, search, cover map and chromagram plots of a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `dataset` sub-command and its actions."""
    p = sub.add_parser("dataset", help="analyse a dataset's metadata and features",
                       description="Analyse a Da-TACOS-schema metadata JSON (default: the metadata "
                                   "of params.yaml's data.source) and a processed feature file.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str, func) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help, description=help)
        a.add_argument("--metadata", type=Path, help="metadata JSON (default: from params.yaml)")
        a.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
        a.set_defaults(func=func)
        return a

    a = action("stats", "works, performances, versions per work, noise songs, durations", _stats)
    a.add_argument("--features", type=Path, help="processed HDF5 for durations (default: from params)")
    a.add_argument("--json", action="store_true", help="print JSON instead of a table")

    a = action("search", "find performances by artist and/or title (case-insensitive substring)", _search)
    a.add_argument("--artist", help="text in the work or performance artist")
    a.add_argument("--title", help="text in the work or performance title")
    a.add_argument("--json", action="store_true", help="print JSON instead of lines")

    a = action("covers", "write the work -> performances map as JSON", _covers)
    a.add_argument("--out", type=Path, required=True, help="output JSON file")

    a = action("chromagram", "plot one performance's processed chroma features", _chromagram)
    a.add_argument("perf_id", metavar="PERF_ID")
    a.add_argument("--out", type=Path, required=True, help="output image (.png, .pdf, .svg)")
    a.add_argument("--features", type=Path, help="processed HDF5 (default: from params)")


def _params(args: argparse.Namespace) -> dict:
    """params.yaml, needed only for defaults."""
    from coverid.core.config import load_params

    return load_params(args.params)


def _metadata(args: argparse.Namespace, required: bool = True):
    """The metadata of --metadata or of params' data source; None when optional and absent."""
    from coverid.core.errors import CoveridError
    from coverid.data import dataset

    if args.metadata:
        return dataset.load_metadata(args.metadata)
    if not args.params.exists():
        if required:
            raise CoveridError(f"no --metadata given and {args.params} not found for the default")
        return None
    path = dataset.default_metadata_path(_params(args))
    return dataset.load_metadata(path) if required or path.exists() else None


def _features_file(args: argparse.Namespace, required: bool = True) -> Path | None:
    """--features, else params' processed file (None when optional and absent)."""
    from coverid.core import paths
    from coverid.core.errors import CoveridError

    if args.features:
        return args.features
    if not args.params.exists():
        if required:
            raise CoveridError(f"no --features given and {args.params} not found for the default")
        return None
    path = paths.processed_file(_params(args))
    return path if required or path.exists() else None


def _stats(args: argparse.Namespace) -> int:
    """Print dataset statistics."""
    import json

    from coverid.data import dataset

    meta = _metadata(args)
    features = _features_file(args, required=False)
    s = dataset.stats(meta, dataset.lengths_seconds(features) if features else None)
    print(json.dumps(s, indent=2) if args.json else dataset.format_stats(s))
    return 0


def _search(args: argparse.Namespace) -> int:
    """Print matching performances."""
    import json

    from coverid.data import dataset

    hits = dataset.search(_metadata(args), artist=args.artist, title=args.title)
    if args.json:
        print(json.dumps(hits, indent=2, ensure_ascii=False))
    else:
        for r in hits:
            print(f"{r['work_id']}\t{r['perf_id']}\t{r['perf_artist']} - {r['perf_title']}"
                  f"\t(work: {r['work_artist']} - {r['work_title']})")
        print(f"{len(hits)} performance(s)")
    return 0


def _covers(args: argparse.Namespace) -> int:
    """Write the cover map."""
    from coverid.core.io import write_json
    from coverid.data import dataset

    covers = dataset.cover_map(_metadata(args))
    write_json(args.out, covers)
    print(f"{args.out}: {len(covers)} works, {sum(len(w['performances']) for w in covers.values())} "
          "performances")
    return 0


def _chromagram(args: argparse.Namespace) -> int:
    """Save one performance's chromagram."""
    from coverid.data import dataset

    out = dataset.plot_chromagram(_features_file(args), args.perf_id, args.out,
                                  _metadata(args, required=False))
    print(out)
    return 0
