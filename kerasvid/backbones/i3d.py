"""Inception-v1 inflated to 3D (I3D, Carreira & Zisserman, CVPR 2017) over clips `[batch, T, H, W, C]`.

The network of the "Quo Vadis" paper as DeepMind's kinetics-i3d release lays it out: every unit is
Conv3D (no bias) + BatchNorm (offset only, epsilon 1e-3) + ReLU with TF "same" padding, nine Inception blocks
(`Mixed_3b` .. `Mixed_5c`) and a logits head (2x7x7 average pool, 1x1x1 conv with bias, mean over time).

- Units and pools of temporal size 1 (the 1x1x1 units, the 1x3x3 max pools) are 2D ops on every frame
  (`kerasvid.layers.FrameConv2D`, kernels `(1, 1, C_in, C_out)`); the checkpoint converter reshapes the release's
  `(1, 1, 1, C_in, C_out)` kernels into them.
- Named endpoints (`I3D_ENDPOINTS`: `Conv3d_1a_7x7`, ..., `Mixed_5c`, `Logits`), returned by `i3d_features`.
- Accumulated strides 8 (time) and 32x32 (space) at `Mixed_5c`: a 128x256x352 clip gives a 16x8x11x1024 map (the
  feature map F of the action/context factorization supplement, Sec. 2.1).
- Layer names are derived from the TF1 variable scopes of the kinetics-i3d checkpoints
  (`Mixed_4b/Branch_1/Conv3d_0b_3x3` -> `<name>_Mixed_4b_Branch_1_Conv3d_0b_3x3_conv`), so
  `load_kinetics_i3d_checkpoint` converts those checkpoints into a kerasvid model by name (every published
  layout: `RGB/inception_i3d/...`, `Flow/inception_i3d/...` and the unscoped 600-class `rgb_scratch_kin600`).

The architecture table below is written from the paper's Inception-v1 widths; no code is taken from the release.
"""
import keras
import numpy as np

from kerasvid.layers.frames import clip_conv, clip_pooling

BN_EPSILON = 1e-3  # Sonnet BatchNorm default, used by the kinetics-i3d checkpoints
_BN_MOMENTUM = 0.999  # Sonnet BatchNorm default decay

I3D_ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
    "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c", "Logits",
)

# Inception block widths: (branch 0 1x1, (branch 1 1x1, 3x3x3), (branch 2 1x1, 3x3x3), branch 3 pool-proj 1x1).
_MIXED_WIDTHS = {
    "Mixed_3b": (64, (96, 128), (16, 32), 32),
    "Mixed_3c": (128, (128, 192), (32, 96), 64),
    "Mixed_4b": (192, (96, 208), (16, 48), 64),
    "Mixed_4c": (160, (112, 224), (24, 64), 64),
    "Mixed_4d": (128, (128, 256), (24, 64), 64),
    "Mixed_4e": (112, (144, 288), (32, 64), 64),
    "Mixed_4f": (256, (160, 320), (32, 128), 128),
    "Mixed_5b": (256, (160, 320), (32, 128), 128),
    "Mixed_5c": (384, (192, 384), (48, 128), 128),
}

# The layout, in order: ("unit", name, filters, kernel, strides) | ("pool", name, pool, strides) | ("mixed", name).
_LAYOUT = (
    ("unit", "Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2)),
    ("pool", "MaxPool3d_2a_3x3", (1, 3, 3), (1, 2, 2)),
    ("unit", "Conv3d_2b_1x1", 64, (1, 1, 1), (1, 1, 1)),
    ("unit", "Conv3d_2c_3x3", 192, (3, 3, 3), (1, 1, 1)),
    ("pool", "MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    ("mixed", "Mixed_3b"),
    ("mixed", "Mixed_3c"),
    ("pool", "MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    ("mixed", "Mixed_4b"),
    ("mixed", "Mixed_4c"),
    ("mixed", "Mixed_4d"),
    ("mixed", "Mixed_4e"),
    ("mixed", "Mixed_4f"),
    ("pool", "MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
    ("mixed", "Mixed_5b"),
    ("mixed", "Mixed_5c"),
)

LOGITS_UNIT = "Logits/Conv3d_0c_1x1"
MODALITY_CHANNELS = {"rgb": 3, "flow": 2}
_CHECKPOINT_SCOPES = {"rgb": "RGB", "flow": "Flow"}
# The published kinetics-i3d checkpoints (`data/checkpoints/<name>/model.ckpt`): modality and variable prefix.
# `rgb_scratch_kin600` (600 classes) was saved without any scope and with the optimizer's `.../Momentum` slots.
KINETICS_I3D_CHECKPOINTS = {
    "rgb_imagenet": ("rgb", "RGB/inception_i3d/"),
    "flow_imagenet": ("flow", "Flow/inception_i3d/"),
    "rgb_scratch": ("rgb", "RGB/inception_i3d/"),
    "flow_scratch": ("flow", "Flow/inception_i3d/"),
    "rgb_scratch_kin600": ("rgb", ""),
}
_STEM_KERNEL = "Conv3d_1a_7x7/conv_3d/w"


def _mixed_units(block):
    """The conv units of one Inception block as (scope path, filters, kernel), in the release's scope names."""
    b0, (b1a, b1b), (b2a, b2b), b3 = _MIXED_WIDTHS[block]
    # The release names Mixed_5b's branch-2 3x3x3 conv "Conv3d_0a_3x3" (every other block: "Conv3d_0b_3x3").
    b2b_name = "Conv3d_0a_3x3" if block == "Mixed_5b" else "Conv3d_0b_3x3"
    return (
        (f"{block}/Branch_0/Conv3d_0a_1x1", b0, (1, 1, 1)),
        (f"{block}/Branch_1/Conv3d_0a_1x1", b1a, (1, 1, 1)),
        (f"{block}/Branch_1/Conv3d_0b_3x3", b1b, (3, 3, 3)),
        (f"{block}/Branch_2/Conv3d_0a_1x1", b2a, (1, 1, 1)),
        (f"{block}/Branch_2/{b2b_name}", b2b, (3, 3, 3)),
        (f"{block}/Branch_3/Conv3d_0b_1x1", b3, (1, 1, 1)),
    )


def conv_unit_scopes():
    """Returns the scope paths of every Conv3D + BN unit up to `Mixed_5c`, in build order.

    These are the TF1 variable scopes of the kinetics-i3d checkpoints below `<RGB|Flow>/inception_i3d/`
    (e.g. `"Mixed_4b/Branch_1/Conv3d_0b_3x3"`); kerasvid layer names replace "/" by "_".
    """
    scopes = []
    for entry in _LAYOUT:
        if entry[0] == "unit":
            scopes.append(entry[1])
        elif entry[0] == "mixed":
            scopes.extend(path for path, _, _ in _mixed_units(entry[1]))
    return scopes


def layer_name(name, scope, part):
    """kerasvid layer name of a unit's `part` ("conv", "bn", "relu"): `<name>_<scope with / -> _>_<part>`."""
    return f"{name}_{scope.replace('/', '_')}_{part}"


def _unit(x, filters, kernel, strides, scope, name):
    x = clip_conv(filters, kernel, strides=strides, padding="same", use_bias=False,
                  name=layer_name(name, scope, "conv"))(x)
    x = keras.layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=_BN_MOMENTUM, scale=False,
                                        name=layer_name(name, scope, "bn"))(x)
    return keras.layers.ReLU(name=layer_name(name, scope, "relu"))(x)


def _mixed(x, block, name):
    units = {path.split("/", 1)[1]: (path, filters, kernel) for path, filters, kernel in _mixed_units(block)}

    def run(key, inp):
        path, filters, kernel = units[key]
        return _unit(inp, filters, kernel, (1, 1, 1), path, name)

    branch_0 = run("Branch_0/Conv3d_0a_1x1", x)
    branch_1 = run("Branch_1/Conv3d_0b_3x3", run("Branch_1/Conv3d_0a_1x1", x))
    b2b_key = [k for k in units if k.startswith("Branch_2/") and k.endswith("3x3")][0]
    branch_2 = run(b2b_key, run("Branch_2/Conv3d_0a_1x1", x))
    pooled = keras.layers.MaxPooling3D((3, 3, 3), strides=(1, 1, 1), padding="same",
                                       name=layer_name(name, f"{block}/Branch_3/MaxPool3d_0a_3x3", "pool"))(x)
    branch_3 = run("Branch_3/Conv3d_0b_1x1", pooled)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_{block}")([branch_0, branch_1, branch_2, branch_3])


def i3d_features(x, final_endpoint="Mixed_5c", name="i3d"):
    """Applies I3D up to `final_endpoint` and returns every endpoint built on the way.

    Args:
        x: KerasTensor `[batch, T, H, W, C]` (RGB: C = 3, flow: C = 2, both scaled to [-1, 1] as in kinetics-i3d).
        final_endpoint: one of `I3D_ENDPOINTS` except "Logits" (use `i3d_logits` on "Mixed_5c" for that).
        name: prefix of all layer names (two streams in one model need different prefixes).

    Returns:
        A dict endpoint name -> KerasTensor, in build order. `Mixed_5c` is `[batch, T/8, H/32, W/32, 1024]`
        (TF "same" rounding: sizes are ceil-divided at every stride).
    """
    valid = I3D_ENDPOINTS[:-1]
    if final_endpoint not in valid:
        raise ValueError(f"`final_endpoint` must be one of {valid}, got final_endpoint={final_endpoint!r}")
    if len(x.shape) != 5:
        raise ValueError(f"I3D expects clips [batch, T, H, W, C], got a tensor of shape {tuple(x.shape)}")
    endpoints = {}
    for entry in _LAYOUT:
        kind, block = entry[0], entry[1]
        if kind == "unit":
            _, scope, filters, kernel, strides = entry
            x = _unit(x, filters, kernel, strides, scope, name)
        elif kind == "pool":
            _, scope, pool, strides = entry
            x = clip_pooling("max", pool, strides=strides, padding="same", name=f"{name}_{scope}")(x)
        else:
            x = _mixed(x, block, name)
        endpoints[block] = x
        if block == final_endpoint:
            break
    return endpoints


def _logits_pool_size(feature_shape):
    """The `Logits` average-pool window: (2, 7, 7) clipped to the `Mixed_5c` map `(T, H, W)` (static sizes)."""
    if any(s is None for s in feature_shape):
        raise ValueError(f"The I3D logits head needs static T, H, W at Mixed_5c, got {tuple(feature_shape)}; "
                         f"give the model a fixed input_shape or use include_top=False")
    return tuple(min(p, int(s)) for p, s in zip((2, 7, 7), feature_shape))


def i3d_logits(features, num_classes, dropout_rate=0.0, classifier_activation=None, name="i3d"):
    """The I3D `Logits` head: 2x7x7 average pool (VALID, stride 1), dropout, 1x1x1 conv with bias, mean over T,H,W.

    For a 224x224 input the 7x7 window covers the whole map, so this is the release's spatially squeezed logits
    averaged over time; for larger inputs the scores of every window are averaged.

    Args:
        features: the `Mixed_5c` KerasTensor `[batch, T', H', W', 1024]`.
        num_classes: number of classes.
        dropout_rate: dropout before the classifier conv (the release trains with keep 0.5 -> 0.5).
        classifier_activation: None (logits) or an activation name, applied after averaging.
        name: layer-name prefix (the same as for `i3d_features`).

    Returns:
        `[batch, num_classes]`.
    """
    pool = _logits_pool_size(features.shape[1:4])
    x = keras.layers.AveragePooling3D(pool, strides=(1, 1, 1), padding="valid", name=f"{name}_Logits_avg_pool")(
        features)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name=f"{name}_Logits_dropout")(x)
    # The classifier and what follows it are float32 under mixed precision too.
    x = clip_conv(num_classes, (1, 1, 1), use_bias=True, name=layer_name(name, LOGITS_UNIT, "conv"),
                  dtype="float32")(x)
    x = keras.layers.GlobalAveragePooling3D(name=f"{name}_Logits", dtype="float32")(x)
    if classifier_activation is not None:
        x = keras.layers.Activation(classifier_activation, name=f"{name}_predictions", dtype="float32")(x)
    return x


def _conv3d_kernel_shape(shape):
    """The Conv3D kernel shape of a kerasvid kernel: `(1, kh, kw, C_in, C_out)` for a FrameConv2D's 4-D one."""
    shape = tuple(int(v) for v in shape)
    return (1,) + shape if len(shape) == 4 else shape


def load_kinetics_i3d_checkpoint(model, checkpoint_path, modality="rgb", name="i3d", scope=None,
                                 include_logits=None):
    """Copies a DeepMind kinetics-i3d TF1 checkpoint into a kerasvid I3D (sub)model, by variable name.

    Every published layout loads (`KINETICS_I3D_CHECKPOINTS`): `rgb_imagenet`, `rgb_scratch` (variables under
    `RGB/inception_i3d/`), `flow_imagenet`, `flow_scratch` (`Flow/inception_i3d/`) and `rgb_scratch_kin600`
    (600 classes, no scope at all: `Conv3d_1a_7x7/conv_3d/w`, ...). Source names below that prefix:
    `<unit>/conv_3d/w` `[kt, kh, kw, C_in, C_out]` (Conv3D kernel, same layout as Keras; the `kt = 1` kernels of
    the frame-wise units are stored without their leading 1),
    `<unit>/batch_norm/{beta, moving_mean, moving_variance}` (any shape with C_out values, Sonnet stores
    `[1, 1, 1, 1, C_out]`), and `Logits/Conv3d_0c_1x1/conv_3d/{w, b}`. Other variables (the optimizer's
    `.../Momentum` slots, `global_step`) are ignored.

    Args:
        model: a Keras model containing an I3D built by `i3d_features(..., name=name)`.
        checkpoint_path: checkpoint prefix (e.g. `.../rgb_imagenet/model.ckpt`) or a directory with a
            `checkpoint` file.
        modality: "rgb" or "flow"; chooses the default scope ("RGB" / "Flow").
        name: the layer-name prefix the I3D was built with.
        scope: None (default): the modality's scope, else no scope (the kin600 layout), whichever the checkpoint
            has; or the top-level scope to read (`""`: no scope).
        include_logits: copy the logits conv too; default: when the model has one and the checkpoint's class count
            matches.

    Returns:
        The list of checkpoint variable names that were copied.

    Raises:
        ValueError: when a variable is missing from the checkpoint or a shape does not match (the message names it).
    """
    import tensorflow as tf

    if modality not in _CHECKPOINT_SCOPES:
        raise ValueError(f"`modality` must be one of {sorted(_CHECKPOINT_SCOPES)}, got modality={modality!r}")
    try:
        reader = tf.train.load_checkpoint(checkpoint_path)
    except Exception as err:  # NotFoundError / DataLossError: name the path
        raise ValueError(f"Cannot read a TF checkpoint at {checkpoint_path!r}: {err}") from err
    available = reader.get_variable_to_shape_map()
    if scope is None:
        candidates = [f"{_CHECKPOINT_SCOPES[modality]}/inception_i3d/", ""]
    else:
        candidates = [f"{scope}/inception_i3d/" if scope else ""]
    prefix = next((c for c in candidates if c + _STEM_KERNEL in available), None)
    if prefix is None:
        scopes = sorted({key.split("/")[0] for key in available})
        raise ValueError(f"No kinetics-i3d variables ({' or '.join(repr(c + _STEM_KERNEL) for c in candidates)}) "
                         f"in {checkpoint_path!r} for modality={modality!r}; top-level scopes found: {scopes}")

    def get(key, variable, exact):
        # Kernels must match exactly (as Conv3D kernels); BN vectors may carry Sonnet's singleton axes.
        full = prefix + key
        if full not in available:
            raise ValueError(f"Checkpoint {checkpoint_path!r} has no variable {full!r}")
        value = reader.get_tensor(full)
        shape = tuple(variable.shape)
        want = _conv3d_kernel_shape(shape) if exact else shape
        if (tuple(value.shape) != want) if exact else (value.size != int(np.prod(shape))):
            raise ValueError(f"Variable {full!r} has shape {value.shape}, kerasvid variable {variable.path!r} "
                             f"expects {want}")
        variable.assign(value.reshape(shape))
        copied.append(full)

    copied = []

    for unit in conv_unit_scopes():
        conv = model.get_layer(layer_name(name, unit, "conv"))
        bn = model.get_layer(layer_name(name, unit, "bn"))
        get(f"{unit}/conv_3d/w", conv.kernel, exact=True)
        for var, source in ((bn.beta, "beta"), (bn.moving_mean, "moving_mean"),
                            (bn.moving_variance, "moving_variance")):
            get(f"{unit}/batch_norm/{source}", var, exact=False)
    try:
        logits = model.get_layer(layer_name(name, LOGITS_UNIT, "conv"))
    except ValueError:
        logits = None
    w_key = prefix + LOGITS_UNIT + "/conv_3d/w"
    if include_logits is None:
        include_logits = (logits is not None and w_key in available
                          and tuple(available[w_key]) == _conv3d_kernel_shape(logits.kernel.shape))
    if include_logits:
        if logits is None:
            raise ValueError(f"include_logits=True but the model has no layer "
                             f"{layer_name(name, LOGITS_UNIT, 'conv')!r} (built with include_top=False?)")
        get(f"{LOGITS_UNIT}/conv_3d/w", logits.kernel, exact=True)
        get(f"{LOGITS_UNIT}/conv_3d/b", logits.bias, exact=False)
    return copied
