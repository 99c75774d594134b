"""CPNet (Liu, Lee, Jin, CVPR 2019) and its non-local baseline: C2D ResNets with modules at insertion points.

Both are configurations of `kerasvid.models.resnet_video.resnet_video`: the CP modules / NL blocks go after the
residual addition and before the ReLU of the listed blocks (`"res3_1"` = stage res3, 0-based block 1).

Two variants of the CP placement (the supplement's §B, §D, §E vs the authors' released code):

| depth | variant | CP modules at | k | MLP hidden widths | bottleneck | res3 shrink |
|---|---|---|---|---|---|---|
| 18 | paper (supp. §B, Table 1) | res3_0-1, res4_0-1, res5_0-1 (6) | 8 | C/4, C/2 | - | - |
| 34 | paper (supp. §E, Table 3) | res3_2-3, res4_3-5 (5) | 12 | C/4, C/2 | - | - |
| 101 | paper (supp. §D, Table 2) | res3_2-3, res4_20-22 (5) | 4 | C/16, C/8 | - | - |
| 18 | released_code | res3_0-1, res4_0-1 (4) | 8 | C/4, C/2 | - | 2 |
| 34 | released_code | res3_2-3, res4_3-5 (5) | 8 | C/4, C/2 | - | 2 |
| 101 | released_code | res3_2-3, res4_20-22 (5) | 4 | C/8 | C/8 | 2 |

The authors' two published checkpoints (ResNet-34 on Jester at 112 px and on Something-Something v2 at 224 px, TF1
`tf.train.Saver` files) load with `weights=<checkpoint prefix>` into `variant="released_code"`: the trunk is then
built as their TF1 graph computes (`TF1_LAYOUT`: TF "SAME" padding of the stem conv and max pool too, BatchNorm
epsilon 1e-3; convs with a bias, as kerasvid's default) and every variable is mapped by name (`tf1_variable_names`).

What a trained CPNet proposes: `cp_modules(model)` finds its CP modules, `correspondence_proposals(model, clip,
layer_name)` gives one module's query point and its k proposals in the other frames, and `correspondence_picture`
(the CPNet pictures of `kerasvid.zoo.model_pictures`, `kerasvid train --pictures`) draws them for every module.
"""
import dataclasses
import re
from typing import Optional, Tuple

import numpy as np

from kerasvid import viz
from kerasvid.layers.cp_module import CPModule, tf1_resize_bilinear
from kerasvid.layers.non_local import NonLocalBlock
from kerasvid.models import common
from kerasvid.models.registry import find_layers, register_model, register_pictures
from kerasvid.ops.knn import cp_knn
from kerasvid.models.resnet_video import resnet_video
from kerasvid.weights import tf_checkpoint

_PAPER = "Liu, Lee, Jin, CVPR 2019 (CPNet)"
_NL_PAPER = "Wang et al., CVPR 2018 (non-local), NL C2D baseline of CPNet supp. Table 1"
VARIANTS = ("paper", "released_code")


@dataclasses.dataclass(frozen=True)
class CPPlacement:
    """Where the CP modules of one CPNet go and how they are sized.

    Attributes:
        points: insertion points of the backbone (`kerasvid.backbones.resnet.insertion_points`).
        k: number of correspondence proposals.
        mlp_divisors: hidden MLP widths as divisors of the module's input channels C (`(4, 2)` = `[C/4, C/2]`).
        bottleneck_divisor: width C/d of the 1x1 bottleneck before the kNN, or None.
        shrink_res3: whether the res3 modules work on a 2x smaller map.
    """

    points: Tuple[str, ...]
    k: int
    mlp_divisors: Tuple[int, ...]
    bottleneck_divisor: Optional[int] = None
    shrink_res3: bool = False


_R34_POINTS = ("res3_2", "res3_3", "res4_3", "res4_4", "res4_5")
_R101_POINTS = ("res3_2", "res3_3", "res4_20", "res4_21", "res4_22")
_SIX_R18_POINTS = ("res3_0", "res3_1", "res4_0", "res4_1", "res5_0", "res5_1")

PLACEMENTS = {
    "paper": {
        18: CPPlacement(_SIX_R18_POINTS, k=8, mlp_divisors=(4, 2)),
        34: CPPlacement(_R34_POINTS, k=12, mlp_divisors=(4, 2)),
        101: CPPlacement(_R101_POINTS, k=4, mlp_divisors=(16, 8)),
    },
    "released_code": {
        18: CPPlacement(_SIX_R18_POINTS[:4], k=8, mlp_divisors=(4, 2), shrink_res3=True),
        34: CPPlacement(_R34_POINTS, k=8, mlp_divisors=(4, 2), shrink_res3=True),
        101: CPPlacement(_R101_POINTS, k=4, mlp_divisors=(8,), bottleneck_divisor=8, shrink_res3=True),
    },
}


# The trunk options that reproduce the CPNet authors' TF1 graph:
# `tf_util.conv3d`'s SAME padding everywhere (the 224 model's 7x7/2 stem pads 2 before / 3 after, the 3x3/2 max pool
# 0 / 1) and `tf.contrib.layers.batch_norm`'s default epsilon. The CP modules' own epsilon (1e-3) and TF1 legacy
# bilinear resize are `CPModule`'s defaults.
TF1_LAYOUT = {"padding": "tf", "bn_epsilon": 1e-3}
_TF1_BLOCK_CONVS = {"0": "convshortcut", "1": "conv1", "2": "conv2"}
_TF1_SUFFIXES = {"kernel": "weights", "bias": "biases", "gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean",
                 "moving_variance": "moving_variance"}


def _tf1_scope(layer_name):
    """The TF1 scope of a trunk / head layer: conv1_conv -> conv0, conv3_block1_0_bn -> group1/block0/convshortcut/bn,
    predictions -> fc; None for a layer the authors' graph does not have."""
    if layer_name == "predictions":
        return "fc"
    match = re.fullmatch(r"conv1_(conv|bn)", layer_name)
    if match:
        return "conv0" + ("/bn" if match[1] == "bn" else "")
    match = re.fullmatch(r"conv(\d)_block(\d+)_([012])_(conv|bn)", layer_name)
    if match:
        scope = f"group{int(match[1]) - 2}/block{int(match[2]) - 1}/{_TF1_BLOCK_CONVS[match[3]]}"
        return scope + ("/bn" if match[4] == "bn" else "")
    return None


def _cp_module_scopes(layer):
    """(sub-layer, TF1 scope) of one CP module named `res{s}_{b}_insert`: its MLP convs `pointnet/conv{i}` (+ `/bn`),
    `pointnet/conv_final` and `pointnet/bn_final` (the authors' `cp_module` scopes)."""
    match = re.fullmatch(r"res(\d)_(\d+)_insert", layer.name)
    if match is None or layer.bottleneck:
        raise ValueError(f"The CP module {layer.name!r} has no counterpart in the CPNet authors' ResNet-34 graph "
                         f"(named res<stage>_<block>_insert, without a bottleneck)")
    scope = f"group{int(match[1]) - 2}/block{match[2]}/pointnet"
    subs = [(conv, f"{scope}/conv{i}") for i, conv in enumerate(layer.mlp_convs)]
    subs += [(bn, f"{scope}/conv{i}/bn") for i, bn in enumerate(layer.mlp_bns)]
    return subs + [(layer.final_conv, f"{scope}/conv_final"), (layer.final_bn, f"{scope}/bn_final")]


def tf1_variable_names(model):
    """Every weight of a CPNet built with `TF1_LAYOUT` paired with the authors' TF1 variable name.

    `conv1_conv` -> `conv0/{weights, biases}`, `conv1_bn` -> `conv0/bn/{gamma, beta, moving_mean, moving_variance}`,
    `conv{s}_block{b}_{1|2|0}_conv` -> `group{s-2}/block{b-1}/{conv1|conv2|convshortcut}` (its BN under `/bn`), the CP
    module at `res{s}_{b}` -> `group{s-2}/block{b}/pointnet/...`, `predictions` -> `fc`.

    Returns:
        list of `(keras_variable, checkpoint_name)`, one per model weight.

    Raises:
        ValueError: a layer the authors' graph does not have (naming it).
    """
    pairs = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, CPModule):
            subs = _cp_module_scopes(layer)
        else:
            scope = _tf1_scope(layer.name)
            if scope is None:
                raise ValueError(f"The layer {layer.name!r} of {model.name!r} has no counterpart in the CPNet "
                                 f"authors' TF1 graph")
            subs = [(layer, scope)]
        pairs += [(v, f"{scope}/{_TF1_SUFFIXES[v.name]}") for sub, scope in subs for v in sub.weights]
    missed = {id(v) for v in model.weights} - {id(v) for v, _ in pairs}
    if missed:
        raise ValueError(f"{len(missed)} weights of {model.name!r} have no TF1 name")
    return pairs


def load_tf1_checkpoint(model, prefix):
    """Loads one of the CPNet authors' TF1 checkpoints into `model` (a `cpnet_resnet34(variant="released_code")`
    built with `TF1_LAYOUT`; `cpnet_resnet34(..., weights=prefix)` does both).

    Args:
        model: the Keras CPNet.
        prefix: the checkpoint prefix, e.g. `.../log_jester_c2d_resnet34_cp_112_24_1_train/model-4.ckpt`; the
            optimizer's `*/Momentum` slots and the step counter `batch` are ignored.

    Returns:
        the number of variables assigned (308 for the published ResNet-34 checkpoints with the top of their class
        count; without a top, or with a top of another width (fine-tuning), `fc` stays unused and the classifier
        keeps its initial weights: 306).

    Raises:
        ValueError: a checkpoint that does not fit (one line naming the first variable and both shapes); the model
            is left as it was.
    """
    return tf_checkpoint.assign_checkpoint(tf1_variable_names(model), tf_checkpoint.read_checkpoint(prefix), prefix,
                                           optional=("fc/",))


def _cp_placement(depth, variant="paper"):
    """Returns the `CPPlacement` of a CPNet ResNet-`depth` in `variant` ("paper" or "released_code")."""
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, got variant={variant!r}")
    if depth not in PLACEMENTS[variant]:
        raise ValueError(f"CPNet is defined for depth {sorted(PLACEMENTS[variant])}, got depth={depth!r}")
    return PLACEMENTS[variant][depth]


def _cp_factory(placement, k, point, chunk_size, coordinate_scale=1.0):
    def factory(channels, name):
        return CPModule(
            k=k,
            mlp_units=[channels // d for d in placement.mlp_divisors],
            spatial_shrink=2 if placement.shrink_res3 and point.startswith("res3") else 1,
            bottleneck=channels // placement.bottleneck_divisor if placement.bottleneck_divisor else None,
            chunk_size=chunk_size,
            coordinate_scale=coordinate_scale,
            name=name,
        )

    return factory


def cpnet_resnet(depth, num_classes=400, input_shape=(8, 112, 112, 3), include_top=True, weights=None,
                 pooling="avg", dropout_rate=0.5, classifier_activation=None, variant="paper", k=None,
                 stem_stride=None, chunk_size=None, name=None, coordinate_scale=1.0):
    """Builds a CPNet: a C2D ResNet-`depth` with CP modules placed as `variant` says (see the module table).

    Args:
        depth: 18, 34 or 101.
        num_classes, input_shape, include_top, weights, pooling, dropout_rate, classifier_activation: as in
            `kerasvid.models.resnet_video.resnet_video` (keras.applications style). `input_shape` is
            `(T, H, W, C)` with static `T >= 2`; 112-pixel inputs get stem stride 1, 224-pixel inputs stride 2.
            `weights` may also be the prefix of one of the CPNet authors' TF1 checkpoints (variant
            "released_code"; see the module docstring and `load_tf1_checkpoint`).
        variant: "paper" (the supplement's placement, default) or "released_code" (the reference code's).
        k: overrides the number of correspondence proposals of every module.
        stem_stride: overrides the stem stride (1 or 2).
        chunk_size: query chunk size of the kNN (None: automatic, see `kerasvid.ops.cp_knn`).
        name: model name (default `cpnet_resnet{depth}`).
        coordinate_scale: `CPModule(coordinate_scale=...)` of every module (1 = the paper; the quickstart trains
            `cpnet_resnet18` from scratch with 10, so that the displacements count from the first steps).

    Returns:
        A `keras.Model` `[batch, T, H, W, C] -> [batch, num_classes]`.
    """
    placement = _cp_placement(depth, variant)
    if k is None:
        k = placement.k
    elif isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive integer or None, got k={k!r}")
    if input_shape[0] is None or input_shape[0] < 2:
        raise ValueError(f"CPNet needs a static number of frames >= 2 (correspondences link frames), got "
                         f"input_shape={tuple(input_shape)!r}")
    insertions = {p: _cp_factory(placement, k, p, chunk_size, coordinate_scale) for p in placement.points}
    tf1 = weights is not None and common.is_tf_checkpoint(weights)
    if tf1 and variant != "released_code":
        raise ValueError(f"The CPNet authors' TF1 checkpoints go with their released code: pass "
                         f"variant='released_code' (got variant={variant!r}) to load {str(weights)!r}")
    model = resnet_video(depth=depth, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                         weights=None if tf1 else weights, pooling=pooling, dropout_rate=dropout_rate,
                         classifier_activation=classifier_activation, stem_stride=stem_stride, insertions=insertions,
                         name=name or f"cpnet_resnet{depth}", **(TF1_LAYOUT if tf1 else {}))
    if tf1:
        load_tf1_checkpoint(model, weights)
    return model


# The three depths below repeat one keyword call on purpose (keras.applications' ResNet50/ResNet101 style): each is
# a public builder with its own defaults, docstring and registry figures, so `help()`, the zoo table and
# `get_model(name, **kwargs)` see a plain function; the body only forwards to `cpnet_resnet` by keyword.
@register_model(paper=_PAPER, default_input=(8, 112, 112, 3), num_params=12187280, gflops=41.795,
                recipe="zoo/cpnet_resnet18_kinetics.flags")
def cpnet_resnet18(num_classes=400, input_shape=(8, 112, 112, 3), include_top=True, weights=None,
                   pooling="avg", dropout_rate=0.5, classifier_activation=None, variant="paper", k=None,
                   stem_stride=None, chunk_size=None, coordinate_scale=1.0):
    """CPNet ResNet-18 (Kinetics ablations): 6 CP modules, k=8, MLP [C/4, C/2] ("released_code": 4, res3 shrunk).

    Example:
        >>> model = kerasvid.zoo.cpnet_resnet18(num_classes=400, input_shape=(8, 112, 112, 3))
    """
    return cpnet_resnet(depth=18, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, variant=variant, k=k, stem_stride=stem_stride,
                        chunk_size=chunk_size, coordinate_scale=coordinate_scale)


@register_model(paper=_PAPER, default_input=(8, 112, 112, 3), num_params=21783184, gflops=71.951,
                recipe="zoo/cpnet_resnet34_jester.flags")
def cpnet_resnet34(num_classes=400, input_shape=(8, 112, 112, 3), include_top=True, weights=None,
                   pooling="avg", dropout_rate=0.5, classifier_activation=None, variant="paper", k=None,
                   stem_stride=None, chunk_size=None, coordinate_scale=1.0):
    """CPNet ResNet-34 (Jester / Something-Something): 5 CP modules, k=12 ("released_code": k=8, res3 shrunk).

    Example:
        >>> model = kerasvid.zoo.cpnet_resnet34(num_classes=27, input_shape=(8, 112, 112, 3))
    """
    return cpnet_resnet(depth=34, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, variant=variant, k=k, stem_stride=stem_stride,
                        chunk_size=chunk_size, coordinate_scale=coordinate_scale)


@register_model(paper=_PAPER, default_input=(8, 224, 224, 3), num_params=44449040, gflops=168.044,
                recipe="zoo/cpnet_resnet101_kinetics.flags")
def cpnet_resnet101(num_classes=400, input_shape=(8, 224, 224, 3), include_top=True, weights=None,
                    pooling="avg", dropout_rate=0.5, classifier_activation=None, variant="paper", k=None,
                    stem_stride=None, chunk_size=None, coordinate_scale=1.0):
    """CPNet ResNet-101 (Kinetics): 5 CP modules, k=4, MLP [C/16, C/8] ("released_code": C/8 bottleneck + [C/8]).

    Example:
        >>> model = kerasvid.zoo.cpnet_resnet101(num_classes=400, input_shape=(8, 224, 224, 3))
    """
    return cpnet_resnet(depth=101, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, variant=variant, k=k, stem_stride=stem_stride,
                        chunk_size=chunk_size, coordinate_scale=coordinate_scale)


_NL_R18_POINTS = _SIX_R18_POINTS


@register_model(paper=_NL_PAPER, default_input=(8, 112, 112, 3), num_params=12784016, gflops=54.933,
                recipe="zoo/nl_resnet18_kinetics.flags")
def nl_resnet18(num_classes=400, input_shape=(8, 112, 112, 3), include_top=True, weights=None, pooling="avg",
                dropout_rate=0.5, classifier_activation=None, subsample=False, stem_stride=None):
    """NL C2D ResNet-18: embedded-Gaussian non-local blocks at the 6 places of the paper's CPNet-R18.

    Args:
        subsample: max-pool phi and g 2x2 in space inside every block (Wang et al. §3.3); off by default.
        (others as `cpnet_resnet18`).

    Example:
        >>> model = kerasvid.zoo.nl_resnet18(num_classes=400, input_shape=(8, 112, 112, 3))
    """
    insertions = {p: (lambda channels, name: NonLocalBlock(subsample=subsample, name=name)) for p in _NL_R18_POINTS}
    return resnet_video(depth=18, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                        weights=weights, pooling=pooling, dropout_rate=dropout_rate,
                        classifier_activation=classifier_activation, stem_stride=stem_stride, insertions=insertions,
                        name="nl_resnet18")


# ----- Correspondence proposals of a trained CPNet ---------------------------------------------------------------
def cp_modules(model):
    """The `kerasvid.layers.CPModule` layers of a Keras model, in layer order (nested models included)."""
    return find_layers(model, CPModule)


def correspondence_proposals(model, clip, layer_name=None, query=None):
    """The correspondence proposals of one CP module of a CPNet for one clip: a query point and its k neighbours.

    Runs the model up to the input `x` of the CP module `layer_name` (a sub-model, inference mode), forms the
    points the module proposes correspondences among (its bottleneck and 2x shrink, when it has them) and takes
    their k nearest neighbours in the other frames with `kerasvid.ops.cp_knn`, exactly as the module does
    (Liu, Lee, Jin, CVPR 2019, supp. §B). Grid point `(t, i, j)` of a `T' x h x w` grid samples position
    `(i H' / h, j W' / w)` of the module's `H' x W'` input (itself unless the module shrinks: TF1 bilinear, so a
    2x shrink takes every second position), shown at the centre of that position's cell in the clip of `H x W`
    pixels: frame `t T // T'`, pixel `((i H' / h + 1/2) H / H' - 1/2, (j W' / w + 1/2) W / W' - 1/2)`.

    Args:
        model: a Keras model with at least one `CPModule` in its own graph (e.g. `kerasvid.zoo.cpnet_resnet18`).
        clip: one model input `[T, H, W, C]` (preprocessed as for the model) or a batch of one.
        layer_name: the CP module's name (`model.get_layer(name)`); None: the first one (`cp_modules(model)[0]`).
        query: `(frame, y, x)` in clip pixels, mapped to the grid cell that contains it; None: in the middle grid
            frame, the most distinctive point (its feature farthest from the frame's mean feature: on a moving
            object over a plain background, a point of the object).

    Returns:
        dict with "layer" (name), "k", "grid" `(T', h, w)`, "query" and "neighbours" (grid `(t, i, j)`, int, `[3]`
        and `[k, 3]`, nearest first), "query_index" / "neighbour_indices" (flat frame-major point indices, the
        `cp_knn` row of the query), "query_pixel" / "neighbour_pixels" (`(frame, y, x)` floats in the clip); draw
        it with `kerasvid.viz.draw_correspondences`.

    Example:
        model = kerasvid.zoo.cpnet_resnet18(num_classes=2, input_shape=(4, 64, 64, 3))
        proposals = correspondence_proposals(model, clip, "res3_0_insert", query=(1, 30, 20))
    """
    import keras
    import tensorflow as tf

    modules = cp_modules(model)
    if not modules:
        raise ValueError(f"model {model.name!r} has no CPModule layer")
    if layer_name is None:
        layer = modules[0]
    else:
        layer = next((m for m in modules if m.name == layer_name), None)
        if layer is None:
            raise ValueError(f"`layer_name`={layer_name!r} is not a CPModule of model {model.name!r}; its CP modules: "
                             f"{', '.join(m.name for m in modules)}")
    clip = np.asarray(clip, np.float32)
    if clip.ndim == 5 and clip.shape[0] == 1:
        clip = clip[0]
    if clip.ndim != 4:
        raise ValueError(f"`clip` must be one clip [T, H, W, C] or a batch of one, got shape {clip.shape}")
    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        probe = keras.Model(inputs, layer.input)
    except (ValueError, AttributeError) as e:
        raise ValueError(f"CPModule {layer.name!r} is not in the graph of model {model.name!r} itself (a nested "
                         f"model?): {e}") from None
    x = np.asarray(probe(clip[None], training=False))
    frames, height, width = x.shape[1:4]
    f = tf.constant(x)
    if layer.bottleneck:
        f = layer.bottleneck_bn(layer.bottleneck_conv(f), training=False)
    if layer.spatial_shrink > 1:  # the module's own shrink (TF1 bilinear: a 2x shrink subsamples)
        small = (height // layer.spatial_shrink, width // layer.spatial_shrink)
        f = tf.reshape(tf1_resize_bilinear(tf.reshape(f, [frames, height, width, -1]), small),
                       [1, frames, *small, -1])
    grid = tuple(int(v) for v in f.shape[1:4])
    points = tf.reshape(f, [1, int(np.prod(grid)), -1])
    knn = cp_knn(points, frames, layer.k, chunk_size=layer.chunk_size).numpy()[0]  # [N, k]

    clip_frames, clip_h, clip_w = clip.shape[:3]
    if query is None:  # the most distinctive point of the middle frame (a moving object stands out of its frame)
        middle = np.asarray(points).reshape(grid + (-1,))[grid[0] // 2]
        distinct = np.linalg.norm(middle - middle.mean(axis=(0, 1)), axis=-1)
        cell = (grid[0] // 2, *np.unravel_index(np.argmax(distinct), distinct.shape))
    else:
        if len(query) != 3:
            raise ValueError(f"`query` must be (frame, y, x) in clip pixels, got query={query!r}")
        t, qy, qx = query
        if not (0 <= t < clip_frames and 0 <= qy < clip_h and 0 <= qx < clip_w):
            raise ValueError(f"`query`={tuple(query)!r} is outside the clip of {clip_frames} frames of "
                             f"{clip_h}x{clip_w} pixels")
        cell = (int(t) * grid[0] // clip_frames, int(qy * grid[1] // clip_h), int(qx * grid[2] // clip_w))
    query_index = int(np.ravel_multi_index(cell, grid))
    neighbour_indices = knn[query_index].astype(int)
    neighbours = np.stack(np.unravel_index(neighbour_indices, grid), axis=-1)

    def to_pixels(cells):  # grid cell -> the module input's position it samples -> that position's pixel centre
        cells = np.asarray(cells, np.float64)
        y, x = cells[..., 1] * height / grid[1], cells[..., 2] * width / grid[2]
        return np.stack([cells[..., 0] * clip_frames // grid[0], (y + 0.5) * clip_h / height - 0.5,
                         (x + 0.5) * clip_w / width - 0.5], axis=-1)

    return {"layer": layer.name, "k": int(layer.k), "grid": grid, "query": np.array(cell),
            "neighbours": neighbours, "query_index": query_index, "neighbour_indices": neighbour_indices,
            "query_pixel": to_pixels(cell), "neighbour_pixels": to_pixels(neighbours)}


@register_pictures(CPModule)
def correspondence_picture(model, clip, frames, scale=4):
    """The CPNet pictures of `kerasvid.zoo.model_pictures`: `{"correspondences": uint8 image}`, one row per CP module
    (in network order): a query point and its k correspondence proposals in the other frames
    (`correspondence_proposals` with its default query, drawn by `kerasvid.viz.draw_correspondences` with `scale`),
    the module's name and grid written above the row.

    Args:
        model: a Keras model with CP modules in its own graph.
        clip: one model input `[T, H, W, C]` or a batch of one.
        frames: the same clip as a person sees it, uint8 `[T, H, W, 3]`.
        scale: enlargement of the frames.

    Returns:
        `{"correspondences": uint8 [rows * (caption + H scale), T W scale + (T - 1) gap, 3]}`.
    """
    rows = []
    for layer in cp_modules(model):
        proposals = correspondence_proposals(model, clip, layer.name)
        drawing = viz.draw_correspondences(frames, proposals, scale=scale)
        caption = np.zeros((viz.GLYPH_HEIGHT + 6, drawing.shape[1], 3), np.uint8)
        grid = "x".join(str(v) for v in proposals["grid"])
        viz.draw_text(caption, f"{layer.name} ({grid}): query (yellow), its k={proposals['k']} proposals (cyan)",
                      3, 2, (255, 255, 255))
        rows += [caption, drawing]
    return {"correspondences": np.concatenate(rows)}
