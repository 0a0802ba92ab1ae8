"""Shared fixtures: small deterministic feature sets and a quiet environment."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

from coverid.core.config import Params, load_params, with_overrides  # noqa: E402
from coverid.data.store import FeatureSet  # noqa: E402

PARAMS_FILE = Path(__file__).parents[1] / "params.yaml"
CHUNK = 2048  # distance rows computed at once in tests (results do not depend on it)


def repo_params(overrides: dict | None = None) -> Params:
    """The repo's params.yaml (validated), with dotted-key overrides such as {"train.loss": "bce"}."""
    params = load_params(PARAMS_FILE)
    return with_overrides(params, overrides) if overrides else params


def model_config(preprocess: dict | None = None, **over) -> dict:
    """A complete model config.json (what the train stage writes): params.yaml's preprocess
    section updated with `preprocess`, and the top-level keys updated with `over`."""
    params = repo_params()
    pre = {**params.preprocess.to_dict(), **(preprocess or {})}
    config = {"arch": params.model.arch, "loss": params.train.loss, "embedding_dim": 16,
              "metric": "euclidean", "feature": pre["feature"], "spect_len": pre["spect_len"],
              "tile": pre["tile"], "max_frames": pre["max_frames"], "preprocess": pre,
              "params_hash": None}
    return {**config, **over}


def make_feature_set(n_works: int = 4, versions: int = 3, n_noise: int = 2, spect_len: int = 40,
                     rows: int = 23, seed: int = 0, source: str = "synth") -> FeatureSet:
    """A random feature set: versions of a work share a base pattern plus noise."""
    rng = np.random.default_rng(seed)
    feats, works, perfs = [], [], []
    for w in range(n_works + n_noise):
        base = rng.random((rows, spect_len))
        n = versions if w < n_works else 1
        for p in range(n):
            feats.append(np.clip(base + 0.1 * rng.standard_normal(base.shape), 0, 1))
            works.append(f"W_{w}")
            perfs.append(f"P_{w}_{p}")
    return FeatureSet(np.array(feats, dtype=np.float32), works, perfs,
                      np.full(len(works), 1000, dtype=np.int32), feature="hpcp", source=source)


class FakeEmbedder:
    """Flattens and projects with a fixed random matrix (the real Embedder's interface)."""

    def __init__(self, d_in: int, dim: int = 16, metric: str = "euclidean", head=None,
                 config: dict | None = None, fingerprint: str = "fake00000001") -> None:
        self.fingerprint = fingerprint
        self.proj = np.random.default_rng(0).standard_normal((d_in, dim)) / np.sqrt(d_in)
        self.metric, self.head = metric, head
        self.config = {"arch": "fake", "loss": "triplet", **(config or {})}  # config.json keys

    def embed(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return (np.asarray(x).reshape(len(x), -1) @ self.proj).astype(np.float32)


@pytest.fixture
def feature_set() -> FeatureSet:
    """Four works of three versions plus two noise songs, 23 x 40 each."""
    return make_feature_set()


@pytest.fixture
def project_params(tmp_path, tmp_path_factory, monkeypatch) -> Params:
    """A copy of the repo's params, cwd = tmp_path, MLflow on one sqlite db per session."""
    p = repo_params()
    monkeypatch.chdir(tmp_path)
    # One tracking db per test session: creating (migrating) a new one costs seconds.
    db = tmp_path_factory.getbasetemp() / "coverid-mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    return p


def chains(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """12 works x 4 versions drifting away from each other along a direction of their own:
    the last version is closer to the third than to the first, as in real version sets."""
    rng = np.random.default_rng(seed)
    centre, drift = rng.normal(size=(12, 16)), rng.normal(size=(12, 16))
    x = np.concatenate([centre + j * 0.6 * drift + 0.5 * rng.normal(size=(12, 16))
                        for j in range(4)])
    return x, np.tile(np.arange(12), 4).astype(str)


def run_stage_script(name: str, params: dict) -> None:
    """Run stages/<name>.py's main in the current directory with `params` as params.yaml (what
    `dvc repro` does, in this process)."""
    import runpy
    import sys

    import yaml

    plain = params.to_dict() if hasattr(params, "to_dict") else params
    Path("params.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
    script = Path(__file__).resolve().parents[1] / "stages" / f"{name}.py"
    argv = sys.argv
    sys.argv = [str(script)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with the most slow tests first, each file's tests in their own order: under
    `make test`'s workers (--dist loadfile --no-loadscope-reorder) the end-to-end pipeline
    starts at once, beside the other files, instead of last."""
    slow: dict[Path, int] = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.path])
