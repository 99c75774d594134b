"""The CPNet authors' TF1 checkpoints into `cpnet_resnet34(variant="released_code", weights=<prefix>)`.

The checkpoints themselves cannot be downloaded here: the test writes one with exactly the names and shapes of the
Jester checkpoint (tests/fixtures/cpnet_checkpoints/jester_r34_112.txt, obtained by building the authors' training
graph; see its README), random values, and checks (1) that every Keras weight got the value of the variable the
authors' graph gives it, (2) the backbone's logits against an independent re-implementation of the authors' graph
from the facts of shared/reference/cpnet_checkpoints/conventions.md (TF "SAME" conv3d / max pool with the raw
checkpoint arrays, BatchNorm epsilon 1e-3, conv biases, mean over T, H, W, fc), with the CP branches zeroed through
`bn_final` gamma = beta = 0 in the written checkpoint, and (3) one CP module with the checkpoint's values against
the numpy re-implementation of tests/test_cp_module.py.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasvid import zoo
from kerasvid.models import cpnet
from tests.test_cp_module import np_cp_module

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "cpnet_checkpoints")
# Small input (CPU test): T=2, 64x64 with the 224 model's stride-2 stem, so that the asymmetric TF SAME pads of the
# 7x7/2 stem (2 before, 3 after), the 3x3/2 max pool and convs (0 / 1) and the 1x1/2 shortcuts are all exercised.
INPUT = (2, 64, 64, 3)


def read_variable_list(path):
    """name -> shape of the authors' checkpoint (one `name<TAB>d0,d1,...` a line, `#` comments)."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, _, dims = line.rstrip("\n").partition("\t")
            out[name] = tuple(int(d) for d in dims.split(",") if d)
    return out


def make_values(shapes, seed=0, zero_cp=False):
    """Random values of a plausible scale for every variable; BN variances positive; `zero_cp`: every CP module's
    `bn_final` gamma and beta are 0 (the module adds exactly 0)."""
    rng = np.random.RandomState(seed)
    values = {}
    for name, shape in shapes.items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "weights":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.randn(*shape) * np.sqrt(1.0 / fan_in)
        elif leaf == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "gamma":
            value = rng.uniform(0.5, 1.0, shape)
        else:  # biases, beta, moving_mean, Momentum slots, batch
            value = rng.randn(*shape) * 0.1
        if zero_cp and "/bn_final/" in name and leaf in ("gamma", "beta"):
            value = np.zeros(shape)
        values[name] = np.asarray(value, np.float32)
    return values


def write_checkpoint(prefix, values):
    """A V2 checkpoint (`.index` + `.data-00000-of-00001`) as `tf.train.Saver` writes it."""
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])
    return prefix


@pytest.fixture(scope="module")
def jester(tmp_path_factory):
    shapes = read_variable_list(os.path.join(HERE, "jester_r34_112.txt"))
    assert len(shapes) == 515 and shapes["fc/weights"] == (512, 27)
    folder = tmp_path_factory.mktemp("cpnet_tf1")
    zeroed = make_values(shapes, seed=0, zero_cp=True)
    trained = dict(zeroed, **{k: v for k, v in make_values(shapes, seed=1).items() if "/bn_final/" in k})
    return dict(shapes=shapes, zeroed=zeroed, trained=trained,
                zeroed_prefix=write_checkpoint(str(folder / "zeroed" / "model-4.ckpt"), zeroed),
                trained_prefix=write_checkpoint(str(folder / "trained" / "model-4.ckpt"), trained))


@pytest.fixture(scope="module")
def model(jester):
    return zoo.cpnet_resnet34(variant="released_code", num_classes=27, input_shape=INPUT, stem_stride=2,
                              weights=jester["zeroed_prefix"])


def reference_backbone_logits(x, v, stem_stride):
    """The authors' ResNet-34 graph (conventions.md) with the CP branches adding 0: TF SAME everywhere."""
    def conv(h, scope, stride):
        return tf.nn.conv3d(h, v[scope + "/weights"], [1, 1, stride, stride, 1], "SAME") + v[scope + "/biases"]

    def bn(h, scope):
        return (v[scope + "/bn/gamma"] * (h - v[scope + "/bn/moving_mean"])
                / np.sqrt(v[scope + "/bn/moving_variance"] + 1e-3) + v[scope + "/bn/beta"])

    h = tf.nn.relu(bn(conv(x, "conv0", stem_stride), "conv0"))
    h = tf.nn.max_pool3d(h, [1, 1, 3, 3, 1], [1, 1, 2, 2, 1], "SAME")
    for g, blocks in enumerate((3, 4, 6, 3)):
        for i in range(blocks):
            scope, stride = f"group{g}/block{i}", 2 if (i == 0 and g > 0) else 1
            y = tf.nn.relu(bn(conv(h, scope + "/conv1", stride), scope + "/conv1"))
            y = bn(conv(y, scope + "/conv2", 1), scope + "/conv2")
            shortcut = (bn(conv(h, scope + "/convshortcut", stride), scope + "/convshortcut")
                        if scope + "/convshortcut/weights" in v else h)
            h = tf.nn.relu(shortcut + y)
    return tf.reduce_mean(h, axis=[1, 2, 3]) @ v["fc/weights"] + v["fc/biases"]


def test_every_keras_weight_gets_the_value_of_its_tf1_variable(jester, model):
    cpnet.load_tf1_checkpoint(model, jester["trained_prefix"])
    values = jester["trained"]
    # Independent of the converter's table: every variable has distinct random values, so each Keras weight is
    # matched to the one checkpoint variable holding its numbers.
    by_content = {np.ascontiguousarray(a).tobytes(): n for n, a in values.items()}
    matched = {}
    for w in model.weights:
        name = by_content.get(np.ascontiguousarray(w.numpy().reshape(-1)).tobytes())
        assert name is not None, f"{w.path} holds no checkpoint variable's values"
        matched[w.path] = name
    model_variables = {n for n in values if n != "batch" and not n.endswith("/Momentum")}
    assert len(model.weights) == 308 and set(matched.values()) == model_variables
    # The converter's table agrees with the authors' scopes at the places that are easy to get wrong.
    want = {"conv1_conv/kernel": "conv0/weights", "conv3_block1_0_conv/kernel": "group1/block0/convshortcut/weights",
            "conv3_block1_0_bn/moving_variance": "group1/block0/convshortcut/bn/moving_variance",
            "conv2_block3_2_bn/gamma": "group0/block2/conv2/bn/gamma", "predictions/kernel": "fc/weights"}
    for path, name in want.items():
        assert [n for p, n in matched.items() if p.endswith(path)] == [name]
    cp = model.get_layer("res4_5_insert")
    np.testing.assert_array_equal(cp.mlp_convs[0].kernel.numpy(), values["group2/block5/pointnet/conv0/weights"][0, 0])
    np.testing.assert_array_equal(cp.final_conv.kernel.numpy(),
                                  values["group2/block5/pointnet/conv_final/weights"].reshape(128, 256))
    np.testing.assert_array_equal(cp.final_bn.gamma.numpy(), values["group2/block5/pointnet/bn_final/gamma"])


def test_a_cp_module_with_the_checkpoint_values_matches_the_numpy_reference(jester, model):
    cpnet.load_tf1_checkpoint(model, jester["trained_prefix"])
    layer = model.get_layer("res3_2_insert")  # res3: the 2x shrink (8x8 -> 4x4 at this input), k = 8
    assert (layer.k, layer.spatial_shrink, layer.epsilon) == (8, 2, 1e-3)
    x = np.random.RandomState(3).randn(1, 2, 8, 8, 128).astype(np.float32)
    want = np_cp_module(x, layer)
    assert np.abs(want - x).max() > 0.1
    np.testing.assert_allclose(layer(x, training=False).numpy(), want, rtol=1e-4, atol=1e-4)


def test_the_backbone_computes_the_authors_graph(jester, model):
    cpnet.load_tf1_checkpoint(model, jester["zeroed_prefix"])
    x = np.random.RandomState(4).randn(1, *INPUT).astype(np.float32)
    want = reference_backbone_logits(x, jester["zeroed"], stem_stride=2).numpy()
    got = model(x, training=False).numpy()
    scale = np.abs(want).max()
    assert scale > 0.1 and np.std(want) > 0.01 * scale
    np.testing.assert_allclose(got, want, atol=1e-4 * scale)


def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(jester, model, tmp_path):
    before = [w.numpy().copy() for w in model.weights]
    bad = dict(jester["zeroed"])
    bad["group2/block3/pointnet/conv0/weights"] = bad["group2/block3/pointnet/conv0/weights"][:, :, :259]
    prefix = write_checkpoint(str(tmp_path / "bad" / "model.ckpt"), bad)
    with pytest.raises(ValueError, match=r"'group2/block3/pointnet/conv0/weights' of shape \(1, 1, 259, 64\) does "
                                         r"not fit the Keras weight of shape \(515, 64\)") as info:
        cpnet.load_tf1_checkpoint(model, prefix)
    assert "\n" not in str(info.value)
    missing = {k: v for k, v in jester["zeroed"].items() if not k.startswith("group3/block2/conv2/bn/")}
    with pytest.raises(ValueError, match="has no variable 'group3/block2/conv2/bn/gamma'"):
        cpnet.load_tf1_checkpoint(model, write_checkpoint(str(tmp_path / "missing" / "model.ckpt"), missing))
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.weights, before))
    with pytest.raises(ValueError, match="variant='released_code'"):
        zoo.cpnet_resnet34(num_classes=27, input_shape=INPUT, weights=jester["zeroed_prefix"])


def test_the_classifier_loads_only_where_it_fits():
    """Fine-tuning from the Jester checkpoint: with another class count, or without a top, `fc` stays unused and the
    classifier keeps its initial weights; every other variable must still fit."""
    import keras

    from kerasvid.weights import tf_checkpoint

    rng = np.random.RandomState(5)
    trunk, head = keras.layers.Dense(2, name="conv"), keras.layers.Dense(3, name="predictions")
    trunk.build((None, 4))
    head.build((None, 4))
    pairs = [(trunk.kernel, "a/weights"), (trunk.bias, "a/biases"), (head.kernel, "fc/weights"),
             (head.bias, "fc/biases")]
    values = {"a/weights": rng.randn(1, 1, 4, 2), "a/biases": rng.randn(2), "fc/weights": rng.randn(4, 5),
              "fc/biases": rng.randn(5)}
    initial = head.kernel.numpy().copy()
    assert tf_checkpoint.assign_checkpoint(pairs, values, "ck", optional=("fc/",)) == 2
    np.testing.assert_array_equal(head.kernel.numpy(), initial)
    np.testing.assert_allclose(trunk.kernel.numpy(), values["a/weights"][0, 0], rtol=1e-6)
    assert tf_checkpoint.assign_checkpoint(pairs[:2], values, "ck", optional=("fc/",)) == 2  # no top
    fitting = dict(values, **{"fc/weights": rng.randn(4, 3), "fc/biases": rng.randn(3)})
    assert tf_checkpoint.assign_checkpoint(pairs, fitting, "ck", optional=("fc/",)) == 4
    np.testing.assert_allclose(head.kernel.numpy(), fitting["fc/weights"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"'fc/weights' of shape \(4, 5\) does not fit the Keras weight of shape "
                                         r"\(4, 3\)"):
        tf_checkpoint.assign_checkpoint(pairs, values, "ck")
    with pytest.raises(ValueError, match=r"2 variables of the checkpoint 'ck' fit no Keras weight, e.g. "
                                         r"\['fc/weights', 'fc/biases'\]"):
        tf_checkpoint.assign_checkpoint(pairs[:2], values, "ck")


def test_only_leading_size_one_axes_are_added_or_dropped():
    """A conv3d kernel [1, k, k, ci, co] fits a frame-wise [k, k, ci, co]; [3, 1, 1, ci, co] does not fit
    (1, 3, 1, ci, co): reshaping it would move the kernel's axes."""
    from kerasvid.weights.tf_checkpoint import _fit_value

    kernel = np.arange(2 * 3 * 3 * 4, dtype=np.float32).reshape(1, 3, 3, 2, 4)
    np.testing.assert_array_equal(_fit_value("k", kernel, (3, 3, 2, 4)), kernel[0])
    with pytest.raises(ValueError, match=r"'t' of shape \(3, 1, 1, 2, 4\) does not fit the Keras weight of shape "
                                         r"\(1, 3, 1, 2, 4\)"):
        _fit_value("t", np.zeros((3, 1, 1, 2, 4)), (1, 3, 1, 2, 4))
