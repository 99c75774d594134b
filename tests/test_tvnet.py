"""Tests of kerasvid.layers.TVNet / TVNetBlock: the authors' golden flow, the custom gradient, edge cases, saving."""
import os

import keras
import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from PIL import Image

import kerasvid.layers.tvnet as tvnet_module
from kerasvid.layers.tvnet import TVNet, TVNetBlock, pyramid_sizes, tv_dual_update
from tests.helpers import check_layer, check_loss

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tvnet")


def _read_rgb(name):
    return np.asarray(Image.open(os.path.join(FIXTURES, name)).convert("RGB"), np.float32)[None]


def _smooth_pair(height, width, shift=(0.0, 0.0), seed=0, batch=1):
    """A smooth random texture and the same texture translated by `shift` = (dx, dy) pixels (frame2(x+u)=frame1)."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.1, 0.45, (6, 2))
    phases = rng.uniform(0, 2 * np.pi, 6)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)

    def texture(dx, dy):
        value = sum(np.sin(f[0] * (xx - dx) + f[1] * (yy - dy) + p) for f, p in zip(freqs, phases))
        return np.repeat((127.5 + 20 * value)[None, :, :, None], 3, axis=-1)

    return (np.repeat(texture(0, 0), batch, 0).astype(np.float32),
            np.repeat(texture(*shift), batch, 0).astype(np.float32))


def test_tvnet50_reproduces_released_flow():
    """1 scale, 1 warp, 50 iterations, untrained: the authors' result.mat (their demo read the PNGs as BGR)."""
    reference = scipy.io.loadmat(os.path.join(FIXTURES, "result.mat"))["flow"]
    flow = TVNet(scales=1, warps=1, iterations=50, channel_order="rgb")(_read_rgb("img1.png"),
                                                                      _read_rgb("img2.png")).numpy()[0]
    epe = np.sqrt(np.sum((flow - reference) ** 2, axis=-1))
    assert flow.shape == (240, 240, 2)
    assert epe.mean() < 1e-4, epe.mean()
    assert epe.max() < 1e-3, epe.max()


@pytest.mark.large
def test_channel_order_gives_identical_flow():
    frame1, frame2 = _smooth_pair(16, 16, shift=(0.5, 0.25))
    frame1[..., 0] += 40.0  # make the channels differ
    frame2[..., 0] += 40.0
    rgb = TVNet(iterations=5, channel_order="rgb")(frame1, frame2).numpy()
    bgr = TVNet(iterations=5, channel_order="bgr")(frame1[..., ::-1].copy(), frame2[..., ::-1].copy()).numpy()
    np.testing.assert_array_equal(rgb, bgr)
    swapped = TVNet(iterations=5, channel_order="bgr")(frame1, frame2).numpy()
    assert np.abs(swapped - rgb).max() > 1e-3  # the luma weights do depend on the order


def _plain_dual_update(p, grad_u, step, epsilon=tvnet_module.EPSILON):
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad_u), axis=-1, keepdims=True) + epsilon)
    return (p + step * grad_u) / (1.0 + step * norm)


def test_custom_gradient_matches_autodiff_and_finite_differences():
    rng = np.random.default_rng(0)
    p = tf.constant(rng.normal(size=(2, 3, 4, 2, 2)))
    grad_u = tf.constant(rng.normal(size=(2, 3, 4, 2, 2)))
    grad_u = tf.tensor_scatter_nd_update(grad_u, [[0, 0, 0, 0]], [[0.0, 0.0]])  # |grad u| = 0: still defined
    upstream = tf.constant(rng.normal(size=(2, 3, 4, 2, 2)))
    step = 0.25 / 0.3
    np.testing.assert_allclose(tv_dual_update(p, grad_u, step).numpy(), _plain_dual_update(p, grad_u, step).numpy(),
                               rtol=1e-12)
    grads = []
    for update in (tv_dual_update, _plain_dual_update):
        with tf.GradientTape() as tape:
            tape.watch([p, grad_u])
            loss = tf.reduce_sum(update(p, grad_u, step) * upstream)
        grads.append(tape.gradient(loss, [p, grad_u]))
    for custom, autodiff in zip(*grads):
        np.testing.assert_allclose(custom.numpy(), autodiff.numpy(), rtol=1e-4, atol=1e-12)
        assert np.all(np.isfinite(custom.numpy()))
    # finite differences away from |grad u| = 0, where sqrt(|.|^2 + 1e-12) bends within 1e-6 of the origin
    theoretical, numerical = tf.test.compute_gradient(lambda g: tv_dual_update(p[1:, :1], g, step), [grad_u[1:, :1]])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-4, atol=1e-7)


@pytest.mark.large
def test_gradients_reach_every_kernel_through_50_iterations(monkeypatch):
    frame1, frame2 = _smooth_pair(20, 20, shift=(0.7, -0.4))
    weights = tf.constant(np.random.default_rng(1).normal(size=(1, 20, 20, 2)), tf.float32)

    def kernel_grads(layer):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(frame1, frame2) * weights)
        return tape.gradient(loss, layer.trainable_weights)

    layer = TVNet(iterations=50, learn_initial_flow=True, unroll=True)
    custom = kernel_grads(layer)
    assert len(custom) == 50 * 2 + 1  # a gradient and a divergence kernel per iteration, plus u0
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == 50 * 16 + 20 * 20 * 2
    dead = {"scale0_warp0_iter0/divergence_kernel",  # divergence of p = 0 in the first iteration
            "scale0_warp0_iter49/gradient_kernel"}  # the last dual update does not reach the output flow
    for g, w in zip(custom, layer.trainable_weights):
        g = np.zeros(w.shape) if g is None else g.numpy()
        assert np.all(np.isfinite(g))
        assert (np.abs(g).max() > 0) == (w.path.split("/", 1)[1] not in dead), w.path
    # the same layer differentiated by plain autodiff through the dual update
    monkeypatch.setattr(tvnet_module, "tv_dual_update", _plain_dual_update)
    autodiff = kernel_grads(layer)
    for c, a in zip(custom, autodiff):
        if a is not None:
            np.testing.assert_allclose(c.numpy(), a.numpy(), rtol=1e-4, atol=1e-4 * np.abs(a.numpy()).max())


@pytest.mark.large
def test_while_loop_and_xla_match_unrolled_graph():
    """Eager unrolled (the released graph) vs the graph-mode loop vs the default: the loop compiled with XLA."""
    frame1, frame2 = _smooth_pair(16, 20, shift=(1.2, 0.4), seed=9, batch=2)
    unrolled = TVNet(scales=2, warps=2, iterations=3, unroll=True)
    looped = TVNet(scales=2, warps=2, iterations=3, unroll=False, jit_compile=False)
    compiled = TVNet(scales=2, warps=2, iterations=3)
    rng = np.random.default_rng(3)
    for layer in (unrolled, looped, compiled):
        layer.build(frame1.shape)  # not a call: an eager call would compile the XLA solver once more (~4 s)
    unrolled.set_weights([w + rng.normal(scale=0.05, size=w.shape) for w in unrolled.get_weights()])
    looped.set_weights(unrolled.get_weights())
    compiled.set_weights(unrolled.get_weights())
    assert not unrolled._use_xla() and not looped._use_xla() and compiled._use_xla()
    results = []
    for layer, run in ((unrolled, unrolled), (looped, tf.function(looped)), (compiled, tf.function(compiled))):
        with tf.GradientTape() as tape:
            flow = run(frame1, frame2)
            loss = tf.reduce_sum(tf.square(flow))
        grads = tape.gradient(loss, layer.trainable_weights)
        results.append((flow.numpy(), [np.zeros(w.shape) if g is None else g.numpy()
                                       for g, w in zip(grads, layer.trainable_weights)]))
    # The loop keeps each field as its own [B, H, W] tensor and graph mode/XLA reassociate float sums: a kernel
    # tap's gradient (a sum over pixels with cancellation) moves by up to ~5e-4 relative; the flow by ~1e-6.
    for other in results[1:]:
        np.testing.assert_allclose(results[0][0], other[0], atol=1e-4)
        for a, b in zip(results[0][1], other[1]):
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4 * np.abs(a).max())


def test_block_matches_numpy_iteration():
    """One TVNetBlock against a direct numpy transcription of the iteration, with non-default kernels."""
    rng = np.random.default_rng(2)
    u = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)
    p = rng.normal(size=(1, 4, 5, 2, 2)).astype(np.float32) * 0.3
    rho_c = rng.normal(size=(1, 4, 5, 1)).astype(np.float32) * 3
    grad_i = rng.normal(size=(1, 4, 5, 2)).astype(np.float32) * 4
    grad_i[0, 0, 0] = 0.0  # flat pixel: no data step
    block = TVNetBlock(tau=0.25, lbda=0.15, theta=0.3)
    block.build()
    gk = rng.normal(size=(2, 2, 2)).astype(np.float32)
    dk = rng.normal(size=(2, 2, 2)).astype(np.float32)
    block.set_weights([gk, dk])
    got_u, got_p = (t.numpy() for t in block(u, p, rho_c, grad_i))

    lt, theta, step, eps = 0.15 * 0.3, 0.3, 0.25 / 0.3, 1e-12
    g = (grad_i ** 2).sum(-1, keepdims=True) + eps
    rho = rho_c + (grad_i * u).sum(-1, keepdims=True) + eps
    d = np.where(rho < -lt * g, lt * grad_i, np.where(rho > lt * g, -lt * grad_i,
                                                     np.where(g > eps, -rho / g * grad_i, 0.0)))
    new_u = u + d
    height, width = u.shape[1:3]
    for c in range(2):
        px, py = p[0, :, :, c, 0], p[0, :, :, c, 1]
        div = np.zeros((height, width))
        for i in range(height):
            for j in range(width):
                left = px[i, j - 1] if j >= 1 else 0.0
                here = px[i, j] if j < width - 1 else 0.0
                up = py[i - 1, j] if i >= 1 else 0.0
                center = py[i, j] if i < height - 1 else 0.0
                div[i, j] = dk[c, 0, 0] * left + dk[c, 0, 1] * here + dk[c, 1, 0] * up + dk[c, 1, 1] * center
        new_u[0, :, :, c] += theta * div
    expected_p = np.zeros_like(p)
    for c in range(2):
        uc = new_u[0, :, :, c]
        ux = np.zeros_like(uc)
        uy = np.zeros_like(uc)
        ux[:, :-1] = gk[c, 0, 0] * uc[:, :-1] + gk[c, 0, 1] * uc[:, 1:]
        uy[:-1, :] = gk[c, 1, 0] * uc[:-1, :] + gk[c, 1, 1] * uc[1:, :]
        den = 1 + step * np.sqrt(ux ** 2 + uy ** 2 + eps)
        expected_p[0, :, :, c, 0] = (p[0, :, :, c, 0] + step * ux) / den
        expected_p[0, :, :, c, 1] = (p[0, :, :, c, 1] + step * uy) / den
    np.testing.assert_allclose(got_u, new_u, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_p, expected_p, rtol=1e-5, atol=1e-5)


@pytest.mark.large
def test_multiscale_multiwarp_recovers_a_translation():
    shift = (2.5, -1.5)
    frame1, frame2 = _smooth_pair(48, 48, shift=shift, seed=3)
    layer = TVNet(scales=3, warps=3, iterations=10, jit_compile=False)
    flow = layer(frame1, frame2).numpy()[0]
    assert layer.sizes == [(48, 48), (24, 24), (12, 12)]
    # the centre (the zero-padded Gaussian makes a static edge at the border that TV regularisation spreads)
    np.testing.assert_allclose(flow[16:-16, 16:-16].reshape(-1, 2).mean(0), shift, atol=0.15)
    single = TVNet(iterations=10)(frame1, frame2).numpy()[0, 16:-16, 16:-16]
    assert np.abs(single.reshape(-1, 2).mean(0) - shift).max() > 1.0  # one scale/warp cannot reach 2.5 px


def test_batched_equals_unbatched_and_clip_mode():
    a1, a2 = _smooth_pair(12, 14, shift=(0.5, 0.2), seed=4)
    b1, b2 = _smooth_pair(12, 14, shift=(-0.3, 0.6), seed=5)
    layer = TVNet(iterations=8)
    batched = layer(np.concatenate([a1, b1]), np.concatenate([a2, b2])).numpy()
    np.testing.assert_allclose(batched[1], layer(b1, b2).numpy()[0], atol=1e-5)
    clip = np.stack([a1[0], a2[0], b1[0]])[None]  # [1, 3, H, W, 3]
    flows = layer(clip).numpy()
    assert flows.shape == (1, 2, 12, 14, 2)
    np.testing.assert_allclose(flows[0, 0], layer(a1, a2).numpy()[0], atol=1e-5)
    np.testing.assert_allclose(flows[0, 1], layer(a2, b1).numpy()[0], atol=1e-5)


@pytest.mark.large
def test_constant_and_tiny_images_give_finite_flow():
    flat = np.full((2, 8, 8, 3), 100.0, np.float32)
    layer = TVNet(scales=3, warps=2, iterations=5, jit_compile=False)  # the XLA path: test_while_loop_and_xla...
    with tf.GradientTape() as tape:
        flow = layer(flat, flat)
        loss = tf.reduce_sum(flow)
    np.testing.assert_allclose(flow.numpy(), 0.0, atol=1e-9)  # only the released eps=1e-12 added to rho moves it
    grads = [g for g in tape.gradient(loss, layer.trainable_weights) if g is not None]
    assert len(grads) > 20 and all(np.all(np.isfinite(g.numpy())) for g in grads)
    tiny1, tiny2 = _smooth_pair(3, 5, shift=(0.3, 0.0))
    layer = TVNet(scales=5, warps=2, iterations=5)
    flow = layer(tiny1, tiny2).numpy()
    assert np.all(np.isfinite(flow)) and flow.shape == (1, 3, 5, 2)
    assert layer.num_scales == 1
    assert pyramid_sizes(240, 240, 5, 0.5) == [(240, 240), (120, 120), (60, 60), (30, 30), (15, 15)]
    assert pyramid_sizes(6, 6, 5, 0.5) == [(6, 6), (3, 3)]


@pytest.mark.large
def test_float32_under_mixed_precision():
    frame1, frame2 = _smooth_pair(12, 12, shift=(0.5, 0.0), seed=10)
    reference = TVNet(scales=2, iterations=3)(frame1, frame2).numpy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = TVNet(scales=2, iterations=3)
        flow = layer(frame1, frame2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert flow.dtype == tf.float32 and layer.blocks[0].gradient_kernel.dtype == "float32"
    np.testing.assert_allclose(flow.numpy(), reference, atol=1e-6)


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\(1, 8, 8, 3\).*\(1, 8, 9, 3\)"):
        TVNet(iterations=1)(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 9, 3)))
    with pytest.raises(ValueError, match=r"\(1, 8, 8, 4\)"):
        TVNet(iterations=1)(np.zeros((1, 8, 8, 4)), np.zeros((1, 8, 8, 4)))
    with pytest.raises(ValueError, match=r"at least 2 pixels.*\(1, 1, 8, 3\)"):
        TVNet(iterations=1)(np.zeros((1, 1, 8, 3)), np.zeros((1, 1, 8, 3)))
    with pytest.raises(ValueError, match="T >= 2"):
        TVNet(iterations=1)(np.zeros((1, 1, 8, 8, 3)))
    with pytest.raises(ValueError, match="iterations=0"):
        TVNet(iterations=0)
    with pytest.raises(ValueError, match="channel_order='yuv'"):
        TVNet(channel_order="yuv")
    with pytest.raises(ValueError, match="theta=-1"):
        TVNetBlock(theta=-1)


def test_two_tvnets_in_one_model_save_and_load(tmp_path):
    frame1 = keras.Input((10, 10, 3))
    frame2 = keras.Input((10, 10, 3))
    forward = TVNet(iterations=3, name="forward_flow")(frame1, frame2)
    backward = TVNet(iterations=3, scales=2, warps=2, jit_compile=False, name="backward_flow")(frame2, frame1)
    model = keras.Model([frame1, frame2], keras.layers.Concatenate()([forward, backward]))
    rng = np.random.default_rng(6)
    model.set_weights([w + rng.normal(scale=0.05, size=w.shape) for w in model.get_weights()])
    a, b = _smooth_pair(10, 10, shift=(0.4, 0.3), seed=7)
    expected = model([a, b]).numpy()
    path = str(tmp_path / "tvnets.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded([a, b]).numpy(), expected, atol=1e-6)
    assert isinstance(loaded.get_layer("backward_flow"), TVNet)
    assert TVNet.from_config(model.get_layer("backward_flow").get_config()).get_config() == \
        model.get_layer("backward_flow").get_config()


@pytest.mark.large
def test_check_layer_block_and_tvnet():
    # Config and .keras round trips (perturbed kernels), dtype policies, gradients to every kernel.
    rng = np.random.default_rng(3)
    inputs = (rng.normal(size=(1, 4, 5, 2)), rng.normal(size=(1, 4, 5, 2, 2)) * 0.3, rng.normal(size=(1, 4, 5, 1)),
              rng.normal(size=(1, 4, 5, 2)) * 4)
    check_layer(TVNetBlock, dict(tau=0.2, lbda=0.1, theta=0.25), input_data=tuple(x.astype("float32") for x in inputs),
                expected_output_shape=((1, 4, 5, 2), (1, 4, 5, 2, 2)), perturb=0.05, atol=1e-4, rtol=1e-4)
    # TVNet computes in float32 by design (its dtype defaults to float32 under a global mixed policy, checked in
    # test_float32_under_mixed_precision); an explicit mixed `dtype` is not supported, so no policies here.
    a, b = _smooth_pair(10, 10, shift=(0.4, 0.3), seed=7)
    check_layer(TVNet, dict(iterations=3, scales=2, warps=2, jit_compile=False, name="flow"), input_data=(a, b),
                expected_output_shape=(1, 10, 10, 2), policies=(), perturb=0.05, atol=1e-5)


# ---- losses -------------------------------------------------------------------------------------------------


def test_tvl1_energy_by_hand():
    from kerasvid.losses.tvnet import tvl1_energy

    frame1 = np.array([[10.0, 20.0, 40.0], [0.0, 5.0, 5.0]]).reshape(1, 2, 3, 1)
    frame2 = np.array([[20.0, 40.0, 80.0], [5.0, 5.0, 9.0]]).reshape(1, 2, 3, 1)
    flow = np.zeros((1, 2, 3, 2))
    # zero flow: data = mean |I2 - I1| = (10 + 20 + 40 + 5 + 0 + 4) / 6; no TV
    np.testing.assert_allclose(tvl1_energy(frame1, frame2, flow, lbda=0.5).numpy(), [0.5 * 79 / 6], rtol=1e-6)
    flow[0, 0, :, 0] = [1.0, 1.0, 0.0]  # first row samples one pixel to the right (except the last column)
    flow[0, 1, 0, 1] = -1.0  # (1, 0) samples (0, 0)
    # warped I2 = [[40, 80, 80], [20, 5, 9]]; |I2w - I1| = [30, 60, 40, 20, 0, 4] -> mean 154 / 6
    # TV: d_x u1 = [[0, -1, 0], [0, 0, 0]], d_y u1 = [[-1, -1, 0], [0, 0, 0]], d_y u2 = [[-1, 0, 0], [0, 0, 0]],
    #     d_x u2 = [[0, 0, 0], [1, 0, 0]] -> sum of |.| = 5, mean over the 6 pixels = 5 / 6
    np.testing.assert_allclose(tvl1_energy(frame1, frame2, flow, lbda=0.5).numpy(), [0.5 * 154 / 6 + 5 / 6],
                               rtol=1e-6)


def test_tvnet_flow_lowers_the_tvl1_energy():
    from kerasvid.losses.tvnet import tvl1_energy

    frame1, frame2 = _smooth_pair(24, 24, shift=(0.8, -0.5), seed=8)
    flow = TVNet(iterations=20)(frame1, frame2)
    assert tvl1_energy(frame1, frame2, flow).numpy()[0] < 0.8 * tvl1_energy(frame1, frame2, 0 * flow).numpy()[0]


def test_endpoint_error_masks_unknown_flow_and_has_finite_gradients():
    from kerasvid.losses.tvnet import EndpointError, endpoint_error

    truth = np.zeros((2, 1, 3, 2), np.float32)
    pred = np.zeros((2, 1, 3, 2), np.float32)
    pred[0, 0, 0] = [3.0, 4.0]  # EPE 5
    pred[0, 0, 1] = [1.0, 0.0]  # EPE 1
    truth[0, 0, 2] = [np.inf, 0.0]  # unknown: ignored
    truth[1, 0, :, 0] = 2e9  # sample without valid pixels
    pred = tf.constant(pred)
    with tf.GradientTape() as tape:
        tape.watch(pred)
        epe = endpoint_error(truth, pred)
        total = tf.reduce_sum(epe)
    np.testing.assert_allclose(epe.numpy(), [3.0, 0.0])
    grad = tape.gradient(total, pred).numpy()
    np.testing.assert_allclose(grad[0, 0, 0], [0.6 / 2, 0.8 / 2], rtol=1e-6)  # d/dpred of |pred| / 2 valid pixels
    np.testing.assert_array_equal(grad[0, 0, 2], 0.0)  # pred == truth would be NaN with a plain sqrt
    np.testing.assert_array_equal(grad[1], 0.0)
    assert float(EndpointError()(truth, pred)) == pytest.approx(1.5)
    assert EndpointError().name == "endpoint_error"
    # Config, serialization and .keras round trips, low-precision predictions, gradients.
    check_loss(EndpointError, dict(name="epe", reduction="sum"), truth, pred, expected=3.0)


# ---- OpenCV DualTVL1 options: outer iterations, median filtering, stopping threshold ----------------------------


def _reference_single_warp(layer, frame1, frame2):
    """1 scale, 1 warp, written from the layer's public pieces: OpenCV's loop order with scipy's median filter.

    for each outer iteration while error > eps^2 H W: median-filter u; for each inner iteration while
    error > eps^2 H W: one TVNetBlock, error = sum |u_new - u|^2.  (Per sample, in numpy control flow.)
    """
    import scipy.ndimage

    from kerasvid.ops.differences import centered_gradient

    grey1, grey2 = layer._normalize(layer._grey(tf.constant(frame1)), layer._grey(tf.constant(frame2)))
    image1, image2 = layer._smooth(grey1), layer._smooth(grey2)
    grad_x, grad_y = centered_gradient(image2)  # zero initial flow: the warp is the identity
    image_gradient = tf.concat([grad_x, grad_y], -1)
    rho_c = image2 - image1
    flows, counts = [], []
    for b in range(frame1.shape[0]):
        u = np.zeros((1,) + frame1.shape[1:3] + (2,), np.float32)
        p = np.zeros(u.shape + (2,), np.float32)
        threshold = layer.epsilon ** 2 * frame1.shape[1] * frame1.shape[2]
        error, count = np.inf, 0
        for _ in range(layer.outer_iterations):
            if not error > threshold:
                break
            if layer.median_filtering > 1:
                size = layer.median_filtering
                u = scipy.ndimage.median_filter(u, size=(1, size, size, 1), mode="nearest")
            for block in layer.blocks:
                if not (error > threshold or layer.epsilon == 0):
                    break
                new_u, p = (t.numpy() for t in block(u, p, rho_c[b:b + 1], image_gradient[b:b + 1]))
                error, u, count = float(np.sum((new_u - u) ** 2)), new_u, count + 1
        flows.append(u[0])
        counts.append(count)
    return np.stack(flows), counts


@pytest.mark.large
def test_compiled_outer_iterations_and_median_gradient_match_unrolled():
    """The flat compiled loop (median in a tf.cond, stopped samples frozen) against the Python-unrolled graph:
    same flow, same gradients for the kernels, with a second sample that stops early."""
    frame1, frame2 = _smooth_pair(12, 15, shift=(0.8, -0.5), seed=14, batch=2)
    frame2[1] = frame1[1] + 0.3
    options = dict(scales=2, warps=2, iterations=3, outer_iterations=2, median_filtering=3, epsilon=0.02)
    unrolled = TVNet(unroll=True, **options)
    compiled = TVNet(**options)
    for layer in (unrolled, compiled):
        layer(frame1, frame2)
    unrolled.set_weights([w + np.random.default_rng(15).normal(scale=0.05, size=w.shape)
                          for w in unrolled.get_weights()])
    compiled.set_weights(unrolled.get_weights())
    assert compiled._use_xla() and not unrolled._use_xla()
    results = []
    for layer in (unrolled, compiled):
        with tf.GradientTape() as tape:
            flow = layer(frame1, frame2)
            loss = tf.reduce_sum(tf.square(flow))
        results.append((flow.numpy(), [g.numpy() for g in tape.gradient(loss, layer.trainable_weights)]))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-4)
    assert any(np.abs(g).max() > 0 for g in results[0][1])
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4 * np.abs(a).max())


@pytest.mark.large
@pytest.mark.parametrize("options", [dict(outer_iterations=3, median_filtering=5),
                                     dict(outer_iterations=4, median_filtering=3, epsilon=0.05)])
def test_opencv_options_match_reference_loop(options):
    frames = [_smooth_pair(14, 17, shift=(0.9, -0.6), seed=11), _smooth_pair(14, 17, shift=(0.2, 0.1), seed=12)]
    frame1 = np.concatenate([f[0] for f in frames])
    frame2 = np.concatenate([f[1] for f in frames])
    frame2[1] = frame1[1] + 0.3  # nearly static second sample: it stops early when epsilon > 0
    results = []
    for jit in (False, True):
        layer = TVNet(iterations=6, jit_compile=jit, **options)
        layer(frame1, frame2)
        layer.set_weights([w + np.random.default_rng(13).normal(scale=0.05, size=w.shape)
                           for w in layer.get_weights()])
        results.append(layer(frame1, frame2).numpy())
    expected, counts = _reference_single_warp(layer, frame1, frame2)
    np.testing.assert_allclose(results[0], expected, atol=1e-5)
    np.testing.assert_allclose(results[1], expected, atol=1e-4)
    if options.get("epsilon"):
        assert counts[1] < counts[0] <= 24, counts  # the second sample stopped before the first
    # batching does not change a sample's stopping
    np.testing.assert_allclose(TVNet(iterations=6, jit_compile=False, **options)(frame1[1:], frame2[1:]).numpy()[0],
                               TVNet(iterations=6, jit_compile=False, **options)(frame1, frame2).numpy()[1],
                               atol=1e-5)


def test_default_options_are_the_released_solver():
    """outer_iterations=1, median_filtering=1, epsilon=0 is the released loop, bit for bit."""
    frame1, frame2 = _smooth_pair(12, 12, shift=(0.6, 0.3), seed=14)
    plain = TVNet(iterations=5, jit_compile=False)
    unrolled = TVNet(iterations=5, unroll=True)
    np.testing.assert_array_equal(plain(frame1, frame2).numpy(), unrolled(frame1, frame2).numpy())
    config = TVNet(outer_iterations=2, median_filtering=5, epsilon=0.01, jit_compile=False).get_config()
    assert TVNet.from_config(config).get_config() == config
    for bad, match in ((dict(median_filtering=4), "median_filtering=4"), (dict(outer_iterations=0), "=0"),
                       (dict(epsilon=-1.0), "epsilon=-1.0"), (dict(jit_compile="yes"), "jit_compile='yes'")):
        with pytest.raises(ValueError, match=match):
            TVNet(**bad)


@pytest.mark.parametrize("dtype", ["mixed_bfloat16", "float16"])
def test_non_float32_dtype_is_refused_with_a_clear_error(dtype):
    with pytest.raises(ValueError, match=f"TVNet computes in float32.*dtype='{dtype}'"):
        TVNet(iterations=2, dtype=dtype)
    assert TVNet(iterations=2, dtype="float32").compute_dtype == "float32"
