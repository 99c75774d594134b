"""Pictures: optical flow as colour (Middlebury colour wheel), PNG writing, a clip's frames side by side.

Then attention overlays; drawing primitives (lines, squares, a 5x7 pixel font) and line plots (training curves) in
numpy; a query point and its correspondences drawn across the frames of a clip. Pictures only: what a model computes
for a picture lives in its model file (`kerasvid.models.cpnet.correspondence_proposals`).
"""
import numpy as np

from kerasvid.flow import UNKNOWN_FLOW_THRESHOLD

# Hue segments of the Middlebury colour wheel (Baker et al., "A Database and Evaluation Methodology for Optical
# Flow", IJCV 2011): red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta, magenta-red.
_WHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def color_wheel():
    """The 55-colour Middlebury wheel, `[55, 3]` float RGB in 0-255 (integer valued).

    Each segment of n colours ramps one channel linearly, `floor(255 * i / n)`, while another stays at 255.
    """
    rows = []
    # (channel that ramps, rising?, channel held at 255) per segment, RGB channel indices
    ramps = {"RY": (1, True, 0), "YG": (0, False, 1), "GC": (2, True, 1), "CB": (1, False, 2), "BM": (0, True, 2),
             "MR": (2, False, 0)}
    for name, count in _WHEEL_SEGMENTS:
        channel, rising, held = ramps[name]
        ramp = np.floor(255.0 * np.arange(count) / count)
        segment = np.zeros((count, 3))
        segment[:, held] = 255.0
        segment[:, channel] = ramp if rising else 255.0 - ramp
        rows.append(segment)
    return np.concatenate(rows)


def flow_to_color(flow, max_flow=None):
    """Colour-codes a flow field with the Middlebury colour wheel (the convention of the TVNet paper's figures).

    Hue = direction (`atan2(-v, -u)` on the wheel, as Middlebury's `flowToColor`: right = red, down = yellow,
    left = cyan, up = violet; image y points down), saturation = magnitude relative to `max_flow` (white = no motion, full colour at `max_flow`,
    darkened by 0.75 beyond it). Unknown flow (non-finite or > 1e9) is black.

    Args:
        flow: array `[H, W, 2]` (or `[batch, H, W, 2]`) in pixels, channel 0 = x, channel 1 = y.
        max_flow: the magnitude shown at full saturation; default the largest valid magnitude in `flow`.

    Returns:
        uint8 RGB image `[H, W, 3]` (or `[batch, H, W, 3]`).
    """
    flow = np.asarray(flow, np.float64)
    if flow.ndim not in (3, 4) or flow.shape[-1] != 2:
        raise ValueError(f"`flow` must be [H, W, 2] or [batch, H, W, 2], got shape {flow.shape}")
    unknown = ~np.all(np.isfinite(flow) & (np.abs(flow) <= UNKNOWN_FLOW_THRESHOLD), axis=-1)
    u = np.where(unknown, 0.0, flow[..., 0])
    v = np.where(unknown, 0.0, flow[..., 1])
    radius = np.sqrt(u ** 2 + v ** 2)
    if max_flow is None:
        max_flow = radius.max() if radius.size else 0.0
    elif not max_flow > 0:
        raise ValueError(f"`max_flow` must be positive, got max_flow={max_flow!r}")
    scale = max_flow + np.finfo(np.float64).eps
    u, v, radius = u / scale, v / scale, radius / scale
    wheel = color_wheel() / 255.0
    count = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    position = (angle + 1.0) / 2.0 * (count - 1)
    k0 = np.floor(position).astype(int)
    k1 = (k0 + 1) % count
    frac = (position - k0)[..., None]
    color = (1.0 - frac) * wheel[k0] + frac * wheel[k1]
    small = (radius <= 1.0)[..., None]
    color = np.where(small, 1.0 - radius[..., None] * (1.0 - color), color * 0.75)
    image = np.floor(255.0 * color)
    image[unknown] = 0.0
    return image.astype(np.uint8)


def write_png(path, image):
    """Writes a uint8 image `[H, W, 3]` (or `[H, W, 1]`, `[H, W]`) to a PNG file (via `tf.io.encode_png`)."""
    import tensorflow as tf

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or image.dtype != np.uint8:
        raise ValueError(f"`image` must be uint8 [H, W, 1|3|4], got shape {image.shape} and dtype {image.dtype}")
    tf.io.write_file(str(path), tf.io.encode_png(image))
    return str(path)


def clip_to_image_grid(clip, max_frames=8):
    """Lays out the frames of a clip side by side for TensorBoard.

    Args:
        clip: float `[T, H, W, 3]` (any range; min-max scaled to [0, 1]).
        max_frames: frames to keep (evenly spaced).

    Returns:
        float32 `[1, H, W * min(T, max_frames), 3]` in [0, 1].
    """
    import tensorflow as tf

    clip = tf.convert_to_tensor(clip, tf.float32)
    t = tf.shape(clip)[0]
    idx = tf.cast(tf.linspace(0.0, tf.cast(t - 1, tf.float32), min(max_frames, int(clip.shape[0]))), tf.int32)
    frames = tf.gather(clip, idx)
    lo, hi = tf.reduce_min(frames), tf.reduce_max(frames)
    frames = (frames - lo) / tf.maximum(hi - lo, 1e-6)
    return tf.concat(tf.unstack(frames), axis=1)[None]


def attention_overlay(frames, attention, alpha=0.6, color=(255, 0, 0), method="bilinear"):
    """Blends an attention map over video frames: `out = (1 - alpha a) frame + alpha a color`, uint8.

    For the action/context attention maps of `kerasvid.models.action_context` (or any non-negative map): `a` is the
    map divided by its maximum over the whole clip (a zero map leaves the frames unchanged), resized to the frames'
    height and width with `method` ("bilinear" or "nearest", `tf.image.resize`).

    Args:
        frames: `[H, W, 3]` or `[T, H, W, 3]` (or greyscale `[H, W]`, `[T, H, W]`; a 3-axis array whose last axis
            is 1 or 3 is read as one frame), values in [0, 255].
        attention: `[h, w]` or `[T', h, w]` (a trailing axis of size 1 is allowed), non-negative and finite. With
            `T' < T` (an I3D map has T/8 steps) each map step covers `T / T'` consecutive frames; `T` must be a
            multiple of `T'`.
        alpha: opacity of the colour where the attention is at its maximum, in [0, 1].
        color: RGB of the overlay.
        method: resize method of the map.

    Returns:
        uint8 `[H, W, 3]` or `[T, H, W, 3]`; write a frame with `write_png`.

    Example:
    >>> attention_overlay(np.full((2, 2, 3), 100.0), np.array([[0.0, 1.0], [0.0, 0.5]]), alpha=1.0)[0, 1].tolist()
    [255, 0, 0]
    """
    import tensorflow as tf

    frames = np.asarray(frames, np.float64)
    attention = np.asarray(attention, np.float64)
    if frames.ndim in (2, 3) and (frames.ndim == 2 or frames.shape[-1] not in (1, 3)):
        frames = frames[..., None]  # greyscale without a channel axis
    single = frames.ndim == 3
    if single:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"`frames` must be [H, W(, 1|3)] or [T, H, W(, 1|3)], got shape {frames.shape}")
    frames = np.broadcast_to(frames, frames.shape[:3] + (3,))
    if attention.ndim >= 3 and attention.shape[-1] == 1:
        attention = attention[..., 0]
    if attention.ndim == 2:
        attention = attention[None]
    if attention.ndim != 3:
        raise ValueError(f"`attention` must be [h, w] or [T, h, w], got shape {attention.shape}")
    steps, num_frames = attention.shape[0], frames.shape[0]
    if num_frames % steps:
        raise ValueError(f"the number of frames must be a multiple of the attention's time steps, got {num_frames} "
                         f"frames and {steps} steps")
    if not np.all(np.isfinite(attention)) or attention.min() < 0:
        raise ValueError(f"`attention` must be finite and non-negative, got values in "
                         f"[{np.nanmin(attention)}, {np.nanmax(attention)}]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got alpha={alpha}")
    if method not in ("bilinear", "nearest"):
        raise ValueError(f"`method` must be 'bilinear' or 'nearest', got method={method!r}")
    peak = attention.max()
    weights = attention / peak if peak > 0 else attention
    weights = tf.image.resize(weights[..., None], frames.shape[1:3], method=method).numpy()[..., 0]
    weights = np.repeat(weights, num_frames // steps, axis=0)[..., None] * alpha
    out = (1.0 - weights) * frames + weights * np.asarray(color, np.float64)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out[0] if single else out


# ----- Drawing primitives (numpy only: no plotting library is a dependency) ------------------------------------
# A 5x7 pixel font: one string of 7 rows of 5 bits per glyph. Lower case is drawn as upper case.
_FONT_ROWS = {
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    ".": "00000 00000 00000 00000 00000 01100 01100", ",": "00000 00000 00000 00000 01100 00100 01000",
    "-": "00000 00000 00000 11111 00000 00000 00000", "_": "00000 00000 00000 00000 00000 00000 11111",
    ":": "00000 01100 01100 00000 01100 01100 00000", "/": "00000 00001 00010 00100 01000 10000 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000", "%": "11000 11001 00010 00100 01000 10011 00011",
    "(": "00010 00100 01000 01000 01000 00100 00010", ")": "01000 00100 00010 00010 00010 00100 01000",
    "+": "00000 00100 00100 11111 00100 00100 00000", " ": "00000 00000 00000 00000 00000 00000 00000",
}
_FONT = {c: np.array([[b == "1" for b in row] for row in rows.split()]) for c, rows in _FONT_ROWS.items()}
GLYPH_HEIGHT, GLYPH_ADVANCE = 7, 6  # pixels at scale 1 (5 columns + 1 of spacing)


def draw_text(image, text, top, left, color, scale=1):
    """Draws `text` in place with a 5x7 pixel font (scaled by `scale`); characters outside it are drawn as '?'.

    Glyph `n` covers rows `top .. top + 7 scale - 1` and columns `left + 6 scale n ..` (+ 5 scale - 1); pixels
    outside the image are dropped. Returns `image`.
    """
    unknown = np.ones((GLYPH_HEIGHT, 5), bool)
    for n, char in enumerate(str(text).upper()):
        glyph = np.kron(_FONT.get(char, unknown), np.ones((scale, scale), bool))
        rows, cols = np.nonzero(glyph)
        _paint(image, top + rows, left + GLYPH_ADVANCE * scale * n + cols, color)
    return image


def text_width(text, scale=1):
    """Width in pixels of `draw_text(text, scale=scale)` (without the trailing spacing column)."""
    return max(0, GLYPH_ADVANCE * scale * len(str(text)) - scale)


def _paint(image, rows, cols, color):
    rows, cols = np.asarray(rows).ravel(), np.asarray(cols).ravel()
    inside = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
    image[rows[inside], cols[inside]] = color


def draw_line(image, start, end, color, thickness=1):
    """Draws the segment from `start` to `end` ((row, col), floats allowed) in place; returns `image`.

    The pixels are `rint(start + (end - start) i / n)` for `i = 0..n`, `n = max(|d row|, |d col|)` (one pixel
    per step of the longer axis), each widened to a `thickness x thickness` square.
    """
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    steps = int(np.ceil(np.abs(end - start).max())) if np.any(end != start) else 0
    t = np.linspace(0.0, 1.0, steps + 1)[:, None]
    points = np.rint(start + (end - start) * t).astype(int)
    offsets = np.arange(thickness) - (thickness - 1) // 2
    for dr in offsets:
        for dc in offsets:
            _paint(image, points[:, 0] + dr, points[:, 1] + dc, color)
    return image


def draw_square(image, center, half_size, color, filled=True):
    """Draws a `(2 half_size + 1)`-pixel square centred on integer pixel `center` (row, col), filled or as a
    one-pixel outline, in place; returns `image`."""
    r, c = (int(v) for v in center)
    rows, cols = np.mgrid[r - half_size:r + half_size + 1, c - half_size:c + half_size + 1]
    if not filled:
        edge = (np.abs(rows - r) == half_size) | (np.abs(cols - c) == half_size)
        rows, cols = rows[edge], cols[edge]
    _paint(image, rows, cols, color)
    return image


# ----- Line plots (training curves) -----------------------------------------------------------------------------
PLOT_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def plot_margins(font_scale=1):
    """`(top, right, bottom, left)` margins in pixels around the plot area of `line_plot`."""
    s = font_scale
    return 4 * s + GLYPH_HEIGHT * s * 2, 6 * s, 6 * s + GLYPH_HEIGHT * s, 8 * s + GLYPH_ADVANCE * s * 6


def plot_position(x, y, x_range, y_range, size, font_scale=1):
    """Pixel (row, col) of data point (x, y) in a `line_plot` image of `size` (height, width).

    The plot area spans rows `top .. height - bottom - 1` and columns `left .. width - right - 1`
    (`plot_margins`); `x_range[0]` maps to column `left`, `x_range[1]` to the last column, `y_range[1]` to row
    `top` and `y_range[0]` to the last row, linearly, rounded to the nearest pixel.
    """
    top, right, bottom, left = plot_margins(font_scale)
    height, width = size
    (x0, x1), (y0, y1) = x_range, y_range
    col = left + (np.asarray(x, np.float64) - x0) / ((x1 - x0) or 1.0) * (width - right - 1 - left)
    row = top + (y1 - np.asarray(y, np.float64)) / ((y1 - y0) or 1.0) * (height - bottom - 1 - top)
    return np.rint(row).astype(int), np.rint(col).astype(int)


def _tick_label(value):
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def line_plot(series, size=(240, 360), x_range=None, y_range=None, title="", x_label="step", font_scale=1,
              markers=None):
    """Draws line series on white as a uint8 RGB image: axes, min / mid / max tick labels, a coloured legend.

    Args:
        series: list of `(label, xs, ys)` or `(label, xs, ys, color)`; non-finite points are left out.
        size: `(height, width)` of the image in pixels.
        x_range, y_range: `(low, high)` of the axes; default the data's range (a flat series gets +-0.5).
        title: drawn at the top left, followed by the series labels in their colours.
        x_label: drawn under the x axis, right-aligned.
        font_scale: integer size of the 5x7 font.
        markers: per series, the half size of a filled square drawn at each point (None: 2 where a series has
            at most 20 points, else 0).

    Returns:
        uint8 `[height, width, 3]`; `plot_position` gives the pixel of a data point.
    """
    height, width = size
    top, right, bottom, left = plot_margins(font_scale)
    if height - top - bottom < 2 or width - left - right < 2:
        raise ValueError(f"`size` {tuple(size)} leaves no plot area (margins {plot_margins(font_scale)})")
    clean = []
    for n, entry in enumerate(series):
        if len(entry) not in (3, 4):
            raise ValueError(f"each series must be (label, xs, ys[, color]), got {len(entry)} items")
        label, xs, ys = entry[:3]
        xs, ys = np.asarray(xs, np.float64).ravel(), np.asarray(ys, np.float64).ravel()
        if xs.shape != ys.shape:
            raise ValueError(f"series {label!r} has {xs.size} x values and {ys.size} y values")
        keep = np.isfinite(xs) & np.isfinite(ys)
        color = entry[3] if len(entry) == 4 else PLOT_COLORS[n % len(PLOT_COLORS)]
        clean.append((label, xs[keep], ys[keep], color))
    all_x = np.concatenate([s[1] for s in clean]) if clean else np.zeros(0)
    all_y = np.concatenate([s[2] for s in clean]) if clean else np.zeros(0)

    def span(values, given):
        if given is not None:
            return float(given[0]), float(given[1])
        if not values.size:
            return 0.0, 1.0
        lo, hi = float(values.min()), float(values.max())
        return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)

    x_range, y_range = span(all_x, x_range), span(all_y, y_range)
    image = np.full((height, width, 3), 255, np.uint8)
    s = font_scale
    grey, dark = (225, 225, 225), (60, 60, 60)
    for frac in (0.0, 0.5, 1.0):  # horizontal grid lines with their values
        value = y_range[0] + frac * (y_range[1] - y_range[0])
        row, _ = plot_position(0, value, (0, 1), y_range, size, s)
        draw_line(image, (row, left), (row, width - right - 1), grey)
        label = _tick_label(value)
        draw_text(image, label, row - GLYPH_HEIGHT * s // 2, left - 4 * s - text_width(label, s), dark, s)
    draw_line(image, (top, left - 1), (height - bottom, left - 1), dark)  # axes
    draw_line(image, (height - bottom, left - 1), (height - bottom, width - right - 1), dark)
    text_row = height - bottom + 3 * s
    for value, align in ((x_range[0], "left"), (x_range[1], "right")):
        label = _tick_label(value)
        col = left if align == "left" else width - right - text_width(label, s)
        draw_text(image, label, text_row, col, dark, s)
    draw_text(image, x_label, text_row, (left + width - right - text_width(x_label, s)) // 2, dark, s)
    legend = ([(title, dark)] if title else []) + [(label, color) for label, _, _, color in clean]
    line, col = 0, left
    for text, color in legend:  # title and legend on the top margin's two text lines
        if col > left and col + text_width(text, s) > width - right:
            line, col = line + 1, left
        draw_text(image, text, 2 * s + min(line, 1) * (GLYPH_HEIGHT + 1) * s, col, color, s)
        col += text_width(text + "  ", s)
    for n, (label, xs, ys, color) in enumerate(clean):
        rows, cols = plot_position(xs, ys, x_range, y_range, size, s)
        for i in range(len(xs) - 1):
            draw_line(image, (rows[i], cols[i]), (rows[i + 1], cols[i + 1]), color, thickness=s)
        half = markers[n] if markers is not None else (2 * s if len(xs) <= 20 else 0)
        for r, c in zip(rows, cols):
            draw_square(image, (r, c), half, color)
    return image


# ----- Correspondences across the frames of a clip ---------------------------------------------------------------
def canvas_position(pixel, frame_size, scale, gap):
    """Canvas (row, col) of clip pixel `(frame, y, x)` in `draw_correspondences`: frame `f` starts at column
    `f (W scale + gap)`; the pixel at `floor((y + 1/2) scale)`, `floor((x + 1/2) scale)` within it."""
    frame, y, x = pixel
    height, width = frame_size
    row = min(max(int(np.floor((y + 0.5) * scale)), 0), height * scale - 1)
    col = min(max(int(np.floor((x + 0.5) * scale)), 0), width * scale - 1)
    return row, int(frame) * (width * scale + gap) + col


def draw_correspondences(frames, proposals, scale=4, gap=4, query_color=(255, 230, 0),
                         neighbour_color=(0, 220, 255), marker_size=None):
    """Draws a query point and its correspondence proposals across the frames of a clip.

    The frames are enlarged `scale` times (nearest neighbour) and laid side by side with `gap` black columns; a
    line joins the query to each proposal, the query is a filled square and each proposal an outlined square
    (`2 marker_size + 1` pixels, default `scale`), at the `canvas_position` of their pixels.

    Args:
        frames: uint8 `[T, H, W, 3]` (or `[T, H, W]`), the clip as a person sees it.
        proposals: a dict with "query_pixel" `(frame, y, x)` and "neighbour_pixels" `[k, 3]` in clip pixels (as
            `kerasvid.models.cpnet.correspondence_proposals` returns).
        scale, gap: enlargement and spacing.
        query_color, neighbour_color: RGB of the query and of the proposals and their lines.
        marker_size: half size of the markers in canvas pixels.

    Returns:
        uint8 `[H scale, T W scale + (T - 1) gap, 3]`.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"`frames` must be uint8 [T, H, W, 3], got shape {frames.shape} and dtype {frames.dtype}")
    if not (isinstance(scale, int) and scale >= 1 and isinstance(gap, int) and gap >= 0):
        raise ValueError(f"`scale` must be an integer >= 1 and `gap` an integer >= 0, got scale={scale!r}, gap={gap!r}")
    num_frames, height, width = frames.shape[:3]
    pixels = np.concatenate([np.asarray(proposals["query_pixel"])[None], proposals["neighbour_pixels"]])
    if pixels[:, 0].max() >= num_frames:
        raise ValueError(f"the proposals point at frame {int(pixels[:, 0].max())} but `frames` has {num_frames}")
    big = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
    canvas = np.zeros((height * scale, num_frames * width * scale + (num_frames - 1) * gap, 3), np.uint8)
    for t in range(num_frames):
        start = t * (width * scale + gap)
        canvas[:, start:start + width * scale] = big[t]
    half = scale if marker_size is None else int(marker_size)
    query = canvas_position(pixels[0], (height, width), scale, gap)
    others = [canvas_position(p, (height, width), scale, gap) for p in pixels[1:]]
    for point in others:
        draw_line(canvas, query, point, neighbour_color)
    for point in others:
        draw_square(canvas, point, half, neighbour_color, filled=False)
    draw_square(canvas, query, half, query_color)
    return canvas


def write_mp4(path, frames, fps=10):
    """Writes uint8 RGB frames `[T, H, W, 3]` as an MPEG-4 video with PyAV (odd sizes are cropped to even ones,
    as yuv420p needs); returns the path."""
    import av  # a kerasvid dependency (video decoding); imported here since only this function encodes

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"`frames` must be uint8 [T, H, W, 3] with T >= 1, got shape {frames.shape} and dtype "
                         f"{frames.dtype}")
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames[:, :height, :width]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)
