"""A median filter of images (OpenCV's `medianBlur` with replicated borders) by sorting networks, differentiable
almost everywhere and usable under `jit_compile=True`."""
import functools

import numpy as np
import tensorflow as tf

from kerasvid.ops._checks import check_rank

__all__ = ["median_filter"]


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
    check_rank(x, 4, "x")
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
