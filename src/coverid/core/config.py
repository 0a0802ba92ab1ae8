"""params.yaml (the one home of every setting) as typed sections, validated at load.

Each section of params.yaml is a dataclass below with no default values: a value lives in
params.yaml only. `load_params` converts the YAML mapping into the `Params` tree and stops at
the first unknown key, missing key, wrong type or unknown choice with one line naming the
file and the dotted key. Sections also read like dicts (`params["train"]["loss"]`, `keys()`,
`items()`, `to_dict()`), so code that takes a saved config (a plain dict read back from a
model dir's config.json) and code that takes a section read the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from coverid.core.errors import CoveridError

PARAMS_FILE = Path("params.yaml")

S = TypeVar("S", bound="Section")

# Choices (the values the library accepts).
Source = Literal["synth", "melodies", "datacos", "audio"]
Subset = Literal["benchmark", "coveranalysis"]
DatacosFeature = Literal["hpcp", "chroma_cens", "crema"]  # what Da-TACOS ships
Feature = Literal["hpcp", "chroma_cens", "crema", "melody"]  # crema: Da-TACOS only; melody: audio
Arch = Literal["seed", "move", "bag"]
Pooling = Literal["attention", "mean", "max"]
PitchPool = Literal["early", "late", "gram", "key"]
Loss = Literal["contrastive", "bce", "triplet"]
Mining = Literal["batch_hard", "semi_hard"]
PairMining = Literal["all", "hard", "semi_hard"]
NegativeSampling = Literal["batch", "random", "hardest"]
ProjectionKind = Literal["whiten", "random", "trained"]
Objective = Literal["f1", "balanced_accuracy"]
Method = Literal["qmax", "dtw"]
DistanceType = Literal["asymmetric", "symmetric"]
Approx = Literal["pqfs", "hnsw"]
Storage = Literal["float16", "float32"]


class Section:
    """Dict-style reading of a config dataclass: cfg["key"], keys(), items(), to_dict()."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._names():
            raise KeyError(key)
        try:
            setattr(self, key, _convert(get_type_hints(type(self))[key], value, key))
        except _Invalid as e:
            raise ConfigError(str(e)) from None

    def update(self, values: Mapping[str, Any] | None = None, **more: Any) -> None:
        """Set several keys, each checked as `section[key] = value` is."""
        for key, value in {**(values or {}), **more}.items():
            self[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def keys(self) -> list[str]:
        """The section's keys, in params.yaml order."""
        return list(self._names())

    def values(self) -> list[Any]:
        """The section's values (sub-sections as Section objects)."""
        return [getattr(self, k) for k in self._names()]

    def items(self) -> list[tuple[str, Any]]:
        """(key, value) pairs (sub-sections as Section objects)."""
        return [(k, getattr(self, k)) for k in self._names()]

    def to_dict(self) -> dict[str, Any]:
        """A nested plain dict (tuples as lists): what params.yaml holds, JSON-ready."""
        return {k: to_plain(v) for k, v in self.items()}

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def to_plain(value: Any) -> Any:
    """Sections -> dicts, tuples -> lists, recursively (what JSON files and MLflow get)."""
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- the sections


@dataclass
class Split(Section):
    """Fractions of the works in each split."""
    train: float
    val: float
    test: float


@dataclass
class Synth(Section):
    """The generated corpus."""
    n_works: int
    versions_per_work: int
    n_noise: int
    duration_s: float
    sample_rate: int
    tempo_bpm: tuple[float, float]
    tempo_range: float
    snr_db: tuple[float, float]
    p_section_edit: float
    max_offset_s: float
    p_melody_variation: float
    p_chord_substitution: float
    p_common_progression: float
    p_solo: float
    timbre_jitter: float
    n_sections: int
    bars_per_section: int
    peak_dbfs: float
    workers: int


@dataclass
class Melodies(Section):
    """Folk tunes from music21's ABC collections rendered with a General MIDI soundfont."""
    collections: list[str]
    corpus_dir: str | None
    n_works: int
    versions_per_work: int
    n_noise: int
    duration_s: float
    sample_rate: int
    tempo_bpm: tuple[float, float]
    tempo_range: float
    snr_db: tuple[float, float] | None
    p_phrase_edit: float
    phrase_bars: int
    max_offset_s: float
    p_chord_substitution: float
    p_solo: float
    incipit_steps: int
    title_incipit_steps: int
    programs: list[int]
    accompaniment_programs: list[int]
    bass_programs: list[int]
    peak_dbfs: float
    workers: int


@dataclass
class Datacos(Section):
    """Da-TACOS download settings."""
    subset: Subset
    features: list[DatacosFeature]
    base_url: str | None
    from_dir: str | None
    checksums: str | None
    retries: int
    retry_wait_s: float
    timeout_s: float
    keep_archives: bool


@dataclass
class AudioData(Section):
    """A folder of audio files as the data source."""
    dir: str
    extensions: list[str]


ExtraSource = Literal["synth", "melodies", "audio"]


@dataclass
class Extra(Section):
    """A second corpus beside data.source: its train and val works join training and
    validation, its test works are a hold-out evaluated on their own (split "holdout")."""
    source: ExtraSource | None
    split: Split


@dataclass
class Data(Section):
    """Where the songs come from and where the pipeline keeps them."""
    source: Source
    raw_dir: str
    processed_dir: str
    split: Split
    synth: Synth
    melodies: Melodies
    datacos: Datacos
    audio: AudioData
    extra: Extra


@dataclass
class AudioFeatures(Section):
    """essentia parameters of the audio features."""
    sample_rate: int
    frame_size: int
    hop_size: int
    window: str
    max_peaks: int
    min_frequency: float
    max_frequency: float
    harmonics: int
    bins: int
    reference_frequency: float
    whitening: bool
    cens_win_len: int
    melody_frame_size: int
    min_duration_s: float
    silence_rms: float


@dataclass
class Preprocess(Section):
    """Features -> model inputs, and how the work is spread over workers."""
    feature: Feature
    fusion: list[Feature]
    spect_len: int
    max_frames: int | None
    tile: bool
    workers: int
    scheduler: str
    max_failed_fraction: float
    audio: AudioFeatures


@dataclass
class Validate(Section):
    """Data validation bounds."""
    value_min: float
    value_max: float
    min_length_frames: int
    max_length_frames: int
    min_versions_train: int
    allow_noise_in_train: bool


@dataclass
class Move(Section):
    """The MOVE-style encoder."""
    channels: int
    downsample: int
    first_kernel: int
    kernel: int
    dilations: list[int]
    time_pool: int
    pitch_pool: PitchPool
    l2_normalize: bool
    pooling: Pooling
    dropout: float


@dataclass
class Bag(Section):
    """The bag-of-patterns encoder."""
    downsample: int
    patch: int
    codes: int
    sharpness: float
    lags: list[int]
    unigrams: bool
    weighted: bool
    tempo_factors: list[float]
    kmeans_iters: int
    key_rolls: int
    key_sharpness: float
    key_rolls_train: bool


@dataclass
class Model(Section):
    """Which encoder, and its settings."""
    arch: Arch
    embedding_dim: int
    projection_dim: int | None
    projection: ProjectionKind
    projection_shrinkage: float
    projection_power: float
    projection_refit_every: int
    fusion_weight: float
    fusion_dim: int | None
    move: Move
    bag: Bag


@dataclass
class Augment(Section):
    """Training-time augmentation."""
    p_transpose: float
    p_stretch: float
    stretch_range: float
    p_crop: float
    crop_min: float
    p_warp: float
    warp_rate: float
    p_notes: float
    note_moves: int
    note_frames: tuple[int, int]
    p_remap: float
    p_reverse: float


@dataclass
class TripletLoss(Section):
    """The triplet loss's settings."""
    margin: float
    mining: Mining
    soft_margin: bool
    learning_rate: float


@dataclass
class ContrastiveLoss(Section):
    """The contrastive loss's settings."""
    margin: float
    mining: PairMining
    learning_rate: float


@dataclass
class BceLoss(Section):
    """The BCE head loss's settings."""
    mining: PairMining
    learning_rate: float
    refit_negatives: int
    refit_c: float


@dataclass
class Losses(Section):
    """Each loss's own settings; `train.loss` picks the one used."""
    triplet: TripletLoss
    contrastive: ContrastiveLoss
    bce: BceLoss


@dataclass
class Train(Section):
    """Loss, batches, optimiser, stopping, checkpoints and devices."""
    loss: Loss
    losses: Losses
    epochs: int
    steps_per_epoch: int
    batch_size: int
    works_per_batch: int
    versions_per_work: int
    warmup_epochs: int
    decay_rate: float
    lookahead_k: int
    lookahead_alpha: float
    negative_sampling: NegativeSampling
    singleton_positives: bool
    val_every: int
    patience: int
    resume: bool
    checkpoint_every: int
    mixed_precision: bool
    xla: bool
    augment: Augment


@dataclass
class Expansion(Section):
    """The query-expansion grid searched on validation."""
    k: list[int]
    alpha: list[float]


@dataclass
class Tune(Section):
    """Threshold tuning (Optuna) and the expansion grid."""
    study_name: str
    storage: str
    objective: Objective
    n_trials: int
    n_negatives: int
    batch_size: int
    expansion: Expansion


@dataclass
class Evaluate(Section):
    """Test-set evaluation."""
    batch_size: int
    chunk_size: int
    n_negatives: int


@dataclass
class Qmax(Section):
    """essentia's Qmax cover similarity."""
    frame_stack_size: int
    frame_stack_stride: int
    binarize_percentile: float
    dis_onset: float
    dis_extension: float
    distance_type: DistanceType


@dataclass
class Baseline(Section):
    """The classical baselines."""
    methods: list[Method]
    max_queries: int | None
    workers: int
    downsample: int
    dtw_band: float
    qmax: Qmax


@dataclass
class Index(Section):
    """The search index."""
    exact_max: int
    approx: Approx
    pq_dims: int
    train_max: int
    candidates: int
    hnsw_m: int
    ef_construction: int
    ef_search: int
    storage: Storage


@dataclass
class Mlflow(Section):
    """Tracking."""
    tracking_uri: str
    experiment: str
    registered_model: str | None
    champion_alias: str
    auto_promote: bool


@dataclass
class Params(Section):
    """The whole of params.yaml."""
    seed: int
    data: Data
    preprocess: Preprocess
    validate: Validate
    model: Model
    train: Train
    tune: Tune
    evaluate: Evaluate
    baseline: Baseline
    index: Index
    mlflow: Mlflow


# ---------------------------------------------------------------- validation


class ConfigError(CoveridError):
    """A params value that does not fit its section (the message names the dotted key)."""


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file; ConfigError naming the first bad key."""
    path = Path(path)
    try:
        with path.open() as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise CoveridError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise CoveridError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    return parse_params(raw, str(path))


def project_params(path: str | Path) -> Params:
    """load_params for a CLI command: a missing file says how to get one, in one line."""
    if not Path(path).is_file():
        raise CoveridError(f"{path} not found: run inside a coverid project or pass --params FILE")
    return load_params(path)


def parse_params(raw: Any, origin: str) -> Params:
    """A params mapping (as read from YAML) as a validated Params tree; `origin` names it in errors."""
    return parse_section(Params, raw, origin)


def parse_section(cls: type[S], raw: Any, origin: str, prefix: str = "") -> S:
    """One section (e.g. Preprocess from a model's config.json) as a validated dataclass."""
    try:
        return _convert(cls, raw, prefix)
    except _Invalid as e:
        raise ConfigError(f"{origin}: {e}") from None


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """{dotted key: value} from "key=YAML value" items (command-line overrides)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def with_overrides(params: Params, overrides: Mapping[str, Any]) -> Params:
    """A validated copy of `params` with dotted keys replaced, e.g. {"train.loss": "bce"}."""
    raw = params.to_dict()
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"override: unknown section {dotted.rsplit('.', 1)[0]}")
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"override: unknown key {dotted}")
        node[leaf] = copy.deepcopy(to_plain(value))
    return parse_params(raw, "override")


class _Invalid(Exception):
    """A validation failure below the top (the message lacks the file name)."""


def _convert(hint: Any, value: Any, key: str) -> Any:
    """`value` checked against (and converted to) the type `hint`; _Invalid names `key`
    ("" for the top level)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _convert_section(hint, value, key)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        one = inner[0] if len(inner) == 1 else Union[tuple(inner)]
        try:
            return _convert(one, value, key)
        except _Invalid:
            if type(None) in args and isinstance(one, type):
                raise _Invalid(f"{key} must be {_name(one)} or null, got {_describe(value)}") from None
            raise
    if origin is Literal:
        if value not in args or isinstance(value, bool):
            raise _Invalid(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        seq = _sequence(value, key, hint)
        return [_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(seq)]
    if origin is tuple:
        seq = _sequence(value, key, hint)
        if len(seq) != len(args):
            raise _Invalid(f"{key} must be a list of {len(args)} values, got {len(seq)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, seq)))
    return _scalar(hint, value, key)


def _convert_section(cls: type, value: Any, key: str) -> Any:
    """A mapping -> the dataclass `cls`, every field converted; unknown and missing keys fail."""
    if isinstance(value, Section):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise _Invalid(f"{key} must be a mapping, got {_describe(value)}" if key
                       else f"expected a mapping at the top level, got {_describe(value)}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    dotted = (lambda k: f"{key}.{k}") if key else (lambda k: str(k))
    for k in value:
        if k not in hints:
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.75)
            hint = f" (did you mean {dotted(close[0])}?)" if close else ""
            raise _Invalid(f"unknown key {dotted(k)}{hint}")
    for k in names:
        if k not in value:
            raise _Invalid(f"missing key {dotted(k)}")
    return cls(**{k: _convert(hints[k], value[k], dotted(k)) for k in names})


def _sequence(value: Any, key: str, hint: Any) -> list[Any]:
    """A YAML list (or tuple) or a one-line type error."""
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"{key} must be {_name(hint)}, got {_describe(value)}")
    return list(value)


def _scalar(hint: Any, value: Any, key: str) -> Any:
    """bool, int, float (ints accepted, made float) or str; bool is never an int and vice versa."""
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a section field with a type this validator does not know
        raise TypeError(f"{key}: unsupported type {hint!r}")
    if not ok:
        raise _Invalid(f"{key} must be {_name(hint)}, got {_describe(value)}")
    return value


def _name(hint: Any) -> str:
    """A short readable type name: int, float, list[int], str | None."""
    if isinstance(hint, type) and not get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _describe(value: Any) -> str:
    """`str 'ten'`, `bool True`, `list [1, 2]` (values shortened)."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


# ---------------------------------------------------------------- MLflow and hashes


def flatten(d: Mapping[str, Any] | Section, prefix: str = "") -> dict[str, Any]:
    """Flatten nested sections/dicts to dotted keys; lists become JSON strings."""
    if isinstance(d, Section):
        d = d.to_dict()
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, (dict, Section)):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(to_plain(value))
        else:
            out[name] = value
    return out


def params_hash(params: Mapping[str, Any] | Section) -> str:
    """A short stable hash of params (a Params tree or a plain dict such as a model config)."""
    blob = json.dumps(to_plain(params), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


