"""Bilinear warping, align-corners resizing and the finite-difference operators of TV-L1 optical flow.

Pure TensorFlow functions (no tensorflow-addons), differentiable, usable under `jit_compile=True`. They are the
image-space building blocks of TVNet ("End-to-End Learning of Motion Representation for Video Understanding",
Fan et al., CVPR 2018) and of its unsupervised TV-L1 energy.

Conventions: images are `[batch, H, W, C]`; a flow field is `[batch, H, W, 2]` in pixels, channel 0 = horizontal
displacement `u` (x, along W), channel 1 = vertical displacement `v` (y, along H).
"""
import functools

import numpy as np
import tensorflow as tf

__all__ = ["backward_divergence_term", "bicubic_warp", "bilinear_warp", "centered_gradient", "forward_difference",
           "median_filter", "resize_align_corners", "resize_half_pixel"]

PADDINGS = ("border", "zeros")


def _check_rank(x, rank, name):
    if x.shape.rank is not None and x.shape.rank != rank:
        raise ValueError(f"`{name}` must have rank {rank}, got shape {x.shape}")


def _sample_grid(image, flow, padding):
    """Checks a warp's arguments; returns the image, it flattened to `[batch, H * W, C]`, the integer parts
    `(x0, y0)` and the fractional parts `(fx, fy)` of the sample positions `(x + u, y + v)` (clamped into the
    image first for `"border"`). The fractional parts carry the gradient with respect to the flow."""
    if padding not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}, got padding={padding!r}")
    image = tf.convert_to_tensor(image)
    flow = tf.convert_to_tensor(flow, dtype=image.dtype)
    _check_rank(image, 4, "image")
    _check_rank(flow, 4, "flow")
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
    _check_rank(image, 4, "image")
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


class _Network:
    """A min/max (compare-exchange) network built symbolically, evaluated on tensors only where an output needs it.

    Nodes are interned ints: leaves are `("leaf", key)`, `INF` is +infinity (padding, folded away at build time:
    `min(x, inf) = x`), inner nodes `("min" | "max", a, b)`. `evaluate` computes a node's tensor from its inputs, with
    memoisation, so comparators that no requested output depends on are never emitted.
    """

    INF = -1

    def __init__(self):
        self.nodes, self.ids = [], {}

    def node(self, *key):
        if key not in self.ids:
            self.ids[key] = len(self.nodes)
            self.nodes.append(key)
        return self.ids[key]

    def exchange(self, a, b):
        if a == self.INF:
            return b, a
        if b == self.INF or a == b:
            return a, b
        return self.node("min", a, b), self.node("max", a, b)

    def merge(self, a, b):
        """Batcher's odd-even merge of two sorted lists of the same power-of-2 length."""
        if len(a) == 1:
            return list(self.exchange(a[0], b[0]))
        even, odd = self.merge(a[0::2], b[0::2]), self.merge(a[1::2], b[1::2])
        out = [even[0]]
        for i in range(1, len(even)):
            out.extend(self.exchange(odd[i - 1], even[i]))
        return out + [odd[-1]]

    def merge_any(self, a, b):
        """Merges two sorted lists of any lengths (padded with +inf to a common power of 2, then trimmed)."""
        size = 1 << max(len(a), len(b), 1).bit_length() - 1
        size = size if size >= max(len(a), len(b)) else 2 * size
        pad = lambda v: list(v) + [self.INF] * (size - len(v))  # noqa: E731
        return self.merge(pad(a), pad(b))[:len(a) + len(b)]

    def sort(self, values):
        """Batcher's odd-even merge sort."""
        if len(values) <= 1:
            return list(values)
        half = len(values) // 2
        return self.merge_any(self.sort(values[:half]), self.sort(values[half:]))

    def evaluate(self, node, leaves, memo):
        """Tensor of `node`; `leaves(key)` gives a leaf's tensor; `memo` (a dict) is shared between calls."""
        stack = [node]
        while stack:  # iterative post-order: the networks are deeper than Python's recursion likes
            current = stack[-1]
            if current in memo:
                stack.pop()
                continue
            kind = self.nodes[current]
            if kind[0] == "leaf":
                memo[current] = leaves(kind[1])
                stack.pop()
                continue
            missing = [child for child in kind[1:] if child not in memo]
            if missing:
                stack.extend(missing)
                continue
            op = tf.minimum if kind[0] == "min" else tf.maximum
            memo[current] = op(memo[kind[1]], memo[kind[2]])
            stack.pop()
        return memo[node]


@functools.lru_cache(maxsize=None)
def _median_networks(size):
    """The two stages of the `size x size` median: a sort of each column (shared by the windows that contain it)
    and the median of the window's `size` sorted columns by pairwise odd-even merges.

    Returns:
        `(column_network, column_outputs, window_network, median_node, ranks)`: `column_outputs[r]` is the node
        of rank `r` of a column (leaves `r` = row offset); the window network's leaves are `(column offset j,
        rank r)`; `ranks` are the column ranks it reads (the others are never computed).
    """
    columns = _Network()
    column_outputs = columns.sort([columns.node("leaf", r) for r in range(size)])
    window = _Network()
    lists = [[window.node("leaf", (j, r)) for r in range(size)] for j in range(size)]
    while len(lists) > 1:
        lists = [window.merge_any(lists[i], lists[i + 1]) if i + 1 < len(lists) else lists[i]
                 for i in range(0, len(lists), 2)]
    median = lists[0][size * size // 2]
    used, stack = set(), [median]
    while stack:
        kind = window.nodes[stack.pop()]
        if kind[0] == "leaf":
            used.add(kind[1][1])
        else:
            stack.extend(kind[1:])
    return columns, column_outputs, window, median, tuple(sorted(used))


def _median_forward(padded, size, height, width):
    """Median of the `size x size` windows of `padded` (`[..., H + size - 1, W + size - 1, C]`-like, axes 1, 2)."""
    columns, column_outputs, window, median, ranks = _median_networks(size)
    rows = [padded[:, r:r + height] for r in range(size)]  # [B, H, W + size - 1, C] each
    memo = {}
    sorted_columns = {r: columns.evaluate(column_outputs[r], lambda k: rows[k], memo) for r in ranks}
    return window.evaluate(median, lambda key: sorted_columns[key[1]][:, :, key[0]:key[0] + width], {})


def median_filter(x, size):
    """Median over `size x size` windows, each channel separately, edges replicated.

    The flow filtering of TV-L1 solvers between warps (OpenCV `DualTVL1OpticalFlow`'s `medianFiltering`, which
    calls `cv::medianBlur`: replicated borders); equals `scipy.ndimage.median_filter(x, size=(1, size, size, 1),
    mode="nearest")`. Each column of `size` values is sorted once (it is shared by `size` windows), then each
    window's sorted columns are merged by odd-even merges pruned to the median (5x5: 158 min/max per value, half of
    what a forgetful selection over the 25 values takes). Differentiable almost everywhere: the gradient goes to
    the pixel holding the median (the first such window position, row-major, on ties); the backward pass keeps only
    the input and the output.

    Args:
        x: float tensor `[batch, H, W, C]` with static H and W.
        size: odd window side, >= 1 (1 returns `x`).

    Returns:
        tensor shaped like `x`.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"`size` must be an odd integer >= 1, got size={size!r}")
    x = tf.convert_to_tensor(x)
    _check_rank(x, 4, "x")
    if size == 1:
        return x
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(f"`median_filter` needs a static height and width, got shape {x.shape}")
    radius = size // 2
    rows = np.clip(np.arange(-radius, height + radius), 0, height - 1)  # replicated edges
    cols = np.clip(np.arange(-radius, width + radius), 0, width - 1)

    def pad(x):
        return tf.gather(tf.gather(x, rows, axis=1), cols, axis=2)

    @tf.custom_gradient
    def _filter(x):
        padded = pad(x)
        out = _median_forward(padded, size, height, width)

        def grad(upstream):
            # to the first window position (row-major) holding the median; only `x` and `out` are kept
            with tf.GradientTape() as tape:
                tape.watch(x)
                padded = pad(x)
            taken = tf.zeros_like(out, tf.bool)
            parts = []
            for i in range(size):
                for j in range(size):
                    hit = tf.equal(padded[:, i:i + height, j:j + width], out) & ~taken
                    taken |= hit
                    parts.append(tf.pad(tf.where(hit, upstream, tf.zeros_like(upstream)),
                                        [[0, 0], [i, size - 1 - i], [j, size - 1 - j], [0, 0]]))
            return tape.gradient(padded, x, output_gradients=tf.add_n(parts))

        return out, grad

    return _filter(x)
