"""TVNet's OpenCV-style options (`pyramid="cascade"`, `presmoothing`, `warp_interpolation="bicubic"`) and
`kerasvid.ops.resize.resize_half_pixel` / `bicubic_warp`, checked against OpenCV's own `cv2.resize` and `cv2.remap`
(the resampling of `DualTVL1OpticalFlow`'s pyramid, flow upsampling and warps)."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers.tvnet import TVNet, cascade_sizes, tvl1_iteration
from kerasvid.ops.differences import centered_gradient
from kerasvid.ops.resize import resize_half_pixel
from kerasvid.ops.warp import bicubic_warp, bilinear_warp


@pytest.mark.parametrize("shape,factor", [((13, 18), 0.5), ((25, 37), 0.5), ((20, 31), 0.8), ((9, 7), 0.7)])
def test_resize_half_pixel_equals_cv2_resize_by_factor(shape, factor):
    image = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    expected = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    ours = resize_half_pixel(image[None, :, :, None], expected.shape, 1.0 / factor).numpy()[0, :, :, 0]
    np.testing.assert_allclose(ours, expected, atol=2e-3)  # cv2 rounds its interpolation weights


@pytest.mark.parametrize("shape,size", [((6, 9), (13, 18)), ((16, 23), (31, 46)), ((12, 12), (12, 12))])
def test_resize_half_pixel_equals_cv2_resize_to_size(shape, size):
    image = np.random.default_rng(1).normal(size=shape + (2,)).astype(np.float32)
    expected = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_half_pixel(image[None], size).numpy()[0], expected, atol=1e-3)


def test_halving_is_the_mean_of_2x2_blocks():
    image = np.random.default_rng(2).uniform(size=(1, 8, 10, 1)).astype(np.float32)
    blocks = image.reshape(1, 4, 2, 5, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(resize_half_pixel(image, (4, 5), 2.0).numpy(), blocks, atol=1e-6)


def test_cascade_sizes_are_opencv_level_sizes():
    image = np.zeros((250, 370), np.float32)
    sizes = [image.shape]
    for _ in range(4):
        image = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_LINEAR)
        sizes.append(image.shape)
    assert cascade_sizes(250, 370, 5, 0.5) == sizes == [(250, 370), (125, 185), (62, 92), (31, 46), (16, 23)]
    # sides rounded half to even as cv2 does (0.8 * 45 = 36, 0.8 * 37.5 = 30: 29.6 -> 30, 0.8 * 30 = 24)
    assert cascade_sizes(45, 90, 3, 0.8)[1:] == [cv2.resize(np.zeros((45, 90), np.float32), None, fx=0.8,
                                                            fy=0.8).shape, (29, 58)]


def _opencv_level_sizes(height, width, nscales, scale_step):
    """OpenCV DualTVL1's rule (tvl1flow.cpp, `calc`): level s = cv2.resize of level s - 1 by `scaleStep`; the first
    level with a side under 16 px ends the pyramid (nscales = s) and is not used."""
    image, sizes = np.zeros((height, width), np.float32), [(height, width)]
    for _ in range(1, nscales):
        image = cv2.resize(image, None, fx=scale_step, fy=scale_step, interpolation=cv2.INTER_LINEAR)
        if image.shape[0] < 16 or image.shape[1] < 16:
            break
        sizes.append(image.shape)
    return sizes


@pytest.mark.parametrize("height,width,scales,zoom,expected", [
    (96, 128, 5, 0.5, [(96, 128), (48, 64), (24, 32)]),      # 12x16 dropped: 12 < 16
    (112, 112, 5, 0.5, [(112, 112), (56, 56), (28, 28)]),     # 14x14 dropped
    (224, 224, 5, 0.5, [(224, 224), (112, 112), (56, 56), (28, 28)]),
    (224, 224, 3, 0.5, [(224, 224), (112, 112), (56, 56)]),   # `scales` caps it first
    (240, 320, 9, 0.8, None), (20, 40, 5, 0.5, [(20, 40)]), (12, 9, 9, 0.5, [(12, 9)])])
def test_cascade_levels_stop_under_16_pixels_as_opencv(height, width, scales, zoom, expected):
    sizes = cascade_sizes(height, width, scales, zoom)
    assert sizes == _opencv_level_sizes(height, width, scales, zoom)
    assert expected is None or sizes == expected
    layer = TVNet(scales=scales, zoom=zoom, iterations=1, pyramid="cascade", jit_compile=False)
    layer.build((1, height, width, 3))
    assert layer.num_scales == len(sizes) and min(min(s) for s in layer.sizes[1:] or [(16, 16)]) >= 16


def _reference(layer, frame1, frame2):
    """The cascade solver from public pieces, with OpenCV doing the pyramid and the flow upsampling."""
    grey1, grey2 = layer._normalize(layer._grey(tf.constant(frame1)), layer._grey(tf.constant(frame2)))
    levels = [(grey1.numpy()[0, :, :, 0], grey2.numpy()[0, :, :, 0])]
    for _ in layer.sizes[1:]:
        levels.append(tuple(cv2.resize(g, None, fx=layer.zoom, fy=layer.zoom, interpolation=cv2.INTER_LINEAR)
                            for g in levels[-1]))
    blocks = iter(layer.blocks)
    u = None
    for level1, level2 in reversed(levels):
        level1, level2 = (tf.constant(g[None, :, :, None]) for g in (level1, level2))
        if u is None:
            u = np.zeros(level1.shape[:3] + (2,), np.float32)
        else:
            u = cv2.resize(u[0], (level1.shape[2], level1.shape[1]), interpolation=cv2.INTER_LINEAR)[None] / layer.zoom
        p = np.zeros(u.shape + (2,), np.float32)
        for _ in range(layer.warps):
            grad_x, grad_y = centered_gradient(level2)
            warped = bilinear_warp(tf.concat([level2, grad_x, grad_y], -1), u)
            rho_c = warped[..., :1] - tf.reduce_sum(warped[..., 1:] * u, -1, keepdims=True) - level1
            for _ in range(layer.iterations):
                block = next(blocks)
                u, p = tvl1_iteration(u, p, rho_c, warped[..., 1:], block.gradient_kernel, block.divergence_kernel,
                                      layer.tau, layer.lbda, layer.theta)
            u = u.numpy()
    return u


def _shifted_pattern(height, width, shift, noise, seed):
    """A smooth grey pattern as RGB and the same pattern moved `shift` px right plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 120 + 60 * np.sin(0.35 * xx + 0.2 * yy) * np.cos(0.25 * yy - 0.1 * xx)
    frame1 = np.repeat(base[None, :, :, None], 3, -1).astype(np.float32)
    return frame1, np.roll(frame1, shift, axis=2) + rng.normal(scale=noise, size=frame1.shape).astype(np.float32)


@pytest.mark.large
def test_cascade_pyramid_matches_opencv_resampling_reference():
    frame1, frame2 = _shifted_pattern(67, 76, 2, 2.0, seed=3)
    layer = TVNet(scales=3, warps=2, iterations=3, pyramid="cascade", presmoothing=False, jit_compile=False)
    flow = layer(frame1, frame2).numpy()
    assert layer.sizes == [(67, 76), (34, 38), (17, 19)]  # round(33.5) = 34 (half to even), then 17
    np.testing.assert_allclose(flow, _reference(layer, frame1, frame2), atol=2e-3)
    compiled = TVNet(scales=3, warps=2, iterations=3, pyramid="cascade", presmoothing=False, jit_compile=True)
    np.testing.assert_allclose(compiled(frame1, frame2).numpy(), flow, rtol=1e-4, atol=1e-4)  # float32 noise


def test_presmoothing_off_skips_the_gaussian_only():
    frame1 = np.random.default_rng(4).uniform(0, 255, (1, 12, 14, 3)).astype(np.float32)
    frame2 = np.roll(frame1, 1, axis=1)
    plain = TVNet(iterations=4, jit_compile=False)
    plain(frame1, frame2)
    unsmoothed = TVNet(iterations=4, presmoothing=False, jit_compile=False)
    unsmoothed(frame1, frame2)
    grey1, grey2 = plain._normalize(plain._grey(tf.constant(frame1)), plain._grey(tf.constant(frame2)))
    np.testing.assert_array_equal(unsmoothed(frame1, frame2).numpy(), plain._solve(grey1, grey2).numpy())
    np.testing.assert_array_equal(plain(frame1, frame2).numpy(),
                                  plain._solve(plain._smooth(grey1), plain._smooth(grey2)).numpy())


@pytest.mark.parametrize("padding,border", [("zeros", cv2.BORDER_CONSTANT), ("border", cv2.BORDER_REPLICATE)])
def test_bicubic_warp_equals_cv2_remap_inter_cubic(padding, border):
    rng = np.random.default_rng(5)
    image = rng.uniform(0, 255, (2, 15, 19, 1)).astype(np.float32)
    flow = rng.uniform(-4, 4, (2, 15, 19, 2)).astype(np.float32)  # any position: OpenCV 5.1's remap does not round
    yy, xx = np.mgrid[0:15, 0:19].astype(np.float32)
    ours = bicubic_warp(image, flow, padding).numpy()
    for b in range(2):
        map_x, map_y = xx + flow[b, ..., 0], yy + flow[b, ..., 1]
        if padding == "border":  # kerasvid clamps the position first; replicated taps then equal cv2's
            map_x, map_y = np.clip(map_x, 0, 18), np.clip(map_y, 0, 14)
        expected = cv2.remap(image[b, ..., 0], map_x, map_y, cv2.INTER_CUBIC, borderMode=border)
        np.testing.assert_allclose(ours[b, ..., 0], expected, atol=1e-2)


def test_bicubic_warp_identity_shift_and_gradient():
    image = tf.constant(np.random.default_rng(6).uniform(size=(1, 9, 11, 3)).astype(np.float32))
    np.testing.assert_allclose(bicubic_warp(image, tf.zeros((1, 9, 11, 2))).numpy(), image.numpy(), atol=1e-6)
    shifted = bicubic_warp(image, tf.concat([tf.ones((1, 9, 11, 1)), tf.zeros((1, 9, 11, 1))], -1), "zeros")
    np.testing.assert_allclose(shifted.numpy()[:, :, :-1], image.numpy()[:, :, 1:], atol=1e-6)
    flow = tf.Variable(tf.fill((1, 9, 11, 2), 0.3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(bicubic_warp(image, flow) ** 2)
    assert np.all(np.isfinite(tape.gradient(loss, flow).numpy()))


def test_stretch_off_feeds_the_grey_frames_as_they_are():
    """stretch=False solves on the plain grey pair (OpenCV's input); the released stretch maps the pair's range to
    [0, 255], so the two agree on a pair that already spans 0-255 and differ on one that does not."""
    frame1, frame2 = _shifted_pattern(20, 24, 1, 1.0, seed=8)  # grey values about 60..180
    plain = TVNet(iterations=5, presmoothing=False, jit_compile=False)
    unstretched = TVNet(iterations=5, presmoothing=False, stretch=False, jit_compile=False)
    grey1, grey2 = plain._grey(tf.constant(frame1)), plain._grey(tf.constant(frame2))
    np.testing.assert_array_equal(unstretched(frame1, frame2).numpy(), unstretched._solve(grey1, grey2).numpy())
    np.testing.assert_array_equal(plain(frame1, frame2).numpy(), plain._solve(*plain._normalize(grey1, grey2)).numpy())
    assert np.abs(plain(frame1, frame2).numpy() - unstretched(frame1, frame2).numpy()).max() > 1e-2
    full1, full2 = (np.clip((f - 60.0) * 255.0 / 125.0, 0, 255).round() for f in (frame1, frame2))
    full1[0, 0, 0], full2[0, 0, 0] = np.zeros(3), np.full(3, 255.0)
    grey = np.stack([plain._grey(tf.constant(f)).numpy() for f in (full1, full2)])
    assert (grey.min(), grey.max()) == (0, 255)  # the pair spans 0..255: the stretch is the identity
    np.testing.assert_allclose(plain(full1, full2).numpy(), unstretched(full1, full2).numpy(), atol=1e-5)


@pytest.mark.large
def test_bicubic_tvnet_is_finite_and_moves_towards_the_shift():
    frame1, frame2 = _shifted_pattern(24, 30, 1, 1.0, seed=7)
    flow = TVNet(scales=2, warps=2, iterations=20, warp_interpolation="bicubic", jit_compile=False)(
        frame1, frame2).numpy()
    assert np.all(np.isfinite(flow)) and 0.6 < np.median(flow[0, 4:-4, 4:-4, 0]) < 1.3


def test_pyramid_options_round_trip_and_validate():
    config = TVNet(pyramid="cascade", presmoothing=False, warp_interpolation="bicubic", stretch=False).get_config()
    assert TVNet.from_config(config).get_config() == config
    assert TVNet().get_config()["pyramid"] == "released" and TVNet().get_config()["presmoothing"] is True
    with pytest.raises(ValueError, match="pyramid='gauss'"):
        TVNet(pyramid="gauss")
    with pytest.raises(ValueError, match="warp_interpolation='cubic'"):
        TVNet(warp_interpolation="cubic")
    with pytest.raises(ValueError, match="presmoothing=1"):
        TVNet(presmoothing=1)
    assert TVNet().get_config()["stretch"] is True and config["stretch"] is False
    with pytest.raises(ValueError, match="stretch='yes'"):
        TVNet(stretch="yes")
    with pytest.raises(ValueError, match="ratio=0"):
        resize_half_pixel(tf.zeros((1, 4, 4, 1)), (2, 2), 0)
