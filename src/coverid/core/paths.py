"""Where each stage reads and writes, derived from params (one place for every path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODEL_DIR = Path("data/models/encoder")
REPORTS = Path("reports")
PLOTS = REPORTS / "plots"
CHECKPOINTS = MODEL_DIR.parent / "checkpoints"
TIMINGS = REPORTS / "timings"  # per-stage seconds: kept in git, never a DVC output


def timings_file(stage: str) -> Path:
    """reports/timings/<stage>.json."""
    return TIMINGS / f"{stage}.json"


def raw_dir(params: dict[str, Any]) -> Path:
    """data/raw/<source>: what the download stage writes."""
    return Path(params["data"]["raw_dir"]) / params["data"]["source"]


def dataset_name(params: dict[str, Any]) -> str:
    """The processed file's name: the Da-TACOS subset, else the source (synth, melodies, audio)."""
    data = params["data"]
    return data["datacos"]["subset"] if data["source"] == "datacos" else data["source"]


def processed_file(params: dict[str, Any]) -> Path:
    """data/processed/<name>.h5 (SPEC.md section 3)."""
    return Path(params["data"]["processed_dir"]) / f"{dataset_name(params)}.h5"


def splits_file(params: dict[str, Any]) -> Path:
    """data/processed/splits.json: work_id -> train | val | test."""
    return Path(params["data"]["processed_dir"]) / "splits.json"
