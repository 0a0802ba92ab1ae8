"""The MLflow model registry: every version tagged and described (arch, loss, val/test MAP,
commit, DVC experiment), and the `champion` alias the CLI loads by default.

The alias moves in two ways only: `coverid models promote VERSION`, or the evaluate stage of a
workspace run (`dvc repro` / `make run`, never `dvc exp run`) when its version beats the
champion's test MAP on the same test split, or the champion was tested on other data
(`should_promote`). An experiment that trains a
worse model therefore never becomes what `coverid identify` uses.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.config import ConfigError, load_params, params_hash
from coverid.core.errors import CoveridError
from coverid.core.paths import MODEL_DIR
from coverid.core.tracking import git_commit, setup

log = logging.getLogger(__name__)

TAG = "coverid."  # prefix of every version tag this module writes


def test_set_key(perf_id: np.ndarray) -> str:
    """A short hash of the test split's performance ids: test MAPs compare only when equal."""
    text = "\n".join(sorted(str(p) for p in perf_id))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def train_tags(params: dict[str, Any], config: dict[str, Any], metrics: dict[str, Any],
               model_fingerprint: str) -> dict[str, str]:
    """The tags a version gets when the train stage registers it."""
    val = metrics.get("best_val_map")
    return {f"{TAG}arch": str(config["arch"]), f"{TAG}loss": str(config["loss"]),
            f"{TAG}embedding_dim": str(config["embedding_dim"]),
            f"{TAG}val_map": "" if val is None else f"{val:.4f}",
            f"{TAG}commit": git_commit(),
            f"{TAG}dvc_exp": os.environ.get("DVC_EXP_NAME", "workspace"),
            f"{TAG}params_hash": params_hash(params), f"{TAG}model": model_fingerprint}


def test_tags(metrics: dict[str, Any], test_set: str) -> dict[str, str]:
    """The tags the evaluate stage adds: test MAP (with and without query expansion), its
    standard error, and the test split's key."""
    tags = {f"{TAG}test_map": f"{metrics['map']:.4f}", f"{TAG}test_map_se": f"{metrics['map_se']:.4f}",
            f"{TAG}test_map_plain": f"{metrics['map_plain']:.4f}",
            f"{TAG}test_queries": str(int(metrics["n_queries"])), f"{TAG}test_set": test_set}
    if "holdout_map" in metrics:  # the extra corpus' hold-out (data.extra)
        tags[f"{TAG}holdout_map"] = f"{metrics['holdout_map']:.4f}"
    return tags


def description(tags: dict[str, str]) -> str:
    """One paragraph a person reads in the registry UI, from a version's tags."""
    get = lambda k: tags.get(f"{TAG}{k}", "")  # noqa: E731
    text = (f"{get('arch')}/{get('loss')} encoder, {get('embedding_dim')}-d embedding; "
            f"val MAP {get('val_map') or 'n/a'}")
    if get("test_map"):
        text += (f"; test MAP {get('test_map')} +- {get('test_map_se')} "
                 f"({get('test_queries')} queries, {get('test_map_plain')} without query expansion)")
    if get("holdout_map"):
        text += f"; hold-out MAP {get('holdout_map')}"
    return text + f". Commit {get('commit')[:8]}, DVC experiment {get('dvc_exp')}."


def should_promote(candidate: dict[str, str], champion: dict[str, str] | None) -> tuple[bool, str]:
    """Whether a version with `candidate` tags replaces the champion (None: there is none), and
    why: a higher test MAP on the same test split, or any test MAP when the champion was tested
    on other data (the data of the workspace run are the reference then)."""
    if not candidate.get(f"{TAG}test_map"):
        return False, "the version has no test MAP"
    if champion is None:
        return True, "there is no champion yet"
    if champion.get(f"{TAG}test_set") != candidate.get(f"{TAG}test_set"):
        # MAPs on different splits do not compare; the data this run used are the reference now
        return True, "the champion was tested on another test split"
    old_text = champion.get(f"{TAG}test_map")
    if not old_text:
        return True, "the champion has no test MAP"
    new, old = float(candidate[f"{TAG}test_map"]), float(old_text)
    if new > old:
        return True, f"test MAP {new:.4f} beats the champion's {old:.4f}"
    return False, f"test MAP {new:.4f} does not beat the champion's {old:.4f}"


def registered_name(params: dict[str, Any]) -> str:
    """params' mlflow.registered_model, or a one-line error when the registry is off (null)."""
    name = params["mlflow"]["registered_model"]
    if not name:
        raise CoveridError("params mlflow.registered_model is null: models are not registered")
    return name


def _client(params: dict[str, Any]) -> Any:
    """An MLflow client on the project's tracking backend."""
    import mlflow

    setup(params)
    return mlflow.MlflowClient()


def tag_version(params: dict[str, Any], version: str, tags: dict[str, str]) -> dict[str, str]:
    """Add `tags` to a registered version and rewrite its description; return all its tags."""
    client, name = _client(params), params["mlflow"]["registered_model"]
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    merged = {**client.get_model_version(name, version).tags, **tags}
    client.update_model_version(name, version, description=description(merged))
    return merged


def version_of_run(params: dict[str, Any], run_id: str | None) -> str | None:
    """The registered version logged by the training run `run_id`, if any."""
    name = params["mlflow"]["registered_model"]
    if not name or not run_id:
        return None
    found = _client(params).search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return max((str(v.version) for v in found), key=int, default=None)


def champion(params: dict[str, Any]) -> Any | None:
    """The version the champion alias points at (None when unset)."""
    from mlflow.exceptions import MlflowException

    cfg = params["mlflow"]
    if not cfg["registered_model"]:
        return None
    try:
        return _client(params).get_model_version_by_alias(cfg["registered_model"], cfg["champion_alias"])
    except MlflowException:
        return None


def promote(params: dict[str, Any], version: str) -> None:
    """Point the champion alias at `version` (it must exist)."""
    from mlflow.exceptions import MlflowException

    name, alias = registered_name(params), params["mlflow"]["champion_alias"]
    client = _client(params)
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        raise CoveridError(f"models:/{name}/{version}: no such version") from None
    client.set_registered_model_alias(name, alias, str(version))
    log.info("models:/%s@%s -> version %s", name, alias, version)


def maybe_promote(params: dict[str, Any], version: str, tags: dict[str, str]) -> bool:
    """The evaluate stage's rule: promote `version` when params allow it here (workspace runs
    only) and `should_promote` says so; log the decision either way."""
    cfg = params["mlflow"]
    if not cfg["auto_promote"] or os.environ.get("DVC_EXP_NAME"):
        log.info("version %s: the %s alias is not moved by experiments (coverid models promote %s)",
                 version, cfg["champion_alias"], version)
        return False
    current = champion(params)
    ok, why = should_promote(tags, None if current is None else current.tags)
    if current is not None and str(current.version) == str(version):
        ok, why = False, "it is the champion already"
    log.info("version %s %s %s: %s", version, "becomes" if ok else "does not become",
             cfg["champion_alias"], why)
    if ok:
        promote(params, version)
    return ok


def champion_uri(params: dict[str, Any]) -> str:
    """`models:/<registered_model>@<champion_alias>`."""
    cfg = params["mlflow"]
    return f"models:/{cfg['registered_model']}@{cfg['champion_alias']}"


def default_model(params_file: str | Path = "params.yaml") -> str:
    """The CLI's model when --model is not given: the registry's champion when this folder's
    params name a tracking database that has one, else the train stage's model dir."""
    path = Path(params_file)
    try:
        params = load_params(path) if path.is_file() else None
    except ConfigError:
        params = None
    uri = params and params["mlflow"]["tracking_uri"]
    local_db = uri and uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).is_file()
    if params and params["mlflow"]["registered_model"] and local_db and champion(params) is not None:
        log.info("model: %s (the registry's champion)", champion_uri(params))
        return champion_uri(params)
    log.info("model: %s (no registry champion here)", MODEL_DIR)
    return str(MODEL_DIR)


def list_versions(params: dict[str, Any]) -> list[dict[str, str]]:
    """Every registered version, newest first, with its tags and aliases (for `coverid models`)."""
    name, client = registered_name(params), _client(params)
    found = client.search_model_versions(f"name='{name}'")
    # search results carry no aliases; the registered model has them all
    aliases = client.get_registered_model(name).aliases if found else {}
    rows = []
    for v in found:
        held = sorted(a for a, version in aliases.items() if str(version) == str(v.version))
        rows.append({"version": str(v.version), "aliases": ",".join(held),
                     **{k.removeprefix(TAG): val for k, val in v.tags.items() if k.startswith(TAG)}})
    return sorted(rows, key=lambda r: -int(r["version"]))
