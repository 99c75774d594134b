"""C2D and C3D ResNet video classifiers (the baselines of CPNet Table 1) and the shared ResNet classifier builder.

CPNet, NL-Net and the Actor-Observer trunk are configurations of `resnet_video` (insertion points, temporal kernels),
not copies of it.
"""
import keras

from kerasvid.backbones import resnet
from kerasvid.models import common
from kerasvid.models.registry import register_model
from kerasvid.weights import torchvision_resnet

_C2D_PAPER = "Liu et al., CVPR 2019 (CPNet), C2D baseline"
_C3D_PAPER = "Liu et al., CVPR 2019 (CPNet), C3D baseline (Tran et al. 2018)"


def resnet_video(depth, num_classes=400, input_shape=(8, 224, 224, 3), include_top=True, weights=None,
                 pooling="avg", dropout_rate=0.5, classifier_activation=None, temporal_kernels=1,
                 stem_temporal_kernel=1, stem_stride=None, insertions=None, name=None, **trunk_options):
    """Builds a ResNet video classifier `[batch, T, H, W, C] -> [batch, num_classes]`.

    Args:
        depth: 18, 34, 50, 101 or 152.
        num_classes: classifier width.
        input_shape: `(T, H, W, C)`; `T` may be None. H and W must be multiples of 16 x stem stride (8 x stem stride
            for the stems without max pool, `stem="no_pool"` or `"2plus1d"`).
        include_top: whether to add the pooling + dropout + dense head.
        weights: None, "imagenet" (depth 50/101/152: keras.applications ImageNet weights, transferred and, for
            temporal kernels > 1, inflated), the path to a `.weights.h5` file of this exact model, or (depth
            50/101/152) a `.pth` / `.pth.tar` / `.safetensors` file in torchvision's ResNet layout, which implies
            its trunk options (`kerasvid.weights.torchvision_resnet.LAYOUT`).
        pooling: pooling of the features when include_top=False: "avg", "max" or None (the res5 map).
        dropout_rate: dropout before the classifier (0.5 in the CPNet reference).
        classifier_activation: None for logits, or e.g. "softmax".
        temporal_kernels: 1 (C2D), 3 (C3D) or one value per stage.
        stem_temporal_kernel: temporal size of the stem conv.
        stem_stride: 1 or 2; default 2 for >= 160-pixel inputs, else 1 (res2 is 56x56 at 112 and 224 inputs).
        insertions: mapping insertion point -> layer factory (see `kerasvid.backbones.resnet`).
        name: model name.
        **trunk_options: the layout options of `kerasvid.backbones.resnet.resnet_features` (`temporal_strides`,
            `stem`, `block_conv`, `stride_on_3x3`, `padding`, `use_bias`, `bn_epsilon`) for published layouts
            other than keras.applications' (torchvision's, the CPNet authors' TF1 graph).

    Returns:
        A `keras.Model`.
    """
    common.validate_common_args(num_classes, include_top, weights, pooling, dropout_rate, classifier_activation)
    trunk_options, torch_state = torchvision_resnet.layout_for_weights(weights, depth, trunk_options)
    input_shape = tuple(input_shape)
    if stem_stride is None:
        stem_stride = resnet.default_stem_stride(input_shape)
    resnet.check_spatial_size(input_shape, stem_stride, trunk_options.get("stem", "pool"))
    if weights == "imagenet":
        resnet.check_imagenet_weights(depth, input_shape, trunk_options)
    inputs = keras.Input(input_shape, name="image")
    feats = resnet.resnet_features(inputs, depth, temporal_kernels=temporal_kernels,
                                   stem_temporal_kernel=stem_temporal_kernel, stem_stride=stem_stride,
                                   insertions=insertions, **trunk_options)
    outputs = common.classifier_head(feats["res5"], num_classes, include_top, pooling, dropout_rate,
                                     classifier_activation)
    model = keras.Model(inputs, outputs, name=name or f"resnet{depth}_video")
    if weights == "imagenet":
        resnet.load_imagenet_weights(model, depth)
    elif torch_state is not None:
        torchvision_resnet.load_torchvision_resnet(model, torch_state, depth, weights)
    else:
        common.load_model_weights(model, weights)
    return model


# The C2D / C3D builders below repeat one keyword call on purpose (keras.applications' ResNet50/ResNet101 style):
# each is a public builder with its own defaults, docstring and registry figures; the body only forwards to
# `resnet_video` by keyword (tests/test_builder_forwarding.py).
@register_model(paper=_C2D_PAPER, default_input=(8, 112, 112, 3), num_params=11396112, gflops=29.058,
                recipe="zoo/c2d_resnet18_kinetics.flags")
def c2d_resnet18(num_classes=400, input_shape=(8, 112, 112, 3), include_top=True, weights=None, pooling="avg",
                 dropout_rate=0.5, classifier_activation=None, stem_stride=None):
    """C2D ResNet-18: 2D convolutions applied frame by frame, average over time at the end.

    Example:
        >>> model = kerasvid.zoo.c2d_resnet18(num_classes=27, input_shape=(8, 112, 112, 3))
    """
    return resnet_video(depth=18, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, stem_stride=stem_stride, name="c2d_resnet18")


@register_model(paper=_C2D_PAPER, default_input=(8, 112, 112, 3), num_params=21515408, gflops=58.668)
def c2d_resnet34(num_classes=400, input_shape=(8, 112, 112, 3), include_top=True, weights=None, pooling="avg",
                 dropout_rate=0.5, classifier_activation=None, stem_stride=None):
    """C2D ResNet-34 (the backbone of the Jester / Something-Something CPNets)."""
    return resnet_video(depth=34, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, stem_stride=stem_stride, name="c2d_resnet34")


@register_model(paper=_C2D_PAPER, default_input=(8, 224, 224, 3), num_params=24407312, gflops=61.841)
def c2d_resnet50(num_classes=400, input_shape=(8, 224, 224, 3), include_top=True, weights=None, pooling="avg",
                 dropout_rate=0.5, classifier_activation=None, stem_stride=None):
    """C2D ResNet-50 in the keras.applications layout (weights="imagenet" transfers ImageNet weights)."""
    return resnet_video(depth=50, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, stem_stride=stem_stride, name="c2d_resnet50")


@register_model(paper=_C2D_PAPER, default_input=(8, 224, 224, 3), num_params=43477776, gflops=121.304)
def c2d_resnet101(num_classes=400, input_shape=(8, 224, 224, 3), include_top=True, weights=None, pooling="avg",
                  dropout_rate=0.5, classifier_activation=None, stem_stride=None):
    """C2D ResNet-101 (the backbone of the Kinetics CPNet-101)."""
    return resnet_video(depth=101, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, stem_stride=stem_stride, name="c2d_resnet101")


@register_model(paper=_C3D_PAPER, default_input=(8, 112, 112, 3), num_params=33385872, gflops=86.475,
                recipe="zoo/c3d_resnet18_kinetics.flags")
def c3d_resnet18(num_classes=400, input_shape=(8, 112, 112, 3), include_top=True, weights=None, pooling="avg",
                 dropout_rate=0.5, classifier_activation=None, stem_stride=None):
    """C3D ResNet-18: 3x3x3 convolutions in every block and a 3x7x7 stem (1x1x1 projection shortcuts)."""
    return resnet_video(depth=18, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, temporal_kernels=3, stem_temporal_kernel=3,
                        stem_stride=stem_stride, name="c3d_resnet18")


# torchvision's Kinetics-400 video ResNets (Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
# Recognition", CVPR 2018), in torchvision's exact layout so that its published weights load: a stem of stride
# (1, 2, 2) without max pool, convs without bias, BN epsilon 1e-5, PyTorch's symmetric padding.
_TV_VIDEO_PAPER = "Tran et al., CVPR 2018 (torchvision.models.video)"
_TV_VIDEO_LAYOUT = dict(padding="torch", use_bias=False, bn_epsilon=1e-5, stem_stride=2)
# name -> (torchvision arch, resnet_features options)
TORCHVISION_VIDEO = {
    "r3d_resnet18": ("r3d_18", dict(temporal_kernels=3, stem_temporal_kernel=3, stem="no_pool",
                                    temporal_strides=(1, 2, 2, 2))),
    "mc3_resnet18": ("mc3_18", dict(temporal_kernels=(3, 1, 1, 1), stem_temporal_kernel=3, stem="no_pool")),
    "r2plus1d_resnet18": ("r2plus1d_18", dict(temporal_kernels=3, stem_temporal_kernel=3, stem="2plus1d",
                                              block_conv="2plus1d", temporal_strides=(1, 2, 2, 2))),
}


def torchvision_video_names(arch):
    """`{torchvision module: kerasvid layer}` for a torchvision video ResNet-18 `arch` ("r3d_18", "mc3_18",
    "r2plus1d_18"): the map `kerasvid.weights.convert.assign_state_dict` applies to its state_dict."""
    names = {"fc": "predictions"}
    if arch == "r2plus1d_18":
        names.update({"stem.0": "conv1_conv_s", "stem.1": "conv1_bn_s", "stem.3": "conv1_conv", "stem.4": "conv1_bn"})
    else:
        names.update({"stem.0": "conv1_conv", "stem.1": "conv1_bn"})
    for s, n in enumerate(resnet.RESNET_SPECS[18][1]):
        for b in range(n):
            torch, keras_ = f"layer{s + 1}.{b}", f"conv{s + 2}_block{b + 1}"
            names[f"{torch}.downsample.0"], names[f"{torch}.downsample.1"] = f"{keras_}_0_conv", f"{keras_}_0_bn"
            for j in (1, 2):
                conv, bn = f"{torch}.conv{j}", f"{keras_}_{j}"
                names[f"{conv}.1"] = f"{bn}_bn"
                if arch == "r2plus1d_18":  # conv{j}.0 is Conv2Plus1D: (1,3,3) conv, BN, ReLU, (3,1,1) conv
                    names.update({f"{conv}.0.0": f"{bn}_conv_s", f"{conv}.0.1": f"{bn}_bn_s",
                                  f"{conv}.0.3": f"{bn}_conv"})
                else:
                    names[f"{conv}.0"] = f"{bn}_conv"
    return names


def _torchvision_video(model_name, num_classes, input_shape, include_top, weights, pooling, dropout_rate,
                       classifier_activation):
    arch, options = TORCHVISION_VIDEO[model_name]
    if weights == "imagenet":
        raise ValueError(f"weights='imagenet' is not available for {model_name}; use "
                         f"weights='{arch}_kinetics400' (torchvision's Kinetics-400 weights) or a file")
    model = resnet_video(depth=18, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                         weights=None, pooling=pooling, dropout_rate=dropout_rate,
                         classifier_activation=classifier_activation, name=model_name, **_TV_VIDEO_LAYOUT,
                         **options)
    names = torchvision_video_names(arch)
    # A kerasvid .weights.h5 loads as it is; torchvision's .pth maps by these names (the classifier loads only
    # where it fits: without a top, or with another number of classes, it stays as built).
    return common.load_model_weights(model, weights, torch_names=names, torch_optional=("fc",))


# Each torchvision builder forwards by keyword (tests/test_builder_forwarding.py); the layout lives in
# TORCHVISION_VIDEO. Inputs: 16 frames of 112x112 (torchvision's clips); H and W multiples of 16.
@register_model(paper=_TV_VIDEO_PAPER, default_input=(16, 112, 112, 3), num_params=33381072, gflops=81.402)
def r3d_resnet18(num_classes=400, input_shape=(16, 112, 112, 3), include_top=True, weights=None, pooling="avg",
                 dropout_rate=0.5, classifier_activation=None):
    """R3D-18 (torchvision `r3d_18`): 3x3x3 convs everywhere, time and space halved at res3, res4 and res5.

    `weights`: None, a kerasvid `.weights.h5`, torchvision's `r3d_18-b3b3357e.pth` (read without PyTorch) or the
    preset "r3d_18_kinetics400". Input: RGB on [0, 1] normalised by torchvision's Kinetics statistics
    (`normalization="torchvision_video"`).

    Example:
        >>> model = kerasvid.zoo.r3d_resnet18(num_classes=400, weights="r3d_18-b3b3357e.pth")
    """
    return _torchvision_video(model_name="r3d_resnet18", num_classes=num_classes, input_shape=input_shape,
                              include_top=include_top, weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                              classifier_activation=classifier_activation)


@register_model(paper=_TV_VIDEO_PAPER, default_input=(16, 112, 112, 3), num_params=11705040, gflops=86.698)
def mc3_resnet18(num_classes=400, input_shape=(16, 112, 112, 3), include_top=True, weights=None, pooling="avg",
                 dropout_rate=0.5, classifier_activation=None):
    """MC3-18 (torchvision `mc3_18`): 3D convs in the stem and res2, frame-wise 2D convs in res3-res5, time kept.

    `weights`: None, a kerasvid `.weights.h5`, torchvision's `mc3_18-a90a0ba3.pth` or "mc3_18_kinetics400".
    """
    return _torchvision_video(model_name="mc3_resnet18", num_classes=num_classes, input_shape=input_shape,
                              include_top=include_top, weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                              classifier_activation=classifier_activation)


@register_model(paper=_TV_VIDEO_PAPER, default_input=(16, 112, 112, 3), num_params=31530675, gflops=81.047)
def r2plus1d_resnet18(num_classes=400, input_shape=(16, 112, 112, 3), include_top=True, weights=None,
                      pooling="avg", dropout_rate=0.5, classifier_activation=None):
    """R(2+1)D-18 (torchvision `r2plus1d_18`): every 3x3x3 conv split into (1, 3, 3) -> BN -> ReLU -> (3, 1, 1)
    with as many parameters; time and space halved at res3, res4 and res5.

    `weights`: None, a kerasvid `.weights.h5`, torchvision's `r2plus1d_18-91a641e6.pth` or
    "r2plus1d_18_kinetics400".
    """
    return _torchvision_video(model_name="r2plus1d_resnet18", num_classes=num_classes, input_shape=input_shape,
                              include_top=include_top, weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                              classifier_activation=classifier_activation)
