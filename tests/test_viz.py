"""Tests of kerasvid.viz: Middlebury colour wheel values worked out by hand, PNG round trip."""
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.viz import attention_overlay, color_wheel, flow_to_color, write_png


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


def test_attention_overlay_by_hand():
    frame = np.array([[[10, 20, 30], [100, 100, 100]], [[0, 0, 0], [200, 50, 250]]], np.uint8)
    att = np.array([[0.0, 2.0], [1.0, 4.0]])  # normalised by the maximum: 0, 0.5, 0.25, 1
    out = attention_overlay(frame, att, alpha=0.8, color=(255, 0, 0), method="nearest")
    a = np.array([[0.0, 0.5], [0.25, 1.0]])[..., None] * 0.8
    want = np.rint((1 - a) * frame + a * np.array([255, 0, 0]))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out[0, 0], frame[0, 0])  # zero attention: the frame unchanged


def test_attention_overlay_clip_upsampling_and_time_steps():
    frames = np.full((4, 4, 6, 3), 50, np.uint8)
    att = np.zeros((2, 2, 3, 1))  # 2 time steps (each covers 2 frames), 2x3 map, trailing channel axis
    att[1, 0, 2, 0] = 3.0
    out = attention_overlay(frames, att, alpha=1.0, color=(0, 255, 0), method="nearest")
    assert out.shape == (4, 4, 6, 3)
    np.testing.assert_array_equal(out[:2], frames[:2])  # the first step has no attention
    hot = np.zeros((4, 6), bool)
    hot[0:2, 4:6] = True  # nearest x2 upsampling of map cell (0, 2)
    for t in (2, 3):
        np.testing.assert_array_equal(out[t][hot], np.tile([0, 255, 0], (hot.sum(), 1)))
        np.testing.assert_array_equal(out[t][~hot], frames[t][~hot])
    grey = attention_overlay(np.full((4, 6), 7.0), np.ones((2, 3)), alpha=0.5)  # greyscale, bilinear
    np.testing.assert_array_equal(grey, np.full((4, 6, 3), [131, 4, 4]))  # rint(0.5*7 + 0.5*255), rint(3.5) = 4


@pytest.mark.parametrize("frames,att,kwargs,match", [
    (np.zeros((2, 2, 3)), np.array([[-1.0, 0], [0, 0]]), {}, "finite and non-negative"),
    (np.zeros((2, 2, 3)), np.array([[np.nan, 0], [0, 0]]), {}, "finite and non-negative"),
    (np.zeros((3, 2, 2, 3)), np.zeros((2, 2, 2)), {}, "multiple of the attention's time steps"),
    (np.zeros((2, 2, 3)), np.zeros((2,)), {}, "`attention` must be"),
    (np.zeros((2, 2, 2, 2, 3)), np.zeros((2, 2)), {}, "`frames` must be"),
    (np.zeros((2, 2, 3)), np.zeros((2, 2)), {"alpha": 1.5}, "alpha"),
    (np.zeros((2, 2, 3)), np.zeros((2, 2)), {"method": "cubic"}, "method"),
])
def test_attention_overlay_errors(frames, att, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention_overlay(frames, att, **kwargs)
