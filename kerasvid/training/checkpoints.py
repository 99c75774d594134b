"""Checkpoints: keep-N plus best-by-metric, restore-on-start, chief-only final copies."""
import json
import os
import shutil

import tensorflow as tf
from absl import logging

from kerasvid.training import strategy as strategy_lib


class Checkpointer:
    """A `tf.train.CheckpointManager` over the training state, with restore-on-start and a best checkpoint.

    Every worker saves (saving may need collectives); the chief saves into `<model_dir>/ckpt-N`, other workers into
    a temporary directory that is deleted after each save. All workers restore from the chief's directory.

    Args:
        model_dir: the run's directory.
        strategy: the `tf.distribute.Strategy`.
        max_to_keep: number of recent checkpoints kept.
        **objects: the trackables to save (model, optimizer, step, metric state, data iterator, ...).
    """

    def __init__(self, model_dir, strategy, max_to_keep=3, **objects):
        if max_to_keep < 1:
            raise ValueError(f"`max_to_keep` must be >= 1, got {max_to_keep}.")
        self.model_dir = model_dir
        self.chief = strategy_lib.is_chief(strategy)
        self.save_dir = strategy_lib.worker_dir(model_dir, strategy)
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.save_dir, max_to_keep=max_to_keep)
        self._best_dir = os.path.join(self.save_dir, "best")
        self._best_manager = tf.train.CheckpointManager(self.checkpoint, self._best_dir, max_to_keep=1,
                                                        checkpoint_name="best")

    @property
    def latest(self):
        """Path of the chief's latest checkpoint, or None."""
        return tf.train.latest_checkpoint(self.model_dir)

    def restore(self, path=None):
        """Restores `path` (default: the chief's latest checkpoint); returns the path restored, or None."""
        path = path or self.latest
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            logging.info("Restored %s", path)
        return path

    def restore_model_only(self, model, path=None):
        """Restores only the model's weights (for eval/export of a training checkpoint)."""
        path = path or self.latest
        if not path:
            raise FileNotFoundError(f"No checkpoint in {self.model_dir!r}: train first (--mode=train) or pass "
                                    "--checkpoint.")
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        return path

    def save(self, step):
        """Saves at `step`; returns the chief's path (None on other workers)."""
        path = self.manager.save(checkpoint_number=int(step))
        self._cleanup()
        return path if self.chief else None

    def save_best(self, step, value, name, mode):
        """Saves into `best/` when `value` beats the recorded best (`mode` "max" or "min"); returns True if so."""
        record_path = os.path.join(self.model_dir, "best.json")
        best = None
        if tf.io.gfile.exists(record_path):
            with tf.io.gfile.GFile(record_path) as f:
                best = json.load(f)
        better = best is None or (value > best["value"] if mode == "max" else value < best["value"])
        if better:
            self._best_manager.save(checkpoint_number=int(step))
            if self.chief:
                with tf.io.gfile.GFile(record_path + ".tmp", "w") as f:
                    json.dump({"metric": name, "mode": mode, "value": float(value), "step": int(step),
                               "checkpoint": self._best_manager.latest_checkpoint}, f)
                tf.io.gfile.rename(record_path + ".tmp", record_path, overwrite=True)
            self._cleanup()
        return better

    def _cleanup(self):
        if not self.chief:
            shutil.rmtree(self.save_dir, ignore_errors=True)
