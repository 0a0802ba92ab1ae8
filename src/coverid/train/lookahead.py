"""The optimiser: Lookahead (Zhang et al. 2019) for Keras 3, and the warm-up/decay LR schedule.

Lookahead keeps a copy of the weights ("slow" weights phi) beside the ones the inner optimiser
updates ("fast" weights theta). Every k inner steps: phi <- phi + alpha (theta - phi), then
theta <- phi. The slow weights start equal to the initial weights.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="coverid")
class Lookahead(keras.optimizers.Optimizer):
    """Wraps an inner optimiser; syncs slow and fast weights every `sync_period` steps."""

    def __init__(self, optimizer: keras.optimizers.Optimizer, sync_period: int,
                 slow_step_size: float, name: str = "lookahead", **kwargs) -> None:
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        if sync_period < 1:
            raise ValueError(f"sync_period must be >= 1, got {sync_period}")
        if not 0.0 <= slow_step_size <= 1.0:
            raise ValueError(f"slow_step_size must be in [0, 1], got {slow_step_size}")
        self.inner_optimizer = optimizer
        self.sync_period = int(sync_period)
        self.slow_step_size = float(slow_step_size)

    def build(self, var_list) -> None:
        """Build the inner optimiser and the slow weights (copies of the current weights)."""
        self.inner_optimizer.build(var_list)
        self._slow = []
        for v in var_list:
            slow = self.add_variable_from_reference(v, name="slow")
            slow.assign(v)
            self._slow.append(slow)
        super().build(var_list)

    @property
    def variables(self) -> list:
        return self._variables + self.inner_optimizer.variables

    @property
    def slow_weights(self) -> list:
        """The slow weights, in the order of the variables the optimiser was built with."""
        return list(self._slow)

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        # The base class sets its own (unused) rate during __init__, before the inner exists.
        if "inner_optimizer" in self.__dict__:
            self.inner_optimizer.learning_rate = value

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def apply(self, grads, trainable_variables=None) -> None:
        """One inner step, then the Lookahead sync when the step count reaches a multiple of k."""
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        self.inner_optimizer.apply(grads, trainable_variables)
        sync = ops.equal(self.inner_optimizer.iterations % self.sync_period, 0)
        self._sync(sync)

    def _sync(self, sync) -> None:
        """phi <- phi + alpha (theta - phi); theta <- phi, where `sync` is true (else no-op)."""
        import tensorflow as tf

        alpha = self.slow_step_size

        def update_all(strategy, sync):
            for slow, fast in zip(self._slow, self._trainable_variables):
                s_var, f_var = slow.value, fast.value
                strategy.extended.update(
                    s_var, lambda s, f, c: s.assign(tf.where(c, s + alpha * (f - s), s)),
                    args=(f_var, sync), group=False)
                strategy.extended.update(
                    f_var, lambda f, s, c: f.assign(tf.where(c, s, f)),
                    args=(s_var, sync), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            update_all, tf.distribute.get_strategy(), sync)

    def finalize_variable_values(self, var_list) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "sync_period": self.sync_period,
            "slow_step_size": self.slow_step_size,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> Lookahead:
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("optimizer"),
                                                      custom_objects=custom_objects)
        return cls(inner, **config)


@keras.saving.register_keras_serializable(package="coverid")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `learning_rate` over `warmup_steps`, then x `decay_rate` per
    `decay_steps` (continuously): see `warmup_decay_np`."""

    def __init__(self, learning_rate: float, warmup_steps: int, decay_rate: float,
                 decay_steps: int) -> None:
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_rate = float(decay_rate)
        self.decay_steps = max(int(decay_steps), 1)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.learning_rate * (step + 1.0) / max(self.warmup_steps, 1)
        after = ops.maximum(step - self.warmup_steps, 0.0) / self.decay_steps
        decayed = self.learning_rate * ops.power(self.decay_rate, after)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "decay_rate": self.decay_rate, "decay_steps": self.decay_steps}


def warmup_decay_np(step: np.ndarray, learning_rate: float, warmup_steps: int,
                    decay_rate: float, decay_steps: int) -> np.ndarray:
    """Reference: lr (s+1)/W for step s < W, else lr * decay_rate^((s - W) / decay_steps)."""
    s = np.asarray(step, np.float64)
    warm = learning_rate * (s + 1) / max(warmup_steps, 1)
    decayed = learning_rate * decay_rate ** (np.maximum(s - warmup_steps, 0) / max(decay_steps, 1))
    return np.where(s < warmup_steps, warm, decayed)


def make_optimizer(train: dict, steps_per_epoch: int, learning_rate: float) -> Lookahead:
    """Adam wrapped in Lookahead, with the warm-up/decay schedule of the train params peaking at
    `learning_rate` (the loss's, train.losses)."""
    schedule = WarmupDecay(learning_rate, train["warmup_epochs"] * steps_per_epoch,
                           train["decay_rate"], steps_per_epoch)
    return Lookahead(keras.optimizers.Adam(learning_rate=schedule),
                     sync_period=train["lookahead_k"], slow_step_size=train["lookahead_alpha"])
