"""Entry-point wrapper for the DVC stage scripts: logging set-up and one-line errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from coverid.core.errors import CoveridError


def stage_main(fn: Callable[[], None]) -> None:
    """Run a stage's main function; a CoveridError exits 1 with a one-line message."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow is imported lazily, later
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fn()
    except CoveridError as e:
        print(f"{stage_name(fn)}: error: {e}", file=sys.stderr)
        sys.exit(1)


def stage_name(fn: Callable[[], None]) -> str:
    """How errors name the stage: the script's name when run as one (stages/train.py: train)."""
    return Path(sys.argv[0]).stem if fn.__module__ == "__main__" else fn.__module__
