"""A tiny in-memory classification task for the training-loop tests (no records, no zoo)."""
import keras
import numpy as np
import tensorflow as tf

from kerasvid.tasks import TaskConfig
from kerasvid.tasks.classification import ClassificationTask


def toy_data(num=64, num_classes=3, frames=2, size=4, seed=0):
    """Clips whose class is the channel with the largest mean (learnable by a linear model)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num).astype(np.int32)
    x = rng.normal(0, 1, (num, frames, size, size, 3)).astype(np.float32)
    x[np.arange(num), ..., labels % 3] += 1.5
    return x, labels


class ToyTask(ClassificationTask):
    """ClassificationTask with an in-memory dataset and a small dense model (no BatchNorm: exact comparisons)."""

    name = "toy"

    def __init__(self, config, dropout=0.0, nan_at=None):
        super().__init__(config)
        self.dropout = dropout
        self.nan_at = nan_at

    def build_model(self):
        c = self.config
        inputs = keras.Input((c.num_frames, *c.image_size, 3), name="image")
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(8, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(1))(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, seed=3)(x)
        outputs = keras.layers.Dense(self.num_classes, kernel_initializer=keras.initializers.GlorotUniform(2))(x)
        return keras.Model(inputs, outputs)

    def build_dataset(self, training, input_context=None):
        c = self.config
        x, y = toy_data(64 if training else 24, self.num_classes, c.num_frames, c.image_size[0])
        if self.nan_at is not None and training:
            x[self.nan_at * c.batch_size:] = np.nan
        ds = tf.data.Dataset.from_tensor_slices(({"image": x}, y))
        if training:
            ds = ds.shuffle(64, seed=c.seed).repeat() if self.nan_at is None else ds.repeat()
            return ds.batch(c.batch_size, drop_remainder=True).prefetch(2)
        ds = ds.map(lambda f, l: ({"image": tf.repeat(f["image"][None], c.num_views, 0)}, l))
        return ds.batch(c.eval_batch_size).map(
            lambda f, l: ({"image": tf.reshape(f["image"], [-1, *f["image"].shape[2:]])}, l))


def toy_config(**kw):
    base = dict(model="toy", num_classes=3, num_frames=2, image_size=(4, 4), batch_size=8, eval_batch_size=8)
    base.update(kw)
    return TaskConfig(**base)


def toy_main_argv(model_dir, *extra):
    """The command that runs `train/main.py` on the toy task (`python tests/training_toy.py ...`): a real main.py
    process (flags, exit codes, signals) whose steps take milliseconds."""
    import os
    import sys

    here = os.path.abspath(__file__)
    return [sys.executable, here, "--task=toy", "--model=c2d_resnet18", "--num_classes=3", f"--train_pattern={here}",
            "--num_frames=2", "--image_size=4,4", "--batch_size=8", "--learning_rate=0.05", "--deterministic",
            "--mode=train", f"--model_dir={model_dir}", *extra]


if __name__ == "__main__":  # train/main.py with the toy task registered
    from absl import app

    from kerasvid import train_cli
    from kerasvid.tasks import register_task

    register_task(ToyTask)
    app.run(train_cli.main)
