"""The finite-difference operators of the TV-L1 energy (forward differences, the divergence's backward terms,
centred gradients), on any axis of a tensor; pure TensorFlow, differentiable, usable under `jit_compile=True`."""
import tensorflow as tf

__all__ = ["backward_divergence_term", "centered_gradient", "forward_difference"]


def _pad_axis(x, axis, before, after):
    paddings = [[0, 0]] * len(x.shape)
    paddings[axis] = [before, after]
    return tf.pad(x, paddings)


def _slice_axis(x, axis, start, stop):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def forward_difference(x, axis, kernel=(-1.0, 1.0)):
    """Forward difference along `axis` (2 = x, 1 = y) with the last column/row set to 0.

        d[j] = k0 * x[j] + k1 * x[j + 1]   for j < n - 1,     d[n - 1] = 0

    With the default kernel `(-1, 1)` this is the forward gradient of TV-L1 (released TVNet: a [-1, 1] convolution
    with SAME padding, last column/row forced to 0). `kernel` entries may be tensors broadcasting against `x`'s
    channels (TVNet's trainable per-channel kernels).

    Args:
        x: tensor `[batch, H, W, C]`.
        axis: 1 (vertical, y) or 2 (horizontal, x).
        kernel: the two taps `(k0, k1)`.

    Returns:
        tensor with the shape of `x`.
    """
    diff = kernel[0] * _slice_axis(x, axis, None, -1) + kernel[1] * _slice_axis(x, axis, 1, None)
    return _pad_axis(diff, axis, 0, 1)


def backward_divergence_term(p, axis, kernel=(-1.0, 1.0)):
    """One axis of the discrete divergence, the negative adjoint of `forward_difference`.

        q = [0, p[0], ..., p[n - 2]] (shift by one, last entry dropped),   d[j] = k0 * q[j] + k1 * q[j + 1],  q[n] = 0

    With the default kernel: `d[0] = p[0]`, `d[j] = p[j] - p[j - 1]`, `d[n - 1] = -p[n - 2]` (released TVNet's
    divergence). `div(p) = backward_divergence_term(p_x, 2) + backward_divergence_term(p_y, 1)`.

    Args:
        p: tensor `[batch, H, W, C]`, one component of a dual field.
        axis: 1 (y) or 2 (x).
        kernel: the two taps `(k0, k1)` (tensors allowed, broadcasting over channels).

    Returns:
        tensor with the shape of `p`.
    """
    trimmed = _slice_axis(p, axis, None, -1)
    shifted = _pad_axis(trimmed, axis, 1, 0)  # q[j]
    ahead = _pad_axis(trimmed, axis, 0, 1)  # q[j + 1]
    return kernel[0] * shifted + kernel[1] * ahead


def centered_gradient(x):
    """Centred image gradient `((x[j+1] - x[j-1]) / 2)` with one-sided half differences at the borders.

    At the first and last column (row) the derivative is `(x[1] - x[0]) / 2` and `(x[n-1] - x[n-2]) / 2`
    (released TVNet's `centered_gradient`; note the factor 1/2 is kept at the border). Needs H, W >= 2.

    Args:
        x: tensor `[batch, H, W, C]`.

    Returns:
        `(d_x, d_y)`, two tensors shaped like `x`.
    """
    def along(axis):
        inner = 0.5 * (_slice_axis(x, axis, 2, None) - _slice_axis(x, axis, None, -2))
        first = 0.5 * (_slice_axis(x, axis, 1, 2) - _slice_axis(x, axis, 0, 1))
        last = 0.5 * (_slice_axis(x, axis, -1, None) - _slice_axis(x, axis, -2, -1))
        return tf.concat([first, inner, last], axis=axis)

    return along(2), along(1)
