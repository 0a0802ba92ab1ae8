"""`coverid identify SONG ... --index INDEX_DIR`: the indexed songs nearest to each query."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `identify` sub-command."""
    p = sub.add_parser("identify", help="find versions of songs in an index",
                       description="Rank the indexed songs by distance to each query song.")
    p.add_argument("songs", nargs="+", metavar="SONG", help="audio file(s) to identify")
    p.add_argument("--index", required=True, metavar="INDEX_DIR", help="index from `coverid index build`")
    p.add_argument("--model", help="model dir or MLflow URI (default: the one the index was built with)")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--threshold", type=float,
                   help="cover decision threshold (default: the index's, else reports/threshold.json)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Identify each query song and print the ranked candidates."""
    import json
    import logging

    from coverid.core.errors import CoveridError
    from coverid.search.identify import (
        check_files_exist,
        identify,
        open_for_search,
        resolve_threshold,
    )

    if args.k < 1:
        raise CoveridError(f"-k must be at least 1, got {args.k}")
    check_files_exist(args.songs)
    index, embedder = open_for_search(args.index, args.model)
    threshold = resolve_threshold(args.threshold, index, embedder)
    timings: dict[str, float] = {}
    results = identify(args.songs, index, embedder, args.k, threshold, timings)
    logging.getLogger(__name__).debug("timings (s): %s", {k: round(v, 3) for k, v in timings.items()})
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


def format_results(results: list[dict[str, Any]]) -> str:
    """A small table per query: rank, distance, decision, ids, title / artist."""
    blocks = []
    for res in results:
        t = res["threshold"]
        lines = [f"{res['query']}  (threshold {'none' if t is None else f'{t:.4g}'})"]
        lines.append(f"{'rank':>4}  {'distance':>9}  {'cover':5}  {'work_id':14}  {'perf_id':14}  title / artist")
        for rank, r in enumerate(res["results"], 1):
            cover = {True: "yes", False: "no", None: "-"}[r["is_cover"]]
            who = " / ".join(x for x in (r.get("title"), r.get("artist")) if x)
            lines.append(f"{rank:>4}  {r['distance']:>9.4f}  {cover:5}  {str(r['work_id']):14}  "
                         f"{r['perf_id']:14}  {who}".rstrip())
        if not res["results"]:
            lines.append("  (no other song in the index)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
