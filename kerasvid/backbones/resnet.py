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
import dataclasses

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


def _per_stage(value, what):
    if isinstance(value, int):
        return (value,) * 4
    value = tuple(int(v) for v in value)
    if len(value) != 4:
        raise ValueError(f"`{what}` must be an int or 4 ints (res2..res5), got {value!r}")
    return value


PADDINGS = ("keras", "torch", "tf")
STEMS = ("pool", "no_pool", "2plus1d")
BLOCK_CONVS = ("3d", "2plus1d")
R2PLUS1D_STEM_WIDTH = 45  # torchvision's R2Plus1dStem: (1, 7, 7) to 45 channels, then (3, 1, 1) to 64


@dataclasses.dataclass(frozen=True)
class _Style:
    """How the convolutions of one trunk are built (one per published layout; see `resnet_features`)."""

    padding: str = "keras"
    use_bias: bool = True
    bn_epsilon: float = BN_EPSILON


def _conv(x, filters, kernel, stride, kt, name, style, temporal_stride=1):
    """Conv with kernel `kt x kernel x kernel` (an int `kernel`) or a `(kt, kh, kw)` tuple, strides
    `(temporal_stride, stride, stride)`: a `FrameConv2D` for a temporal size and stride of 1.

    Padding ("same" sizes): stride 1 pads symmetrically in every style. A strided conv pads TF's way ("same":
    `floor(total / 2)` before, the rest after) in the "keras" and "tf" styles (keras.applications and the CPNet
    reference code), symmetrically (`k // 2` each side, then a VALID conv) in the "torch" style (PyTorch's
    `padding=k // 2`).
    """
    size = (kt, kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    strides = (temporal_stride, stride, stride)
    padding = "same"
    if style.padding == "torch" and max(strides) > 1 and max(size) > 1:
        pads = tuple((k // 2, k // 2) for k in size)
        x = keras.layers.ZeroPadding3D(pads, name=name + "_pad")(x)
        padding = "valid"
    return clip_conv(filters, size, strides=strides, padding=padding, use_bias=style.use_bias,
                     kernel_initializer="he_normal", name=name)(x)


def _bn(x, name, style):
    return FusedBatchNormalization(axis=-1, epsilon=style.bn_epsilon, name=name)(x)


def _apply_insertion(x, insertions, point, channels):
    factory = insertions.get(point) if insertions else None
    if factory is None:
        return x
    layer = factory(channels, f"{point}_insert")
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"The insertion factory for {point!r} must return a keras.layers.Layer, got {layer!r}")
    return layer(x)


def r2plus1d_width(in_channels, out_channels, kt=3, k=3):
    """The middle width of a (2+1)D conv replacing a `kt x k x k` conv (R(2+1)D, Tran et al. 2018: as many
    parameters as the 3D conv; torchvision's integer formula)."""
    return (in_channels * out_channels * kt * k * k) // (in_channels * k * k + kt * out_channels)


def _block_conv(x, filters, stride, kt, temporal_stride, prefix, style, block_conv, mid):
    """The 3x3 (kt x 3 x 3) conv of a basic block, or its (2+1)D factorisation: a (1, 3, 3) conv to `mid` channels
    with the spatial stride, BN, ReLU, then a (kt, 1, 1) conv with the temporal stride (named `prefix` + "_conv",
    the 3D conv's name, so the block's BN keeps its place)."""
    if block_conv == "3d" or kt == 1:
        return _conv(x, filters, 3, stride, kt, prefix + "_conv", style, temporal_stride)
    y = _conv(x, mid, (1, 3, 3), stride, 1, prefix + "_conv_s", style)
    y = _bn(y, prefix + "_bn_s", style)
    y = keras.layers.Activation("relu", name=prefix + "_relu_s")(y)
    return _conv(y, filters, (kt, 1, 1), 1, kt, prefix + "_conv", style, temporal_stride)


def _basic_block(x, width, stride, kt, project, prefix, insertions, point, style, temporal_stride=1,
                 block_conv="3d", in_channels=None):
    shortcut = x
    if project:
        shortcut = _conv(x, width, 1, stride, 1, prefix + "_0_conv", style, temporal_stride)
        shortcut = _bn(shortcut, prefix + "_0_bn", style)
    # torchvision's R(2+1)D gives both convs of a block the middle width of its first (in -> out) conv.
    mid = r2plus1d_width(in_channels or width, width, kt)
    y = _block_conv(x, width, stride, kt, temporal_stride, prefix + "_1", style, block_conv, mid)
    y = _bn(y, prefix + "_1_bn", style)
    y = keras.layers.Activation("relu", name=prefix + "_1_relu")(y)
    y = _block_conv(y, width, 1, kt, 1, prefix + "_2", style, block_conv, mid)
    y = _bn(y, prefix + "_2_bn", style)
    y = keras.layers.Add(name=prefix + "_add")([shortcut, y])
    y = _apply_insertion(y, insertions, point, width)
    return keras.layers.Activation("relu", name=prefix + "_out")(y)


def _bottleneck_block(x, width, stride, kt, project, prefix, insertions, point, style, temporal_stride=1,
                      stride_on_3x3=False):
    shortcut = x
    if project:
        shortcut = _conv(x, 4 * width, 1, stride, 1, prefix + "_0_conv", style, temporal_stride)
        shortcut = _bn(shortcut, prefix + "_0_bn", style)
    # ResNet-v1 (keras.applications): the stride sits on the first 1x1 conv; torchvision ("v1.5") puts it on the
    # 3x3. The temporal kernel goes on the 1x1 (as in the non-local / SlowFast C3D ResNets) so the 3x3 keeps its
    # 2D layout; the temporal stride goes with the spatial one.
    s1, s2 = (1, stride) if stride_on_3x3 else (stride, 1)
    t1, t2 = (1, temporal_stride) if stride_on_3x3 else (temporal_stride, 1)
    y = _conv(x, width, 1, s1, kt, prefix + "_1_conv", style, t1)
    y = _bn(y, prefix + "_1_bn", style)
    y = keras.layers.Activation("relu", name=prefix + "_1_relu")(y)
    y = _conv(y, width, 3, s2, 1, prefix + "_2_conv", style, t2)
    y = _bn(y, prefix + "_2_bn", style)
    y = keras.layers.Activation("relu", name=prefix + "_2_relu")(y)
    y = _conv(y, 4 * width, 1, 1, 1, prefix + "_3_conv", style)
    y = _bn(y, prefix + "_3_bn", style)
    y = keras.layers.Add(name=prefix + "_add")([shortcut, y])
    y = _apply_insertion(y, insertions, point, 4 * width)
    return keras.layers.Activation("relu", name=prefix + "_out")(y)


def _stem(x, stem, kt0, stem_stride, style):
    """The stem: `conv1_conv` (kt0 x 7 x 7, 64 channels), BN, ReLU, and for stem="pool" a 3x3 stride-2 max pool."""
    if stem == "2plus1d":
        # torchvision's R2Plus1dStem: (1, 7, 7) stride (1, 2, 2) to 45 channels, BN, ReLU, (kt0, 1, 1) to 64.
        y = _conv(x, R2PLUS1D_STEM_WIDTH, (1, 7, 7), stem_stride, 1, "conv1_conv_s", style)
        y = _bn(y, "conv1_bn_s", style)
        y = keras.layers.Activation("relu", name="conv1_relu_s")(y)
        y = _conv(y, 64, (kt0, 1, 1), 1, kt0, "conv1_conv", style)
    else:
        # TF1 graphs ("tf") pad the 7x7 conv TF's "same" way; keras.applications pads 3 pixels then runs a VALID
        # conv (as PyTorch's padding=3 does): that explicit padding keeps the C2D model frame-by-frame identical to
        # the 2D one.
        padding = "same"
        if style.padding != "tf":
            x = keras.layers.ZeroPadding3D(((kt0 // 2, kt0 // 2), (3, 3), (3, 3)), name="conv1_pad")(x)
            padding = "valid"
        y = clip_conv(64, (kt0, 7, 7), strides=(1, stem_stride, stem_stride), padding=padding,
                      use_bias=style.use_bias, kernel_initializer="he_normal", name="conv1_conv")(x)
    y = _bn(y, "conv1_bn", style)
    y = keras.layers.Activation("relu", name="conv1_relu")(y)
    if stem != "pool":
        return y
    # TF's SAME max pool pads with -inf, keras.applications and PyTorch pad 1 on each side: after a ReLU, zeros
    # and -inf give the same maxima.
    padding = "same"
    if style.padding != "tf":
        y = keras.layers.ZeroPadding3D(((0, 0), (1, 1), (1, 1)), name="pool1_pad")(y)
        padding = "valid"
    return clip_pooling("max", (1, 3, 3), strides=(1, 2, 2), padding=padding, name="pool1_pool")(y)


def _choice(value, valid, what):
    if value not in valid:
        raise ValueError(f"`{what}` must be one of {valid}, got {what}={value!r}")
    return value


def resnet_features(x, depth, temporal_kernels=1, stem_temporal_kernel=1, stem_stride=2, insertions=None,
                    temporal_strides=1, stem="pool", block_conv="3d", stride_on_3x3=False, padding="keras",
                    use_bias=True, bn_epsilon=BN_EPSILON):
    """Applies a ResNet trunk to a clip tensor and returns its named endpoints.

    The defaults build the keras.applications layout (ResNet v1, convs with a bias, BN epsilon 1.001e-5, TF "same"
    padding of strided convs). The other options reproduce other published layouts with this one builder:
    torchvision's ImageNet ResNets (`stride_on_3x3=True, padding="torch", use_bias=False, bn_epsilon=1e-5`), its
    Kinetics video ResNets r3d_18 / mc3_18 / r2plus1d_18 (`stem="no_pool"` or `"2plus1d"`, `temporal_strides`,
    `block_conv="2plus1d"`) and the CPNet authors' TF1 graph (`padding="tf", bn_epsilon=1e-3`).

    Args:
        x: KerasTensor `[batch, T, H, W, C]`.
        depth: 18, 34, 50, 101 or 152.
        temporal_kernels: temporal kernel size of the residual blocks, an int or one per stage (res2..res5);
            1 = C2D, 3 = C3D. In basic blocks both 3x3 convs get it, in bottlenecks the first 1x1.
        stem_temporal_kernel: temporal size of the 7x7 stem conv (1 or 3 for C3D).
        stem_stride: spatial stride of the stem conv: 2 for 224-pixel inputs, 1 for 112-pixel inputs.
        insertions: optional mapping insertion point name -> `factory(channels, name) -> keras.layers.Layer`.
        temporal_strides: temporal stride of the first block of each stage (an int or 4; 1 = time kept, as in
            every model of the papers; torchvision's r3d_18 and r2plus1d_18 halve time at res3, res4 and res5).
        stem: "pool" (7x7 conv, BN, ReLU, 3x3 stride-2 max pool), "no_pool" (the conv alone, stride (1, 2, 2): the
            video ResNets of Tran et al. 2018 / torchvision) or "2plus1d" (torchvision's R(2+1)D stem).
        block_conv: "3d" (kt x 3 x 3 convs) or "2plus1d" (each becomes (1, 3, 3) -> BN -> ReLU -> (kt, 1, 1),
            torchvision's middle widths; basic blocks only).
        stride_on_3x3: put a bottleneck's stride on its 3x3 conv (torchvision, "ResNet v1.5") instead of the first
            1x1 (keras.applications, the original ResNet).
        padding: "keras" (explicit 3/1-pixel pads for the stem conv and pool, TF "same" for strided convs),
            "torch" (symmetric pads everywhere, as PyTorch's `padding=k // 2`) or "tf" (TF "same" everywhere, the
            stem conv and max pool included: TF1 graphs such as the CPNet reference code).
        use_bias: whether the convs carry a bias (keras.applications and the CPNet code: yes; torchvision: no).
        bn_epsilon: the BatchNorm epsilon (keras.applications 1.001e-5, PyTorch 1e-5, TF1 contrib 1e-3).

    Returns:
        dict with `res2` .. `res5`: KerasTensors `[batch, T / t, H / s, W / s, C_stage]`.
    """
    kind, blocks = _check_depth(depth)
    kts = _per_stage(temporal_kernels, "temporal_kernels")
    tss = _per_stage(temporal_strides, "temporal_strides")
    if stem_stride not in (1, 2):
        raise ValueError(f"`stem_stride` must be 1 or 2, got stem_stride={stem_stride!r}")
    style = _Style(_choice(padding, PADDINGS, "padding"), bool(use_bias), float(bn_epsilon))
    _choice(stem, STEMS, "stem")
    _choice(block_conv, BLOCK_CONVS, "block_conv")
    if block_conv != "3d" and kind != "basic":
        raise ValueError(f"block_conv={block_conv!r} applies to the basic blocks of ResNet-18/34, got depth={depth}")
    if stride_on_3x3 and kind != "bottleneck":
        raise ValueError(f"stride_on_3x3 applies to the bottleneck blocks of ResNet-50/101/152, got depth={depth}")
    if any(t not in (1, 2) for t in tss):
        raise ValueError(f"`temporal_strides` must be 1 or 2 per stage, got temporal_strides={temporal_strides!r}")
    valid_points = set(insertion_points(depth))
    unknown = sorted(set(insertions or {}) - valid_points)
    if unknown:
        raise ValueError(f"Unknown insertion points {unknown} for ResNet-{depth}; valid points are "
                         f"{insertion_points(depth)}")
    y = _stem(x, stem, int(stem_temporal_kernel), stem_stride, style)
    in_channels = 64
    endpoints = {}
    for s, (stage, n, width, kt, ts) in enumerate(zip(STAGE_NAMES, blocks, STAGE_WIDTHS, kts, tss)):
        out_channels = width * (4 if kind == "bottleneck" else 1)
        for i in range(n):
            stride = 2 if (i == 0 and s > 0) else 1
            t_stride = ts if i == 0 else 1
            project = i == 0 and (stride != 1 or t_stride != 1 or in_channels != out_channels)
            prefix, point = f"conv{s + 2}_block{i + 1}", f"{stage}_{i}"
            if kind == "basic":
                y = _basic_block(y, width, stride, kt, project, prefix, insertions, point, style, t_stride,
                                 block_conv, in_channels)
            else:
                y = _bottleneck_block(y, width, stride, kt, project, prefix, insertions, point, style, t_stride,
                                      stride_on_3x3)
            in_channels = out_channels
        endpoints[stage] = y
    return endpoints


def check_spatial_size(input_shape, stem_stride, stem="pool"):
    """Raises a ValueError unless the spatial size divides exactly through the stem and the four stages.

    Args:
        input_shape: `(T, H, W, C)`.
        stem_stride: 1 or 2.
        stem: the `resnet_features` stem ("pool" halves once more than "no_pool" and "2plus1d").
    """
    if len(input_shape) != 4:
        raise ValueError(f"`input_shape` must be (T, H, W, C), got input_shape={tuple(input_shape)!r}")
    t, h, w, c = input_shape
    total = (16 if stem == "pool" else 8) * stem_stride
    for what, v in (("height", h), ("width", w)):
        if v is None:
            continue
        if v < total or v % total:
            raise ValueError(f"The input {what} must be a positive multiple of {total} to pass the strides "
                             f"(stem stride {stem_stride} x {total // stem_stride}), got "
                             f"input_shape={tuple(input_shape)!r}")
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


# The layout options that change what keras.applications' ImageNet weights compute (its layout is the default).
_KERAS_LAYOUT = {"padding": "keras", "use_bias": True, "bn_epsilon": BN_EPSILON, "stride_on_3x3": False,
                 "block_conv": "3d"}


def check_imagenet_weights(depth, input_shape, trunk_options=None):
    """Raises a ValueError unless keras.applications has ImageNet weights for this depth and channel count, and the
    trunk is in their layout (`trunk_options`: `resnet_features`'s layout options)."""
    other = {k: v for k, v in (trunk_options or {}).items() if k in _KERAS_LAYOUT and v != _KERAS_LAYOUT[k]}
    if other:
        raise ValueError(f"weights='imagenet' (keras.applications' ResNet v1 weights) needs their layout, got "
                         f"{other} (defaults: {', '.join(f'{k}={_KERAS_LAYOUT[k]!r}' for k in other)}); "
                         f"torchvision-layout files pass weights=<file>.pth instead")
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
