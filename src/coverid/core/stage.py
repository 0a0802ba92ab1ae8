"""Entry-point wrapper for the DVC stage scripts: logging set-up, one-line errors, and the
stage's timings (reports/timings/<stage>.json: outside DVC's metrics, which hold quality only)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coverid.core import paths
from coverid.core.errors import CoveridError
from coverid.core.io import read_json, write_json

log = logging.getLogger(__name__)
# Stage scripts import this module before the library pulls in TensorFlow: keep its start-up
# chatter out of the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def stage_name() -> str:
    """The running stage: the stage script's file name (stages/train.py -> train)."""
    return Path(sys.argv[0]).stem


def record_timings(values: dict[str, Any], stage: str | None = None) -> None:
    """Merge `values` (seconds, rates) into the stage's timings file."""
    path = paths.timings_file(stage or stage_name())
    old = read_json(path, "timings file") if path.exists() else {}
    write_json(path, {**old, **values})


def stage_main(fn: Callable[[], None]) -> None:
    """Run a stage's main function and record its wall time; a CoveridError exits 1 with a
    one-line message."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths.timings_file(stage_name()).unlink(missing_ok=True)  # no figure of an older run
    t0 = time.perf_counter()
    try:
        fn()
    except CoveridError as e:
        print(f"{stage_name()}: error: {e}", file=sys.stderr)
        sys.exit(1)
    wall = round(time.perf_counter() - t0, 1)
    record_timings({"wall_seconds": wall})
    log.info("%s took %.1f s", stage_name(), wall)
