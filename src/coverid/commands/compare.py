"""`coverid compare`: placeholder until its issue lands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `compare` sub-command."""
    p = sub.add_parser("compare", help="(not available yet)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Report that the command is not available yet."""
    from coverid.errors import CoveridError

    raise CoveridError("'compare' is not available in this version yet")
