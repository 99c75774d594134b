"""FusedBatchNormalization: `keras.layers.BatchNormalization` computed by TF's fused kernel."""
import keras

from kerasvid.layers._blocks import fused_batch_norm

__all__ = ["FusedBatchNormalization"]


@keras.saving.register_keras_serializable(package="kerasvid")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over the last axis as one `FusedBatchNormV3` op and its fused gradient.

    Keras 3 normalises with a dozen element-wise ops (moments, rsqrt, scale, shift) and as many in the backward
    pass; TF's fused kernel does it in one pass over the tensor. The numbers, the weights (gamma, beta, moving mean
    and variance: the same names, so weights transfer by layer name) and the moving-statistics update are Keras':
    batch statistics with the biased variance in a training call of a trainable layer, the moving ones otherwise,
    computed in float32 (`kerasvid.layers._blocks.fused_batch_norm`). Layers the fused op does not cover (another
    axis, `center` or `scale` off, float64, synchronized or renormalising) run Keras' own computation.

    Args:
        Those of `keras.layers.BatchNormalization`.

    Call arguments:
        inputs: a channels-last tensor of any rank >= 2.
        training: batch statistics (and the moving-statistics update) when True and the layer is trainable.

    Returns:
        The normalised `inputs`, in the layer's compute dtype.

    Example:
    >>> bn = kerasvid.layers.FusedBatchNormalization(epsilon=1e-5)
    >>> bn(np.ones((2, 4, 3), "float32"), training=True).shape
    TensorShape([2, 4, 3])
    """

    def _fused(self, inputs):
        rank = len(inputs.shape)
        return (self.axis in (-1, rank - 1) and self.center and self.scale and not getattr(self, "synchronized", False)
                and not getattr(self, "renorm", False) and inputs.dtype != "float64")

    def call(self, inputs, training=None, mask=None):
        if mask is not None or not self._fused(inputs):
            return super().call(inputs, training=training, mask=mask)
        return fused_batch_norm(self, inputs, bool(training))
