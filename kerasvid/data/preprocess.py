"""Spatial preprocessing and augmentation: pure, graph-safe TF functions shared by the pipelines and serving export.

Frames are `[..., H, W, 3]` (a clip `[T, H, W, 3]` or a batch `[B, T, H, W, 3]`); every frame of a clip gets the same
crop, flip and colour change. Values stay on the 0..255 scale until `normalize`.

`resize_and_center_crop` followed by `normalize` is exactly what the evaluation pipeline applies to decoded frames,
so `kerasvid.export` can call the same two functions inside a SavedModel.
"""
import tensorflow as tf

# ImageNet statistics on the 0..1 scale (the CPNet / Actor-Observer / torchvision convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# "caffe": what keras.applications' ResNet50/101/152 ImageNet weights were trained on (keras
# `applications/imagenet_utils.py`, mode "caffe"): RGB -> BGR, minus these BGR means on the 0..255 scale, no scaling.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# Per-channel presets `(x - mean) / std` on the 0..255 scale: preset -> (BGR order, mean, std) in that order.
CHANNEL_STATISTICS = {
    "imagenet": (False, tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD)),
    "caffe": (True, CAFFE_MEAN_BGR, (1.0, 1.0, 1.0)),
    # torchvision's Kinetics-400 video ResNets (r3d_18, mc3_18, r2plus1d_18): their own RGB statistics.
    "torchvision_video": (False, (255.0 * 0.43216, 255.0 * 0.394666, 255.0 * 0.37645),
                          (255.0 * 0.22803, 255.0 * 0.22145, 255.0 * 0.216989)),
    # The Caffe BN-Inception of TSN / pretrainedmodels: BGR minus (104, 117, 128), no scaling.
    "bn_inception": (True, (104.0, 117.0, 128.0), (1.0, 1.0, 1.0)),
}
NORMALIZATIONS = tuple(CHANNEL_STATISTICS) + ("minus_one_one", "zero_one", "none")
# Eval resize: short side = crop / 0.875 (256 for 224, 128 for 112), Model Garden's and the papers' protocol.
_DEFAULT_CROP_FRACTION = 0.875


def check_normalization(preset):
    if preset not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}, got {preset!r}.")
    return preset


def normalize(frames, preset="imagenet"):
    """Converts frames to float32 and normalises them.

    Args:
        frames: uint8 or float tensor `[..., 3]` on the 0..255 scale (floats are taken to be 0..255 as well, which is
            what `resize_and_center_crop` returns).
        preset: "imagenet" ((x / 255 - mean) / std, RGB), "caffe" (channels reversed to BGR, minus
            `CAFFE_MEAN_BGR`, 0..255 scale: keras.applications ResNet ImageNet weights), "torchvision_video"
            (torchvision's Kinetics video ResNets: RGB (x / 255 - mean) / std with their statistics),
            "bn_inception" (BGR minus (104, 117, 128): TSN's Caffe BN-Inception), "minus_one_one" (x / 127.5 - 1),
            "zero_one" (x / 255) or "none" (float32 0..255). `CHANNEL_STATISTICS` holds the per-channel presets.

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> normalize(tf.constant([[[0, 255, 128]]], tf.uint8), "minus_one_one")  # [[[-1., 1., 0.0039]]]
    """
    check_normalization(preset)
    x = tf.cast(frames, tf.float32)
    # One multiply-add per element: x * scale + offset. The per-channel constants are tiled along the width so the
    # broadcast runs over a [W * 3] inner dimension (a [3]-vector broadcast is slower on CPU).
    if preset in CHANNEL_STATISTICS:
        if x.shape.rank is None or x.shape.rank < 2 or x.shape[-1] != 3:
            raise ValueError(f"{preset!r} normalisation needs RGB frames [..., W, 3], got shape {x.shape}.")
        bgr, mean, std = CHANNEL_STATISTICS[preset]
        if bgr:
            x = tf.reverse(x, axis=[-1])
        scale = tf.constant([1.0 / s for s in std])
        offset = tf.constant([-m / s for m, s in zip(mean, std)])
        shape = tf.shape(x)
        width = shape[-2]
        flat = tf.reshape(x, tf.stack([-1, width * 3]))
        out = flat * tf.tile(scale, [width]) + tf.tile(offset, [width])
        return tf.ensure_shape(tf.reshape(out, shape), x.shape)
    if preset == "minus_one_one":
        return x * (1.0 / 127.5) - 1.0
    if preset == "zero_one":
        return x * (1.0 / 255.0)
    return x


def denormalize(images, preset="imagenet"):
    """Inverse of `normalize` in numpy, for pictures: uint8 RGB frames on the 0..255 scale.

    Args:
        images: array `[..., 3]` as `normalize(frames, preset)` returned it.
        preset: the preset it was normalised with.

    Returns:
        uint8 array of the same shape, RGB (a BGR preset's channels are put back in RGB order).
    """
    import numpy as np

    check_normalization(preset)
    x = np.asarray(images, np.float64)
    if preset in CHANNEL_STATISTICS:
        bgr, mean, std = CHANNEL_STATISTICS[preset]
        x = x * np.array(std) + np.array(mean)
        x = x[..., ::-1] if bgr else x
    elif preset == "minus_one_one":
        x = (x + 1.0) * 127.5
    elif preset == "zero_one":
        x = x * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _check_size(image_size):
    if len(image_size) != 2 or any(int(s) < 1 for s in image_size):
        raise ValueError(f"`image_size` must be (height, width) of positive ints, got {image_size!r}.")
    return int(image_size[0]), int(image_size[1])


def default_short_side(image_size):
    """The eval resize target for a crop: round(max(crop) / 0.875)."""
    return int(round(max(_check_size(image_size)) / _DEFAULT_CROP_FRACTION))


def _flatten_frames(frames):
    shape = tf.shape(frames)
    return tf.reshape(frames, tf.concat([[-1], shape[-3:]], 0)), shape[:-3]


def resize_short_side(frames, short_side, antialias=False):
    """Resizes `[..., H, W, C]` frames (bilinear) so that min(H, W) == short_side, keeping the aspect ratio.

    Returns float32 on the input's value scale; the new sizes are round(H * s / min(H, W)), round(W * s / min(H, W))
    (in float32, halves to even). The one resize of kerasvid: the input pipelines use it as is (graph, float32),
    `sources.resize_short_side_antialiased` wraps it for the frames `kerasvid convert` stores.

    Args:
        frames: `[..., H, W, C]` uint8 or float.
        short_side: the new min(H, W).
        antialias: False (the input pipelines, as TF Model Garden's: plain bilinear, 2x2 taps when shrinking by 2);
            True: when shrinking, a triangle filter as wide as the scale (no aliasing of fine detail: what a
            one-off conversion of large videos wants); the same as plain bilinear when enlarging.
    """
    flat, lead = _flatten_frames(tf.convert_to_tensor(frames))
    h = tf.cast(tf.shape(flat)[1], tf.float32)
    w = tf.cast(tf.shape(flat)[2], tf.float32)
    scale = tf.cast(short_side, tf.float32) / tf.minimum(h, w)
    new_hw = tf.cast(tf.round(tf.stack([h * scale, w * scale])), tf.int32)
    out = tf.image.resize(tf.cast(flat, tf.float32), new_hw, method="bilinear", antialias=antialias)
    return tf.reshape(out, tf.concat([lead, tf.shape(out)[1:]], 0))


def _crop_offsets(length, crop, num_crops):
    """Start offsets of `num_crops` windows of size `crop` spread evenly over `length` (1 = centred)."""
    slack = tf.maximum(length - crop, 0)
    if num_crops == 1:
        return tf.reshape(slack // 2, [1])
    i = tf.range(num_crops)
    return (slack * i) // (num_crops - 1)


def resize_and_crops(frames, image_size, short_side=None, num_crops=1):
    """Eval spatial views: resize the short side, then `num_crops` windows slid along the longer side.

    Args:
        frames: `[..., H, W, 3]` uint8 or float (0..255).
        image_size: (height, width) of the crops.
        short_side: resize target; default `default_short_side(image_size)`.
        num_crops: 1 (centre), 3 (left/top, centre, right/bottom), or any n >= 1 evenly spaced windows.

    Returns:
        float32 `[num_crops, ..., height, width, 3]`.
    """
    ch, cw = _check_size(image_size)
    frames = tf.convert_to_tensor(frames)
    if short_side is None:
        short_side = default_short_side(image_size)
    if short_side < min(ch, cw):
        raise ValueError(f"`short_side` ({short_side}) must be >= the crop's smaller side, "
                         f"got image_size={image_size}.")
    resized = resize_short_side(frames, short_side)
    h, w = tf.shape(resized)[-3], tf.shape(resized)[-2]
    # Slide along the longer side, centre the other one.
    ys = tf.where(h > w, _crop_offsets(h, ch, num_crops), tf.fill([num_crops], tf.maximum(h - ch, 0) // 2))
    xs = tf.where(h > w, tf.fill([num_crops], tf.maximum(w - cw, 0) // 2), _crop_offsets(w, cw, num_crops))
    crops = [resized[..., ys[i]:ys[i] + ch, xs[i]:xs[i] + cw, :] for i in range(num_crops)]
    out = tf.stack(crops, 0)
    return tf.ensure_shape(out, [num_crops] + [None] * (frames.shape.rank - 3) + [ch, cw, frames.shape[-1]])


def resize_and_center_crop(frames, image_size, short_side=None):
    """Resizes the short side to `short_side` (default crop / 0.875) and takes the centre `image_size` crop.

    Args:
        frames: uint8 or float `[..., H, W, 3]` (a clip `[T, H, W, 3]` or a batch `[B, T, H, W, 3]`).
        image_size: (height, width) of the output.
        short_side: resize target of the shorter side.

    Returns:
        float32 `[..., height, width, 3]` on the input's value scale (0..255 for uint8 input).

    Example:
    >>> resize_and_center_crop(tf.zeros([8, 240, 320, 3], tf.uint8), (224, 224)).shape  # (8, 224, 224, 3)
    """
    return resize_and_crops(frames, image_size, short_side, num_crops=1)[0]


# ----------------------------------------------------------------------------------------------------------------
# Training-time crop windows, computed in source-pixel coordinates so only the window needs decoding.


def random_resized_crop_window(height, width, seed, scale=(0.49, 1.0), aspect_ratio=(0.5, 2.0)):
    """Random crop window of area fraction in `scale` and aspect ratio (w / h) in `aspect_ratio` (Inception-style).

    Args:
        height, width: int32 scalars, the frame size.
        seed: int32/int64 `[2]` stateless seed.
        scale: (min, max) fraction of the frame area.
        aspect_ratio: (min, max) width / height.

    Returns:
        int32 `[4]` = (y, x, h, w), inside the frame (the whole frame when no window fits after 100 attempts).
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([height, width, 3]), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=aspect_ratio, area_range=scale, max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    return tf.cast(tf.stack([begin[0], begin[1], size[0], size[1]]), tf.int32)


def scale_jitter_window(height, width, image_size, seed, short_side_range=(256, 320)):
    """Window equivalent to "resize the short side to s ~ U[range], then a random `image_size` crop".

    Returns int32 `[4]` = (y, x, h, w) in source pixels (clipped to the frame).
    """
    ch, cw = _check_size(image_size)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    s = tf.random.stateless_uniform([], seeds[0], float(short_side_range[0]), float(short_side_range[1]) + 1e-3)
    ratio = tf.cast(tf.minimum(height, width), tf.float32) / s
    h = tf.minimum(tf.cast(tf.math.ceil(ch * ratio), tf.int32), height)
    w = tf.minimum(tf.cast(tf.math.ceil(cw * ratio), tf.int32), width)
    y = tf.random.stateless_uniform([], seeds[1], 0, height - h + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seeds[2], 0, width - w + 1, dtype=tf.int32)
    return tf.stack([y, x, h, w])


def crop_window_and_resize(frames, window, image_size):
    """Crops `[T, H, W, 3]` frames to `window` = (y, x, h, w) and resizes (bilinear) to `image_size`; float32."""
    y, x, h, w = tf.unstack(window)
    crop = frames[:, y:y + h, x:x + w, :]
    return tf.image.resize(tf.cast(crop, tf.float32), _check_size(image_size), method="bilinear")


def flip_left_right(frames, labels, flip, label_permutation=None):
    """Mirrors a clip `[T, H, W, 3]` when `flip` (bool scalar) is true and maps its labels.

    Args:
        frames: `[T, H, W, C]`.
        labels: int `[n]` class indices.
        flip: bool scalar tensor.
        label_permutation: optional int `[num_classes]` mapping each class to its mirror image class
            (e.g. Jester "swiping left" <-> "swiping right"); see `mirror_label_permutation`.

    Returns:
        (frames, labels).
    """
    frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[-2]), lambda: frames)
    if label_permutation is not None:
        perm = tf.constant(label_permutation, dtype=labels.dtype)
        in_range = labels < tf.cast(tf.size(perm), labels.dtype)
        mapped = tf.where(in_range, tf.gather(perm, tf.minimum(labels, tf.cast(tf.size(perm) - 1, labels.dtype))),
                          labels)
        labels = tf.where(flip, mapped, labels)
    return frames, labels


def mirror_label_permutation(pairs, num_classes):
    """Builds the label permutation for `flip_left_right` from mirror-symmetric pairs.

    Args:
        pairs: dict {a: b} or iterable of (a, b): classes that swap under a horizontal flip (each pair both ways).
        num_classes: number of classes.

    Returns:
        list of ints, `perm[c]` = class of the mirrored clip.

    Example:
    >>> mirror_label_permutation({11: 12, 16: 17}, 27)[11]  # 12 (Jester: sliding two fingers left/right)
    """
    items = pairs.items() if isinstance(pairs, dict) else pairs
    perm = list(range(num_classes))
    seen = set()
    for a, b in items:
        a, b = int(a), int(b)
        if not (0 <= a < num_classes and 0 <= b < num_classes) or a == b:
            raise ValueError(f"Mirror pair ({a}, {b}) must be two different classes in [0, {num_classes}).")
        if (a in seen or b in seen) and (perm[a] != b or perm[b] != a):
            raise ValueError(f"Class in mirror pair ({a}, {b}) already belongs to another pair.")
        perm[a], perm[b] = b, a
        seen.update((a, b))
    return perm


def color_jitter(frames, strength, seed, blend=0.5, hue=None):
    """Same random brightness / contrast / saturation / hue change on every frame of a clip.

    Args:
        frames: float `[T, H, W, 3]` on 0..255.
        strength: s; brightness, contrast and saturation factors are drawn from U[1 - s, 1 + s], hue shift from
            U[-hue, hue] (0.25 -> CPNet's 0.25 / 0.25 / 0.25 / 0.1).
        seed: stateless seed `[2]`.
        blend: weight of the jittered clip in the output (CPNet blends 50/50 with the original).
        hue: maximal hue shift; None: s / 2.5; 0: no hue change (torchvision's `ColorJitter(s, s, s)`).

    Returns:
        float32 `[T, H, W, 3]` on 0..255.
    """
    s = float(strength)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    x = frames / 255.0
    y = x * tf.random.stateless_uniform([], seeds[0], 1 - s, 1 + s)
    mean = tf.reduce_mean(y, axis=[-3, -2, -1], keepdims=True)
    y = (y - mean) * tf.random.stateless_uniform([], seeds[1], 1 - s, 1 + s) + mean
    y = tf.clip_by_value(y, 0.0, 1.0)
    y = tf.image.adjust_saturation(y, tf.random.stateless_uniform([], seeds[2], 1 - s, 1 + s))
    h = s / 2.5 if hue is None else float(hue)
    if h:
        y = tf.image.adjust_hue(y, tf.random.stateless_uniform([], seeds[3], -h, h))
    y = tf.clip_by_value(y, 0.0, 1.0)
    return (blend * y + (1.0 - blend) * x) * 255.0
