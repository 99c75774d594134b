"""torchvision's ImageNet ResNet-50/101/152 and training checkpoints in their layout, into kerasvid's ResNet trunks.

torchvision's ResNets are "v1.5" (the bottleneck's stride on its 3x3 conv), have no conv biases, BatchNorm epsilon
1e-5 and PyTorch's symmetric padding; a file in their layout (torchvision's `resnet50-0676ba61.pth`, or a training
checkpoint such as the Charades ResNet-152 `resnet_rgb.pth.tar` that Actor-Observer starts from: a dict with
`state_dict`, `module.` prefixes, 157 classes) therefore implies `LAYOUT`, the `resnet_features` options that
reproduce it. The builders read the file first (`layout_for_weights`), build with those options, then assign every
tensor through one rename table built from the depth (`torch_names`):

    conv1 -> conv1_conv, bn1 -> conv1_bn, layer{S}.{B}.conv{J} -> conv{S+1}_block{B+1}_{J}_conv,
    layer{S}.{B}.bn{J} -> conv{S+1}_block{B+1}_{J}_bn, layer{S}.{B}.downsample.0 / .1 -> ..._0_conv / ..._0_bn,
    fc -> predictions (loaded where it fits: without a top, or with another class count, it is left unused)

Example:
    >>> model = kerasvid.zoo.c2d_resnet50(num_classes=1000, input_shape=(8, 224, 224, 3),
    ...                                   weights="resnet50-0676ba61.pth")
"""
import os

from kerasvid.weights import convert, presets, torch_files

LAYOUT = {"stride_on_3x3": True, "padding": "torch", "use_bias": False, "bn_epsilon": 1e-5}
# Bottleneck blocks per stage (layer1..layer4) of torchvision's resnet50 / resnet101 / resnet152.
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_MARKERS = ("conv1.weight", "bn1.running_var", "layer1.0.conv3.weight", "layer4.0.downsample.0.weight")


def is_torchvision_resnet(state):
    """Whether a state_dict has torchvision's bottleneck-ResNet key set (`conv1`, `bn1`, `layer1.0.conv3`,
    `layer4.0.downsample.0`, no conv bias)."""
    return all(k in state for k in _MARKERS) and "conv1.bias" not in state


def torch_names(depth):
    """The rename table `{torchvision module: kerasvid layer}` of a ResNet-`depth` (see the module docstring)."""
    if depth not in BLOCKS:
        raise ValueError(f"torchvision ResNet weights fit depth {sorted(BLOCKS)} (bottleneck blocks), "
                         f"got depth={depth}")
    names = {"conv1": "conv1_conv", "bn1": "conv1_bn", "fc": "predictions"}
    for s, blocks in enumerate(BLOCKS[depth], start=1):
        for b in range(blocks):
            prefix = f"conv{s + 1}_block{b + 1}"
            for j in (1, 2, 3):
                names[f"layer{s}.{b}.conv{j}"] = f"{prefix}_{j}_conv"
                names[f"layer{s}.{b}.bn{j}"] = f"{prefix}_{j}_bn"
            if b == 0:
                names[f"layer{s}.0.downsample.0"] = f"{prefix}_0_conv"
                names[f"layer{s}.0.downsample.1"] = f"{prefix}_0_bn"
    return names


def _read_torchvision_resnet(weights):
    """The state_dict of `weights` when it is a PyTorch / safetensors file (a path or a preset's cached file) in
    torchvision's ResNet layout, else None (nothing is read for other paths, None or "imagenet")."""
    if weights is None or weights == "imagenet":
        return None
    path = presets.weights_file(weights) if presets.is_preset(weights) else str(weights)
    if not convert.is_torch_file(path) or not os.path.isfile(path):
        return None
    state = torch_files.load_state_dict(path)
    return state if is_torchvision_resnet(state) else None


def layout_for_weights(weights, depth, options):
    """The trunk options a builder's `weights=` implies, and the file's tensors.

    Args:
        weights: the builder's `weights` argument.
        depth: the ResNet depth being built.
        options: the layout options the caller passed (`resnet_features` keywords).

    Returns:
        `(options, state)`: for a torchvision ResNet file, `options` completed with `LAYOUT` and its state_dict;
        otherwise `options` unchanged and None.

    Raises:
        ValueError: a torchvision file for a depth without bottleneck blocks, or an option that contradicts the
            layout the file implies (naming both).
    """
    state = _read_torchvision_resnet(weights)
    if state is None:
        return dict(options), None
    if depth not in BLOCKS:
        raise ValueError(f"{str(weights)!r} holds a torchvision bottleneck ResNet, which does not fit a ResNet-{depth} "
                         f"(depths {sorted(BLOCKS)})")
    for key, value in LAYOUT.items():
        if key in options and options[key] != value:
            raise ValueError(f"{str(weights)!r} holds torchvision ResNet weights, which need {key}={value!r}; got "
                             f"{key}={options[key]!r}")
    return {**options, **LAYOUT}, state


def load_torchvision_resnet(model, state, depth, source, keep=()):
    """Assigns a torchvision ResNet state_dict to a model built with `LAYOUT` (`convert.assign_state_dict` with
    `torch_names(depth)`; the classifier `fc` optional).

    Args:
        model: the Keras model (its trunk layers named by `kerasvid.backbones.resnet`, its classifier `predictions`).
        state: the state_dict (`layout_for_weights`).
        depth: the model's ResNet depth.
        source: the file, for messages.
        keep: Keras layers the file has no tensors for (e.g. Actor-Observer's selectors): they keep their weights.

    Returns:
        the number of tensors assigned.

    Raises:
        ValueError: one line naming the first tensor that does not fit (and both shapes); the model is unchanged.
    """
    try:
        return convert.assign_state_dict(model, state, torch_names(depth), optional=("fc",), keep=keep)
    except ValueError as err:
        raise ValueError(f"The weights file {str(source)!r} does not fit the model {model.name!r}: {err}") from err
