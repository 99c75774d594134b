"""CPNet builders and the NL baseline (kerasvid.models.cpnet): placements, parameter formulas, identity at init."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import zoo
from kerasvid.layers import CPModule, NonLocalBlock
from kerasvid.models.cpnet import correspondence_proposals, cp_modules
from kerasvid.ops import cp_knn
from tests.helpers import check_model
from tests.helpers import weights_only_count as _weights_only

SMALL = (3, 32, 32, 3)  # stem stride 1: res3 8x8, res4 4x4, res5 2x2


def cp_module_params(c, units, bottleneck=None):
    """1x1 convs with bias; every BN holds gamma, beta, moving mean and variance."""
    f = bottleneck or c
    total = c * f + f + 4 * f if bottleneck else 0
    prev = 2 * f + 3
    for u in units:
        total += prev * u + u + 4 * u
        prev = u
    return total + prev * c + c + 4 * c


def modules_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


# (depth, variant) -> [(insertion point, k, MLP widths, spatial shrink, bottleneck, input channels C)]
EXPECTED = {
    (18, "paper"): [(p, 8, [c // 4, c // 2], 1, None, c) for p, c in
                    [("res3_0", 128), ("res3_1", 128), ("res4_0", 256), ("res4_1", 256), ("res5_0", 512),
                     ("res5_1", 512)]],
    (18, "released_code"): [("res3_0", 8, [32, 64], 2, None, 128), ("res3_1", 8, [32, 64], 2, None, 128),
                            ("res4_0", 8, [64, 128], 1, None, 256), ("res4_1", 8, [64, 128], 1, None, 256)],
    (34, "paper"): [("res3_2", 12, [32, 64], 1, None, 128), ("res3_3", 12, [32, 64], 1, None, 128),
                    ("res4_3", 12, [64, 128], 1, None, 256), ("res4_4", 12, [64, 128], 1, None, 256),
                    ("res4_5", 12, [64, 128], 1, None, 256)],
    (34, "released_code"): [("res3_2", 8, [32, 64], 2, None, 128), ("res3_3", 8, [32, 64], 2, None, 128),
                            ("res4_3", 8, [64, 128], 1, None, 256), ("res4_4", 8, [64, 128], 1, None, 256),
                            ("res4_5", 8, [64, 128], 1, None, 256)],
    # ResNet-101 bottleneck outputs: res3 512 channels, res4 1024.
    (101, "paper"): [("res3_2", 4, [32, 64], 1, None, 512), ("res3_3", 4, [32, 64], 1, None, 512),
                     ("res4_20", 4, [64, 128], 1, None, 1024), ("res4_21", 4, [64, 128], 1, None, 1024),
                     ("res4_22", 4, [64, 128], 1, None, 1024)],
    (101, "released_code"): [("res3_2", 4, [64], 2, 64, 512), ("res3_3", 4, [64], 2, 64, 512),
                             ("res4_20", 4, [128], 1, 128, 1024), ("res4_21", 4, [128], 1, 128, 1024),
                             ("res4_22", 4, [128], 1, 128, 1024)],
}


@pytest.mark.parametrize("depth,variant", sorted(EXPECTED))
def test_module_places_and_parameter_formula(depth, variant):
    model = zoo.get_model(f"cpnet_resnet{depth}", num_classes=7, input_shape=SMALL, variant=variant)
    got = [(m.name, m.k, list(m.mlp_units), m.spatial_shrink, m.bottleneck, m.input.shape[-1])
           for m in modules_of(model, CPModule)]
    want = [(f"{p}_insert", k, units, s, b, c) for p, k, units, s, b, c in EXPECTED[depth, variant]]
    assert got == want
    added = sum(cp_module_params(c, units, b) for _, _, units, _, b, c in EXPECTED[depth, variant])
    assert sum(m.count_params() for m in modules_of(model, CPModule)) == added
    if depth == 18:  # and nothing else changes: the rest is exactly the C2D backbone
        c2d = zoo.c2d_resnet18(num_classes=7, input_shape=SMALL)
        assert model.count_params() == c2d.count_params() + added
    if variant == "paper":  # the registered count (400 classes) differs only by the classifier's 393 extra rows
        features = 512 if depth < 50 else 2048
        assert zoo.model_info(f"cpnet_resnet{depth}").num_params - model.count_params() == (features + 1) * 393


def test_module_costs_quoted_in_the_docs():
    # Trainable parameters of one (C, [C/4, C/2]) module (by hand: 19,200 / 75,264 / 297,984) plus
    # 2 moving statistics per BN channel.
    for c, trainable in ((128, 19_200), (256, 75_264), (512, 297_984)):
        assert cp_module_params(c, [c // 4, c // 2]) == trainable + 2 * (c // 4 + c // 2 + c)


def test_nl_resnet18_places_and_count():
    model = zoo.nl_resnet18(num_classes=7, input_shape=SMALL)
    blocks = modules_of(model, NonLocalBlock)
    assert [b.name for b in blocks] == [f"res{s}_{i}_insert" for s in (3, 4, 5) for i in (0, 1)]
    c2d = zoo.c2d_resnet18(num_classes=7, input_shape=SMALL)
    # theta, phi, g: C -> C/2 with bias; W_z: C/2 -> C with bias; BN(C) with 4 vectors.
    added = sum(2 * (3 * (c * c // 2 + c // 2) + (c // 2 * c + c) + 4 * c) for c in (128, 256, 512))
    assert model.count_params() == c2d.count_params() + added


@pytest.mark.parametrize("variant", ["paper", "released_code"])
def test_cpnet_at_initialisation_equals_c2d(variant):
    rng = np.random.default_rng(0)
    c2d = zoo.c2d_resnet18(num_classes=5, input_shape=SMALL)
    cpnet = zoo.cpnet_resnet18(num_classes=5, input_shape=SMALL, variant=variant)
    for layer in c2d.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape)])
        if layer.weights:
            cpnet.get_layer(layer.name).set_weights(layer.get_weights())
    x = rng.normal(size=(2,) + SMALL).astype("float32")
    want = c2d(x, training=False).numpy()
    assert np.abs(want).max() > 1e-2
    np.testing.assert_array_equal(cpnet(x, training=False).numpy(), want)


@pytest.mark.large
def test_check_model_cpnet_resnet18(tmp_path):
    model = zoo.cpnet_resnet18(num_classes=5, input_shape=(3, 32, 32, 3), k=4, chunk_size=16)
    assert {m.k for m in modules_of(model, CPModule)} == {4}
    assert {m.chunk_size for m in modules_of(model, CPModule)} == {16}
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32, 3)).astype("float32")
    check_model(model, x, expected_output_shape=(2, 5), tmp_path=tmp_path, train_steps=1)


def test_stem_stride_follows_input_size():
    for size, stride in ((112, 1), (224, 2)):
        model = zoo.cpnet_resnet18(num_classes=3, input_shape=(2, size, size, 3), include_top=False, pooling=None)
        assert model.get_layer("conv1_conv").strides == (stride, stride)  # a frame-wise 2D conv
        assert modules_of(model, CPModule)[0].input.shape[2:4] == (28, 28)  # res3 at 28x28 either way


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_shape=(1, 32, 32, 3)), r"frames >= 2.*\(1, 32, 32, 3\)"),
    (dict(input_shape=(None, 32, 32, 3)), "static number of frames"),
    (dict(input_shape=SMALL, variant="code"), "variant='code'"),
    (dict(input_shape=SMALL, k=0), "k=0"),
    (dict(input_shape=(2, 32, 32, 3), k=5), "k=5 with 4 candidates"),  # res5 is 2x2: one other frame of 4
])
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.cpnet_resnet18(num_classes=3, **kwargs)


def test_correspondences_follow_a_moving_square():
    """The paper's premise in miniature: proposals of a textured moving square recover its motion.

    A 6x6 square with a fixed random texture moves by (+1, +2) pixels per frame over fresh background noise.
    Features are 3x3 patches. For every pixel deep inside the square, its T-1 proposals are exactly the same
    texture pixel in each other frame, i.e. displaced by (t' - t) * (1, 2): the correspondences encode motion.
    """
    rng = np.random.default_rng(3)
    frames, size, side, velocity = 4, 20, 6, (1, 2)
    texture = rng.uniform(0.0, 1.0, (side, side))
    clip = rng.uniform(0.0, 1.0, (frames, size, size)) * 0.2 - 1.0  # background far from the texture values
    origins = [(3 + velocity[0] * t, 2 + velocity[1] * t) for t in range(frames)]
    for t, (y, x) in enumerate(origins):
        clip[t, y:y + side, x:x + side] = texture
    padded = np.pad(clip, ((0, 0), (1, 1), (1, 1)), constant_values=-1.0)
    patches = np.stack([padded[:, dy:dy + size, dx:dx + size] for dy in range(3) for dx in range(3)], axis=-1)
    points = patches.reshape(1, frames * size * size, 9).astype(np.float32)
    proposals = cp_knn(points, frames, k=frames - 1).numpy()[0]
    checked = 0
    for t, (y0, x0) in enumerate(origins):
        for dy in range(1, side - 1):
            for dx in range(1, side - 1):
                i = (t * size + y0 + dy) * size + x0 + dx
                found = sorted(proposals[i].tolist())
                want = sorted(((u * size + origins[u][0] + dy) * size + origins[u][1] + dx)
                              for u in range(frames) if u != t)
                assert found == want, (t, dy, dx)
                displacement = [((j // size) % size - (y0 + dy), j % size - (x0 + dx), j // size ** 2 - t)
                                for j in proposals[i]]
                assert all(d[:2] == (velocity[0] * d[2], velocity[1] * d[2]) for d in displacement)
                checked += 1
    assert checked == frames * (side - 2) ** 2


def test_supp_table1_units():
    """Supp. Table 1 counts weights only (conv/dense kernels + classifier bias) in 2**20 units: C2D = 10.84.

    The CPNet (10.86) and NL (10.88) rows match none of the documented designs; our six-module models are
    11.58 and 12.15 Mi. One CP module at res3 alone would give 10.86 (and one NL block there 10.87).
    """
    c2d = _weights_only(zoo.c2d_resnet18(input_shape=SMALL))
    cp = _weights_only(zoo.cpnet_resnet18(input_shape=SMALL))
    nl = _weights_only(zoo.nl_resnet18(input_shape=SMALL))
    one_cp_at_res3 = (2 * 128 + 3) * 32 + 32 * 64 + 64 * 128
    assert c2d == 11_372_112
    assert cp - c2d == 2 * sum((2 * c + 3) * (c // 4) + (c // 4) * (c // 2) + (c // 2) * c for c in (128, 256, 512))
    assert nl - c2d == 2 * sum(4 * c * (c // 2) for c in (128, 256, 512))
    assert [f"{v / 2**20:.4f}"[:5] for v in (c2d, cp, nl, c2d + one_cp_at_res3, c2d + 4 * 128 * 64)] == [
        "10.84", "11.58", "12.15", "10.86", "10.87"]


# ----- Correspondence proposals of a trained CPNet ------------------------------------------------------------
def _pooled_cp_model(k, shrink=1):
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
    from kerasvid.viz import draw_correspondences

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

    from kerasvid.data import preprocess
    from kerasvid.training import summaries
    from kerasvid.viz import GLYPH_HEIGHT, draw_correspondences

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
    assert [m.name for m in cp_modules(model)] == ["cp_a", "cp_b"]  # network order
    paths = summaries.write_run_pictures(model, task, str(tmp_path), scale=2)
    assert paths == [str(tmp_path / "correspondences.png")]  # no training summaries: no curve
    picture = tf.io.decode_png(tf.io.read_file(paths[0])).numpy()
    caption = GLYPH_HEIGHT + 6
    assert picture.shape == (2 * (caption + 16), 3 * 16 + 2 * 4, 3)
    # row 2 is cp_b's drawing over the frames recovered from the normalised clip (denormalised exactly)
    want = draw_correspondences(frames, correspondence_proposals(model, image.numpy()[0], "cp_b"), scale=2)
    np.testing.assert_array_equal(picture[2 * caption + 16:], want)
