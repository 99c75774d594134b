"""Tests of kerasvid.viz: Middlebury colour wheel values worked out by hand, PNG round trip."""
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.viz import attention_overlay, clip_to_image_grid, color_wheel, flow_to_color, write_png


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


def test_clip_to_image_grid_by_hand():
    """Frames int(linspace(0, T - 1, 8)) side by side, min-max scaled over the kept frames."""
    rng = np.random.default_rng(0)
    clip = rng.uniform(-3, 5, (10, 4, 5, 3)).astype(np.float32)
    grid = clip_to_image_grid(clip).numpy()
    kept = clip[[0, 1, 2, 3, 5, 6, 7, 9]]  # floor(9 k / 7), k = 0..7
    expected = (kept - kept.min()) / (kept.max() - kept.min())
    assert grid.shape == (1, 4, 5 * 8, 3) and grid.dtype == np.float32
    np.testing.assert_allclose(grid[0], np.concatenate(list(expected), axis=1), atol=1e-6)
    short = clip_to_image_grid(np.full((3, 2, 2, 3), 7.0), max_frames=8).numpy()  # fewer frames, constant: zeros
    assert short.shape == (1, 2, 6, 3) and not short.any()


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


# ----- drawing primitives, line plots -------------------------------------------------------------------------------
def test_draw_line_and_square_by_hand():
    from kerasvid.viz import draw_line, draw_square

    image = np.zeros((6, 8, 3), np.uint8)
    draw_line(image, (0, 0), (2, 6), (9, 9, 9))  # 6 steps along the columns: rows rint(i / 3) = 0 0 1 1 1 2 2
    got = np.argwhere(image[..., 0] == 9).tolist()
    assert got == [[0, 0], [0, 1], [1, 2], [1, 3], [1, 4], [2, 5], [2, 6]]
    square = draw_square(np.zeros((7, 7, 3), np.uint8), (3, 3), 2, (1, 2, 3), filled=False)[..., 2] == 3
    want = np.zeros((7, 7), bool)
    want[1:6, 1:6] = True
    want[2:5, 2:5] = False  # outline only
    np.testing.assert_array_equal(square, want)
    edge = draw_square(np.zeros((3, 3, 3), np.uint8), (0, 0), 1, (5, 5, 5))[..., 0] == 5  # clipped at the border
    np.testing.assert_array_equal(edge, [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_draw_text_glyphs():
    from kerasvid.viz import draw_text, text_width

    image = np.zeros((9, 14, 3), np.uint8)
    draw_text(image, "1-", 1, 1, (255, 255, 255))
    ink = image[..., 0] == 255
    # "1": 00100 01100 00100 00100 00100 00100 01110 at columns 1-5; "-" (row 3 of its glyph) at columns 7-11
    np.testing.assert_array_equal(ink[1:8, 1:6].astype(int), [[0, 0, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 0, 0],
                                                              [0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0],
                                                              [0, 1, 1, 1, 0]])
    assert np.argwhere(ink[:, 6:]).tolist() == [[4, c] for c in range(1, 6)]
    assert text_width("1-") == 11 and text_width("ab", scale=2) == 22


def test_line_plot_pixels_on_the_hand_computed_line():
    from kerasvid.viz import line_plot, plot_margins, plot_position

    top, right, bottom, left = plot_margins()
    height, width = 100, 150
    red = (214, 39, 40)
    image = line_plot([("loss", [0, 10], [1.0, 0.0], red)], size=(height, width), x_range=(0, 10),
                      y_range=(0, 1), markers=[0])
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    # (0, 1) is the top-left corner of the plot area, (10, 0) its bottom-right; the line joins them
    assert plot_position(0, 1, (0, 10), (0, 1), (height, width)) == (top, left)
    assert plot_position(10, 0, (0, 10), (0, 1), (height, width)) == (height - bottom - 1, width - right - 1)
    rows_span, cols_span = height - bottom - 1 - top, width - right - 1 - left
    for frac in np.linspace(0, 1, 11):  # pixels of the segment, computed by hand
        r, c = int(np.rint(top + frac * rows_span)), int(np.rint(left + frac * cols_span))
        assert np.any(np.all(image[max(r - 1, 0):r + 2, c] == red, axis=-1)), (frac, r, c)
    is_red = np.all(image == red, axis=-1)
    # every red pixel of the plot area lies on the segment (within a pixel), and the legend is drawn in red
    rr, cc = np.nonzero(is_red[top:height - bottom, left:width - right])
    dist = np.abs(rr * cols_span - cc * rows_span) / np.hypot(rows_span, cols_span)  # to the line (0,0)-(rs,cs)
    assert rr.size >= cols_span and dist.max() <= 1.0
    assert is_red[:top].any()
    assert np.all(image[top + rows_span // 2 + 6:height - bottom - 2, left + 2:left + cols_span // 3] == 255)


def test_line_plot_errors():
    from kerasvid.viz import line_plot

    with pytest.raises(ValueError, match="2 x values and 3 y values"):
        line_plot([("a", [0, 1], [0, 1, 2])])
    with pytest.raises(ValueError, match="no plot area"):
        line_plot([("a", [0, 1], [0, 1])], size=(20, 20))


def test_training_curve_from_event_files(tmp_path):
    from kerasvid.training import summaries
    from kerasvid.viz import PLOT_COLORS, plot_margins, plot_position

    train = summaries.Summaries(str(tmp_path / "train"))
    for step, loss, acc in ((10, 2.0, 0.25), (20, 1.0, 0.5), (30, 0.5, 1.0)):
        train.scalars({"loss": loss, "accuracy": acc}, step)
    train.close()
    resumed = summaries.Summaries(str(tmp_path / "train"))  # a resumed run rewrites step 30: the newest file wins
    resumed.scalars({"loss": 0.25, "accuracy": 1.0}, 30)
    resumed.close()
    held_out = summaries.Summaries(str(tmp_path / "eval"))
    held_out.scalars({"top1": 0.5}, 15)
    held_out.scalars({"top1": 1.0}, 30)
    held_out.close()
    scalars = summaries.read_scalars(str(tmp_path / "train"))
    np.testing.assert_array_equal(scalars["loss"][0], [10, 20, 30])
    np.testing.assert_allclose(scalars["loss"][1], [2.0, 1.0, 0.25])
    path = summaries.write_training_curve(str(tmp_path))
    image = tf.io.decode_png(tf.io.read_file(path)).numpy()
    size = (260, 420)
    assert image.shape == (260, 840, 3)
    loss_panel, accuracy_panel = image[:, :420], image[:, 420:]
    # loss panel: y from 0 to the largest loss (2.0), x from 0 to the last step (30); markers at the points
    for step, loss in ((10, 2.0), (20, 1.0), (30, 0.25)):
        r, c = plot_position(step, loss, (0, 30), (0, 2.0), size)
        np.testing.assert_array_equal(loss_panel[r, c], PLOT_COLORS[3])
    # accuracy panel, 0 to 1: train accuracy (blue) and held-out top-1 (orange, eval steps 15 and 30)
    for step, acc, color in ((10, 0.25, 0), (20, 0.5, 0), (15, 0.5, 1)):
        r, c = plot_position(step, acc, (0, 30), (0, 1), size)
        np.testing.assert_array_equal(accuracy_panel[r, c], PLOT_COLORS[color])
    # the held-out segment from (15, 0.5) to (30, 1.0) passes through (22.5, 0.75)
    r, c = plot_position(22.5, 0.75, (0, 30), (0, 1), size)
    assert np.any(np.all(accuracy_panel[r - 1:r + 2, c] == PLOT_COLORS[1], axis=-1))
    top = plot_margins()[0]
    assert np.all(accuracy_panel[top + 2:top + 20, 60:70] == 255)  # empty area stays white
    with pytest.raises(ValueError, match="No training loss"):
        summaries.training_curve(str(tmp_path / "missing"))


def test_write_run_pictures_of_a_model_no_family_draws(tmp_path):
    """Without training summaries and without a registered layer: no picture, and the held-out data is not read."""
    import types

    import keras

    from kerasvid import zoo
    from kerasvid.models import registry
    from kerasvid.training import summaries

    def no_data(training):
        raise AssertionError("the held-out data was read")

    task = types.SimpleNamespace(config=types.SimpleNamespace(normalization="imagenet", eval_pattern="held-out-*"),
                                 build_dataset=no_data, model_inputs=lambda inputs: inputs["image"])
    inputs = keras.Input((3, 8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(inputs)))
    assert not zoo.has_pictures(model) and zoo.model_pictures(model, None, None) == {}
    assert summaries.write_run_pictures(model, task, str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []

    class Marker(keras.layers.Layer):
        def call(self, x):
            return x

    marked = keras.Model(inputs, Marker(name="m")(keras.layers.Dense(2)(inputs)))
    nested = keras.Model(inputs, marked(inputs))
    try:
        registry.register_pictures(Marker)(lambda model, clip, frames, scale: {"mark": np.full((1, 1, 3), scale)})
        assert registry.find_layers(nested, Marker) == [marked.get_layer("m")]  # found inside the nested model
        assert zoo.has_pictures(nested)
        np.testing.assert_array_equal(zoo.model_pictures(nested, None, None, scale=3)["mark"], [[[3, 3, 3]]])
        with pytest.raises(ValueError, match="Pictures of Marker layers are already registered"):
            registry.register_pictures(Marker)(lambda model, clip, frames, scale: {})
    finally:
        registry._PICTURES.pop(Marker, None)
