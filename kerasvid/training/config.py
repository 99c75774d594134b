"""`TrainConfig`: the settings of the training loop, one field per training flag of `kerasvid train`.

This module imports no TensorFlow (`validate` does, when called), so that the command line can define its flags
from the dataclass (`kerasvid.config_flags`) before TensorFlow loads. The flag of each field has the field's name,
its type and default, and the field's entry below as its help; `metadata["enum"]` lists the allowed values.
"""
import dataclasses
import math
from typing import Tuple

MIXED_PRECISION = ("", "bfloat16", "float16")
SCHEDULES = ("constant", "step", "multistep", "cosine")
OPTIMIZERS = ("sgd", "adam", "adamw")
# The tf.distribute strategies of `kerasvid.training.strategy.get_strategy` (here: the --strategy flag needs them
# before TensorFlow loads).
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


@dataclasses.dataclass
class TrainConfig:
    """Settings of the loop (one field per generic training flag of `train/main.py`, with the same name).

    Attributes:
        train_steps: optimizer steps of the whole run (a resumed run continues up to it; on the command line set
            this or --train_epochs).
        log_every: steps between log lines and train summaries.
        checkpoint_every: steps between checkpoints (0 = only at the end).
        keep_checkpoints: recent checkpoints kept.
        eval_every: steps between evaluations in `train_and_eval` (0 = only at the end).
        accumulation_steps: micro-batches per optimizer step; their gradients are averaged (k batches of
            `batch_size` = one batch k times larger).
        clip_norm: global-norm gradient clipping (0 = off).
        optimizer: the optimizer (`schedules.build_optimizer`).
        learning_rate: base learning rate (for the global batch).
        momentum: SGD momentum.
        weight_decay: decoupled weight decay (0 = off).
        nesterov: Nesterov momentum (SGD).
        lr_schedule: learning-rate schedule after the warm-up (`schedules.WarmupDecay`).
        warmup_steps: linear warm-up steps.
        lr_decay_steps: period of the step schedule, in steps.
        lr_boundaries: multistep boundaries, in steps.
        lr_decay_rate: decay factor of the step and multistep schedules.
        min_lr: learning-rate floor.
        mixed_precision: mixed precision compute dtype: "" (float32), "bfloat16" or "float16" (Keras `mixed_*`
            policy; variables stay float32, and the zoo's models compute their heads, hence outputs, in float32).
        jit_compile: XLA-compile the per-replica training step (single device).
        image_summaries_every: steps between image summaries (0 = off).
        bn_recalibration_batches: at the end of training, re-estimate the BatchNorm moving statistics as the plain
            average of the batch statistics of this many training batches ("precise BN", as in PySlowFast); short
            runs otherwise evaluate with moving averages that still remember the first steps (0 = off).
        divergence_factor: stop with `DivergenceError` (exit 3) when a step's loss exceeds this many times the
            median loss of the run's first `loop.REFERENCE_STEPS` (10) steps (0 = off; a NaN/inf loss or gradient
            always stops).
        max_weight: stop with `DivergenceError` (exit 3) when a trainable weight's magnitude exceeds this after a
            step (exploding parameters: a model whose weights reach 1e7 computes logits of 1e29 while its loss can
            still look finite; 0 = off).
    """

    train_steps: int = 100
    log_every: int = 10
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    eval_every: int = 0
    accumulation_steps: int = 1
    clip_norm: float = 0.0
    optimizer: str = dataclasses.field(default="sgd", metadata={"enum": OPTIMIZERS})
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    lr_schedule: str = dataclasses.field(default="constant", metadata={"enum": SCHEDULES})
    warmup_steps: int = 0
    lr_decay_steps: int = 1
    lr_boundaries: Tuple[int, ...] = ()
    lr_decay_rate: float = 0.1
    min_lr: float = 0.0
    mixed_precision: str = dataclasses.field(default="", metadata={"enum": MIXED_PRECISION})
    jit_compile: bool = False
    image_summaries_every: int = 0
    bn_recalibration_batches: int = 0
    divergence_factor: float = 1000.0
    max_weight: float = 1e4

    def validate(self, strategy_name="default"):
        """Raises ValueError for bad or contradictory settings (before any work starts)."""
        import tensorflow as tf

        from kerasvid.training import schedules

        for name in ("train_steps", "log_every", "accumulation_steps", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {name}={getattr(self, name)}.")
        for name in ("checkpoint_every", "eval_every", "image_summaries_every", "warmup_steps",
                     "bn_recalibration_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {name}={getattr(self, name)}.")
        if self.clip_norm < 0:
            raise ValueError(f"`clip_norm` must be >= 0, got clip_norm={self.clip_norm}.")
        if not (self.divergence_factor == 0 or self.divergence_factor > 1):
            raise ValueError(f"`divergence_factor` must be 0 (off) or > 1, got divergence_factor="
                             f"{self.divergence_factor}.")
        if not (self.max_weight == 0 or self.max_weight > 0 and math.isfinite(self.max_weight)):
            raise ValueError(f"`max_weight` must be 0 (off) or a positive number, got max_weight={self.max_weight}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}.")
        if self.warmup_steps >= self.train_steps and self.warmup_steps:
            raise ValueError(f"`warmup_steps`={self.warmup_steps} must be smaller than "
                             f"`train_steps`={self.train_steps}.")
        if (self.jit_compile and strategy_name in ("mirrored", "multi_worker")
                and not tf.config.list_physical_devices("GPU")):
            raise ValueError(f"jit_compile=True with strategy={strategy_name!r} on CPU devices is not supported by "
                             "XLA (variables on another logical device); use jit_compile on one device.")
        self.learning_rate_schedule()  # validates the schedule arguments
        schedules.build_optimizer(self.optimizer, 0.1, self.momentum, self.weight_decay)

    def learning_rate_schedule(self):
        """The `schedules.WarmupDecay` of these settings."""
        from kerasvid.training import schedules

        return schedules.WarmupDecay(self.learning_rate, self.lr_schedule, self.train_steps, self.warmup_steps,
                                     self.lr_decay_steps, self.lr_boundaries, self.lr_decay_rate, self.min_lr)
