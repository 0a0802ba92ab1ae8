"""`coverid models list | promote`: the registered encoder versions and the champion alias."""

from __future__ import annotations

import argparse

COLUMNS = ("version", "aliases", "arch", "loss", "val_map", "test_map", "test_map_se", "dvc_exp",
           "commit")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `models` sub-command and its own sub-commands."""
    p = sub.add_parser("models", help="list the registered models, move the champion alias",
                       description="The MLflow registry's versions of the encoder (params.yaml's "
                                   "mlflow section) and the alias the CLI loads by default.")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    lst = msub.add_parser("list", help="every version with arch, loss, val/test MAP and aliases")
    lst.add_argument("--json", action="store_true", help="print JSON rows")
    lst.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    lst.set_defaults(func=_list)
    pro = msub.add_parser("promote", help="point the champion alias at a version")
    pro.add_argument("version", help="registered version number")
    pro.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    pro.set_defaults(func=_promote)


def _list(args: argparse.Namespace) -> int:
    """Print the versions, newest first."""
    import json

    from coverid.core.config import project_params
    from coverid.model.registry import list_versions

    rows = list_versions(project_params(args.params))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [COLUMNS] + [tuple(r.get(c, "")[:8] if c == "commit" else r.get(c, "") for c in COLUMNS)
                         for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _promote(args: argparse.Namespace) -> int:
    """Move the champion alias to the given version."""
    from coverid.core.config import project_params
    from coverid.model.registry import champion_uri, promote

    params = project_params(args.params)
    promote(params, args.version)
    print(f"{champion_uri(params)} -> version {args.version}")
    return 0
