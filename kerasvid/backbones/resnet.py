"""ResNet-18/34/50/101/152 over video clips `[batch, T, H, W, C]`: C2D, C3D and everything in between.

One builder serves every ResNet in kerasvid (C2D and C3D baselines, CPNet, NL-Net, the Actor-Observer trunk): a model
is a configuration of this file, never a copy of it.

- Basic blocks (ResNet-18/34) and bottleneck blocks (ResNet-50/101/152) in the ResNet-v1 layout of
  `keras.applications.ResNet50/101/152` (the bottleneck stride sits on the first 1x1 conv, convs carry a bias, BN
  epsilon 1.001e-5), with the same layer names (`conv1_conv`, `conv2_block1_1_conv`, ...), so that 2D ImageNet weights
  transfer by name (`transfer_2d_weights`).
- Per-stage temporal kernel size (1 = C2D, 3 = C3D); the time axis is never strided or pooled. Every conv and pool
  of temporal size 1 runs frame by frame as a 2D op (`kerasvid.layers.FrameConv2D`, kernels `(k, k, C_in, C_out)`
  as in keras.applications); kt > 1 convs are Conv3D (`(kt, k, k, C_in, C_out)`).
- Stem: 7x7 (or kt x 7x7) conv with stride 1 (112-pixel inputs) or 2 (224-pixel inputs), then a 3x3 stride-2 max
  pool, so res2 is 56x56 either way.
- Named insertion points after every block (`res2_0`, ..., `res5_2`): `insertions={"res3_1": factory}` applies
  `factory(channels, name)` to the block output after the residual add and before the block's ReLU.
- Named endpoints `res2` .. `res5` for feature extraction.
"""
import keras
import numpy as np

from kerasvid.layers.batch_norm import FusedBatchNormalization
from kerasvid.layers.frames import clip_conv, clip_pooling

BN_EPSILON = 1.001e-5  # keras.applications.ResNet uses 1.001e-5

# depth -> (block kind, blocks per stage res2..res5)
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)  # inner widths; bottleneck outputs are 4x
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def _check_depth(depth):
    if depth not in RESNET_SPECS:
        raise ValueError(f"`depth` must be one of {sorted(RESNET_SPECS)}, got depth={depth!r}")
    return RESNET_SPECS[depth]


def insertion_points(depth):
    """Returns the insertion-point names of a ResNet of `depth`: `["res2_0", "res2_1", ..., "res5_2"]`."""
    _, blocks = _check_depth(depth)
    return [f"{stage}_{i}" for stage, n in zip(STAGE_NAMES, blocks) for i in range(n)]


def stage_channels(depth):
    """Returns the output channel count of each stage `res2..res5` for `depth` (block outputs)."""
    kind, _ = _check_depth(depth)
    mult = 4 if kind == "bottleneck" else 1
    return {name: w * mult for name, w in zip(STAGE_NAMES, STAGE_WIDTHS)}


def _per_stage(value, what):
    if isinstance(value, int):
        return (value,) * 4
    value = tuple(int(v) for v in value)
    if len(value) != 4:
        raise ValueError(f"`{what}` must be an int or 4 ints (res2..res5), got {value!r}")
    return value


def _conv(x, filters, kernel, stride, kt, name):
    """Conv with kernel (kt, k, k), spatial stride `stride`, temporal 'same' padding: a `FrameConv2D` for kt = 1.

    Spatial padding is "same" for stride 1 and for 1x1 convs (both agree with keras.applications); the 3x3 stride-2
    convs of basic blocks use TF "same" padding as the CPNet reference code does.
    """
    return clip_conv(filters, (kt, kernel, kernel), strides=(1, stride, stride), padding="same", use_bias=True,
                     kernel_initializer="he_normal", name=name)(x)


def _bn(x, name):
    return FusedBatchNormalization(axis=-1, epsilon=BN_EPSILON, name=name)(x)


def _apply_insertion(x, insertions, point, channels):
    factory = insertions.get(point) if insertions else None
    if factory is None:
        return x
    layer = factory(channels, f"{point}_insert")
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"The insertion factory for {point!r} must return a keras.layers.Layer, got {layer!r}")
    return layer(x)


def _basic_block(x, width, stride, kt, project, prefix, insertions, point):
    shortcut = x
    if project:
        shortcut = _conv(x, width, 1, stride, 1, prefix + "_0_conv")
        shortcut = _bn(shortcut, prefix + "_0_bn")
    y = _conv(x, width, 3, stride, kt, prefix + "_1_conv")
    y = _bn(y, prefix + "_1_bn")
    y = keras.layers.Activation("relu", name=prefix + "_1_relu")(y)
    y = _conv(y, width, 3, 1, kt, prefix + "_2_conv")
    y = _bn(y, prefix + "_2_bn")
    y = keras.layers.Add(name=prefix + "_add")([shortcut, y])
    y = _apply_insertion(y, insertions, point, width)
    return keras.layers.Activation("relu", name=prefix + "_out")(y)


def _bottleneck_block(x, width, stride, kt, project, prefix, insertions, point):
    shortcut = x
    if project:
        shortcut = _conv(x, 4 * width, 1, stride, 1, prefix + "_0_conv")
        shortcut = _bn(shortcut, prefix + "_0_bn")
    # ResNet-v1 (keras.applications): the stride sits on the first 1x1 conv. The temporal kernel goes on the 1x1
    # (as in the non-local / SlowFast C3D ResNets) so the 3x3 keeps its 2D layout.
    y = _conv(x, width, 1, stride, kt, prefix + "_1_conv")
    y = _bn(y, prefix + "_1_bn")
    y = keras.layers.Activation("relu", name=prefix + "_1_relu")(y)
    y = _conv(y, width, 3, 1, 1, prefix + "_2_conv")
    y = _bn(y, prefix + "_2_bn")
    y = keras.layers.Activation("relu", name=prefix + "_2_relu")(y)
    y = _conv(y, 4 * width, 1, 1, 1, prefix + "_3_conv")
    y = _bn(y, prefix + "_3_bn")
    y = keras.layers.Add(name=prefix + "_add")([shortcut, y])
    y = _apply_insertion(y, insertions, point, 4 * width)
    return keras.layers.Activation("relu", name=prefix + "_out")(y)


def resnet_features(x, depth, temporal_kernels=1, stem_temporal_kernel=1, stem_stride=2, insertions=None):
    """Applies a ResNet trunk to a clip tensor and returns its named endpoints.

    Args:
        x: KerasTensor `[batch, T, H, W, C]`.
        depth: 18, 34, 50, 101 or 152.
        temporal_kernels: temporal kernel size of the residual blocks, an int or one per stage (res2..res5);
            1 = C2D, 3 = C3D. In basic blocks both 3x3 convs get it, in bottlenecks the first 1x1.
        stem_temporal_kernel: temporal size of the 7x7 stem conv (1 or 3 for C3D).
        stem_stride: spatial stride of the stem conv: 2 for 224-pixel inputs, 1 for 112-pixel inputs.
        insertions: optional mapping insertion point name -> `factory(channels, name) -> keras.layers.Layer`.

    Returns:
        dict with `res2` .. `res5`: KerasTensors `[batch, T, H/s, W/s, C_stage]`.
    """
    kind, blocks = _check_depth(depth)
    kts = _per_stage(temporal_kernels, "temporal_kernels")
    if stem_stride not in (1, 2):
        raise ValueError(f"`stem_stride` must be 1 or 2, got stem_stride={stem_stride!r}")
    valid_points = set(insertion_points(depth))
    unknown = sorted(set(insertions or {}) - valid_points)
    if unknown:
        raise ValueError(f"Unknown insertion points {unknown} for ResNet-{depth}; valid points are "
                         f"{insertion_points(depth)}")
    kt0 = int(stem_temporal_kernel)
    # keras.applications pads 3 pixels then runs a VALID 7x7 conv (and pads 1 before the VALID max pool); the same
    # explicit padding keeps the C2D model frame-by-frame identical to the 2D one.
    y = keras.layers.ZeroPadding3D(((kt0 // 2, kt0 // 2), (3, 3), (3, 3)), name="conv1_pad")(x)
    y = clip_conv(64, (kt0, 7, 7), strides=(1, stem_stride, stem_stride), padding="valid",
                  kernel_initializer="he_normal", name="conv1_conv")(y)
    y = _bn(y, "conv1_bn")
    y = keras.layers.Activation("relu", name="conv1_relu")(y)
    y = keras.layers.ZeroPadding3D(((0, 0), (1, 1), (1, 1)), name="pool1_pad")(y)
    y = clip_pooling("max", (1, 3, 3), strides=(1, 2, 2), name="pool1_pool")(y)
    block_fn = _basic_block if kind == "basic" else _bottleneck_block
    in_channels = 64
    endpoints = {}
    for s, (stage, n, width, kt) in enumerate(zip(STAGE_NAMES, blocks, STAGE_WIDTHS, kts)):
        out_channels = width * (4 if kind == "bottleneck" else 1)
        for i in range(n):
            stride = 2 if (i == 0 and s > 0) else 1
            project = i == 0 and (stride != 1 or in_channels != out_channels)
            y = block_fn(y, width, stride, kt, project, f"conv{s + 2}_block{i + 1}", insertions, f"{stage}_{i}")
            in_channels = out_channels
        endpoints[stage] = y
    return endpoints


def check_spatial_size(input_shape, stem_stride):
    """Raises a ValueError unless the spatial size divides exactly through the stem and the four stages.

    Args:
        input_shape: `(T, H, W, C)`.
        stem_stride: 1 or 2.
    """
    if len(input_shape) != 4:
        raise ValueError(f"`input_shape` must be (T, H, W, C), got input_shape={tuple(input_shape)!r}")
    t, h, w, c = input_shape
    total = 16 * stem_stride
    for what, v in (("height", h), ("width", w)):
        if v is None:
            continue
        if v < total or v % total:
            raise ValueError(f"The input {what} must be a positive multiple of {total} to pass the strides "
                             f"(stem stride {stem_stride} x 16), got input_shape={tuple(input_shape)!r}")
    if t is not None and t < 1:
        raise ValueError(f"The number of frames must be >= 1, got input_shape={tuple(input_shape)!r}")


def default_stem_stride(input_shape):
    """Stem stride 2 for inputs of 160 pixels and more (224-style), 1 below (112-style)."""
    h, w = input_shape[1], input_shape[2]
    size = min(v for v in (h, w) if v is not None) if (h or w) else 224
    return 2 if size >= 160 else 1


def transfer_2d_weights(video_model, image_model):
    """Copies 2D ResNet weights (e.g. `keras.applications.ResNet50`) into a kerasvid ResNet by layer name.

    2D kernels `(kh, kw, cin, cout)` are copied into the frame-wise convs (`FrameConv2D`, temporal size 1: C2D) and
    go into Conv3D kernels `(kt, kh, kw, cin, cout)` for `kt > 1` (C3D), inflated as in I3D: repeated over time and
    divided by `kt`, so a clip of identical frames gives the 2D activations. BatchNorm statistics and affine
    parameters are copied.

    Args:
        video_model: a kerasvid model containing the ResNet trunk (layers named like keras.applications).
        image_model: the 2D keras.applications ResNet (include_top may be either; the head is not transferred).

    Returns:
        The number of layers transferred.

    Raises:
        ValueError: when a layer's shapes do not match, or when no layer matched at all.
    """
    video_layers = {layer.name: layer for layer in video_model.layers}
    count = 0
    for src in image_model.layers:
        if not src.weights or src.name not in video_layers or src.name in ("predictions", "probs"):
            continue
        dst = video_layers[src.name]
        new = []
        for sw, dw in zip(src.get_weights(), dst.weights):
            dshape = tuple(dw.shape)
            if sw.ndim == 4 and len(dshape) == 5:
                kt = dshape[0]
                sw = np.repeat(sw[None], kt, axis=0) / kt
            if tuple(sw.shape) != dshape:
                raise ValueError(f"Cannot transfer weights of layer {src.name!r}: source shape {sw.shape} does not "
                                 f"match target shape {dshape}")
            new.append(sw)
        if len(new) != len(dst.weights):
            raise ValueError(f"Layer {src.name!r} has {len(src.weights)} weights in the 2D model but "
                             f"{len(dst.weights)} in the video model")
        dst.set_weights(new)
        count += 1
    if count == 0:
        raise ValueError("No layer of the 2D model matched a layer of the video model by name; is it a "
                         "keras.applications ResNet?")
    return count


def check_imagenet_weights(depth, input_shape):
    """Raises a ValueError unless keras.applications has ImageNet weights for this depth and channel count."""
    if depth not in (50, 101, 152):
        raise ValueError(f"weights='imagenet' is available for depth 50, 101 and 152 (keras.applications), "
                         f"got depth={depth}")
    if input_shape[-1] != 3:
        raise ValueError(f"weights='imagenet' needs 3 input channels, got input_shape={tuple(input_shape)!r}")


def load_imagenet_weights(video_model, depth):
    """Downloads keras.applications' ImageNet ResNet of `depth` and transfers (inflates) it into `video_model`."""
    image_model = getattr(keras.applications, f"ResNet{depth}")(
        include_top=False, weights="imagenet", input_shape=(None, None, 3))
    return transfer_2d_weights(video_model, image_model)
