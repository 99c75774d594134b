"""Two-stream plumbing layers (TSN layout, used by `kerasvid.models.tvnet_inception`): `StackFlows` stacks the
flows of consecutive frame pairs into one flow image, `ScoreFusion` fuses the class scores of several streams.

Registered as `kerasvid>StackFlows` and `kerasvid>ScoreFusion`, the names saved `.keras` files use (they were
defined in `kerasvid/models/tvnet_inception.py` before; files saved then load unchanged: Keras resolves a layer by
its registered name first)."""
import keras
import tensorflow as tf

__all__ = ["ScoreFusion", "StackFlows"]


@keras.saving.register_keras_serializable(package="kerasvid")
class StackFlows(keras.layers.Layer):
    """Stacks `[batch, N, H, W, 2]` flows into one TSN flow image `[batch, 1, H, W, 2N]` (x1, y1, x2, y2, ...).

    Call arguments:
        flows: `[batch, N, H, W, 2]`.

    Returns:
        `[batch, 1, H, W, 2N]`.
    """

    def call(self, flows):
        steps, height, width = flows.shape[1], flows.shape[2], flows.shape[3]
        stacked = tf.transpose(flows, (0, 2, 3, 1, 4))
        return tf.reshape(stacked, (-1, 1, height, width, 2 * steps))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[2], input_shape[3], 2 * input_shape[1])


@keras.saving.register_keras_serializable(package="kerasvid")
class ScoreFusion(keras.layers.Layer):
    """Weighted sum of the class scores of several streams (two-stream late fusion, TSN weights RGB 1 : flow 1.5).

        s = sum_i w_i softmax(z_i)     (or of the raw logits with `softmax=False`)

    Args:
        weights: one weight per stream.
        softmax: apply a softmax to each stream's logits first.

    Call arguments:
        inputs: list of `[batch, num_classes]` logits, one per stream.

    Returns:
        `[batch, num_classes]` fused scores.
    """

    def __init__(self, weights=(1.0, 1.5), softmax=True, **kwargs):
        super().__init__(**kwargs)
        self.stream_weights = tuple(float(w) for w in weights)
        self.softmax = bool(softmax)

    def call(self, inputs):
        if len(inputs) != len(self.stream_weights):
            raise ValueError(f"ScoreFusion has {len(self.stream_weights)} weights but got {len(inputs)} streams")
        scores = [keras.ops.softmax(z, axis=-1) if self.softmax else z for z in inputs]
        return sum(w * s for w, s in zip(self.stream_weights, scores))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update(weights=list(self.stream_weights), softmax=self.softmax)
        return config
