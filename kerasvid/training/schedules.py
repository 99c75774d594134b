"""Learning-rate schedules (step / multi-step / cosine, linear warm-up) and the optimizer factory."""
import math

import keras
import tensorflow as tf

from kerasvid.training.config import OPTIMIZERS, SCHEDULES


@keras.saving.register_keras_serializable(package="kerasvid")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate with a linear warm-up followed by a constant, step, multi-step or cosine decay.

    For step `s` (0-based), warm-up length `W`, base rate `lr0`:

    - warm-up (`s < W`): `lr0 * (s + 1) / W`;
    - `"constant"`: `lr0`;
    - `"step"`: `lr0 * decay_rate ** floor((s - W) / decay_steps)` (the CPNet recipe: x0.1 every N epochs);
    - `"multistep"`: `lr0 * decay_rate ** (number of boundaries <= s)` (boundaries count from step 0);
    - `"cosine"`: `min_lr + (lr0 - min_lr) * (1 + cos(pi * (s - W) / (total_steps - W))) / 2`.

    The result is never below `min_lr` (the CPNet code's floor of 1e-5).

    Args:
        base_lr: peak learning rate `lr0`.
        schedule: one of `"constant"`, `"step"`, `"multistep"`, `"cosine"`.
        total_steps: number of optimizer steps of the run (used by `"cosine"`).
        warmup_steps: linear warm-up length `W` (0 = none).
        decay_steps: period of `"step"`.
        boundaries: steps at which `"multistep"` multiplies by `decay_rate`.
        decay_rate: factor of `"step"` and `"multistep"`.
        min_lr: floor of the learning rate.

    Example:
    >>> lr = WarmupDecay(0.1, "multistep", total_steps=100, boundaries=(50, 75))
    >>> float(lr(80))  # 0.1 * 0.1 ** 2
    0.001...
    """

    def __init__(self, base_lr, schedule="constant", total_steps=1, warmup_steps=0, decay_steps=1, boundaries=(),
                 decay_rate=0.1, min_lr=0.0):
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}, got schedule={schedule!r}.")
        if base_lr <= 0:
            raise ValueError(f"`base_lr` must be > 0, got base_lr={base_lr}.")
        if warmup_steps < 0 or (schedule == "cosine" and warmup_steps >= total_steps):
            raise ValueError(f"`warmup_steps` must be >= 0 and, for cosine, < total_steps; got "
                             f"warmup_steps={warmup_steps}, total_steps={total_steps}.")
        if schedule == "step" and decay_steps <= 0:
            raise ValueError(f"`decay_steps` must be > 0 for the step schedule, got decay_steps={decay_steps}.")
        boundaries = tuple(int(b) for b in boundaries)
        if schedule == "multistep" and (not boundaries or list(boundaries) != sorted(set(boundaries))):
            raise ValueError(f"`boundaries` must be a non-empty increasing list for multistep, got {boundaries}.")
        if min_lr < 0 or min_lr > base_lr:
            raise ValueError(f"`min_lr` must be in [0, base_lr={base_lr}], got min_lr={min_lr}.")
        self.base_lr = float(base_lr)
        self.schedule = schedule
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.boundaries = boundaries
        self.decay_rate = float(decay_rate)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        w = float(self.warmup_steps)
        after = tf.maximum(s - w, 0.0)
        if self.schedule == "constant":
            lr = tf.constant(self.base_lr)
        elif self.schedule == "step":
            lr = self.base_lr * tf.pow(self.decay_rate, tf.floor(after / self.decay_steps))
        elif self.schedule == "multistep":
            passed = tf.reduce_sum(tf.cast(s >= tf.constant(self.boundaries, tf.float32), tf.float32))
            lr = self.base_lr * tf.pow(self.decay_rate, passed)
        else:
            frac = tf.minimum(after / float(self.total_steps - self.warmup_steps), 1.0)
            lr = self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + tf.cos(math.pi * frac))
        if self.warmup_steps:
            lr = tf.where(s < w, self.base_lr * (s + 1.0) / w, lr)
        return tf.maximum(lr, self.min_lr)

    def get_config(self):
        return {"base_lr": self.base_lr, "schedule": self.schedule, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay_steps": self.decay_steps,
                "boundaries": list(self.boundaries), "decay_rate": self.decay_rate, "min_lr": self.min_lr}


def build_optimizer(name, learning_rate, momentum=0.9, weight_decay=0.0, nesterov=False, mixed_float16=False):
    """Builds a Keras 3 optimizer.

    Args:
        name: `"sgd"` (with momentum), `"adam"` or `"adamw"`.
        learning_rate: a float or a `LearningRateSchedule`.
        momentum: SGD momentum (also Adam's beta_1 is left at its default).
        weight_decay: decoupled weight decay (Keras 3 optimizers apply it as `w -= lr * wd * w`); 0 = off.
        nesterov: Nesterov momentum for SGD.
        mixed_float16: wrap in `LossScaleOptimizer` (needed for the float16 policy).

    Returns:
        A `keras.optimizers.Optimizer`. Gradient clipping is done by the training loop (across replicas).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got optimizer={name!r}.")
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0, got weight_decay={weight_decay}.")
    wd = weight_decay or None
    if name == "sgd":
        opt = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    elif name == "adam":
        opt = keras.optimizers.Adam(learning_rate, weight_decay=wd)
    else:
        opt = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    if mixed_float16:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
