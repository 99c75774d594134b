"""TensorBoard summaries and console progress (a bar on a terminal, log lines otherwise)."""
import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2


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


def clip_to_image_grid(clip, max_frames=8):
    """Lays out the frames of a clip side by side for TensorBoard.

    Args:
        clip: float `[T, H, W, 3]` (any range; min-max scaled to [0, 1]).
        max_frames: frames to keep (evenly spaced).

    Returns:
        float32 `[1, H, W * min(T, max_frames), 3]` in [0, 1].
    """
    clip = tf.convert_to_tensor(clip, tf.float32)
    t = tf.shape(clip)[0]
    idx = tf.cast(tf.linspace(0.0, tf.cast(t - 1, tf.float32), min(max_frames, int(clip.shape[0]))), tf.int32)
    frames = tf.gather(clip, idx)
    lo, hi = tf.reduce_min(frames), tf.reduce_max(frames)
    frames = (frames - lo) / tf.maximum(hi - lo, 1e-6)
    return tf.concat(tf.unstack(frames), axis=1)[None]


class Progress:
    """Progress of a run: an in-place bar on an interactive terminal, a log line every `log_every` steps otherwise.

    Args:
        total: total steps.
        initial: step the run starts from (after a resume).
        log_every: steps between log lines (non-terminal) / bar refreshes are on every update.
        stream: output stream (defaults to stderr).
    """

    def __init__(self, total, initial=0, log_every=10, stream=None):
        self.total = int(total)
        self.step = int(initial)
        self.log_every = max(1, int(log_every))
        self.stream = stream or sys.stderr
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._start = time.time()
        self._start_step = self.step

    def update(self, step, values):
        self.step = int(step)
        done = self.step - self._start_step
        rate = done / max(time.time() - self._start, 1e-9)
        eta = (self.total - self.step) / rate if rate > 0 else float("nan")
        text = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        if self.interactive:
            width = 24
            filled = int(width * self.step / max(self.total, 1))
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {self.step}/{self.total} {text} {rate:.2f} steps/s eta {eta:.0f}s ")
            self.stream.flush()
            if self.step >= self.total:
                self.stream.write("\n")
        elif self.step % self.log_every == 0 or self.step >= self.total:
            logging.info("step %d/%d %s (%.2f steps/s, eta %.0fs)", self.step, self.total, text, rate,
                         eta if np.isfinite(eta) else -1)
