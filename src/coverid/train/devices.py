"""Devices and the tf.distribute strategy for training.

- `TF_CONFIG` set (a JSON cluster spec, one per worker process, as TensorFlow documents for
  multi-worker training): `MultiWorkerMirroredStrategy`; every worker runs the same command.
- several GPUs: `MirroredStrategy` over all of them (batches are split across replicas).
- one GPU: `OneDeviceStrategy` on it.
- no GPU: TensorFlow's default strategy on the CPU.
Mixed precision (`train.mixed_precision`) and XLA (`train.xla`) are applied only with GPUs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("multi_worker", "mirrored", "one_device", "default")


@dataclass
class DeviceSetup:
    """The chosen strategy and what it was chosen from (logged to MLflow)."""

    strategy: Any
    kind: str
    gpus: list[str] = field(default_factory=list)
    cpus: list[str] = field(default_factory=list)
    mixed_precision: bool = False
    xla: bool = False

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {"strategy": self.kind, "gpus": self.gpus, "cpus": self.cpus,
                "replicas": int(self.strategy.num_replicas_in_sync),
                "mixed_precision": self.mixed_precision, "xla": self.xla}


def list_devices() -> tuple[list[str], list[str]]:
    """(GPU names, CPU names) that TensorFlow sees."""
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return gpus, cpus


def choose_strategy(gpus: list[str], tf_config: str | None) -> str:
    """The strategy kind for these GPUs and this TF_CONFIG value (see the module docstring)."""
    if tf_config:
        try:
            cluster = json.loads(tf_config).get("cluster", {})
        except (json.JSONDecodeError, AttributeError):
            cluster = {}
        if sum(len(v) for v in cluster.values() if isinstance(v, list)) > 1:
            return "multi_worker"
    if len(gpus) > 1:
        return "mirrored"
    if len(gpus) == 1:
        return "one_device"
    return "default"


def make_strategy(kind: str, gpus: list[str]):
    """Instantiate the strategy of `kind`."""
    import tensorflow as tf

    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(gpus)
    if kind == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0])
    if kind == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy kind {kind!r}; expected one of {KINDS}")


def setup_devices(train: dict[str, Any]) -> DeviceSetup:
    """Choose the strategy and, on GPU only, mixed precision and XLA."""
    import keras

    gpus, cpus = list_devices()
    kind = choose_strategy(gpus, os.environ.get("TF_CONFIG"))
    mixed = bool(train["mixed_precision"]) and bool(gpus)
    xla = bool(train["xla"]) and bool(gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    setup = DeviceSetup(make_strategy(kind, gpus), kind, gpus, cpus, mixed, xla)
    log.info("devices: %s", setup.describe())
    return setup
