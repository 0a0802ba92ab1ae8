"""DVC stage `preprocess`: features of data/raw/<source> -> data/processed/<name>.h5 and the
train/val/test split by work (splits.json); the same for the extra corpus (data.extra) ->
data/processed/<extra>.h5 and splits_<extra>.json; reports/preprocess_skipped.json (always
written)."""

from __future__ import annotations

import logging

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.skips import SkipLog
from coverid.core.stage import stage_main
from coverid.data.sources import features_for_source
from coverid.data.splits import extra_params, extra_splits_file, split_works, write_splits
from coverid.data.store import write_features

SKIPPED = paths.REPORTS / "preprocess_skipped.json"


def main() -> None:
    """Extract or read the features named by params, write them and the split."""
    params = load_params()
    extra = extra_params(params)
    skips = SkipLog()
    try:
        sets = [features_for_source(params, skips)]
        if extra is not None:
            sets.append(features_for_source(extra, skips))
    finally:
        skips.write(SKIPPED)
    splits_files = [paths.splits_file(params)] + ([extra_splits_file(params)] if extra else [])
    for corpus, fs, split_file in zip((params, extra), sets, splits_files):
        write_features(paths.processed_file(corpus), fs)
        write_splits(split_file, split_works(fs.work_id, corpus["data"]["split"], corpus["seed"]))
        logging.getLogger("preprocess").info("%s: %d performances of %d works",
                                             paths.processed_file(corpus), len(fs), len(set(fs.work_id)))
    logging.getLogger("preprocess").info("%d files skipped", len(skips.skipped))


if __name__ == "__main__":
    stage_main(main)
