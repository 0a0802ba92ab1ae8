"""`coverid compare A B`: the model distance between two songs and the cover decision."""

from __future__ import annotations

import argparse

from coverid.commands import MODEL_HELP


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `compare` sub-command."""
    p = sub.add_parser("compare", help="are two songs versions of the same work?",
                       description="Embed two audio files and compare them with the model's distance.")
    p.add_argument("a", metavar="A", help="first audio file")
    p.add_argument("b", metavar="B", help="second audio file")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--threshold", type=float, help="cover decision threshold (default reports/threshold.json)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Compare two files and print the distance and decision."""
    import json

    from coverid.model.registry import default_model
    from coverid.search.identify import check_files_exist, compare, open_model

    check_files_exist([args.a, args.b])
    embedder = open_model(args.model or default_model())
    res = compare(args.a, args.b, embedder, args.threshold)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        verdict = {True: "cover", False: "not a cover", None: "no threshold: no decision"}[res["is_cover"]]
        t = "" if res["threshold"] is None else f" (threshold {res['threshold']:.4g})"
        print(f"{res['metric']} distance {res['distance']:.4f}{t}: {verdict}")
    return 0
