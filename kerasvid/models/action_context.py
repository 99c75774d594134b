"""I3D classifiers and attentive action/context factorization models (Wang et al., BMVC 2021; kerasvid's reading).

- `i3d`: the Kinetics I3D (RGB or flow stream) with its original logits head; kinetics-i3d TF1 checkpoints load
  through `kinetics_checkpoint=`.
- `i3d_action_context`: one `ActionContextAttention` head per I3D stream on the `Mixed_5c` map F (supplement
  Sec. 2.1: 128x256x352 clips -> F of 16x8x11x1024), stream scores averaged. `flow_source="tvnet"` computes the flow
  stream's input from the RGB clip with `kerasvid.layers.TVNet`, inside the model.
- `action_context_image`: the still-image variant (supplement Sec. 1, Pascal VOC 2012 actions) on a
  keras.applications backbone.
"""
import keras

from kerasvid.backbones import i3d as i3d_backbone
from kerasvid.layers.action_context import OUTPUT_KEYS, ActionContextAttention, I3DFlowInput
from kerasvid.models import common
from kerasvid.models.registry import register_model

_I3D_PAPER = "Carreira & Zisserman, CVPR 2017 (I3D)"
_AC_PAPER = "Wang et al., BMVC 2021 (attentive action and context factorization)"
STREAMS = ("rgb", "flow")
FLOW_SOURCES = ("input", "tvnet")
OUTPUTS = ("logits", "all")

# keras.applications backbones of the still-image variant (the supplement used DenseNet-161, which
# keras.applications does not have; DenseNet-121/169/201 are the same family).
IMAGE_BACKBONES = {
    "densenet121": "DenseNet121",
    "densenet169": "DenseNet169",
    "densenet201": "DenseNet201",
    "resnet50": "ResNet50",
    "mobilenet_v2": "MobileNetV2",
}


def _check_channels(input_shape, modality):
    channels = i3d_backbone.MODALITY_CHANNELS[modality]
    if input_shape[-1] != channels:
        raise ValueError(f"The {modality} stream needs {channels} input channels, got input_shape={input_shape!r}")


def _load_checkpoints(model, checkpoints, streams):
    """`checkpoints`: one path for every stream, or a dict stream -> path (kinetics-i3d TF1 checkpoints)."""
    if checkpoints is None:
        return
    if isinstance(checkpoints, str):
        checkpoints = {s: checkpoints for s in streams}
    unknown = set(checkpoints) - set(streams)
    if unknown:
        raise ValueError(f"`kinetics_checkpoint` names streams {sorted(unknown)} that the model does not have "
                         f"(streams={tuple(streams)})")
    for stream, path in checkpoints.items():
        i3d_backbone.load_kinetics_i3d_checkpoint(model, path, modality=stream, name=f"{stream}_i3d")


@register_model(paper=_I3D_PAPER, default_input=(64, 224, 224, 3), num_params=12704544, gflops=222.586)
def i3d(num_classes=400, input_shape=(64, 224, 224, 3), include_top=True, weights=None, pooling="avg",
        dropout_rate=0.5, classifier_activation=None, modality="rgb", kinetics_checkpoint=None):
    """I3D: Inception-v1 inflated to 3D, one stream (RGB or optical flow).

    From "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset" (Carreira & Zisserman, CVPR 2017).
    Inputs are scaled to [-1, 1] (RGB: `x / 127.5 - 1`; flow: clipped to +-20 px and divided by 20, see
    `kerasvid.layers.I3DFlowInput`). The head is the release's: a 2x7x7 average pool, dropout, a 1x1x1 conv and
    the mean of the window scores.

    Args:
        num_classes: number of classes.
        input_shape: `(T, H, W, C)` with C = 3 (rgb) or 2 (flow); static T, H, W with include_top=True.
        include_top: add the logits head; otherwise the `Mixed_5c` features, pooled by `pooling`.
        weights: None, a `.weights.h5` file of this exact model, or a DeepMind kinetics-i3d TF1 checkpoint prefix
            (e.g. `.../rgb_imagenet/model.ckpt`; the same as `kinetics_checkpoint`).
        pooling: "avg", "max" or None (the `Mixed_5c` map) when include_top=False.
        dropout_rate: dropout before the logits conv (the release trains with keep-probability 0.5).
        classifier_activation: None (logits) or e.g. "softmax".
        modality: "rgb" or "flow".
        kinetics_checkpoint: a DeepMind kinetics-i3d TF1 checkpoint (e.g. `.../rgb_imagenet/model.ckpt`) to
            convert into the model (`kerasvid.backbones.i3d.load_kinetics_i3d_checkpoint`).

    Returns:
        A `keras.Model` `[batch, T, H, W, C] -> [batch, num_classes]`; layer names are prefixed `<modality>_i3d_`.

    Example:
        >>> model = kerasvid.zoo.i3d(num_classes=101, input_shape=(16, 112, 112, 3))
    """
    common.validate_common_args(num_classes, include_top, weights, pooling, dropout_rate, classifier_activation)
    if weights == "imagenet":
        raise ValueError("weights='imagenet' is not available for I3D; use kinetics_checkpoint=<kinetics-i3d "
                         "checkpoint> or weights=<path to .weights.h5>")
    if weights is not None and common.is_tf_checkpoint(weights):  # the one `weights=` API: a kinetics-i3d file
        if kinetics_checkpoint is not None:
            raise ValueError(f"Pass a kinetics-i3d checkpoint as `weights` or as `kinetics_checkpoint`, not both: got "
                             f"weights={weights!r}, kinetics_checkpoint={kinetics_checkpoint!r}")
        weights, kinetics_checkpoint = None, str(weights)
    if modality not in STREAMS:
        raise ValueError(f"`modality` must be one of {STREAMS}, got modality={modality!r}")
    input_shape = tuple(input_shape)
    _check_channels(input_shape, modality)
    name = f"{modality}_i3d"
    inputs = keras.Input(input_shape, name=modality)
    features = i3d_backbone.i3d_features(inputs, name=name)["Mixed_5c"]
    if include_top:
        outputs = i3d_backbone.i3d_logits(features, num_classes, dropout_rate, classifier_activation, name=name)
    else:
        outputs = common.classifier_head(features, num_classes, False, pooling, dropout_rate, None, name=name)
    model = keras.Model(inputs, outputs, name=f"i3d_{modality}")
    common.load_model_weights(model, weights)
    _load_checkpoints(model, kinetics_checkpoint, (modality,))
    return model


def _validate_streams(streams, flow_source, outputs, classifier_activation, include_top):
    streams = tuple(streams) if not isinstance(streams, str) else (streams,)
    if not streams or any(s not in STREAMS for s in streams) or len(set(streams)) != len(streams):
        raise ValueError(f"`streams` must be a non-empty subset of {STREAMS}, got streams={streams!r}")
    if flow_source not in FLOW_SOURCES:
        raise ValueError(f"`flow_source` must be one of {FLOW_SOURCES}, got flow_source={flow_source!r}")
    if outputs not in OUTPUTS:
        raise ValueError(f"`outputs` must be one of {OUTPUTS}, got outputs={outputs!r}")
    if outputs == "all" and classifier_activation is not None and include_top:
        raise ValueError(f"outputs='all' returns raw scores for the factorization losses; "
                         f"classifier_activation must be None, got {classifier_activation!r}")
    return streams


def _combine(values, name):
    return values[0] if len(values) == 1 else keras.layers.Average(name=name, dtype="float32")(values)


def _factorized_outputs(heads, outputs, classifier_activation):
    """Averages the stream scores; the maps of the streams are concatenated along the map axis (float32, as the
    heads)."""
    combined = {key: _combine([h[key] for h in heads], key)
                for key in ("logits", "action_scores", "context_scores")}
    for key in ("action_map", "context_map"):
        maps = [h[key] for h in heads]
        combined[key] = maps[0] if len(maps) == 1 else keras.layers.Concatenate(axis=-1, name=key,
                                                                                 dtype="float32")(maps)
    if outputs == "all":
        return {key: combined[key] for key in OUTPUT_KEYS}
    logits = combined["logits"]
    if classifier_activation is not None:
        logits = keras.layers.Activation(classifier_activation, name="predictions", dtype="float32")(logits)
    return logits


@register_model(paper=_AC_PAPER, default_input=(128, 256, 352, 3), num_classes=13, num_params=24624536,
                gflops=1535.652, recipe="zoo/i3d_action_context.flags")
def i3d_action_context(num_classes=13, input_shape=(128, 256, 352, 3), include_top=True, weights=None,
                       pooling="avg", dropout_rate=0.0, classifier_activation=None, streams=("rgb", "flow"),
                       flow_source="input", per_class=False, outputs="logits", kinetics_checkpoint=None,
                       tvnet_kwargs=None):
    """Two-stream I3D with an attentive action/context factorization head per stream.

    kerasvid's reading of "Attentive Action and Context Factorization" (Wang et al., BMVC 2021; supplement
    Sec. 2.1): each stream's `Mixed_5c` map F goes through an `ActionContextAttention` head; the streams' scores
    (s, s_a, s_c) are averaged. Trained with `kerasvid.losses.FactorizationLoss` on (clip, conjugate) pairs.

    Args:
        num_classes: number of classes (13 for ActionThread).
        input_shape: the RGB clip `(T, H, W, 3)`; the flow input (flow_source="input") is `(T, H, W, 2)`.
        include_top: add the heads; otherwise the pooled `Mixed_5c` features of the streams, concatenated.
        weights: None or a `.weights.h5` file of this exact model.
        pooling: "avg", "max" or None when include_top=False.
        dropout_rate: dropout on F before the heads (the supplement does not state one; 0 by default).
        classifier_activation: None or e.g. "softmax" (outputs="logits" only).
        streams: ("rgb", "flow"), ("rgb",) or ("flow",).
        flow_source: "input" (precomputed flow, scaled with `I3DFlowInput`) or "tvnet" (computed from the RGB clip
            inside the model by `kerasvid.layers.TVNet`, then `I3DFlowInput(num_frames=T)`; the RGB input is in
            [-1, 1] and is mapped back to 0-255 for TVNet).
        per_class: one action and one context map per class.
        outputs: "logits" (`[batch, num_classes]`) or "all" (the dict of `ActionContextAttention`, maps of the
            streams concatenated along the last axis in `streams` order) for training with the factorization loss.
        kinetics_checkpoint: a kinetics-i3d checkpoint path for all streams, or a dict stream -> path.
        tvnet_kwargs: arguments of `TVNet` (flow_source="tvnet"), e.g. `{"iterations": 10}`.

    Returns:
        A `keras.Model`. Inputs: `[rgb, flow]` in `streams` order (flow_source="input"), or the RGB clip alone.

    Example:
        >>> model = kerasvid.zoo.i3d_action_context(num_classes=13, input_shape=(16, 112, 112, 3))
        >>> model([rgb_clip, flow_clip]).shape  # [batch, 13]
    """
    common.validate_common_args(num_classes, include_top, weights, pooling, dropout_rate, classifier_activation)
    streams = _validate_streams(streams, flow_source, outputs, classifier_activation, include_top)
    input_shape = tuple(input_shape)
    _check_channels(input_shape, "rgb")
    if any(s is None for s in input_shape[:3]):
        raise ValueError(f"i3d_action_context needs a static (T, H, W), got input_shape={input_shape!r}")
    inputs, stream_inputs = [], {}
    if "rgb" in streams or flow_source == "tvnet":
        rgb = keras.Input(input_shape, name="rgb")
        inputs.append(rgb)
        stream_inputs["rgb"] = rgb
    if "flow" in streams:
        if flow_source == "input":
            flow = keras.Input(input_shape[:3] + (2,), name="flow")
            inputs.append(flow)
            stream_inputs["flow"] = flow
        else:
            from kerasvid.layers.tvnet import TVNet  # only this variant needs it

            pixels = keras.layers.Rescaling(127.5, offset=127.5, name="tvnet_pixels")(stream_inputs["rgb"])
            flow = TVNet(**(tvnet_kwargs or {}), name="tvnet")(pixels)
            stream_inputs["flow"] = I3DFlowInput(num_frames=input_shape[0], name="tvnet_flow_scaling")(flow)
    if flow_source == "tvnet" and "rgb" not in streams:
        stream_inputs.pop("rgb")
    features = {s: i3d_backbone.i3d_features(stream_inputs[s], name=f"{s}_i3d")["Mixed_5c"] for s in streams}
    if not include_top:
        pooled = [common.classifier_head(features[s], num_classes, False, pooling, 0.0, None, name=f"{s}_i3d")
                  for s in streams]
        out = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(axis=-1, name="features")(pooled)
    else:
        heads = []
        for s in streams:
            f = features[s]
            if dropout_rate:
                f = keras.layers.Dropout(dropout_rate, name=f"{s}_dropout")(f)
            heads.append(ActionContextAttention(num_classes, per_class=per_class, name=f"{s}_action_context",
                                                dtype="float32")(f))  # float32 under mixed precision too
        out = _factorized_outputs(heads, outputs, classifier_activation)
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], out, name="i3d_action_context")
    common.load_model_weights(model, weights)
    _load_checkpoints(model, kinetics_checkpoint, streams)
    return model


@register_model(paper=_AC_PAPER + ", still images", default_input=(256, 256, 3), num_classes=10,
                num_params=7060054, gflops=7.446)
def action_context_image(num_classes=10, input_shape=(256, 256, 3), include_top=True, weights=None, pooling="avg",
                         dropout_rate=0.0, classifier_activation=None, backbone="densenet121", per_class=False,
                         outputs="logits"):
    """Still-image action/context factorization on a keras.applications backbone (supplement Sec. 1).

    The supplement factorizes DenseNet-161 feature maps of Pascal VOC 2012 action images (10 classes, short side
    256); keras.applications has DenseNet-121/169/201, so DenseNet-121 is the default. The maps are `[H, W, K]`.

    Args:
        num_classes: number of classes (10 for VOC 2012 actions).
        input_shape: `(H, W, 3)`, preprocessed as the chosen keras.applications backbone expects.
        include_top: add the head; otherwise the backbone's pooled features.
        weights: None, "imagenet" (the backbone's ImageNet weights, downloaded by keras.applications) or a
            `.weights.h5` file of this exact model.
        pooling: "avg", "max" or None when include_top=False.
        dropout_rate: dropout on the feature map before the head.
        classifier_activation: None or e.g. "sigmoid" (outputs="logits" only).
        backbone: one of `IMAGE_BACKBONES`.
        per_class: one action and one context map per class.
        outputs: "logits" or "all" (the `ActionContextAttention` dict).

    Returns:
        A `keras.Model` `[batch, H, W, 3] -> [batch, num_classes]` (or the dict).

    Example:
        >>> model = kerasvid.zoo.action_context_image(num_classes=10, input_shape=(224, 224, 3))
    """
    common.validate_common_args(num_classes, include_top, weights, pooling, dropout_rate, classifier_activation)
    _validate_streams(("rgb",), "input", outputs, classifier_activation, include_top)
    if backbone not in IMAGE_BACKBONES:
        raise ValueError(f"`backbone` must be one of {sorted(IMAGE_BACKBONES)}, got backbone={backbone!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (H, W, 3), got input_shape={input_shape!r}")
    image_model = getattr(keras.applications, IMAGE_BACKBONES[backbone])(
        include_top=False, weights="imagenet" if weights == "imagenet" else None, input_shape=input_shape)
    inputs = keras.Input(input_shape, name="image")
    features = image_model(inputs)
    if not include_top:
        out = common.classifier_head(features, num_classes, False, pooling, 0.0, None, name="features")
    else:
        if dropout_rate:
            features = keras.layers.Dropout(dropout_rate, name="dropout")(features)
        head = ActionContextAttention(num_classes, per_class=per_class, name="action_context",
                                      dtype="float32")(features)  # float32 under mixed precision too
        out = _factorized_outputs([head], outputs, classifier_activation)
    model = keras.Model(inputs, out, name=f"action_context_{backbone}")
    if weights != "imagenet":
        common.load_model_weights(model, weights)
    return model
