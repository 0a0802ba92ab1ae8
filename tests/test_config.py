"""params.yaml as typed sections: loading, one-line validation errors, overrides, and the rule
that params.yaml is the one home of every default (no library module holds one)."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coverid.core import config as C
from coverid.core.config import (
    ConfigError,
    Params,
    Preprocess,
    flatten,
    load_params,
    params_hash,
    parse_overrides,
    parse_section,
    with_overrides,
)
from coverid.core.errors import CoveridError

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "params.yaml"
LIBRARY = ROOT / "src" / "coverid"


def raw_params() -> dict:
    """params.yaml as plain YAML data."""
    return yaml.safe_load(PARAMS_FILE.read_text())


def error_of(tmp_path: Path, text: str) -> str:
    """The ConfigError message of loading `text` as a params file (tmp_path/params.yaml)."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(CoveridError) as e:
        load_params(path)
    message = str(e.value)
    assert "\n" not in message
    return message.removeprefix(f"{path}: ")


def error_with(tmp_path: Path, dotted: str, value: object) -> str:
    """The error of params.yaml with the value at `dotted` replaced (written as YAML)."""
    raw = raw_params()
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[leaf] = value
    return error_of(tmp_path, yaml.safe_dump(raw, sort_keys=False))


# ---------------------------------------------------------------- loading


def test_params_yaml_loads_typed_and_round_trips():
    params = load_params(PARAMS_FILE)
    raw = raw_params()
    assert isinstance(params, Params)
    assert params.to_dict() == raw
    assert list(params.keys()) == list(raw) and list(params.model.bag.keys()) == list(raw["model"]["bag"])
    # item access (as the library reads sections and saved configs) and attribute access agree
    assert params["train"]["loss"] == params.train.loss == raw["train"]["loss"]
    assert params["model"]["bag"]["key_rolls"] == params.model.bag.key_rolls
    assert isinstance(params.data.synth.tempo_bpm, tuple) and isinstance(params.preprocess.audio.min_frequency, float)
    # MLflow params and the params hash are those of the YAML data
    assert flatten(params) == flatten(raw) and params_hash(params) == params_hash(raw)
    assert dict(params["model"]["bag"]) == raw["model"]["bag"]
    with pytest.raises(KeyError):
        params["train"]["lerning_rate"]


def test_no_section_field_has_a_default():
    sections = [obj for obj in vars(C).values()
                if isinstance(obj, type) and issubclass(obj, C.Section) and obj is not C.Section]
    assert len(sections) >= 20
    for cls in sections:
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
                f"{cls.__name__}.{f.name} has a default: params.yaml is the one home of values"


# ---------------------------------------------------------------- one-line errors


def test_typo_names_the_dotted_key_and_suggests_the_right_one(tmp_path):
    text = PARAMS_FILE.read_text()
    assert error_of(tmp_path, text.replace("  decay_rate:", "  decay_rte:")) == \
        "unknown key train.decay_rte (did you mean train.decay_rate?)"
    assert error_of(tmp_path, text.replace("    key_rolls: ", "    key_roll: ")) == \
        "unknown key model.bag.key_roll (did you mean model.bag.key_rolls?)"
    assert error_of(tmp_path, text.replace("\ntrain:", "\ntrian:")) == "unknown key trian (did you mean train?)"
    assert error_of(tmp_path, text + "\nflux_capacitor: 1\n") == "unknown key flux_capacitor"


@pytest.mark.parametrize("dotted, value, message", [
    ("train.epochs", "ten", "train.epochs must be int, got str 'ten'"),
    ("train.epochs", True, "train.epochs must be int, got bool True"),
    ("train.epochs", 10.5, "train.epochs must be int, got float 10.5"),
    ("train.losses.triplet.soft_margin", 1, "train.losses.triplet.soft_margin must be bool, got int 1"),
    ("train.losses.bce.learning_rate", [0.1],
     "train.losses.bce.learning_rate must be float, got list [0.1]"),
    ("train.losses.triplet.learning_rate", False,
     "train.losses.triplet.learning_rate must be float, got bool False"),
    ("preprocess.max_frames", "all", "preprocess.max_frames must be int or null, got str 'all'"),
    ("data.synth.tempo_bpm", [80.0], "data.synth.tempo_bpm must be a list of 2 values, got 1"),
    ("data.synth.snr_db", 10.0, "data.synth.snr_db must be tuple[float, float], got float 10.0"),
    ("model.move.dilations", [1, "2"], "model.move.dilations[1] must be int, got str '2'"),
    ("model.bag.key_rolls", 2.0, "model.bag.key_rolls must be int, got float 2.0"),
    ("train.augment", 3, "train.augment must be a mapping, got int 3"),
    ("mlflow.experiment", 5, "mlflow.experiment must be str, got int 5"),
])
def test_wrong_type_names_key_and_types(tmp_path, dotted, value, message):
    assert error_with(tmp_path, dotted, value) == message


@pytest.mark.parametrize("dotted, value, message", [
    ("train.loss", "tripplet", "train.loss must be one of contrastive, bce, triplet; got 'tripplet'"),
    ("data.source", "cd-rom", "data.source must be one of synth, melodies, datacos, audio; got 'cd-rom'"),
    ("model.move.pitch_pool", "middle", "model.move.pitch_pool must be one of early, late, gram, key; "
                                        "got 'middle'"),
    ("baseline.methods", ["qmax", "knn"], "baseline.methods[1] must be one of qmax, dtw; got 'knn'"),
    ("index.approx", "flat", "index.approx must be one of pqfs, hnsw; got 'flat'"),
    ("tune.objective", True, "tune.objective must be one of f1, balanced_accuracy; got True"),
])
def test_unknown_choice_lists_the_choices(tmp_path, dotted, value, message):
    assert error_with(tmp_path, dotted, value) == message


def test_missing_key_names_the_full_path(tmp_path):
    raw = raw_params()
    del raw["model"]["bag"]["key_rolls"]
    assert error_of(tmp_path, yaml.safe_dump(raw)) == "missing key model.bag.key_rolls"
    raw = raw_params()
    del raw["index"]
    assert error_of(tmp_path, yaml.safe_dump(raw)) == "missing key index"


def test_ints_are_accepted_for_floats_and_nulls_where_allowed(tmp_path):
    raw = raw_params()
    raw["train"]["losses"]["triplet"]["learning_rate"], raw["baseline"]["max_queries"] = 1, 7
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    lr = params.train.losses.triplet.learning_rate
    assert lr == 1.0 and isinstance(lr, float)
    assert params.baseline.max_queries == 7 and params.preprocess.max_frames is None


def test_file_level_errors(tmp_path):
    assert error_of(tmp_path, "- 1\n- 2\n") == "expected a mapping at the top level, got list [1, 2]"
    assert error_of(tmp_path, "seed: [\n") == "not valid YAML (ParserError)"
    with pytest.raises(CoveridError, match="params file not found"):
        load_params(tmp_path / "none.yaml")
    with pytest.raises(CoveridError, match="none.yaml not found: run inside a coverid project or pass --params"):
        C.project_params(tmp_path / "none.yaml")


def test_a_saved_section_is_checked_under_its_dotted_name():
    saved = raw_params()["preprocess"]
    assert parse_section(Preprocess, saved, "m/config.json", "preprocess").audio.bins == 12
    del saved["audio"]["bins"]
    with pytest.raises(ConfigError) as e:
        parse_section(Preprocess, saved, "m/config.json", "preprocess")
    assert str(e.value) == "m/config.json: missing key preprocess.audio.bins"


# ---------------------------------------------------------------- changing params


def test_with_overrides_is_a_checked_copy():
    params = load_params(PARAMS_FILE)
    changed = with_overrides(params, {"train.loss": "bce", "model.bag.lags": [3, 9], "seed": 1})
    assert (changed.train.loss, changed.model.bag.lags, changed.seed) == ("bce", [3, 9], 1)
    assert params.train.loss == raw_params()["train"]["loss"]  # the original is untouched
    with pytest.raises(ConfigError, match="override: train.loss must be one of"):
        with_overrides(params, {"train.loss": "tripplet"})
    with pytest.raises(ConfigError, match="override: unknown key train.lerning_rate"):
        with_overrides(params, {"train.lerning_rate": 0.1})
    with pytest.raises(ConfigError, match="override: unknown section trian"):
        with_overrides(params, {"trian.loss": "bce"})


def test_setting_a_key_is_checked():
    params = load_params(PARAMS_FILE)
    params["train"]["epochs"] = 3
    params["preprocess"].update(spect_len=40, scheduler="single")
    params["preprocess"]["audio"] = {**raw_params()["preprocess"]["audio"], "bins": 36}
    assert (params.train.epochs, params.preprocess.spect_len, params.preprocess.audio.bins) == (3, 40, 36)
    assert isinstance(params.preprocess.audio, C.AudioFeatures)
    with pytest.raises(ConfigError, match="epochs must be int, got str 'ten'"):
        params["train"]["epochs"] = "ten"
    with pytest.raises(KeyError):
        params["train"]["lerning_rate"] = 0.1


# ---------------------------------------------------------------- stages stop first


def _stage_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.parametrize("stage", ["download", "preprocess", "validate", "train", "tune", "evaluate",
                                   "baseline"])
def test_a_stage_with_a_typo_stops_in_one_line_before_any_work(tmp_path, stage):
    (tmp_path / "params.yaml").write_text(PARAMS_FILE.read_text().replace("  decay_rate:", "  decay_rte:"))
    out = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=tmp_path,
                         env=_stage_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"{stage}: error: params.yaml: unknown key train.decay_rte (did you mean train.decay_rate?)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing made


# ---------------------------------------------------------------- one home for defaults

# (module path under src/coverid, function or "get", key): why a literal default is right there
ALLOWED = {
    ("data/store.py", "get", "source"):
        "an HDF5 attribute read back from feature files written before it existed (file data)",
    ("model/embedder.py", "embed", "batch_size"):
        "the inference batch of the CLI and the MLflow pyfunc model, which run without params.yaml; "
        "the stages pass evaluate.batch_size / tune.batch_size",
}


def leaf_keys(node: dict) -> set[str]:
    """Every key of params.yaml that holds a value (not a section)."""
    out: set[str] = set()
    for key, value in node.items():
        out |= leaf_keys(value) if isinstance(value, dict) else {key}
    return out


def _literal(node: ast.AST | None) -> tuple[bool, object]:
    """(is a literal, its value)."""
    if node is None:
        return False, None
    try:
        return True, ast.literal_eval(node)
    except ValueError:
        return False, None


def defaults_in(source: str, keys: set[str]) -> list[tuple[int, str, str, str]]:
    """(line, function or "get", key, what) of each default for a params key in `source`:
    .get("key", literal), a parameter named as a key with a literal default, DEFAULT_* names."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys:
            ok, value = _literal(node.args[1])
            if ok and value is not None:
                found.append((node.lineno, "get", node.args[0].value, f'.get("{node.args[0].value}", {value!r})'))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += list(zip(a.kwonlyargs, a.kw_defaults))
            name = getattr(node, "name", "<lambda>")
            for arg, default in pairs:
                ok, value = _literal(default)
                if arg.arg in keys and ok and value is not None:
                    found.append((node.lineno, name, arg.arg, f"{name}({arg.arg}={value!r})"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id.startswith("DEFAULT_"):
                found.append((node.lineno, "module", t.id, t.id))
    return found


def test_the_checker_finds_planted_defaults():
    planted = '''
DEFAULT_SPECT_LEN = 500
def build(cfg, dropout=0.1, name="x", pitch_pool=None, *, key_rolls=1, downsample=-1):
    cfg.get("dropout"), cfg.get("other", 3), cfg.get(key, 2)
    return cfg.get("time_pool", 1)
fn = lambda sr, hop_size=512: sr / hop_size
'''
    keys = leaf_keys(raw_params())
    assert sorted(what for _, _, _, what in defaults_in(planted, keys)) == sorted([
        "DEFAULT_SPECT_LEN", "build(dropout=0.1)", "build(key_rolls=1)", "build(downsample=-1)",
        '.get("time_pool", 1)', "<lambda>(hop_size=512)"])


def test_no_library_module_holds_a_default_that_params_yaml_holds():
    keys = leaf_keys(raw_params())
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        module = path.relative_to(LIBRARY).as_posix()
        for line, where, key, what in defaults_in(path.read_text(), keys):
            if (module, where, key) not in ALLOWED:
                found.append(f"src/coverid/{module}:{line}: {what}")
    assert not found, "defaults belong in params.yaml only:\n" + "\n".join(found)
    assert all(reason for reason in ALLOWED.values())


def test_parse_overrides_reads_yaml_values_and_rejects_items_without_a_key():
    assert parse_overrides(["model.bag.lags=[5]", " train.loss =bce", "seed=7"]) == {
        "model.bag.lags": [5], "train.loss": "bce", "seed": 7}
    for bad in ("model.bag.patch", "=3"):
        with pytest.raises(ConfigError, match="expected key=value"):
            parse_overrides([bad])
