"""CPModule against a numpy re-implementation of the module (kerasvid.layers.cp_module)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasvid.layers.cp_module as cp_module_file
from kerasvid.layers._blocks import fused_batch_norm
from kerasvid.layers.cp_module import CPModule, point_coordinates, tf1_resize_bilinear
from kerasvid.ops.knn import cp_knn
from tests.helpers import all_graph_shapes, check_layer, np_batch_norm, np_dense, randomize


def np_resize_bilinear(x, out_h, out_w):
    """Bilinear resize of `[..., H, W, C]` as TF1 `resize_images` (align_corners=False, no half-pixel centres):
    output pixel i samples input position i * n_in / n_out, the upper neighbour clamped to the edge."""
    def axis_weights(n_in, n_out):
        src = np.arange(n_out) * n_in / n_out
        lo = np.floor(src)
        frac = src - lo
        return lo.astype(int), np.minimum(lo + 1, n_in - 1).astype(int), frac

    h0, h1, fh = axis_weights(x.shape[-3], out_h)
    w0, w1, fw = axis_weights(x.shape[-2], out_w)
    rows = x[..., h0, :, :] * (1 - fh)[:, None, None] + x[..., h1, :, :] * fh[:, None, None]
    return rows[..., w0, :] * (1 - fw)[:, None] + rows[..., w1, :] * fw[:, None]


def np_cp_module(x, layer, training=False):
    """The module step by step as the CPNet released code computes it, with explicit [c_j - c_i, f_i, f_j] pairs."""
    x = x.astype(np.float64)
    batch, frames, height, width, channels = x.shape
    s = layer.spatial_shrink
    f = x
    if layer.bottleneck:
        f = np_batch_norm(np_dense(f, layer.bottleneck_conv), layer.bottleneck_bn, training)
    if s > 1:
        f = np_resize_bilinear(f, height // s, width // s)
    hs, ws = f.shape[2:4]
    per_frame = hs * ws
    n = frames * per_frame
    pts = f.reshape(batch, n, -1)
    coords = np.stack(np.meshgrid(np.arange(frames) / frames, np.arange(hs) / hs, np.arange(ws) / ws,
                                  indexing="ij"), -1).reshape(n, 3)
    same_frame = (np.arange(n)[:, None] // per_frame) == (np.arange(n)[None] // per_frame)
    pairs = np.zeros((batch, n, layer.k, 2 * pts.shape[-1] + 3))
    for b in range(batch):
        d = np.sum((pts[b][:, None] - pts[b][None]) ** 2, axis=-1)
        d[same_frame] = np.inf
        nbr = np.argsort(d, axis=1, kind="stable")[:, :layer.k]
        for i in range(n):
            for m, j in enumerate(nbr[i]):
                pairs[b, i, m] = np.concatenate([coords[j] - coords[i], pts[b, i], pts[b, j]])
    h = pairs
    for conv, bn in zip(layer.mlp_convs, layer.mlp_bns):
        h = np.maximum(np_batch_norm(np_dense(h, conv), bn, training), 0.0)
    h = h.max(axis=2)
    g = np_batch_norm(np_dense(h, layer.final_conv), layer.final_bn, training)
    g = g.reshape(batch, frames, hs, ws, channels)
    if s > 1:
        g = np_resize_bilinear(g, height, width)
    return x + g


CONFIGS = [
    dict(k=3),
    dict(k=4, mlp_units=(3, 5, 2), spatial_shrink=2, bottleneck=4),
    dict(k=2, spatial_shrink=2, chunk_size=3),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("training", [False, True])
def test_identity_at_initialisation(config, training):
    x = np.random.RandomState(1).randn(2, 3, 4, 6, 8).astype(np.float32)
    out = CPModule(**config)(x, training=training).numpy()
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("training", [False, True])
def test_matches_numpy_reference(config, training):
    x = np.random.RandomState(2).randn(2, 3, 4, 6, 8).astype(np.float32)
    layer = CPModule(**config)
    layer.build(x.shape)
    randomize(layer)
    got = layer(x, training=training).numpy()
    want = np_cp_module(x, layer, training=training)
    assert np.abs(want - x).max() > 0.1  # the module does change the input
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def concat_form(layer, x, training):
    """The module in TF as the paper writes it: the explicit `[B, N, k, 2C' + 3]` tensor `[c_j - c_i, f_i, f_j]`
    through every MLP layer and `reduce_max` over k (the form before the first layer was split per point and the
    gather got its scatter gradient), with the layer's own weights."""
    frames, height, width, channels, small_h, small_w, feat = layer._dims
    batch = x.shape[0]
    pts = layer._points(x, training)  # bottleneck and shrink: as the module (the numpy reference checks them)
    n = pts.shape[1]
    nbr = cp_knn(pts, frames, layer.k, chunk_size=layer.chunk_size)
    coords = tf.constant(layer._coords)
    queries = tf.broadcast_to(pts[:, :, None], [batch, n, layer.k, feat])
    h = tf.concat([tf.gather(coords, nbr) - coords[:, None], queries, tf.gather(pts, nbr, batch_dims=1)], axis=-1)
    for conv, bn in zip(layer.mlp_convs, layer.mlp_bns):
        h = tf.nn.relu(fused_batch_norm(bn, conv(h), training))
    g = fused_batch_norm(layer.final_bn, layer.final_conv(tf.reduce_max(h, axis=2)), training)
    g = tf.reshape(g, [batch, frames, small_h, small_w, channels])
    if layer.spatial_shrink > 1:
        g = layer._resize(g, (height, width), batch)
    return x + g


@pytest.mark.parametrize("config", CONFIGS[:2])
@pytest.mark.parametrize("training", [False, True])
def test_split_first_layer_matches_concat_form_outputs_and_gradients(config, training):
    # The per-point split of the first MLP layer, the scatter gradient of the gather and the max-pool over k give
    # the concatenated form's outputs and gradients (input and every weight) up to float32 rounding.
    rng = np.random.RandomState(8)
    x = tf.constant(rng.randn(2, 3, 4, 6, 8).astype(np.float32))
    layer = CPModule(**config)
    layer.build(x.shape)
    randomize(layer, seed=9)
    out_weights = tf.constant(rng.randn(*x.shape).astype(np.float32))
    results = []
    for fn in (lambda t: layer(t, training=training), lambda t: concat_form(layer, t, training)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * out_weights)
        results.append([y] + tape.gradient(loss, [x] + layer.trainable_weights))
    names = ["output", "d/dx"] + [w.path for w in layer.trainable_weights]
    scale = max(np.abs(g.numpy()).max() for g in results[1][1:])
    for name, got, want in zip(names, *results):
        got, want = got.numpy(), want.numpy()
        if training and name.endswith(("conv/bias", "bottleneck_bn/beta")):
            # a per-channel shift that a BN in training mode removes again: zero gradient in exact arithmetic
            assert np.abs(got).max() < 1e-5 * scale and np.abs(want).max() < 1e-5 * scale, name
            continue
        if name != "output":
            assert np.abs(want).max() > 1e-3, name  # every gradient is exercised
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)


def test_default_mlp_widths_and_parameter_count():
    layer = CPModule(k=2)
    layer.build((None, 2, 3, 3, 64))
    c = 64
    # MLP (2C + 3 -> C/4 -> C/2), final conv back to C; each conv has a bias, each BN 4 vectors.
    expected = ((2 * c + 3) * 16 + 16 + 4 * 16) + (16 * 32 + 32 + 4 * 32) + (32 * c + c + 4 * c)
    assert layer.count_params() == expected
    assert [d.units for d in layer.mlp_convs] == [16, 32]
    bottleneck = CPModule(k=2, bottleneck=8, mlp_units=[8])
    bottleneck.build((None, 2, 3, 3, 64))
    assert bottleneck.count_params() == (64 * 8 + 8 + 32) + (19 * 8 + 8 + 32) + (8 * 64 + 64 + 256)


@pytest.mark.large
def test_gradient_finite_differences():
    x = np.random.RandomState(3).randn(1, 2, 2, 3, 4)
    layer = CPModule(k=2, mlp_units=(3, 4), dtype="float64")
    layer.build(x.shape)
    randomize(layer, seed=4)
    theoretical, numerical = tf.test.compute_gradient(lambda t: layer(t, training=False), [tf.constant(x)],
                                                      delta=1e-6)
    assert np.abs(theoretical[0]).max() > 0.1
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_mlp():
    x = tf.constant(np.random.RandomState(5).randn(2, 3, 3, 3, 8).astype(np.float32))
    layer = CPModule(k=3)
    layer.build(x.shape)

    def grads():
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(tf.square(layer(x, training=True)))
        return {w.path: g for w, g in zip(layer.trainable_weights,
                                          tape.gradient(y, layer.trainable_weights))}

    at_init = grads()
    # gamma = 0: only the final BN learns at the first step (the module starts as the identity) ...
    assert np.abs(at_init[layer.final_bn.gamma.path].numpy()).max() > 0
    assert all(np.all(g.numpy() == 0) for p, g in at_init.items() if "final_bn" not in p)
    layer.final_bn.gamma.assign(np.ones(8, np.float32))
    # ... and once gamma moves, every weight of the MLP receives a gradient, except the biases of the 1x1 convs:
    # a BN with batch statistics removes a per-channel shift again, so their gradient is zero (exactly, not None).
    for path, g in grads().items():
        assert g is not None, path
        if path.endswith("conv/bias"):
            assert np.all(g.numpy() == 0), path
        else:
            assert np.abs(g.numpy()).max() > 0, path


def test_permutation_equivariance_within_frames():
    # With the coordinate weights zeroed the module sees the points of a frame as a set: permuting the pixels
    # of each frame (a different permutation per frame) permutes the output the same way.
    rng = np.random.RandomState(6)
    x = rng.randn(1, 3, 3, 4, 8).astype(np.float32)
    layer = CPModule(k=4, bottleneck=6)
    layer.build(x.shape)
    randomize(layer, seed=7)
    kernel = layer.mlp_convs[0].kernel.numpy()
    kernel[:3] = 0.0
    layer.mlp_convs[0].kernel.assign(kernel)
    flat = x.reshape(1, 3, 12, 8)
    perms = [rng.permutation(12) for _ in range(3)]
    permuted = np.stack([flat[:, t, perms[t]] for t in range(3)], axis=1).reshape(x.shape)
    out = layer(x).numpy().reshape(1, 3, 12, 8)
    out_permuted = layer(permuted).numpy().reshape(1, 3, 12, 8)
    for t in range(3):
        np.testing.assert_allclose(out_permuted[:, t], out[:, t, perms[t]], rtol=1e-5, atol=1e-5)


def test_shrink_subsamples_and_expansion_follows_tf1_resize_images(monkeypatch):
    # The released code's res3 shrink: TF1 resize_images (no half-pixel centres) = every other pixel for 2x.
    x = np.random.default_rng(0).normal(size=(3, 6, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(tf1_resize_bilinear(x, (3, 4)).numpy(), x[:, ::2, ::2])
    # Back to 6 x 8: x[i] at 2i, the mean of x[i] and x[i + 1] at 2i + 1, the last row / column repeated.
    small = x[:, ::2, ::2]
    rows = np.repeat(small, 2, axis=1)
    rows[:, 1:-1:2] = (small[:, :-1] + small[:, 1:]) / 2
    expected = np.repeat(rows, 2, axis=2)
    expected[:, :, 1:-1:2] = (rows[:, :, :-1] + rows[:, :, 1:]) / 2
    np.testing.assert_allclose(tf1_resize_bilinear(small, (6, 8)).numpy(), expected, rtol=1e-6, atol=1e-6)
    # Inside CPModule: the points it proposes correspondences on are the subsampled map.
    layer = CPModule(k=2, spatial_shrink=2)
    clip = np.random.default_rng(1).normal(size=(1, 2, 4, 6, 8)).astype(np.float32)
    seen = {}
    real_knn = cp_module_file.cp_knn

    def spy(points, *args, **kwargs):
        seen["points"] = np.asarray(points)
        return real_knn(points, *args, **kwargs)

    monkeypatch.setattr(cp_module_file, "cp_knn", spy)
    layer(clip)
    np.testing.assert_array_equal(seen["points"], clip[:, :, ::2, ::2].reshape(1, 2 * 2 * 3, 8))


def test_coordinates():
    c = point_coordinates(2, 2, 4)
    assert c.shape == (16, 3)
    np.testing.assert_allclose(c[0], [0, 0, 0])
    np.testing.assert_allclose(c[5], [0, 0.5, 0.25])  # t=0, h=1, w=1
    np.testing.assert_allclose(c[15], [0.5, 0.5, 0.75])


def test_training_step_keeps_no_n_by_n_tensor():
    layer = CPModule(k=2, chunk_size=4)
    shape = (1, 3, 4, 4, 8)
    n = 3 * 4 * 4
    layer.build(shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(loss, layer.trainable_weights)

    shapes = all_graph_shapes(step.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph)
    assert (1, 4, n) in shapes
    assert not [s for s in shapes if sum(d == n for d in s) >= 2]


def test_check_layer():
    # Config and .keras round trips, dtype policies, gradients; the outputs against the numpy reference.
    check_layer(CPModule, dict(k=3, mlp_units=[4, 6], spatial_shrink=2, bottleneck=4, chunk_size=5, epsilon=1e-4,
                               momentum=0.9, name="cp"),
                input_shape=(2, 3, 4, 4, 8), expected_output_shape=(2, 3, 4, 4, 8),
                expected_output=lambda layer, x: np_cp_module(x, layer), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kwargs,shape,match", [
    (dict(k=2), (1, 1, 4, 4, 8), "at least 2 frames"),
    (dict(k=17), (1, 2, 4, 4, 8), "k=17 with 16 candidates"),
    (dict(k=5, spatial_shrink=2), (1, 2, 4, 4, 8), "k=5 with 4 candidates"),
    (dict(k=2), (1, 4, 4, 8), "rank-5 input"),
])
def test_shape_errors(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        CPModule(**kwargs).build(shape)


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=0), "`k` must be a positive integer"),
    (dict(spatial_shrink=3), "`spatial_shrink` must be 1 or 2"),
    (dict(mlp_units=[]), "`mlp_units` must be None or a non-empty list"),
    (dict(mlp_units=[4, 0]), "mlp_units entry"),
    (dict(bottleneck=0), "`bottleneck` must be a positive integer or None"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CPModule(**kwargs)


@pytest.mark.parametrize("rank,shifted", [(3, False), (4, False), (5, False), (4, True)])
@pytest.mark.parametrize("training,trainable", [(True, True), (True, False), (False, True)])
def test_fused_batch_norm_matches_keras_batch_norm(rank, shifted, training, trainable):
    # Same outputs, gradients and moving-statistics update as the Keras layer it stands in for; with `shift=b`, as
    # the Keras layer on x + b (b's gradient included: exactly zero with batch statistics, zero in exact arithmetic).
    rng = np.random.RandomState(rank)
    x = tf.constant((rng.randn(*(2, 5, 3, 4)[:rank - 1], 6) * 3 + 1).astype(np.float32))
    layers = []
    for _ in range(2):
        bn = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.9)
        bn.build(x.shape)
        bn.set_weights([rng.uniform(-1.5, 1.5, 6), rng.randn(6), rng.randn(6), rng.uniform(0.5, 2, 6)]
                       if not layers else layers[0].get_weights())
        bn.trainable = trainable
        layers.append(bn)
    shift = tf.Variable(np.linspace(-4, 5, 6).astype(np.float32) if shifted else np.zeros(6, np.float32))
    before = [w.copy() for w in layers[0].get_weights()[2:]]
    results = []
    for fn, bn in ((lambda t: layers[0](t + shift if shifted else t, training=training), layers[0]),
                   (lambda t: fused_batch_norm(layers[1], t, training, shift=shift if shifted else None), layers[1])):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads = tape.gradient(loss, [x, bn.gamma, bn.beta, shift])
        results.append([y] + [g if g is not None else tf.zeros_like(bn.gamma) for g in grads]
                       + [bn.moving_mean, bn.moving_variance])
    for i, (got, want) in enumerate(zip(results[1], results[0])):
        if i == 4 and shifted and training and trainable:  # d/d shift with batch statistics
            assert np.all(got.numpy() == 0) and np.abs(want.numpy()).max() < 1e-4
            continue
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)
    if shifted and not (training and trainable):
        assert np.abs(results[1][4].numpy()).max() > 1  # the shift's gradient is real with the moving statistics
    moved = not np.allclose(layers[1].get_weights()[2:], before)
    assert moved == (training and trainable)  # only a training call of a trainable layer updates the statistics


def test_coordinate_scale_multiplies_the_coordinate_rows_of_the_first_mlp_layer():
    # coordinate_scale=s gives the numbers of the paper's module whose coordinate kernel rows are s times larger.
    x = np.random.RandomState(3).randn(2, 3, 4, 4, 8).astype(np.float32)
    scaled, plain = CPModule(k=3, coordinate_scale=10.0), CPModule(k=3)
    scaled(x), plain(x)
    weights = [w.copy() for w in scaled.get_weights()]
    for w in weights:
        if w.shape == (2 * 8 + 3, 2):  # the first MLP kernel: rows [coordinates, f_i, f_j]
            w[:3] *= 10.0
    plain.set_weights(weights)
    for layer in (scaled, plain):
        layer.final_bn.gamma.assign(np.ones(8, np.float32))  # not the identity any more
    np.testing.assert_allclose(scaled(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(scaled(x).numpy(), x)
    assert CPModule.from_config(scaled.get_config()).coordinate_scale == 10.0
    with pytest.raises(ValueError, match="coordinate_scale=0"):
        CPModule(coordinate_scale=0)
