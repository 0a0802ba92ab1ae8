"""`coverid preprocess`: features of an audio folder or of unzipped Da-TACOS archives -> HDF5.

Options left out take their values from the params file's `preprocess` section (--params,
default params.yaml); without a params file the command stops and says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `preprocess` sub-command and its two sources."""
    p = sub.add_parser("preprocess", help="extract features from audio or read Da-TACOS features",
                       description="Write fixed-size features (SPEC.md section 3) to HDF5.")
    sources = p.add_subparsers(dest="source", required=True, metavar="SOURCE")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-p", "--feature", action="append", dest="features", metavar="FEATURE",
                        help="feature to write (a stack such as hpcp+melody for a fused model); "
                             "repeat for several (default: preprocess.feature, stacked with "
                             "preprocess.fusion for audio)")
    common.add_argument("-s", "--spect-len", type=int, help="frames after resizing (default: preprocess.spect_len)")
    common.add_argument("-r", "--run-mode", choices=("parallel", "single"),
                        help="parallel: a local process pool; single: in this process")
    common.add_argument("-n", "--workers", type=int, help="worker processes for parallel mode")
    common.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on a Dask cluster, e.g. tcp://10.0.0.5:8786 (overrides -r)")
    common.add_argument("--max-frames", type=int, help="crop or wrap-pad to this many frames first")
    common.add_argument("--no-tile", action="store_true", help="keep 12 pitch rows (no 23-row tiling)")
    common.add_argument("--max-failed-fraction", type=float, help="fail when more files than this are bad")
    common.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file holding the settings not given here (default params.yaml)")

    a = sources.add_parser("from-audio-dir", parents=[common], help="HPCP / chroma CENS of an audio folder",
                           description="DIR/<work>/<performance>.<ext>; files directly under DIR are "
                                       "songs of unknown work; optional DIR/metadata.json (Da-TACOS "
                                       "schema). Writes OUT_DIR/audio.h5 (one feature) or "
                                       "OUT_DIR/audio_<feature>.h5 (several) and "
                                       "OUT_DIR/preprocess_skipped.json.")
    a.add_argument("-a", "--audio-dir", type=Path, required=True, help="the audio folder")
    a.add_argument("-o", "--out-dir", type=Path, required=True, help="output folder")
    a.set_defaults(func=_from_audio_dir)

    d = sources.add_parser("da-tacos", parents=[common], help="resize the features of Da-TACOS archives",
                           description="Reads the unzipped da-tacos_<subset>_subset_<feature> folders "
                                       "under DATA_DIR; writes one HDF5 per subset found.")
    d.add_argument("-d", "--data-dir", type=Path, required=True, help="folder holding the unzipped archives")
    d.add_argument("-o", "--out-dir", type=Path, help="output folder (default: data.processed_dir)")
    d.set_defaults(func=_da_tacos)


def _settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """(all params, their preprocess section with the command-line overrides applied)."""
    from coverid.core.config import project_params

    params = project_params(args.params)
    pcfg = params["preprocess"]
    if args.spect_len is not None:
        pcfg["spect_len"] = args.spect_len
    if args.max_frames is not None:
        pcfg["max_frames"] = args.max_frames
    if args.no_tile:
        pcfg["tile"] = False
    if args.workers is not None:
        pcfg["workers"] = args.workers
    if args.max_failed_fraction is not None:
        pcfg["max_failed_fraction"] = args.max_failed_fraction
    if args.run_mode:
        pcfg["scheduler"] = "processes" if args.run_mode == "parallel" else "single"
    if args.scheduler:
        pcfg["scheduler"] = args.scheduler
    return params, pcfg


def _from_audio_dir(args: argparse.Namespace) -> int:
    """Extract features of an audio folder and write them."""
    from coverid.core.skips import SkipLog
    from coverid.data.store import write_features
    from coverid.features.collection import extract_audio_dir_features
    from coverid.features.transform import input_feature

    params, pcfg = _settings(args)
    features = list(dict.fromkeys(args.features or [input_feature(pcfg)]))
    extensions = params["data"]["audio"]["extensions"]
    skips = SkipLog()
    try:
        sets = extract_audio_dir_features(args.audio_dir, pcfg, "audio", skips, features, extensions)
    finally:
        skips.write(args.out_dir / "preprocess_skipped.json")
    for feature, fs in sets.items():
        path = args.out_dir / ("audio.h5" if len(sets) == 1 else f"audio_{feature}.h5")
        write_features(path, fs)
        print(f"{path}: {len(fs)} performances of {len(set(fs.work_id))} works, {feature} "
              f"{fs.features.shape[1]}x{fs.spect_len}")
    if skips.skipped:
        print(f"{len(skips.skipped)} of {skips.total} files skipped: {args.out_dir / 'preprocess_skipped.json'}")
    return 0


def _da_tacos(args: argparse.Namespace) -> int:
    """Resize the Da-TACOS features found under --data-dir and write them."""
    from coverid.core.skips import SkipLog
    from coverid.data.sources import preprocess_dir

    params, pcfg = _settings(args)
    out_dir = args.out_dir or Path(params["data"]["processed_dir"])
    features = list(dict.fromkeys(args.features or [pcfg["feature"]]))
    skips = SkipLog()
    try:
        written = preprocess_dir(args.data_dir, out_dir, features, pcfg, skips)
    finally:
        skips.write(out_dir / "preprocess_skipped.json")
    for path in written:
        print(path)
    return 0
