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


# ----- CPNet correspondence proposals ------------------------------------------------------------------------------
def _pooled_cp_model(k, shrink=1):
    import keras

    from kerasvid.layers import CPModule

    inputs = keras.Input((3, 8, 8, 1))
    x = keras.layers.AveragePooling3D((1, 2, 2), name="pool")(inputs)  # 8x8 pixels -> 4x4 feature grid
    x = CPModule(k=k, mlp_units=[2], spatial_shrink=shrink, name="cp")(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _hand_made_clip():
    """Features (after the 2x2 pooling) 10 + 16 t + 4 i + j, except a 'digit' moving right along row 1:
    0.0 at (t=0, j=0), 0.2 at (1, 1), 0.5 at (2, 2). Each feature fills a 2x2 pixel block of the clip."""
    t, i, j = np.meshgrid(np.arange(3), np.arange(4), np.arange(4), indexing="ij")
    features = (10.0 + 16 * t + 4 * i + j).astype(np.float32)
    features[0, 1, 0], features[1, 1, 1], features[2, 1, 2] = 0.0, 0.2, 0.5
    clip = np.repeat(np.repeat(features, 2, axis=1), 2, axis=2)[..., None]
    return features, clip


def test_correspondence_proposals_are_the_cp_knn_of_the_module_input():
    from kerasvid.ops import cp_knn
    from kerasvid.viz import correspondence_proposals

    features, clip = _hand_made_clip()
    model = _pooled_cp_model(k=3)
    out = correspondence_proposals(model, clip, "cp", query=(1, 2, 3))  # pixel (2, 3) of frame 1 = cell (1, 1, 1)
    assert out["layer"] == "cp" and out["k"] == 3 and out["grid"] == (3, 4, 4)
    np.testing.assert_array_equal(out["query"], [1, 1, 1])
    assert out["query_index"] == 16 + 4 + 1
    # by construction: the digit in frame 0 (index 4, distance 0.2), in frame 2 (index 38, 0.3), then the
    # smallest background value of another frame (10, index 0); the digit's own frame is excluded
    np.testing.assert_array_equal(out["neighbour_indices"], [4, 38, 0])
    reference = cp_knn(tf.constant(features.reshape(1, 48, 1)), 3, 3).numpy()[0, out["query_index"]]
    np.testing.assert_array_equal(out["neighbour_indices"], reference)
    np.testing.assert_array_equal(out["neighbours"], [[0, 1, 0], [2, 1, 2], [0, 0, 0]])
    # cell centres in clip pixels: 2 i + 0.5, 2 j + 0.5
    np.testing.assert_allclose(out["query_pixel"], [1, 2.5, 2.5])
    np.testing.assert_allclose(out["neighbour_pixels"], [[0, 2.5, 0.5], [2, 2.5, 4.5], [0, 0.5, 0.5]])
    assert correspondence_proposals(model, clip[None], query=(1, 2, 3))["layer"] == "cp"  # first CP module
    with pytest.raises(ValueError, match="'pool' is not a CPModule of model .*its CP modules: cp"):
        correspondence_proposals(model, clip, "pool")
    with pytest.raises(ValueError, match="outside the clip"):
        correspondence_proposals(model, clip, query=(3, 0, 0))


def test_draw_correspondences_markers_at_the_proposals():
    from kerasvid.viz import correspondence_proposals, draw_correspondences

    features, clip = _hand_made_clip()
    out = correspondence_proposals(_pooled_cp_model(k=3), clip, query=(1, 2, 3))
    frames = np.repeat(clip.astype(np.uint8), 3, axis=-1)
    yellow, cyan = (255, 230, 0), (0, 220, 255)
    canvas = draw_correspondences(frames, out, scale=4, gap=2, query_color=yellow, neighbour_color=cyan)
    assert canvas.shape == (32, 3 * 32 + 2 * 2, 3)
    # pixel (y, x) of frame f is drawn at row floor(4 (y + 0.5)), column f * 34 + floor(4 (x + 0.5))
    np.testing.assert_array_equal(canvas[8:17, 42:51], np.tile(yellow, (9, 9, 1)))  # query (1, 2.5, 2.5) -> (12, 46)
    for row, col in ((12, 4), (12, 88), (4, 4)):  # outlined squares (half size 4) at the three proposals
        for r, c in ((row - 4, col), (row + 4, col), (row, col - 4), (row, col + 4)):
            if 0 <= c < canvas.shape[1]:
                np.testing.assert_array_equal(canvas[r, c], cyan, err_msg=f"({r}, {c})")
    np.testing.assert_array_equal(canvas[12, 20:38], np.tile(cyan, (18, 1)))  # the line (12, 46) -> (12, 4)
    np.testing.assert_array_equal(canvas[16:, 32:34], 0)  # gap between frames 0 and 1 (below the lines)
    np.testing.assert_array_equal(canvas[28, 2 * 34 + 28], frames[2, 7, 7])  # elsewhere: the enlarged frame
    with pytest.raises(ValueError, match="uint8"):
        draw_correspondences(clip, out)


def test_correspondence_proposals_shrunk_module_and_default_query():
    from kerasvid.ops import cp_knn
    from kerasvid.viz import correspondence_proposals

    features, clip = _hand_made_clip()
    model = _pooled_cp_model(k=2, shrink=2)
    out = correspondence_proposals(model, clip, "cp")
    assert out["grid"] == (3, 2, 2)
    small = features[:, ::2, ::2, None]  # the module's 2x shrink (TF1 bilinear) subsamples
    reference = cp_knn(tf.constant(small.reshape(1, 12, 1)), 3, 2).numpy()[0, out["query_index"]]
    np.testing.assert_array_equal(out["neighbour_indices"], reference)
    # default query: the point of the middle frame farthest from that frame's mean feature
    middle = small[1, ..., 0]
    r, c = np.unravel_index(np.argmax(np.abs(middle - middle.mean())), middle.shape)
    np.testing.assert_array_equal(out["query"], [1, r, c])
    # cell (r, c) samples feature position (2r, 2c), the 2x2 pixel block centred at (4r + 0.5, 4c + 0.5)
    np.testing.assert_allclose(out["query_pixel"], [1, 4 * r + 0.5, 4 * c + 0.5])


def test_write_run_pictures_draws_one_row_per_cp_module(tmp_path):
    import types

    import keras

    from kerasvid.data import preprocess
    from kerasvid.layers import CPModule
    from kerasvid.training import summaries
    from kerasvid.viz import GLYPH_HEIGHT, correspondence_proposals, draw_correspondences

    _, clip = _hand_made_clip()
    frames = np.repeat(clip.astype(np.uint8), 3, axis=-1)  # [3, 8, 8, 3]
    image = preprocess.normalize(tf.constant(frames[None]), "imagenet")  # what the task's eval data would yield
    task = types.SimpleNamespace(config=types.SimpleNamespace(normalization="imagenet", eval_pattern="held-out-*"),
                                 build_dataset=lambda training: [({"image": image}, tf.constant([0]))],
                                 model_inputs=lambda inputs: inputs["image"])  # Task.model_inputs's default
    inputs = keras.Input((3, 8, 8, 3))
    x = keras.layers.AveragePooling3D((1, 2, 2))(inputs)
    x = CPModule(k=2, mlp_units=[2], name="cp_a")(x)
    x = CPModule(k=3, mlp_units=[2], name="cp_b")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(x)))
    paths = summaries.write_run_pictures(model, task, str(tmp_path), scale=2)
    assert paths == [str(tmp_path / "correspondences.png")]  # no training summaries: no curve
    picture = tf.io.decode_png(tf.io.read_file(paths[0])).numpy()
    caption = GLYPH_HEIGHT + 6
    assert picture.shape == (2 * (caption + 16), 3 * 16 + 2 * 4, 3)
    # row 2 is cp_b's drawing over the frames recovered from the normalised clip (denormalised exactly)
    want = draw_correspondences(frames, correspondence_proposals(model, image.numpy()[0], "cp_b"), scale=2)
    np.testing.assert_array_equal(picture[2 * caption + 16:], want)
