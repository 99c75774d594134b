"""BN-Inception (Inception with batch normalisation) for clips, with TSN's layer names and widths.

From "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift" (Ioffe & Szegedy,
ICML 2015), in the variant Temporal Segment Networks (Wang et al., ECCV 2016) and TVNet (Fan et al., CVPR 2018) use:
block widths 3a 256, 3b 320, 3c 576, 4a-4c 576/576/608, 4d 608, 4e 1056, 5a/5b 1024, Caffe names
(`conv1_7x7_s2`, `inception_3a_1x1`, ..., `inception_5b_output`, `global_pool`). Every conv has a bias and a
BatchNormalization (epsilon 1e-5) and a ReLU, as in the Caffe/PyTorch releases. Frames are processed independently:
convolutions and pools are 2D ops on every frame of `[batch, T, H, W, C]` (`kerasvid.layers.FrameConv2D`, kernels
`(k, k, C_in, C_out)`), so T segments of TSN share the weights and `global_pool` averages over T, H and W (TSN's
average consensus, before the linear classifier).
"""
import keras

from kerasvid.layers.batch_norm import FusedBatchNormalization
from kerasvid.layers.frames import clip_conv, clip_pooling

# Per block: (1x1, (3x3 reduce, 3x3), (double 3x3 reduce, double 3x3), (pool type, pool projection), stride).
# A width of 0 means the branch is absent (the stride-2 blocks have no 1x1 branch and an unprojected max pool).
BLOCKS = (
    ("inception_3a", 64, (64, 64), (64, 96), ("avg", 32), 1),
    ("inception_3b", 64, (64, 96), (64, 96), ("avg", 64), 1),
    ("inception_3c", 0, (128, 160), (64, 96), ("max", 0), 2),
    ("inception_4a", 224, (64, 96), (96, 128), ("avg", 128), 1),
    ("inception_4b", 192, (96, 128), (96, 128), ("avg", 128), 1),
    ("inception_4c", 160, (128, 160), (128, 160), ("avg", 128), 1),
    ("inception_4d", 96, (128, 192), (160, 192), ("avg", 128), 1),
    ("inception_4e", 0, (128, 192), (192, 256), ("max", 0), 2),
    ("inception_5a", 352, (192, 320), (160, 224), ("avg", 128), 1),
    ("inception_5b", 352, (192, 320), (192, 224), ("max", 128), 1),
)
ENDPOINTS = ("conv2_3x3", "inception_3c", "inception_4e", "inception_5a", "inception_5b", "global_pool")


def _conv_bn(x, filters, kernel, name, stride=1):
    """Frame-wise conv k x k + BN + ReLU with Caffe's symmetric padding (k // 2 on each side)."""
    if kernel > 1:
        pad = kernel // 2
        x = keras.layers.ZeroPadding3D(((0, 0), (pad, pad), (pad, pad)), name=f"{name}_pad")(x)
    x = clip_conv(filters, (1, kernel, kernel), strides=(1, stride, stride), padding="valid", name=name)(x)
    x = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _pool(x, kind, stride, name):
    # Caffe pools with ceil rounding; "same" padding gives the same sizes, and pads only after for stride 2.
    if kind == "max":
        return clip_pooling("max", (1, 3, 3), strides=(1, stride, stride), padding="same", name=name)(x)
    # Caffe's (and TSN's) average pools count the zero padding: the 3x3 stride-1 pad-1 pools of the Inception blocks
    # divide every window by 9, also at the border (TF's "same" divides by the valid pixels only).
    if stride != 1:
        raise ValueError(f"BN-Inception average pools have stride 1, got stride={stride} for {name!r}")
    x = keras.layers.ZeroPadding3D(((0, 0), (1, 1), (1, 1)), name=f"{name}_pad")(x)
    return clip_pooling("average", (1, 3, 3), strides=(1, 1, 1), padding="valid", name=name)(x)


def _inception_block(x, spec):
    name, width_1x1, (reduce_3x3, width_3x3), (reduce_d3x3, width_d3x3), (pool_kind, pool_proj), stride = spec
    branches = []
    if width_1x1:
        branches.append(_conv_bn(x, width_1x1, 1, f"{name}_1x1"))
    y = _conv_bn(x, reduce_3x3, 1, f"{name}_3x3_reduce")
    branches.append(_conv_bn(y, width_3x3, 3, f"{name}_3x3", stride))
    y = _conv_bn(x, reduce_d3x3, 1, f"{name}_double_3x3_reduce")
    y = _conv_bn(y, width_d3x3, 3, f"{name}_double_3x3_1")
    branches.append(_conv_bn(y, width_d3x3, 3, f"{name}_double_3x3_2", stride))
    y = _pool(x, pool_kind, stride, f"{name}_pool")
    if pool_proj:
        y = _conv_bn(y, pool_proj, 1, f"{name}_pool_proj")
    branches.append(y)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_output")(branches)


def bn_inception_features(x):
    """Builds BN-Inception on a clip tensor and returns its named endpoints.

    Args:
        x: KerasTensor `[batch, T, H, W, C]` (C = 3 for RGB, 10 for TSN/TVNet stacked flow); H, W >= 32.

    Returns:
        dict of KerasTensors: `conv2_3x3` (192 ch, stride 4 after pool2), `inception_3c` (576, stride 16),
        `inception_4e` (1056, stride 32), `inception_5a` (1024), `inception_5b` (1024, stride 32) — all
        `[batch, T, h, w, ch]` — and `global_pool` `[batch, 1024]` (mean over T, h, w).
    """
    endpoints = {}
    y = _conv_bn(x, 64, 7, "conv1_7x7_s2", stride=2)
    y = _pool(y, "max", 2, "pool1_3x3_s2")
    y = _conv_bn(y, 64, 1, "conv2_3x3_reduce")
    y = _conv_bn(y, 192, 3, "conv2_3x3")
    endpoints["conv2_3x3"] = y
    y = _pool(y, "max", 2, "pool2_3x3_s2")
    for spec in BLOCKS:
        y = _inception_block(y, spec)
        endpoints[spec[0]] = y
    endpoints["global_pool"] = keras.layers.GlobalAveragePooling3D(name="global_pool")(y)
    return {k: endpoints[k] for k in ENDPOINTS}
