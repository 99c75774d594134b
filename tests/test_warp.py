"""Tests of kerasvid.ops.warp, resize, differences and median against brute-force numpy references and TF's own resize."""
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.ops.differences import backward_divergence_term, centered_gradient, forward_difference
from kerasvid.ops.resize import resize_align_corners
from kerasvid.ops.warp import bilinear_warp


def _numpy_warp(image, flow, padding):
    """Loop-based bilinear backward warp, written independently of the TF implementation."""
    batch, height, width, channels = image.shape
    out = np.zeros_like(image)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                x = j + flow[b, i, j, 0]
                y = i + flow[b, i, j, 1]
                if padding == "border":
                    x = min(max(x, 0.0), width - 1.0)
                    y = min(max(y, 0.0), height - 1.0)
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                acc = np.zeros(channels)
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    weight = (1 - abs(x - xx)) * (1 - abs(y - yy))
                    if 0 <= xx < width and 0 <= yy < height:
                        acc += weight * image[b, yy, xx]
                    elif padding == "border" and weight > 0:
                        raise AssertionError("border sampling never leaves the image")
                out[b, i, j] = acc
    return out


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_bilinear_warp_matches_numpy(padding):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (2, 5, 7, 3))
    flow = rng.uniform(-3, 3, (2, 5, 7, 2))
    got = bilinear_warp(tf.constant(image), tf.constant(flow), padding=padding).numpy()
    np.testing.assert_allclose(got, _numpy_warp(image, flow, padding), rtol=0, atol=1e-9)


def test_bilinear_warp_integer_shift_and_identity():
    image = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5, 1)
    np.testing.assert_array_equal(bilinear_warp(image, np.zeros((2, 4, 5, 2), np.float32)).numpy(), image)
    flow = np.zeros((2, 4, 5, 2), np.float32)
    flow[..., 0] = 1.0  # sample one pixel to the right
    expected = np.concatenate([image[:, :, 1:], image[:, :, -1:]], axis=2)  # right edge replicated
    np.testing.assert_array_equal(bilinear_warp(image, flow).numpy(), expected)
    expected_zero = np.concatenate([image[:, :, 1:], np.zeros_like(image[:, :, -1:])], axis=2)
    np.testing.assert_array_equal(bilinear_warp(image, flow, padding="zeros").numpy(), expected_zero)


def test_bilinear_warp_under_jit_matches_eager():
    rng = np.random.default_rng(1)
    image = tf.constant(rng.uniform(0, 1, (1, 6, 6, 2)), tf.float32)
    flow = tf.constant(rng.uniform(-2, 2, (1, 6, 6, 2)), tf.float32)
    jitted = tf.function(lambda a, b: bilinear_warp(a, b, padding="zeros"), jit_compile=True)
    np.testing.assert_allclose(jitted(image, flow).numpy(), bilinear_warp(image, flow, padding="zeros").numpy(),
                               atol=1e-5)


@pytest.mark.large
@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_bilinear_warp_gradients_match_finite_differences(padding):
    rng = np.random.default_rng(2)
    image = tf.constant(rng.uniform(0, 1, (1, 4, 4, 1)))
    # keep samples off integer positions and inside for border (finite differences across a kink are wrong)
    flow = tf.constant(rng.uniform(0.2, 0.8, (1, 4, 4, 2)) * np.array([1, -1]))
    theoretical, numerical = tf.test.compute_gradient(lambda f: bilinear_warp(image, f, padding=padding), [flow])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    theoretical, numerical = tf.test.compute_gradient(lambda i: bilinear_warp(i, flow, padding=padding), [image])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def test_bilinear_warp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        bilinear_warp(tf.zeros((1, 3, 3, 1)), tf.zeros((1, 3, 3, 2)), padding="reflect")
    with pytest.raises(ValueError, match=r"\(1, 3, 3, 1\).*\(1, 4, 3, 2\)"):
        bilinear_warp(tf.zeros((1, 3, 3, 1)), tf.zeros((1, 4, 3, 2)))
    with pytest.raises(ValueError, match="2 channels"):
        bilinear_warp(tf.zeros((1, 3, 3, 1)), tf.zeros((1, 3, 3, 3)))


def test_resize_align_corners_matches_tf_v1_resize():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (2, 9, 13, 2)).astype(np.float32)
    for size in [(5, 7), (18, 26), (9, 13), (2, 3)]:
        reference = tf.compat.v1.image.resize_bilinear(image, size, align_corners=True).numpy()
        np.testing.assert_allclose(resize_align_corners(tf.constant(image), size).numpy(), reference, atol=1e-3)


def test_forward_difference_and_divergence_by_hand():
    x = np.array([1.0, 4.0, 2.0, 7.0]).reshape(1, 1, 4, 1)
    np.testing.assert_allclose(forward_difference(x, 2).numpy().ravel(), [3.0, -2.0, 5.0, 0.0])
    np.testing.assert_allclose(forward_difference(x, 2, (2.0, 0.5)).numpy().ravel(), [4.0, 9.0, 7.5, 0.0])
    np.testing.assert_allclose(backward_divergence_term(x, 2).numpy().ravel(), [1.0, 3.0, -2.0, -2.0])
    np.testing.assert_allclose(backward_divergence_term(x.reshape(1, 4, 1, 1), 1).numpy().ravel(),
                               [1.0, 3.0, -2.0, -2.0])
    gx, gy = centered_gradient(np.array([[1.0, 4.0, 2.0, 7.0], [3.0, 3.0, 0.0, 1.0]]).reshape(1, 2, 4, 1))
    np.testing.assert_allclose(gx.numpy()[0, :, :, 0], [[1.5, 0.5, 1.5, 2.5], [0.0, -1.5, -1.0, 0.5]])
    np.testing.assert_allclose(gy.numpy()[0, :, :, 0], [[1.0, -0.5, -1.0, -3.0]] * 2)


def test_divergence_is_minus_adjoint_of_forward_gradient():
    # <grad u, p> = -<u, div p> for the default [-1, 1] kernels (what makes the TV-L1 dual algorithm correct)
    rng = np.random.default_rng(4)
    u = rng.normal(size=(2, 6, 5, 1))
    px, py = rng.normal(size=(2, 6, 5, 1)), rng.normal(size=(2, 6, 5, 1))
    lhs = np.sum(forward_difference(u, 2).numpy() * px + forward_difference(u, 1).numpy() * py)
    rhs = -np.sum(u * (backward_divergence_term(px, 2).numpy() + backward_divergence_term(py, 1).numpy()))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_median_filter_matches_scipy(size):
    import scipy.ndimage

    from kerasvid.ops.median import median_filter

    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 9, 6, 2)).astype(np.float32)
    x[0, :4, :4, 0] = 1.5  # ties
    x[1, :, :, 1] = np.round(x[1, :, :, 1])  # many ties
    expected = scipy.ndimage.median_filter(x, size=(1, size, size, 1), mode="nearest")
    np.testing.assert_array_equal(median_filter(tf.constant(x), size).numpy(), expected)
    jitted = tf.function(lambda t: median_filter(t, size), jit_compile=True)
    np.testing.assert_array_equal(jitted(tf.constant(x)).numpy(), expected)
    small = x[:, :2, :3]  # smaller than the window: edges replicated further
    np.testing.assert_array_equal(median_filter(tf.constant(small), size).numpy(),
                                  scipy.ndimage.median_filter(small, size=(1, size, size, 1), mode="nearest"))


def test_median_filter_rejects_even_size():
    from kerasvid.ops.median import median_filter

    with pytest.raises(ValueError, match="size=4"):
        median_filter(tf.zeros((1, 5, 5, 1)), 4)


@pytest.mark.large
@pytest.mark.parametrize("size", [3, 5])
def test_median_filter_gradient_goes_to_the_median_pixel(size):
    """Distinct values: the median is differentiable, so its custom gradient equals finite differences."""
    from kerasvid.ops.median import median_filter

    rng = np.random.default_rng(21)
    x = rng.permutation(2 * 6 * 7 * 2).reshape(2, 6, 7, 2).astype(np.float64) / 7.0
    theoretical, numerical = tf.test.compute_gradient(lambda t: median_filter(t, size), [tf.constant(x)], delta=1e-3)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    jitted = tf.function(lambda t: median_filter(t, size), jit_compile=True)
    with tf.GradientTape() as tape:
        t = tf.constant(x)
        tape.watch(t)
        y = jitted(t)
    upstream = rng.normal(size=x.shape)
    np.testing.assert_allclose(tape.gradient(y, t, output_gradients=upstream).numpy().ravel(),
                               numerical[0].T @ upstream.ravel(), atol=1e-6)


def test_median_filter_gradient_on_ties_sums_to_the_upstream():
    """A constant image: every window ties; each output's gradient goes to exactly one input pixel."""
    from kerasvid.ops.median import median_filter

    x = tf.ones((1, 4, 5, 1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = median_filter(x, 5)
    grad = tape.gradient(y, x, output_gradients=tf.fill(y.shape, 2.0)).numpy()
    assert grad.sum() == pytest.approx(2.0 * 20)
    assert grad.min() >= 0.0
