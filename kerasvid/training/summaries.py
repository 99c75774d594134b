"""TensorBoard summaries and console progress (a bar on a terminal, log lines otherwise)."""
import os

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from kerasvid import progress as progress_lib


def _plugin_metadata(plugin_name):
    """Serialized SummaryMetadata of a TensorBoard plugin (TF 2.21 no longer installs `tensorboard`, whose
    `tf.summary.scalar`/`image` implementations we would otherwise use; the event format is the same)."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    return metadata.SerializeToString()


_SCALAR_METADATA = _plugin_metadata("scalars")
_IMAGE_METADATA = _plugin_metadata("images")


class Summaries:
    """Writes scalars and images under `<model_dir>/<name>` on the chief; does nothing on other workers.

    Args:
        logdir: the summary directory (e.g. `<model_dir>/train`).
        enabled: False on non-chief workers.
    """

    def __init__(self, logdir, enabled=True):
        self.logdir = logdir
        self._writer = tf.summary.create_file_writer(logdir) if enabled else None

    def scalars(self, values, step):
        """Writes a dict of name -> float at `step`."""
        if self._writer is None:
            return
        with self._writer.as_default(step=int(step)):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(float(value), tf.float32), metadata=_SCALAR_METADATA)
        self._writer.flush()

    def images(self, images, step, max_outputs=4):
        """Writes a dict of name -> float `[N, H, W, C]` images in [0, 1] at `step`."""
        if self._writer is None or not images:
            return
        with self._writer.as_default(step=int(step)):
            for name, value in images.items():
                value = tf.clip_by_value(tf.cast(value, tf.float32), 0.0, 1.0)[:max_outputs]
                pngs = tf.map_fn(lambda im: tf.io.encode_png(tf.cast(tf.round(im * 255.0), tf.uint8)), value,
                                 fn_output_signature=tf.string)
                shape = tf.strings.as_string(tf.shape(value)[2:0:-1])  # width, height
                tf.summary.write(name, tf.concat([shape, pngs], 0), metadata=_IMAGE_METADATA)
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()


# A training log line: "step 10/20 loss=0.5 accuracy=0.25 (1.93 steps/s, ETA 5 s)".
_TRAINING_LINE = "{desc} {done}/{total} {text} ({rate:.2f} {unit}/s, ETA {eta})"


class Progress(progress_lib.Progress):
    """Progress of a run (`kerasvid.progress.Progress` counting steps): an in-place bar on an interactive terminal,
    an absl log line every `log_every` steps and at the last step otherwise.

    Args:
        total: total steps.
        initial: step the run starts from (after a resume).
        log_every: steps between log lines (non-terminal); the bar is redrawn on every update.
        stream: output stream (defaults to stderr).
    """

    def __init__(self, total, initial=0, log_every=10, stream=None):
        super().__init__(total, "step", unit="steps", initial=initial, log_every=log_every, line=_TRAINING_LINE,
                         log=lambda line: logging.info("%s", line), stream=stream)

    @property
    def step(self):
        return self.done

    def update(self, step, values):
        """The run reached `step`; `values` (name -> number, e.g. the window's mean loss) go on the line."""
        self.update_to(step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))


def read_scalars(logdir):
    """Reads the scalars of the event files under `logdir` as `{tag: (steps, values)}` (numpy arrays, by step).

    Reads what `Summaries.scalars` wrote (any TF scalar summary in tensor form); a step written twice (a resumed
    run, several event files) keeps the value of the newest file.
    """
    from tensorflow.core.util import event_pb2

    found = {}
    files = sorted(tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*")),
                   key=lambda p: (tf.io.gfile.stat(p).mtime_nsec, p))
    for path in files:
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    number = tf.make_ndarray(value.tensor)
                elif value.HasField("simple_value"):
                    number = value.simple_value
                else:
                    continue
                if np.size(number) == 1:
                    found.setdefault(value.tag, {})[int(event.step)] = float(np.reshape(number, ()))
    return {tag: (np.array(sorted(v), np.int64), np.array([v[s] for s in sorted(v)], np.float64))
            for tag, v in found.items()}


def training_curve(model_dir, size=(260, 420), font_scale=1):
    """Draws the training curve of a run from its TensorBoard scalars: uint8 RGB `[height, 2 width, 3]`.

    Left: the training loss (mean of each `--log_every` window) against the step. Right: accuracies on the same
    steps, 0 to 1: the training window's `accuracy` and the held-out `top1` (and `map`) of each evaluation.
    Reads `<model_dir>/train` and `<model_dir>/eval` (`read_scalars`); a panel without data is left empty.
    """
    from kerasvid import viz

    train = read_scalars(os.path.join(model_dir, "train"))
    held_out = read_scalars(os.path.join(model_dir, "eval"))
    if "loss" not in train:
        raise ValueError(f"No training loss summaries under {os.path.join(model_dir, 'train')!r}")
    steps = train["loss"][0]
    x_range = (0.0, float(max(steps.max(), *(held_out[t][0].max() for t in held_out if len(held_out[t][0])))))
    loss = viz.line_plot([("train loss", *train["loss"], viz.PLOT_COLORS[3])], size, x_range=x_range,
                         y_range=(0.0, float(train["loss"][1].max()) or 1.0), font_scale=font_scale)
    accuracies = [("train accuracy", *train["accuracy"])] if "accuracy" in train else []
    accuracies += [(label, *held_out[tag]) for tag, label in (("top1", "held-out top-1"), ("map", "held-out mAP"))
                   if tag in held_out]
    colors = (viz.PLOT_COLORS[0], viz.PLOT_COLORS[1], viz.PLOT_COLORS[2])
    accuracy = viz.line_plot([(*s, c) for s, c in zip(accuracies, colors)], size, x_range=x_range,
                             y_range=(0.0, 1.0), font_scale=font_scale)
    return np.concatenate([loss, accuracy], axis=1)


def write_training_curve(model_dir, path=None, **kwargs):
    """Writes `training_curve(model_dir)` as a PNG (default `<model_dir>/training_curve.png`); returns the path."""
    from kerasvid import viz

    path = path or os.path.join(model_dir, "training_curve.png")
    return viz.write_png(path, training_curve(model_dir, **kwargs))


def write_run_pictures(model, task, model_dir, scale=4):
    """Writes the pictures of a finished run into `model_dir`; returns their paths.

    - `training_curve.png`: `training_curve(model_dir)`, when the run wrote training summaries;
    - `<name>.png` for each picture the model's family draws (`kerasvid.zoo.model_pictures`: a CPNet draws
      `correspondences.png`) of the first held-out clip, when the task has held-out data.

    Args:
        model: the trained Keras model.
        task: its task (`task.build_dataset(training=False)` and `task.model_inputs` give the held-out clip,
            `task.config.normalization` how to show it).
        model_dir: where the pictures go.
        scale: enlargement of the clip's frames in the model's pictures.
    """
    from kerasvid import viz, zoo

    paths = []
    if tf.io.gfile.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        paths.append(write_training_curve(model_dir))
    if zoo.has_pictures(model) and getattr(task.config, "eval_pattern", ""):
        from kerasvid.data import preprocess

        inputs, _ = next(iter(task.build_dataset(training=False)))
        clip = np.asarray(task.model_inputs(inputs)[:1])  # the first held-out clip, a batch of one
        frames = preprocess.denormalize(clip[0], task.config.normalization)
        for name, image in zoo.model_pictures(model, clip, frames, scale=scale).items():
            paths.append(viz.write_png(os.path.join(model_dir, f"{name}.png"), image))
    return paths
