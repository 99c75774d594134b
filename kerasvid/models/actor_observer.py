"""ActorObserverNet (Sigurdsson et al., CVPR 2018): a shared ResNet-152 trunk over first/third-person frames.

Three streams share one trunk: a first-person frame `x`, the corresponding third-person frame `y` and a
non-corresponding first-person frame `z`. The network returns the two distances the triplet loss compares and one
selector score per stream (the `f` of the VideoSoftmax that weighs the triplet); optionally a third-person
classifier. The VideoSoftmax layers and the loss, which keep state across batches, belong to the training task
(`kerasvid.layers.VideoSoftmax`, `kerasvid.losses.ActorObserverLoss`), so the model itself is a pure function of
the frames.
"""
import keras

from kerasvid.backbones import resnet
from kerasvid.layers.heads import PairwiseDistance, SelectorScale
from kerasvid.models import common
from kerasvid.models.registry import register_model
from kerasvid.weights import torchvision_resnet

_PAPER = "Sigurdsson et al., CVPR 2018 (Actor and Observer)"
VARIANTS = ("share", "noshare")
INPUT_NAMES = ("first_person", "third_person", "first_person_negative")


def actor_observer_network(depth=152, num_classes=None, input_shape=(1, 224, 224, 3), include_top=True,
                           weights=None, pooling="avg", dropout_rate=0.0, classifier_activation=None,
                           variant="share", stem_stride=None, trunk=None, name=None, **trunk_options):
    """Builds the three-stream actor-observer network on a shared ResNet trunk of any depth.

    Args:
        depth: ResNet depth of the trunk (152 in the paper; smaller depths for experiments and tests).
        num_classes: None (triplets only) or the width of the third-person classifier (157 for Charades).
        input_shape: `(T, H, W, C)` of each stream; the paper uses single frames, `T = 1`.
        include_top: add the classifier when `num_classes` is given.
        weights: None, "imagenet" (keras.applications ResNet weights into the trunk), a `.weights.h5` path, or a
            `.pth` / `.pth.tar` file in torchvision's ResNet layout (torchvision's ImageNet ResNet-152, or the Charades
            ResNet-152 `resnet_rgb.pth.tar` the authors start from): the trunk is then built in that layout
            (`kerasvid.weights.torchvision_resnet`), its tensors load into the trunk and `fc` into the classifier
            where the class counts agree (157); the selectors keep their initial weights.
        pooling: "avg" (the trunk's pooled 2048-d feature, as in the paper).
        dropout_rate: dropout before the classifier.
        classifier_activation: None (logits) or e.g. "softmax".
        variant: "share" (the two first-person selectors share their Dense) or "noshare".
        stem_stride: 1 or 2 (default: 2 for >= 160-pixel inputs).
        trunk: None (the ResNet of `depth`) or any `keras.Model` mapping `[B, *input_shape]` frames to `[B, D]`
            features, shared by the three streams (e.g. a small CNN for synthetic experiments); `depth`,
            `stem_stride` and `weights="imagenet"` then do not apply.
        name: model name.
        **trunk_options: layout options of `kerasvid.backbones.resnet.resnet_features` (`stride_on_3x3`, `padding`,
            `use_bias`, `bn_epsilon`); torchvision weights imply theirs.

    Returns:
        A `keras.Model` taking the list `[x, y, z]` (inputs named "first_person", "third_person",
        "first_person_negative") of `[B, T, H, W, C]` frames and returning a dict with
        `d_pos = ||f(x) - f(y)||`, `d_neg = ||f(y) - f(z)||`, `selector_x`, `selector_y`, `selector_z` (all `[B]`)
        and, with a classifier, `logits` `[B, num_classes]`.
    """
    with_classifier = include_top and num_classes is not None
    common.validate_common_args(num_classes, with_classifier, weights, pooling, dropout_rate, classifier_activation)
    if pooling != "avg":
        raise ValueError(f"The actor-observer trunk uses average pooling, got pooling={pooling!r}")
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, got variant={variant!r}")
    input_shape = tuple(input_shape)
    default_name = "actor_observer" if trunk is not None else f"actor_observer_resnet{depth}"
    torch_state = None
    if trunk is None:
        trunk_options, torch_state = torchvision_resnet.layout_for_weights(weights, depth, trunk_options)
        if stem_stride is None:
            stem_stride = resnet.default_stem_stride(input_shape)
        resnet.check_spatial_size(input_shape, stem_stride)
        if weights == "imagenet":
            resnet.check_imagenet_weights(depth, input_shape, trunk_options)
        frames = keras.Input(input_shape, name="frames")
        features = resnet.resnet_features(frames, depth, stem_stride=stem_stride, **trunk_options)["res5"]
        pooled = keras.layers.GlobalAveragePooling3D(name="avg_pool")(features)
        trunk = keras.Model(frames, pooled, name="trunk")
    elif not isinstance(trunk, keras.Model) or len(trunk.outputs) != 1 or len(trunk.outputs[0].shape) != 2:
        raise ValueError(f"`trunk` must be a keras.Model with one [B, D] output, got {trunk!r}")
    elif weights == "imagenet":
        raise ValueError("weights='imagenet' needs the ResNet trunk, got a custom `trunk`")
    elif trunk_options:
        raise ValueError(f"The trunk options {sorted(trunk_options)} apply to the ResNet trunk, got a custom `trunk`")

    inputs = [keras.Input(input_shape, name=key) for key in INPUT_NAMES]
    fx, fy, fz = (trunk(x) for x in inputs)
    # The heads (distances, selectors, classifier) are float32 under mixed precision too.
    d_pos = PairwiseDistance(name="d_pos", dtype="float32")(fx, fy)
    d_neg = PairwiseDistance(name="d_neg", dtype="float32")(fy, fz)
    fc_first = keras.layers.Dense(1, name="selector_first_fc", dtype="float32")
    fc_third = keras.layers.Dense(1, name="selector_third_fc", dtype="float32")
    fc_negative = fc_first if variant == "share" else keras.layers.Dense(1, name="selector_first_negative_fc",
                                                                         dtype="float32")
    outputs = {
        "d_pos": d_pos,
        "d_neg": d_neg,
        # Three scales in both variants (the authors share only the first-person Dense).
        "selector_x": SelectorScale(name="selector_x", dtype="float32")(fc_first(fx)),
        "selector_y": SelectorScale(name="selector_y", dtype="float32")(fc_third(fy)),
        "selector_z": SelectorScale(name="selector_z", dtype="float32")(fc_negative(fz)),
    }
    if with_classifier:
        h = keras.layers.Dropout(dropout_rate, name="classifier_dropout")(fy) if dropout_rate else fy
        outputs["logits"] = keras.layers.Dense(num_classes, activation=classifier_activation, name="predictions",
                                               dtype="float32")(h)
    model = keras.Model(inputs, outputs, name=name or default_name)
    if weights == "imagenet":
        resnet.load_imagenet_weights(trunk, depth)
    elif torch_state is not None:
        heads = [layer.name for layer in model.layers if layer.weights and layer.name not in ("trunk", "predictions")]
        torchvision_resnet.load_torchvision_resnet(model, torch_state, depth, weights, keep=heads)
    else:
        common.load_model_weights(model, weights)
    return model


@register_model(paper=_PAPER, default_input=(1, 224, 224, 3), num_classes=157, num_params=58696738, gflops=67.794,
                recipe="zoo/actor_observer_third_to_first.flags")
def actor_observer_resnet152(num_classes=None, input_shape=(1, 224, 224, 3), include_top=True, weights=None,
                             pooling="avg", dropout_rate=0.0, classifier_activation=None, variant="share",
                             stem_stride=None):
    """ActorObserverNet: shared ResNet-152 trunk, two distances and three selectors (+ optional classifier).

    From "Actor and Observer: Joint Modeling of First and Third-Person Videos" (Sigurdsson et al., CVPR 2018).
    Selectors: `f = tanh(Dense(1)(feature)) * exp(s)`, `s` initialised to `ln 0.5`, one per stream; in "share"
    the two first-person streams share their Dense (the authors' `ActorObserverBase`), in "noshare" they do not.
    With `num_classes` (157 for Charades) a classifier reads the third-person feature (`...WithClassifier`).

    Args:
        num_classes: None or the classifier width.
        input_shape: `(T, H, W, C)` per stream (`T = 1`: single frames).
        include_top, weights, pooling, dropout_rate, classifier_activation, stem_stride: see
            `actor_observer_network`.
        variant: "share" or "noshare".

    Returns:
        A `keras.Model`, see `actor_observer_network`.

    Example:
        >>> model = kerasvid.zoo.actor_observer_resnet152(num_classes=157, input_shape=(1, 224, 224, 3))
    """
    return actor_observer_network(depth=152, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                                  weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                                  classifier_activation=classifier_activation, variant=variant, stem_stride=stem_stride,
                                  name="actor_observer_resnet152")
