"""Resizing images as TVNet and OpenCV do: align-corners bilinear (TVNet's pyramid) and half-pixel-centre bilinear
with OpenCV's `cv2.resize(INTER_LINEAR)` coordinates (TV-L1's image pyramid), as separable matrix products.

Images are `[batch, H, W, C]`; pure TensorFlow, differentiable, usable under `jit_compile=True`.
"""
import numpy as np
import tensorflow as tf

from kerasvid.ops._checks import check_rank

__all__ = ["resize_align_corners", "resize_half_pixel"]


def _interpolation_matrix(size_in, size_out):
    """`[size_out, size_in]` matrix of align-corners linear interpolation (rows sum to 1)."""
    matrix = np.zeros((size_out, size_in), np.float64)
    if size_out == 1 or size_in == 1:
        matrix[:, 0] = 1.0
        return matrix
    position = np.arange(size_out) * (size_in - 1) / (size_out - 1)
    lower = np.minimum(np.floor(position).astype(int), size_in - 2)
    frac = position - lower
    matrix[np.arange(size_out), lower] = 1.0 - frac
    matrix[np.arange(size_out), lower + 1] += frac
    return matrix


def resize_align_corners(image, size):
    """Bilinear resize with aligned corners (the corner pixels of input and output coincide).

    Output pixel `i` of a side samples the input at `i * (size_in - 1) / (size_out - 1)`: the zero-flow spatial
    transformer the released TVNet uses to build its image pyramid and to upsample flows. Computed as two small
    interpolation-matrix products (static shapes), which is exact, differentiable and XLA-friendly.

    Args:
        image: float tensor `[batch, H, W, C]` with static H and W.
        size: `(new_height, new_width)`, positive ints.

    Returns:
        `[batch, new_height, new_width, C]` tensor.
    """
    image, (height, width), (new_height, new_width) = _resize_sizes(image, size, "resize_align_corners")
    if (new_height, new_width) == (height, width):
        return image
    return _separable_resize(image, _interpolation_matrix(height, new_height), _interpolation_matrix(width, new_width))


def _resize_sizes(image, size, name):
    """Checks a resize's arguments: returns the image tensor, its static (H, W) and the new (H, W)."""
    image = tf.convert_to_tensor(image)
    check_rank(image, 4, "image")
    height, width = image.shape[1], image.shape[2]
    if height is None or width is None:
        raise ValueError(f"`{name}` needs a static height and width, got shape {image.shape}")
    new_height, new_width = (int(s) for s in size)
    if new_height < 1 or new_width < 1:
        raise ValueError(f"`size` must be positive, got size={tuple(size)}")
    return image, (height, width), (new_height, new_width)


def _separable_resize(image, rows, cols):
    """`image` resampled by a `[new_H, H]` row matrix and a `[new_W, W]` column matrix."""
    rows = tf.constant(rows, image.dtype)
    cols = tf.constant(cols, image.dtype)
    return tf.einsum("oh,bhwc,pw->bopc", rows, image, cols)


def _half_pixel_matrix(size_in, size_out, ratio):
    """`[size_out, size_in]` matrix of half-pixel linear interpolation, OpenCV `INTER_LINEAR`'s sampling.

    Output pixel `i` samples the input at `(i + 0.5) * ratio - 0.5`; a position left of pixel 0 or right of the
    last pixel takes that pixel (the edge replicated), as `cv::resize` does.
    """
    matrix = np.zeros((size_out, size_in), np.float64)
    position = (np.arange(size_out) + 0.5) * ratio - 0.5
    lower = np.floor(position).astype(int)
    frac = position - lower
    frac[lower < 0] = 0.0
    lower[lower < 0] = 0
    at_end = lower >= size_in - 1
    frac[at_end] = 0.0
    lower[at_end] = size_in - 1
    upper = np.minimum(lower + 1, size_in - 1)
    matrix[np.arange(size_out), lower] = 1.0 - frac
    matrix[np.arange(size_out), upper] += frac
    return matrix


def resize_half_pixel(image, size, ratio=None):
    """Bilinear resize with half-pixel centres: OpenCV's `cv::resize(..., INTER_LINEAR)` (no antialiasing).

    Output pixel `i` of a side samples the input at `(i + 0.5) * ratio - 0.5` with `ratio = size_in / size_out`
    by default, or the given `ratio` (OpenCV's `1 / fx` when `resize` is called with a scale factor instead of a
    size), edges replicated. Halving (`ratio=2`) is therefore the mean of each 2x2 block: the level-by-level
    pyramid of OpenCV's `DualTVL1OpticalFlow` (`scaleStep`). Exact interpolation-matrix products, as
    `resize_align_corners`.

    Args:
        image: float tensor `[batch, H, W, C]` with static H and W.
        size: `(new_height, new_width)`, positive ints.
        ratio: None, a number (both sides), or `(ratio_y, ratio_x)`: input pixels per output pixel.

    Returns:
        `[batch, new_height, new_width, C]` tensor.
    """
    image, (height, width), (new_height, new_width) = _resize_sizes(image, size, "resize_half_pixel")
    if ratio is None:
        ratio_y, ratio_x = height / new_height, width / new_width
    elif isinstance(ratio, (tuple, list)):
        ratio_y, ratio_x = (float(r) for r in ratio)
    else:
        ratio_y = ratio_x = float(ratio)
    if not (ratio_y > 0 and ratio_x > 0):
        raise ValueError(f"`ratio` must be positive, got ratio={ratio!r}")
    if (new_height, new_width) == (height, width) and ratio_y == ratio_x == 1.0:
        return image
    return _separable_resize(image, _half_pixel_matrix(height, new_height, ratio_y),
                             _half_pixel_matrix(width, new_width, ratio_x))
