"""TVNet + BN-Inception (Fan et al., CVPR 2018), the TSN-style BN-Inception streams and two-stream fusion.

The motion stream of TVNet's action-recognition experiments: 6 frames -> 5 TVNet-50 flows stacked into 10 channels
(x, y of each flow, TSN's flow-stack order) -> BN-Inception, trained end to end (supp. §2-3). The RGB stream is the
same BN-Inception on frames; `two_stream_fusion` combines the two streams' class scores.
"""
import keras
import numpy as np

from kerasvid.backbones.bn_inception import bn_inception_features
from kerasvid.layers.tvnet import TVNet
from kerasvid.layers.two_stream import ScoreFusion, StackFlows
from kerasvid.models import common
from kerasvid.models.registry import register_model

_TVNET_PAPER = "Fan et al., CVPR 2018 (TVNet)"
_BN_INCEPTION_PAPER = "Ioffe & Szegedy, ICML 2015 (BN-Inception), TSN layout (Wang et al., ECCV 2016)"
FIRST_CONV = "conv1_7x7_s2"
# PyTorch BN-Inception (pretrainedmodels / TSN) module names that differ from the Keras layer names.
TORCH_NAMES = {"last_linear": "predictions"}


def _check_spatial(input_shape):
    if len(input_shape) != 4:
        raise ValueError(f"`input_shape` must be (T, H, W, C), got input_shape={input_shape!r}")
    height, width = input_shape[1], input_shape[2]
    if height is None or width is None or height < 32 or width < 32:
        raise ValueError(f"BN-Inception needs a static H, W >= 32 (output stride 32), got input_shape={input_shape!r}")


def _bn_inception_head(inputs, features, *, num_classes, include_top, pooling, dropout_rate, classifier_activation,
                       name):
    if include_top:
        y = features["global_pool"]
        if dropout_rate:
            y = keras.layers.Dropout(dropout_rate, name="dropout")(y)
        outputs = keras.layers.Dense(num_classes, activation=classifier_activation, name="predictions",
                                     dtype="float32")(y)  # float32 under mixed precision too
    elif pooling == "avg":
        outputs = features["global_pool"]
    elif pooling == "max":
        outputs = keras.layers.GlobalMaxPooling3D(name="global_max_pool")(features["inception_5b"])
    else:
        outputs = features["inception_5b"]
    return keras.Model(inputs, outputs, name=name)


@register_model(paper=_BN_INCEPTION_PAPER, default_input=(3, 224, 224, 3), num_classes=101, num_params=10393797,
                gflops=12.238)
def bn_inception(num_classes=101, input_shape=(3, 224, 224, 3), include_top=True, weights=None, pooling="avg",
                 dropout_rate=0.8, classifier_activation=None, input_channels=None, name=None):
    """BN-Inception on `T` frames (TSN segments) sharing weights, scores averaged over the segments.

    The TSN layout used by TVNet (supp. §2-3): RGB input (`input_channels=3`) or a stack of 5 flows
    (`input_channels=10`); endpoints `inception_4e_output`, `inception_5a_output`, `inception_5b_output` and
    `global_pool` are layers of the model (`model.get_layer("inception_5b_output").output`). The average over
    segments of TSN's consensus is taken on the pooled features, which equals averaging the linear class scores.

    Args:
        num_classes: classifier width (101 for UCF101).
        input_shape: `(T, H, W, C)`; H, W >= 32.
        include_top: add dropout + the dense classifier on `global_pool`.
        weights: None, the path to a `.weights.h5` file of this exact model, or a PyTorch BN-Inception file
            (`.pth` / `.safetensors` with the Caffe port's names, e.g. pretrainedmodels' `bn_inception-52deb4733.pth`
            or TSN's, whose `(1, C)` BatchNorm tensors load too; its classifier `last_linear` loads where its width
            is `num_classes`, otherwise `predictions` starts fresh, as fine-tuning wants), or the preset
            "bn_inception_imagenet" (that file, cached or downloaded). Those ImageNet weights expect BGR 0..255 input minus [104, 117, 128] (flow: minus 128).
        pooling: when include_top=False: "avg" (`global_pool`), "max" or None (the `inception_5b` map).
        dropout_rate: dropout before the classifier (TSN: 0.8 for RGB, 0.7 for flow).
        classifier_activation: None for logits, or e.g. "softmax".
        input_channels: overrides the channel count of `input_shape` (3 RGB, 10 stacked flow).
        name: model name; default "bn_inception" (3 channels) or "bn_inception_flow".

    Returns:
        A `keras.Model` `[batch, T, H, W, C] -> [batch, num_classes]`.

    Example:
        >>> model = kerasvid.zoo.bn_inception(num_classes=101, input_shape=(3, 224, 224, 3))
    """
    common.validate_common_args(num_classes, include_top, weights, pooling, dropout_rate, classifier_activation)
    input_shape = tuple(input_shape)
    if input_channels is not None:
        if isinstance(input_channels, bool) or not isinstance(input_channels, int) or input_channels < 1:
            raise ValueError(f"`input_channels` must be a positive int, got input_channels={input_channels!r}")
        input_shape = input_shape[:-1] + (input_channels,)
    _check_spatial(input_shape)
    if weights == "imagenet":
        raise ValueError("weights='imagenet' is not available for bn_inception; use weights='bn_inception_imagenet' "
                         "(the Caffe port's ImageNet weights, PyTorch file) or a .weights.h5 path")
    inputs = keras.Input(input_shape, name="frames")
    features = bn_inception_features(inputs)
    model = _bn_inception_head(inputs, features, num_classes=num_classes, include_top=include_top, pooling=pooling,
                               dropout_rate=dropout_rate, classifier_activation=classifier_activation,
                               name=name or ("bn_inception" if input_shape[-1] == 3 else "bn_inception_flow"))
    # The classifier loads where it fits (ImageNet's 1000 classes); another width starts fresh (fine-tuning).
    return common.load_model_weights(model, weights, torch_names=TORCH_NAMES, torch_optional=("last_linear",))


def cross_modality_init(flow_model, rgb_model):
    """TSN cross-modality initialisation of a flow network from an RGB network with the same layer names.

    The first conv's kernel is averaged over the RGB input channels and replicated over the flow channels; every
    other layer whose weights have the same shapes is copied (a classifier of another width is left as it is).

    Args:
        flow_model: e.g. `tvnet_bn_inception(...)` or `bn_inception(input_channels=10)`.
        rgb_model: a trained `bn_inception(input_channels=3)`.

    Returns:
        the names of the layers that were initialised.
    """
    done = []
    rgb_layers = {layer.name: layer for layer in rgb_model.layers}
    for layer in flow_model.layers:
        source = rgb_layers.get(layer.name)
        if source is None or not layer.weights or len(layer.weights) != len(source.weights):
            continue
        weights = source.get_weights()
        if layer.name == FIRST_CONV:
            kernel = weights[0]  # (7, 7, 3, 64)
            channels = layer.weights[0].shape[-2]
            weights[0] = np.repeat(kernel.mean(axis=-2, keepdims=True), channels, axis=-2)
        if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            continue
        layer.set_weights(weights)
        done.append(layer.name)
    return done


@register_model(paper=_TVNET_PAPER, default_input=(6, 224, 224, 3), num_classes=101, num_params=10416549,
                gflops=5.560, recipe="zoo/tvnet_bn_inception_ucf101.flags")
def tvnet_bn_inception(num_classes=101, input_shape=(6, 224, 224, 3), include_top=True, weights=None,
                       pooling="avg", dropout_rate=0.7, classifier_activation=None, rgb_weights=None,
                       tvnet_scales=1, tvnet_warps=1, tvnet_iterations=50, channel_order="rgb"):
    """TVNet-50 + BN-Inception: end-to-end motion representation from raw frames (Fan et al., CVPR 2018).

    `T` frames (0-255) -> `TVNet` flows of the `T - 1` consecutive pairs (layer `tvnet`, trainable kernels) ->
    stacked into `2 (T - 1)` channels (TSN order x1, y1, x2, ...) -> BN-Inception with that many input channels.
    With `rgb_weights`, BN-Inception starts from an RGB `bn_inception` (TSN cross-modality initialisation: the
    first conv averaged over RGB and replicated, see `cross_modality_init`).

    The registered GFLOPs (TF profiler, `count_gflops`) count every iteration of TVNet's loop: 5.556 at 6x224x224,
    of which TVNet-50 is 0.93 for the 5 pairs (0.98 as the unrolled graph, `TVNet(unroll=True)`, which recomputes
    `|grad I|^2` at every iteration).

    Args:
        num_classes: classifier width (101 for UCF101, 51 for HMDB51).
        input_shape: `(T, H, W, 3)` with T >= 2 (6 frames -> 10 channels in the paper); H, W >= 32.
        include_top: add dropout + dense classifier.
        weights: None or the path to a `.weights.h5` file of this exact model.
        pooling: when include_top=False: "avg", "max" or None.
        dropout_rate: dropout before the classifier (TSN flow stream: 0.7).
        classifier_activation: None for logits, or e.g. "softmax".
        rgb_weights: path to the `.weights.h5` of `bn_inception(num_classes, input_shape=(1, H, W, 3),
            include_top=include_top)`, or a PyTorch BN-Inception `.pth` / `.safetensors` or the preset
            "bn_inception_imagenet" (see `bn_inception`), for cross-modality initialisation.
        tvnet_scales, tvnet_warps, tvnet_iterations: the TVNet configuration (TVNet-50: 1, 1, 50).
        channel_order: channel order of the frames, "rgb" or "bgr".

    Returns:
        A `keras.Model` `[batch, T, H, W, 3] -> [batch, num_classes]`.

    Example:
        >>> model = kerasvid.zoo.tvnet_bn_inception(num_classes=101, input_shape=(6, 224, 224, 3))
    """
    common.validate_common_args(num_classes, include_top, weights, pooling, dropout_rate, classifier_activation)
    input_shape = tuple(input_shape)
    _check_spatial(input_shape)
    if input_shape[0] is None or input_shape[0] < 2 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (T >= 2, H, W, 3) frames, got input_shape={input_shape!r}")
    if weights == "imagenet":
        raise ValueError("weights='imagenet' is not available for tvnet_bn_inception; pass a .weights.h5 path")
    inputs = keras.Input(input_shape, name="frames")
    flows = TVNet(scales=tvnet_scales, warps=tvnet_warps, iterations=tvnet_iterations, channel_order=channel_order,
                  name="tvnet")(inputs)
    stacked = StackFlows(name="stack_flows")(flows)
    features = bn_inception_features(stacked)
    model = _bn_inception_head(inputs, features, num_classes=num_classes, include_top=include_top, pooling=pooling,
                               dropout_rate=dropout_rate, classifier_activation=classifier_activation,
                               name="tvnet_bn_inception")
    if rgb_weights is not None:
        rgb = bn_inception(num_classes=num_classes, input_shape=(1,) + input_shape[1:], include_top=include_top,
                           weights=rgb_weights, pooling=pooling, dropout_rate=dropout_rate,
                           classifier_activation=classifier_activation)
        cross_modality_init(model, rgb)
    return common.load_model_weights(model, weights)


def two_stream_fusion(rgb_model, flow_model, weights=(1.0, 1.5), softmax=True, name="two_stream"):
    """Two-stream model: an RGB and a motion network side by side, class scores fused by `ScoreFusion`.

    Args:
        rgb_model: e.g. `bn_inception(num_classes, (3, 224, 224, 3))` (TSN RGB segments).
        flow_model: e.g. `tvnet_bn_inception(num_classes, (6, 224, 224, 3))`.
        weights: fusion weights (RGB, flow); TSN uses 1 : 1.5.
        softmax: fuse softmax scores (True) or logits.
        name: model name.

    Returns:
        A `keras.Model` with inputs `[rgb_frames, flow_frames]` and the fused `[batch, num_classes]` scores.
    """
    if rgb_model.output.shape[-1] != flow_model.output.shape[-1]:
        raise ValueError(f"The two streams must have the same number of classes, got {rgb_model.output.shape} and "
                         f"{flow_model.output.shape}")
    if rgb_model.name == flow_model.name:
        raise ValueError(f"The two streams need different model names, both are named {rgb_model.name!r}")
    rgb_in = keras.Input(rgb_model.input.shape[1:], name="rgb_frames")
    flow_in = keras.Input(flow_model.input.shape[1:], name="flow_frames")
    fused = ScoreFusion(weights=weights, softmax=softmax, name="fusion", dtype="float32")(
        [rgb_model(rgb_in), flow_model(flow_in)])
    return keras.Model([rgb_in, flow_in], fused, name=name)
