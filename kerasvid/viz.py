"""Pictures: optical flow as colour (Middlebury colour wheel), PNG writing.

Other papers' helpers (attention overlays, correspondence drawings) are appended at the end of this module.
"""
import numpy as np

# Hue segments of the Middlebury colour wheel (Baker et al., "A Database and Evaluation Methodology for Optical
# Flow", IJCV 2011): red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta, magenta-red.
WHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))
UNKNOWN_FLOW_THRESHOLD = 1e9


def color_wheel():
    """The 55-colour Middlebury wheel, `[55, 3]` float RGB in 0-255 (integer valued).

    Each segment of n colours ramps one channel linearly, `floor(255 * i / n)`, while another stays at 255.
    """
    rows = []
    # (channel that ramps, rising?, channel held at 255) per segment, RGB channel indices
    ramps = {"RY": (1, True, 0), "YG": (0, False, 1), "GC": (2, True, 1), "CB": (1, False, 2), "BM": (0, True, 2),
             "MR": (2, False, 0)}
    for name, count in WHEEL_SEGMENTS:
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
