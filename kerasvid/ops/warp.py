"""Warping images by a flow field: bilinear (TVNet's, `tf.gather`-based) and bicubic (OpenCV's `INTER_CUBIC`).

Pure TensorFlow functions (no tensorflow-addons), differentiable, usable under `jit_compile=True`: the image-space
building blocks of TVNet ("End-to-End Learning of Motion Representation for Video Understanding", Fan et al.,
CVPR 2018). Resizes are in `kerasvid.ops.resize`, finite differences in `kerasvid.ops.differences`, the median
filter in `kerasvid.ops.median`.

Conventions: images are `[batch, H, W, C]`; a flow field is `[batch, H, W, 2]` in pixels, channel 0 = horizontal
displacement `u` (x, along W), channel 1 = vertical displacement `v` (y, along H).
"""
import tensorflow as tf

from kerasvid.ops._checks import check_rank

__all__ = ["bicubic_warp", "bilinear_warp"]

PADDINGS = ("border", "zeros")


def _sample_grid(image, flow, padding):
    """Checks a warp's arguments; returns the image, it flattened to `[batch, H * W, C]`, the integer parts
    `(x0, y0)` and the fractional parts `(fx, fy)` of the sample positions `(x + u, y + v)` (clamped into the
    image first for `"border"`). The fractional parts carry the gradient with respect to the flow."""
    if padding not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}, got padding={padding!r}")
    image = tf.convert_to_tensor(image)
    flow = tf.convert_to_tensor(flow, dtype=image.dtype)
    check_rank(image, 4, "image")
    check_rank(flow, 4, "flow")
    if flow.shape[-1] is not None and flow.shape[-1] != 2:
        raise ValueError(f"`flow` must have 2 channels (u, v), got shape {flow.shape}")
    if image.shape[1:3].is_fully_defined() and flow.shape[1:3].is_fully_defined() and \
            image.shape[1:3] != flow.shape[1:3]:
        raise ValueError(f"`image` and `flow` must have the same height and width, got image shape {image.shape} "
                         f"and flow shape {flow.shape}")
    shape = tf.shape(image)
    height, width = shape[1], shape[2]
    dtype = image.dtype
    grid_y, grid_x = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
    x = tf.cast(grid_x, dtype)[None] + flow[..., 0]
    y = tf.cast(grid_y, dtype)[None] + flow[..., 1]
    if padding == "border":
        x = tf.clip_by_value(x, tf.zeros((), dtype), tf.cast(width - 1, dtype))
        y = tf.clip_by_value(y, tf.zeros((), dtype), tf.cast(height - 1, dtype))
    x0 = tf.floor(x)
    y0 = tf.floor(y)
    flat = tf.reshape(image, tf.stack([shape[0], height * width, shape[3]]))
    return image, flat, (tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)), (x - x0, y - y0)


def bilinear_warp(image, flow, padding="border"):
    """Backward-warps `image` by `flow` with bilinear interpolation.

    For every output pixel `(x, y)`:

        out[b, y, x] = image[b, y + v[b, y, x], x + u[b, y, x]]     (bilinear between the 4 neighbours)

    so `bilinear_warp(I2, flow)` aligns the second frame with the first when `flow` is the optical flow from
    frame 1 to frame 2 (the warp `I2(x + u)` of TV-L1).

    Border behaviour (`padding`):
    - `"border"` (default): sample coordinates are clamped to `[0, W - 1] x [0, H - 1]` first, i.e. the image is
      extended by replicating its edge pixels (scikit-image `warp(mode="edge")`, PyTorch
      `grid_sample(padding_mode="border")`). The gradient with respect to the flow is 0 along the clamped axis.
    - `"zeros"`: the image is 0 outside; each of the 4 neighbours that falls outside contributes 0
      (PyTorch `grid_sample(padding_mode="zeros", align_corners=True)`).

    A zero flow returns `image` exactly (the bilinear weights are then exactly 1 and 0). The released TVNet's
    spatial transformer scales flows by `(W - 1) / W` and pads asymmetrically; this function does not reproduce
    that quirk, which is invisible at the first warp (zero flow) and therefore in the TVNet-50 golden output.

    Args:
        image: float tensor `[batch, H, W, C]`.
        flow: float tensor `[batch, H, W, 2]` in pixels (`u` then `v`), same batch, H and W as `image`.
        padding: `"border"` or `"zeros"`.

    Returns:
        `[batch, H, W, C]` tensor, the warped image, in `image.dtype`. Differentiable in `image` and `flow`.
    """
    image, flat, (x0, y0), (wx, wy) = _sample_grid(image, flow, padding)
    shape = tf.shape(image)
    batch, height, width = shape[0], shape[1], shape[2]
    dtype = image.dtype

    def corner(xi, yi, weight):
        inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        index = tf.clip_by_value(yi, 0, height - 1) * width + tf.clip_by_value(xi, 0, width - 1)
        values = tf.gather(flat, tf.reshape(index, tf.stack([batch, -1])), batch_dims=1)
        values = tf.reshape(values, shape)
        if padding == "zeros":
            weight = weight * tf.cast(inside, dtype)
        return values * weight[..., None]

    return (corner(x0, y0, (1 - wx) * (1 - wy)) + corner(x0 + 1, y0, wx * (1 - wy))
            + corner(x0, y0 + 1, (1 - wx) * wy) + corner(x0 + 1, y0 + 1, wx * wy))


# Keys' cubic convolution parameter of OpenCV's INTER_CUBIC (Matlab's and PIL's bicubic use -0.5).
_CUBIC_A = -0.75


def _cubic_weights(t, a=_CUBIC_A):
    """Keys' cubic convolution weights of the taps at -1, 0, 1, 2 for fractional positions `t` in [0, 1)."""
    def near(d):  # |d| <= 1
        return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a

    return far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)


def bicubic_warp(image, flow, padding="border"):
    """Backward-warps `image` by `flow` with bicubic interpolation (Keys, a = -0.75: OpenCV's `INTER_CUBIC`).

    `out[b, y, x] = image[b, y + v, x + u]` as `bilinear_warp`, from the 4x4 neighbours. The warp of OpenCV's
    `DualTVL1OpticalFlow` (`cv::remap(..., INTER_CUBIC)`; OpenCV 5.1 interpolates its float positions as given, with no
    1/32-pixel rounding: `tests/test_tvnet_pyramid.py`). `padding` as in `bilinear_warp`: `"border"` clamps the sample position into the image first (edge
    replication), `"zeros"` lets every tap outside the image contribute 0 (OpenCV's default `BORDER_CONSTANT`).

    Args:
        image: float tensor `[batch, H, W, C]`.
        flow: float tensor `[batch, H, W, 2]` in pixels (`u` then `v`).
        padding: `"border"` or `"zeros"`.

    Returns:
        `[batch, H, W, C]` tensor, the warped image. Differentiable in `image` and `flow`.
    """
    image, flat, (x0, y0), (fx, fy) = _sample_grid(image, flow, padding)
    shape = tf.shape(image)
    batch, height, width = shape[0], shape[1], shape[2]
    dtype = image.dtype
    wx = _cubic_weights(fx)
    wy = _cubic_weights(fy)
    out = tf.zeros_like(image)
    for j in range(4):
        yi = y0 + (j - 1)
        row = tf.clip_by_value(yi, 0, height - 1) * width
        for i in range(4):
            xi = x0 + (i - 1)
            weight = wy[j] * wx[i]
            if padding == "zeros":
                weight = weight * tf.cast((yi >= 0) & (yi < height) & (xi >= 0) & (xi < width), dtype)
            index = row + tf.clip_by_value(xi, 0, width - 1)
            values = tf.reshape(tf.gather(flat, tf.reshape(index, tf.stack([batch, -1])), batch_dims=1), shape)
            out = out + values * weight[..., None]
    return out
