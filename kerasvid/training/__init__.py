"""Training: strategy factory, the custom tf.distribute loop, checkpoints, schedules, summaries, progress."""
from kerasvid.training.checkpoints import Checkpointer, CheckpointWriteError, NonFiniteStateError
from kerasvid.training.loop import (DivergenceError, NonFiniteLossError, Preempted, TrainConfig, Trainer,
                                    WorkerLostError, set_mixed_precision)
from kerasvid.training.schedules import WarmupDecay, build_optimizer
from kerasvid.training.strategy import get_strategy, is_chief, split_cpu_into_logical_devices, worker_dir
from kerasvid.training.summaries import Progress, Summaries

__all__ = ["Checkpointer", "CheckpointWriteError", "DivergenceError", "NonFiniteLossError", "NonFiniteStateError",
           "Preempted", "Progress", "Summaries", "TrainConfig", "Trainer", "WarmupDecay", "WorkerLostError",
           "build_optimizer", "get_strategy", "is_chief", "set_mixed_precision", "split_cpu_into_logical_devices",
           "worker_dir"]
