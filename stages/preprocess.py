"""DVC stage `preprocess`: features of data/raw/<source> -> data/processed/<name>.h5, the
train/val/test split by work, and reports/preprocess_skipped.json (always written)."""

from __future__ import annotations

import logging

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.skips import SkipLog
from coverid.core.stage import stage_main
from coverid.data.sources import features_for_source
from coverid.data.splits import split_works, write_splits
from coverid.data.store import write_features

SKIPPED = paths.REPORTS / "preprocess_skipped.json"


def main() -> None:
    """Extract or read the features named by params, write them and the split."""
    params = load_params()
    skips = SkipLog()
    try:
        fs = features_for_source(params, skips)
    finally:
        skips.write(SKIPPED)
    write_features(paths.processed_file(params), fs)
    write_splits(paths.splits_file(params), split_works(fs.work_id, params["data"]["split"], params["seed"]))
    logging.getLogger("preprocess").info("%s: %d performances of %d works (%d skipped)",
                                         paths.processed_file(params), len(fs), len(set(fs.work_id)),
                                         len(skips.skipped))


if __name__ == "__main__":
    stage_main(main)
