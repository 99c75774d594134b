"""Losses for training TVNet: the unsupervised TV-L1 energy and the supervised end-point error.

From "End-to-End Learning of Motion Representation for Video Understanding" (Fan et al., CVPR 2018): the TV-L1
energy is the released `get_loss` objective used to train TVNet's kernels without ground truth; the end-point error
is the loss of the released supervised fine-tuning script (mean average end-point error on Middlebury pairs).
"""
import keras
import tensorflow as tf

from kerasvid.flow import UNKNOWN_FLOW_THRESHOLD
from kerasvid.ops.differences import forward_difference
from kerasvid.ops.warp import bilinear_warp

__all__ = ["EndpointError", "endpoint_error", "tvl1_energy"]


def _check_flow(flow, name):
    if flow.shape.rank is not None and (flow.shape.rank != 4 or flow.shape[-1] != 2):
        raise ValueError(f"`{name}` must be a flow [batch, H, W, 2], got shape {flow.shape}")


def tvl1_energy(frame1, frame2, flow, lbda=0.15):
    """The TV-L1 optical-flow energy of `flow` for a frame pair, per sample.

        E(u) = lambda * mean |I_2(x + u) - I_1| + mean (|d_x u_1| + |d_y u_1| + |d_x u_2| + |d_y u_2|)

    The data term averages over pixels and channels of the raw frames; `I_2(x + u)` is `kerasvid.ops.bilinear_warp`
    (edge replication); `d_x`, `d_y` are the fixed `[-1, 1]` forward differences with a zero last column/row (not
    trainable: in the released code they were, which TVNet issue PR#3 reports as a bug). Minimising it trains TVNet
    without ground-truth flow; it is differentiable in the frames and the flow.

    Args:
        frame1: `[batch, H, W, C]` first frames (e.g. 0-255 RGB).
        frame2: `[batch, H, W, C]` second frames.
        flow: `[batch, H, W, 2]` flow from frame 1 to frame 2 in pixels (x, then y).
        lbda: weight lambda of the data term.

    Returns:
        `[batch]` energies.

    Example:

    >>> energy = tvl1_energy(frames[:, 0], frames[:, 1], tvnet(frames[:, 0], frames[:, 1]))
    """
    frame1 = tf.cast(frame1, "float32")
    frame2 = tf.cast(frame2, "float32")
    flow = tf.cast(flow, "float32")
    _check_flow(flow, "flow")
    if tuple(frame1.shape[1:]) != tuple(frame2.shape[1:]) or tuple(frame1.shape[1:3]) != tuple(flow.shape[1:3]):
        raise ValueError(f"`frame1`, `frame2` and `flow` must share H and W (and the frames their channels), got "
                         f"{frame1.shape}, {frame2.shape} and {flow.shape}")
    data = tf.reduce_mean(tf.abs(bilinear_warp(frame2, flow) - frame1), axis=[1, 2, 3])
    smooth = tf.abs(forward_difference(flow, 2)) + tf.abs(forward_difference(flow, 1))
    return float(lbda) * data + tf.reduce_mean(tf.reduce_sum(smooth, axis=-1), axis=[1, 2])


def endpoint_error(flow_true, flow_pred):
    """Mean end-point error per sample, ignoring unknown ground truth.

        EPE = mean over valid pixels of sqrt((u - u_gt)^2 + (v - v_gt)^2)

    A pixel is valid when both ground-truth components are finite and at most 1e9 in magnitude (Middlebury marks
    unknown flow with 1e9+; scikit-image's disparity uses inf). The gradient is 0 (not NaN) where the prediction
    equals the ground truth and at invalid pixels; a sample without valid pixels has EPE 0.

    Args:
        flow_true: `[batch, H, W, 2]` ground-truth flow.
        flow_pred: `[batch, H, W, 2]` predicted flow.

    Returns:
        `[batch]` mean end-point errors in pixels.
    """
    flow_true = tf.convert_to_tensor(flow_true)
    flow_pred = tf.convert_to_tensor(flow_pred)
    flow_true = tf.cast(flow_true, flow_pred.dtype)
    _check_flow(flow_true, "flow_true")
    _check_flow(flow_pred, "flow_pred")
    finite = tf.math.is_finite(flow_true) & (tf.abs(flow_true) <= UNKNOWN_FLOW_THRESHOLD)
    valid = tf.reduce_all(finite, axis=-1)
    target = tf.where(valid[..., None], flow_true, flow_pred)  # invalid pixels: zero difference, no NaN
    squared = tf.reduce_sum(tf.square(flow_pred - target), axis=-1)
    positive = squared > 0
    error = tf.where(positive, tf.sqrt(tf.where(positive, squared, tf.ones_like(squared))), tf.zeros_like(squared))
    weight = tf.cast(valid, error.dtype)
    count = tf.reduce_sum(weight, axis=[1, 2])
    return tf.reduce_sum(error * weight, axis=[1, 2]) / tf.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package="kerasvid")
class EndpointError(keras.losses.Loss):
    """Keras loss wrapper of `endpoint_error` (supervised TVNet fine-tuning, the released `supervised_loss`).

    Args:
        name: loss name.
        reduction: Keras reduction over the batch (default `"sum_over_batch_size"`: mean EPE).

    Example:

    >>> model.compile(optimizer=keras.optimizers.Adam(0.005), loss=EndpointError())
    """

    def __init__(self, name="endpoint_error", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return endpoint_error(y_true, y_pred)
