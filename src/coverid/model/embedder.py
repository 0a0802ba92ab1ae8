"""A trained encoder on disk (and in the MLflow registry): save, load, embed.

Model dir layout: `encoder.keras` (the Keras model) + `config.json` (arch, loss, embedding_dim,
metric, feature, spect_len, tile, max_frames, preprocess, params_hash, and for the
bce loss `head`: {"weights": [...], "bias": b}).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.config import Preprocess, parse_section, to_plain
from coverid.core.errors import BadInputError, CoveridError
from coverid.core.io import atomic_dir, restamp_zip, to_json
from coverid.model import (
    encoders,  # noqa: F401  (registers the custom layers for deserialisation)
)

log = logging.getLogger(__name__)

MODEL_FILE = "encoder.keras"
CONFIG_FILE = "config.json"
KERAS_METADATA = "metadata.json"  # members of the .keras zip
KERAS_CONFIG = "config.json"
CACHE_ENV = "COVERID_CACHE"
# what every config.json holds (see the module docstring; params_hash may be null)
CONFIG_KEYS = ("arch", "loss", "embedding_dim", "metric", "feature", "spect_len", "tile", "max_frames",
               "preprocess", "params_hash")
# preprocess (and preprocess.audio) keys added after models were saved without them -> the
# value they imply
ADDED_PREPROCESS_KEYS = {"fusion": []}
ADDED_AUDIO_KEYS = {"melody_frame_size": 2048}


def metric_for(loss: str) -> str:
    """The distance a model trained with `loss` is meant to be compared with."""
    return "bce" if loss == "bce" else "euclidean"


class Embedder:
    """An encoder with its config: `embed` maps (N, F, L) features to (N, D) embeddings."""

    def __init__(self, encoder: Any, config: dict[str, Any],
                 head: tuple[np.ndarray, float] | None = None, fingerprint: str | None = None) -> None:
        self.encoder = encoder
        self.config = config
        self.fingerprint = fingerprint
        self.metric = config["metric"]
        self.head = head
        self._fn = None

    @property
    def dim(self) -> int:
        """Embedding size D."""
        return int(self.encoder.output_shape[-1])

    def embed(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, F, L) features -> (N, D) float32 embeddings (inference mode)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3:
            raise CoveridError(f"embed expects (N, F, L) features, got shape {x.shape}")
        want = self.encoder.input_shape[1:]
        if want[0] is not None and x.shape[1] != want[0] or \
                want[1] is not None and x.shape[2] != want[1]:
            raise CoveridError(f"features of shape {x.shape[1:]} do not fit the encoder's "
                               f"input {tuple(want)}")
        if self._fn is None:
            self._fn = make_embed_fn(self.encoder)
        return embed_batches(self._fn, x, batch_size, self.dim)


def stable_graphs() -> None:
    """Turn off grappler's arithmetic optimizer for the functions traced from now on: with it,
    the same songs' bag embeddings differed by up to 4.5e-8 between two calls on 2 threads
    (off, or on one thread, they agree), and so did the whitening fitted on them."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})


def make_embed_fn(encoder: Any):
    """A compiled inference call of `encoder` (stable_graphs: the same input, the same bytes)."""
    import tensorflow as tf

    stable_graphs()
    return tf.function(lambda b: encoder(b, training=False), reduce_retracing=True)


def embed_batches(fn: Any, x: np.ndarray, batch_size: int, dim: int) -> np.ndarray:
    """Apply `fn` to `x` in batches; (N, dim) float32."""
    out = [np.asarray(fn(x[i:i + batch_size]), dtype=np.float32)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def save_embedder(model_dir: str | Path, encoder: Any, config: dict[str, Any],
                  head: tuple[np.ndarray, float] | None = None) -> None:
    """Write encoder.keras + config.json to a temp dir beside `model_dir`, then swap it in."""
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    config = to_plain(dict(config))
    if head is not None:
        w, b = head
        config["head"] = {"weights": np.asarray(w, np.float32).ravel().tolist(), "bias": float(b)}
    with atomic_dir(model_dir) as tmp:
        encoder.save(tmp / MODEL_FILE)
        reproducible_keras_file(tmp / MODEL_FILE)
        (tmp / CONFIG_FILE).write_text(to_json(config) + "\n")


def reproducible_keras_file(path: Path) -> None:
    """Drop what varies between saves of the same model from a .keras archive: the wall-clock
    time (metadata.json's date_saved, the members' zip dates) and the memory addresses Keras
    uses as shared_object_id (renumbered in order of appearance, which keeps the sharing)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read(KERAS_METADATA))
        config = json.loads(z.read(KERAS_CONFIG))
    meta.pop("date_saved", None)
    restamp_zip(path, {KERAS_METADATA: (json.dumps(meta) + "\n").encode(),
                       KERAS_CONFIG: json.dumps(_renumber_shared(config, {})).encode()})


def _renumber_shared(obj: Any, ids: dict[int, int]) -> Any:
    """`obj` with every shared_object_id replaced by 1, 2, ... in order of first appearance."""
    if isinstance(obj, dict):
        return {k: (ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" else
                    _renumber_shared(v, ids)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_renumber_shared(v, ids) for v in obj]
    return obj


def load_embedder(model: str | Path) -> Embedder:
    """Load a model dir, or an MLflow model URI (`models:/name/version|latest`, `runs:/...`)."""
    text = str(model)
    model_dir = _download(text) if re.match(r"^[a-z][a-z0-9+.-]*:/", text) else Path(text)
    return _load_dir(model_dir)


def _load_dir(model_dir: Path) -> Embedder:
    """Read a model dir; BadInputError naming the problem when it is missing or corrupt."""
    import keras

    if not model_dir.is_dir():
        raise BadInputError(model_dir, "model directory not found")
    found = _find_model_dir(model_dir)
    if found is None:
        raise BadInputError(model_dir, f"not a model directory (needs {MODEL_FILE} and "
                            f"{CONFIG_FILE})")
    try:
        config = json.loads((found / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise BadInputError(found / CONFIG_FILE, f"not valid JSON ({e.msg})") from None
    if not isinstance(config, dict):
        raise BadInputError(found / CONFIG_FILE, "expected a JSON object")
    check_config(upgrade_config(config), found / CONFIG_FILE)
    try:
        encoder = keras.saving.load_model(found / MODEL_FILE, compile=False)
    except Exception as e:  # noqa: BLE001  (Keras raises many types for a bad archive)
        raise BadInputError(found / MODEL_FILE,
                            f"cannot load the Keras model ({e.__class__.__name__})") from None
    head = None
    if config.get("head") is not None:
        head = (np.asarray(config["head"]["weights"], np.float32), float(config["head"]["bias"]))
    if config.get("metric") == "bce" and head is None:
        raise BadInputError(found / CONFIG_FILE, "metric is bce but the head is missing")
    return Embedder(encoder, config, head, fingerprint(found))


def fingerprint(model_dir: str | Path) -> str:
    """A short content hash of a model dir (its Keras file and config): the same trained
    model has the same fingerprint, which ties it to its MLflow training run."""
    h = hashlib.sha256()
    for name in (MODEL_FILE, CONFIG_FILE):
        h.update((Path(model_dir) / name).read_bytes())
    return h.hexdigest()[:12]


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the preprocess keys added since older models were saved set to what those
    models used, so that they keep loading (in place; returned for convenience)."""
    preprocess = config.get("preprocess")
    if isinstance(preprocess, dict):
        for key, value in ADDED_PREPROCESS_KEYS.items():
            preprocess.setdefault(key, list(value))
    audio = preprocess.get("audio") if isinstance(preprocess, dict) else None
    if isinstance(audio, dict):
        for key, value in ADDED_AUDIO_KEYS.items():
            audio.setdefault(key, value)
    return config


def check_config(config: dict[str, Any], where: str | Path) -> None:
    """A model config (saved by an older coverid, say) lacking a key fails in one line naming it."""
    for key in CONFIG_KEYS:
        if key not in config:
            raise BadInputError(where, f"missing key {key} (saved by an older coverid? train it again)")
    parse_section(Preprocess, config["preprocess"], str(where), "preprocess")


def _find_model_dir(root: Path) -> Path | None:
    """`root` itself, or the one folder below it holding encoder.keras + config.json."""
    if (root / MODEL_FILE).is_file() and (root / CONFIG_FILE).is_file():
        return root
    for keras_file in sorted(root.rglob(MODEL_FILE)):
        if (keras_file.parent / CONFIG_FILE).is_file():
            return keras_file.parent
    return None


def cache_dir() -> Path:
    """Where downloaded registry models are kept (env COVERID_CACHE, else ~/.cache/coverid)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "coverid")) / "models"


def _download(uri: str) -> Path:
    """Download an MLflow model URI once (per resolved registry version) into the cache."""
    import mlflow

    key = _resolve_registry_version(uri)
    target = cache_dir() / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=target.parent))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp))
        os.replace(tmp, target)
    except mlflow.exceptions.MlflowException as e:
        raise CoveridError(f"{uri}: cannot download the model ({e.message})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _resolve_registry_version(uri: str) -> str:
    """`models:/name/latest` or `models:/name@alias` -> `models:/name/<version>`; others as is."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    m = re.match(r"^models:/([^/@]+)(?:/(.+)|@(.+))$", uri)
    if not m:
        return uri
    name, version, alias = m.groups()
    client = MlflowClient()
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias).version
        elif version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise CoveridError(f"{uri}: the registered model has no versions")
            version = str(max(int(v.version) for v in versions))
    except MlflowException as e:
        raise CoveridError(f"{uri}: {e.message}") from None
    return f"models:/{name}/{version}"


def log_mlflow_model(model_dir: str | Path, registered_name: str | None) -> Any:
    """Log the model dir as an MLflow pyfunc model (signature (None, F, L) float32 -> (None, D)),
    registered under `registered_name` when given; returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    emb = load_embedder(model_dir)
    f, length = emb.encoder.input_shape[1:]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, f, -1 if length is None else length),
                                  "features")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, emb.dim), "embedding")]))

    with warnings.catch_warnings():
        # MLflow nags about type hints and input examples (the explicit signature covers both)
        # and about cloudpickle (the class pickles by reference to this installed package).
        warnings.simplefilter("ignore", UserWarning)
        quiet = logging.getLogger("mlflow.pyfunc")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            class EncoderModel(mlflow.pyfunc.PythonModel):
                """pyfunc wrapper: predict((N, F, L) float32) -> (N, D) embeddings."""

                def load_context(self, context):
                    self.embedder = load_embedder(context.artifacts["model_dir"])

                def predict(self, context, model_input, params=None):
                    return self.embedder.embed(np.asarray(model_input, np.float32))

            return mlflow.pyfunc.log_model(
                name="encoder", python_model=EncoderModel(),
                artifacts={"model_dir": str(model_dir)}, signature=signature,
                registered_model_name=registered_name, pip_requirements=_requirements())
        finally:
            quiet.setLevel(level)


def _requirements() -> list[str]:
    """The pinned packages the pyfunc model needs (no slow requirement inference)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("tensorflow", "keras", "numpy", "mlflow", "coverid"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pass
    return reqs
