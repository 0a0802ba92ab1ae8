"""Where the pipeline's data come from: the one dispatch over the data sources (synth,
melodies, audio, datacos) for the download and preprocess stages, and Da-TACOS subsets read into FeatureSets
or preprocessed to HDF5 files."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from coverid.core import paths
from coverid.core.errors import CoveridError
from coverid.core.io import write_json
from coverid.core.skips import SkipLog
from coverid.data.datacos import (
    METADATA,
    SUBSETS,
    download,
    feature_dir,
    list_items,
    read_feature_h5,
    source_dir,
)
from coverid.data.dataset import audio_manifest
from coverid.data.melodies import generate_melody_corpus
from coverid.data.store import FeatureSet, stack_sets, write_features
from coverid.data.synth import generate_corpus
from coverid.features.collection import build_feature_set, extract_audio_dir
from coverid.features.transform import feature_parts, input_feature

log = logging.getLogger(__name__)


def fetch_source(params: dict[str, Any]) -> None:
    """Fill data/raw/<source>: generate the corpus (synth or melodies), download (or unpack) Da-TACOS, or snapshot
    the file list of the user's audio folder."""
    data, out = params["data"], paths.raw_dir(params)
    source = data["source"]
    if source == "synth":
        generate_corpus(out, data["synth"], params["seed"])
    elif source == "melodies":
        generate_melody_corpus(out, data["melodies"], params["seed"])
    elif source == "datacos":
        cfg = data["datacos"]
        download(out, cfg["subset"], [METADATA, *cfg["features"]], cfg["base_url"], cfg["checksums"],
                 retries=cfg["retries"], retry_wait_s=cfg["retry_wait_s"], timeout_s=cfg["timeout_s"],
                 from_dir=cfg["from_dir"], keep_archives=cfg["keep_archives"])
    elif source == "audio":
        cfg = data["audio"]
        write_json(out / "manifest.json", audio_manifest(Path(cfg["dir"]), cfg["extensions"]))
    else:
        raise unknown_source(source)


def unknown_source(source: str) -> CoveridError:
    """The one-line error for a data.source no stage knows."""
    return CoveridError(f"params data.source: unknown source {source!r} (synth | melodies | datacos | audio)")


def features_for_source(params: dict[str, Any], skips: SkipLog) -> FeatureSet:
    """The pipeline's FeatureSet for params' data.source (synth, melodies, audio or datacos)."""
    data, pcfg = params["data"], params["preprocess"]
    source = data["source"]
    if source in ("synth", "melodies", "audio"):
        audio_dir = Path(data["audio"]["dir"]) if source == "audio" else paths.raw_dir(params)
        extensions = data["audio"]["extensions"]
        return extract_audio_dir(audio_dir, pcfg, source, skips, extensions=extensions)
    if source == "datacos":
        cfg = data["datacos"]
        parts = feature_parts(input_feature(pcfg))
        if "melody" in parts:
            raise CoveridError("preprocess.feature / fusion 'melody' is extracted from audio, and "
                               "Da-TACOS ships features only (crema | hpcp | chroma_cens)")
        for part in parts:
            if part not in cfg["features"]:
                raise CoveridError(f"preprocess feature {part!r} is not among the downloaded "
                                   f"data.datacos.features {cfg['features']}")
        return stack_sets([load_subset(paths.raw_dir(params), cfg["subset"], part, pcfg, skips)
                           for part in parts])
    raise unknown_source(source)


def load_subset(data_dir: str | Path, subset: str, feature: str, pcfg: dict[str, Any],
                skips: SkipLog) -> FeatureSet:
    """One subset's features as a FeatureSet (source "datacos"); bad files are skipped."""
    items = list_items(Path(data_dir), subset, feature, skips)
    if not items:
        raise CoveridError(f"{source_dir(Path(data_dir), subset, feature)}: no usable W_*/P_*.h5 files")
    return build_feature_set(items, partial(read_feature_h5, feature=feature), pcfg,
                             source="datacos", feature=feature, skips=skips)


def preprocess_dir(data_dir: str | Path, out_dir: str | Path, features: list[str],
                   pcfg: dict[str, Any], skips: SkipLog | None = None) -> list[Path]:
    """Preprocess every subset found under `data_dir`: OUT/<subset>.h5 for one feature,
    OUT/<subset>_<feature>.h5 for several; fails when too many files are bad."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    skips = skips if skips is not None else SkipLog()
    found = [(s, f) for s in SUBSETS for f in features if source_dir(data_dir, s, f)]
    if not found:
        wanted = ", ".join(feature_dir(data_dir, s, f).name for s in SUBSETS for f in features)
        raise CoveridError(f"{data_dir}: no Da-TACOS feature folder found (looked for {wanted} "
                           "and da-tacos_<subset>_subset_single_files)")
    written = []
    for subset, feature in found:
        fs = load_subset(data_dir, subset, feature, pcfg, skips)
        skips.check(pcfg["max_failed_fraction"])
        path = out_dir / (f"{subset}.h5" if len(features) == 1 else f"{subset}_{feature}.h5")
        write_features(path, fs)
        log.info("%s: %d performances of %d works", path, len(fs), len(set(fs.work_id)))
        written.append(path)
    return written
