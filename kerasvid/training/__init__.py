"""Training: strategy factory, the custom tf.distribute loop, checkpoints, schedules, summaries, progress.

The names below are imported on first use, so that `from kerasvid.training import TrainConfig` (what the command
line defines its flags from) does not load TensorFlow.
"""
from kerasvid._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "checkpoints": ("Checkpointer", "CheckpointWriteError", "NonFiniteStateError"),
    "config": ("TrainConfig",),
    "loop": ("DivergenceError", "NonFiniteLossError", "Preempted", "Trainer", "WorkerLostError",
             "set_mixed_precision"),
    "schedules": ("WarmupDecay", "build_optimizer"),
    "strategy": ("get_strategy", "is_chief", "split_cpu_into_logical_devices", "worker_dir"),
    "summaries": ("Progress", "Summaries"),
})
