"""The `coverid` command: each sub-command lives in coverid.commands.<name>.

Command modules import only argparse at load time, so `coverid --help` is fast;
heavy libraries are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from coverid import __version__
from coverid.core.errors import CoveridError

COMMANDS = ("download", "preprocess", "dataset", "index", "identify", "compare", "models")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command module's sub-parsers."""
    parser = argparse.ArgumentParser(prog="coverid", description="Cover song identification.")
    parser.add_argument("--version", action="version", version=f"coverid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"coverid.commands.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen handler, turn user errors into one line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except CoveridError as e:
        print(f"coverid: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("coverid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
