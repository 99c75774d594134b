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
        input_shape: `(T, H, W, C)`; `T` may be None. H and W must be multiples of 16 x stem stride.
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
        resnet.check_imagenet_weights(depth, input_shape)
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
