"""Every weight is its own random draw: no two initial weights of a model or a paper layer are proportional.

Keras 3 repeats an unseeded initializer instance's draw on every call, so one instance shared by two weights gives
them the same values (proportional ones when the shapes differ). Each registered model is built at a small input
(weight shapes do not depend on the spatial size) and every pair of non-constant weights is compared on its leading
values. Weights that are deterministic (the same under two global seeds, e.g. TVNet's finite-difference stencils,
which start as the TV-L1 kernels by design) are not draws and are left out.
"""
import keras
import numpy as np
import pytest

from kerasvid import layers, zoo
from kerasvid.layers.initializers import weight_initializer
from tests.conftest import large_models

LEADING = 64  # values compared per weight
THRESHOLD = 0.999  # |correlation| at or above which two weights count as one draw


def small_input(name):
    """The smallest-cost input a model builds at: few frames, 32x32 (64x64 for the stride-32 image trunks)."""
    default = zoo.model_info(name).default_input
    if len(default) == 3:
        return (64, 64, default[-1])
    return (min(default[0], 4), 32, 32, default[-1])


def proportional_pairs(weights):
    """Pairs `(path_a, path_b, corr)` of non-constant weights whose leading values have |corr| >= THRESHOLD.

    Two weights are compared on their first min(LEADING, size_a, size_b) flattened values (a shared seed repeats
    the leading values of a draw whatever the shapes, scaled by the initializer's fan).
    """
    rows = []
    for w in weights:
        value = np.asarray(w, np.float64).reshape(-1)
        if value.size >= 4 and np.ptp(value) > 0:
            rows.append((w.path, value[:LEADING]))
    pairs = []
    for i, (path_a, a) in enumerate(rows):
        for path_b, b in rows[i + 1:]:
            n = min(a.size, b.size)
            x, y = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
            denom = np.sqrt((x * x).sum() * (y * y).sum())
            corr = float((x * y).sum() / denom) if denom > 0 else 0.0
            if abs(corr) >= THRESHOLD:
                pairs.append((path_a, path_b, round(corr, 5)))
    return pairs


def drawn_pairs(build):
    """`proportional_pairs` of `build()`'s weights, without the weights that do not depend on the global seed."""
    keras.utils.set_random_seed(0)
    first = build()
    pairs = proportional_pairs(first.weights)
    if pairs:  # rebuild under another seed only when there is something to explain
        keras.utils.set_random_seed(1)
        fixed = {a.path for a, b in zip(first.weights, build().weights)
                 if np.array_equal(np.asarray(a), np.asarray(b))}
        pairs = [p for p in pairs if p[0] not in fixed and p[1] not in fixed]
    return pairs


@pytest.mark.parametrize("name", large_models(zoo.list_models()))
def test_registered_model_weights_are_independent_draws(name):
    shape = small_input(name)
    pairs = drawn_pairs(lambda: zoo.get_model(name, num_classes=5, input_shape=shape))
    assert not pairs, f"{name}: {len(pairs)} weight pairs share one initial draw, e.g. {pairs[:3]}"


def _built(layer, shape):
    layer.build(shape)
    return layer


PAPER_LAYERS = {
    "CPModule": lambda: _built(layers.CPModule(k=2, mlp_units=(4, 6)), (None, 3, 4, 4, 8)),
    "CPModule_bottleneck_shrink": lambda: _built(layers.CPModule(k=2, bottleneck=4, spatial_shrink=2),
                                                 (None, 3, 4, 4, 16)),
    "NonLocalBlock": lambda: _built(layers.NonLocalBlock(), (None, 2, 4, 4, 8)),
    "ActionContextAttention": lambda: _built(
        layers.ActionContextAttention(num_classes=6, attention_initializer="glorot_uniform"), (None, 2, 3, 3, 16)),
    "ActionContextAttention_per_class": lambda: _built(
        layers.ActionContextAttention(num_classes=6, per_class=True, attention_initializer="he_normal"),
        (None, 3, 3, 16)),
    "TVNet": lambda: _built(layers.TVNet(scales=1, warps=1, iterations=2), (None, 16, 16, 3)),
    "TVNetBlock": lambda: _built(layers.TVNetBlock(), (None, 8, 8, 2)),
    "VideoSoftmax": lambda: _built(layers.VideoSoftmax(num_videos=3), (None,)),
    "FrameConv2D": lambda: _built(layers.FrameConv2D(4, 3, bias_initializer="random_normal"), (None, 2, 8, 8, 16)),
}


# Public layers with no two random weights to compare, and why (a new public layer must go in one of the two tables).
NO_RANDOM_WEIGHT_PAIRS = {
    "FrameAveragePooling2D": "no weights",
    "FrameMaxPooling2D": "no weights",
    "FusedBatchNormalization": "constant-initialised gamma, beta and statistics",
    "I3DFlowInput": "no weights (rescales a flow clip)",
    "PairwiseDistance": "no weights",
    "ScoreFusion": "no weights (averages stream scores)",
    "SelectorScale": "one constant-initialised scalar",
    "StackFlows": "no weights (stacks flow fields)",
}


def test_every_public_layer_is_covered():
    public = {name for name in layers.__all__
              if isinstance(getattr(layers, name), type) and issubclass(getattr(layers, name), keras.layers.Layer)}
    covered = {name.split("_")[0] for name in PAPER_LAYERS} | set(NO_RANDOM_WEIGHT_PAIRS)
    assert public <= covered, f"public layers not checked for independent draws: {sorted(public - covered)}"
    assert not set(NO_RANDOM_WEIGHT_PAIRS) - public, "NO_RANDOM_WEIGHT_PAIRS names a layer that is not public"


@pytest.mark.parametrize("name", sorted(PAPER_LAYERS))
def test_paper_layer_weights_are_independent_draws(name):
    pairs = drawn_pairs(PAPER_LAYERS[name])
    assert not pairs, f"{name}: {len(pairs)} weight pairs share one initial draw: {pairs[:3]}"


def test_global_seed_reproduces_the_draws():
    def kernels(seed):
        keras.utils.set_random_seed(seed)
        return [np.asarray(w) for w in PAPER_LAYERS["CPModule"]().weights if "kernel" in w.path]

    a, b, c = kernels(3), kernels(3), kernels(4)
    assert len(a) == 3
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)  # same global seed: same weights
        assert not np.allclose(x, z)  # another seed: other weights


def test_seeded_initializer_gives_each_weight_its_own_reproducible_draw():
    def kernels():
        head = layers.ActionContextAttention(num_classes=4, kernel_initializer=keras.initializers.GlorotUniform(7))
        head.build((None, 5, 5, 8))
        return np.asarray(head.action_kernel), np.asarray(head.context_kernel)

    (a1, c1), (a2, c2) = kernels(), kernels()
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(c1, c2)
    assert abs(np.corrcoef(a1.ravel(), c1.ravel())[0, 1]) < 0.5


def test_weight_initializer_copies_only_integer_seeded_initializers():
    base = keras.initializers.HeNormal(seed=5)
    one, two = weight_initializer(base, "theta"), weight_initializer(base, "phi")
    assert isinstance(one, keras.initializers.HeNormal) and one.seed != two.seed and one.seed != base.seed
    assert weight_initializer(base, "theta").seed == one.seed  # a function of (seed, name) only
    np.testing.assert_array_equal(np.asarray(one((3, 4))), np.asarray(weight_initializer(base, "theta")((3, 4))))
    zeros = keras.initializers.Zeros()
    assert weight_initializer(zeros, "theta") is zeros
    generator = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(1))
    assert weight_initializer(generator, "theta") is generator  # a generator advances per call already
