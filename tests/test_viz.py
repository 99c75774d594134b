"""Tests of kerasvid.viz: Middlebury colour wheel values worked out by hand, PNG round trip."""
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.viz import color_wheel, flow_to_color, write_png


def test_color_wheel_segments():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    np.testing.assert_array_equal(wheel[0], [255, 0, 0])  # red
    np.testing.assert_array_equal(wheel[15], [255, 255, 0])  # yellow starts YG
    np.testing.assert_array_equal(wheel[21], [0, 255, 0])  # green starts GC
    np.testing.assert_array_equal(wheel[25], [0, 255, 255])  # cyan starts CB
    np.testing.assert_array_equal(wheel[36], [0, 0, 255])  # blue starts BM
    np.testing.assert_array_equal(wheel[49], [255, 0, 255])  # magenta starts MR
    np.testing.assert_array_equal(wheel[54], [255, 0, 255 - np.floor(255 * 5 / 6)])


def test_flow_to_color_by_hand():
    flow = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0], [0.5, 0.0],
                      [np.inf, 0.0], [2e9, 0.0]]])
    image = flow_to_color(flow)
    assert image.dtype == np.uint8 and image.shape == (1, 8, 3)
    # right: -v = -0.0, atan2(-0.0, -1) = -pi (IEEE signed zero, as in Matlab) -> position 0 -> wheel[0] = red
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    # left: angle 0 -> position 27 = CB entry 2: G = 255 - floor(255*2/11) = 209
    np.testing.assert_array_equal(image[0, 1], [0, 209, 255])
    # down (v = +1): angle -1/2 -> position 13.5 -> halfway between RY 13 (G 221) and 14 (G 238)
    np.testing.assert_array_equal(image[0, 2], [255, 229, 0])
    # up: angle 1/2 -> position 40.5 -> BM 4 and 5: R = (78 + 98) / 2 = 88
    np.testing.assert_array_equal(image[0, 3], [88, 0, 255])
    np.testing.assert_array_equal(image[0, 4], [255, 255, 255])  # no motion = white
    # half the max radius: 1 - 0.5 * (1 - wheel[0] / 255) -> (255, 127.5, 127.5) floored
    np.testing.assert_array_equal(image[0, 5], [255, 127, 127])
    # right and slightly up: angle just below +1 -> position ~54 -> wheel[54] (the other end of the wheel)
    np.testing.assert_array_equal(flow_to_color(np.array([[[1.0, -1e-9]]]))[0, 0], [255, 0, 43])
    np.testing.assert_array_equal(image[0, 6:], 0)  # unknown = black
    # beyond max_flow: darkened by 0.75
    np.testing.assert_array_equal(flow_to_color(np.array([[[2.0, 0.0]]]), max_flow=1.0)[0, 0],
                                  np.floor(0.75 * np.array([255, 0, 0])))
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        flow_to_color(np.zeros((4, 2)))


def test_write_png_round_trip(tmp_path):
    flow = np.random.default_rng(0).normal(size=(2, 5, 7, 2))
    image = flow_to_color(flow)
    assert image.shape == (2, 5, 7, 3)
    path = write_png(tmp_path / "flow.png", image[1])
    decoded = tf.io.decode_png(tf.io.read_file(path)).numpy()
    np.testing.assert_array_equal(decoded, image[1])
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "bad.png", image[1].astype(np.float32))
