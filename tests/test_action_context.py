"""ActionContextAttention against a numpy reference, and the I3D action/context models."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers.action_context import ActionContextAttention
from tests.helpers import check_layer


def numpy_reference(features, weights, per_class):
    """Brute-force loops over positions, maps and classes (docs/action_context.md formulation)."""
    u, a, v, c, wa, ba, wc, bc = weights
    b = features.shape[0]
    flat = features.reshape(b, -1, features.shape[-1]).astype("float64")
    n, k = flat.shape[1], u.shape[1]
    num_classes = ba.shape[0]
    out = {key: [] for key in ("logits", "action_scores", "context_scores", "action_map", "context_map")}
    for i in range(b):
        maps, scores = [], []
        for kern, bias, clf, clf_b in ((u, a, wa, ba), (v, c, wc, bc)):
            att = np.zeros((n, k))
            for m in range(k):
                z = np.array([flat[i, p] @ kern[:, m] + bias[m] for p in range(n)])
                e = np.exp(z - z.max())
                att[:, m] = e / e.sum()
            desc = np.stack([sum(att[p, m] * flat[i, p] for p in range(n)) for m in range(k)])  # [K, D]
            if per_class:
                s = np.array([desc[j] @ clf[j] + clf_b[j] for j in range(num_classes)])
            else:
                s = desc[0] @ clf + clf_b
            maps.append(att.reshape(features.shape[1:-1] + (k,)))
            scores.append(s)
        out["action_map"].append(maps[0])
        out["context_map"].append(maps[1])
        out["action_scores"].append(scores[0])
        out["context_scores"].append(scores[1])
        out["logits"].append(scores[0] + scores[1])
    return {key: np.stack(val) for key, val in out.items()}


@pytest.mark.parametrize("per_class", [False, True])
def test_attention_matches_numpy_reference(per_class):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 3, 2, 4, 6)).astype("float32")
    layer = ActionContextAttention(num_classes=5, per_class=per_class, attention_initializer="glorot_uniform")
    out = layer(feats)
    assert set(out) == {"logits", "action_scores", "context_scores", "action_map", "context_map"}
    ref = numpy_reference(feats, [np.asarray(w) for w in layer.weights], per_class)
    for key in ref:
        np.testing.assert_allclose(np.asarray(out[key]), ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
    k = 5 if per_class else 1
    assert out["action_map"].shape == (2, 3, 2, 4, k)
    sums = np.asarray(out["action_map"]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(sums, np.ones((2, k)), atol=1e-5)
    assert np.all(np.asarray(out["context_map"]) >= 0)
    assert {tuple(s) if isinstance(s, tuple) else s for s in layer.compute_output_shape((2, 3, 2, 4, 6)).values()} \
        == {(2, 5), (2, 3, 2, 4, k)}


def test_zero_init_maps_are_uniform_and_head_is_average_pooling():
    feats = np.random.default_rng(1).normal(size=(1, 2, 3, 3, 4)).astype("float32")
    layer = ActionContextAttention(num_classes=3)
    out = layer(feats)
    np.testing.assert_allclose(np.asarray(out["action_map"]), np.full((1, 2, 3, 3, 1), 1 / 18), rtol=1e-6)
    wa = np.asarray(layer.action_kernel)
    np.testing.assert_allclose(np.asarray(out["action_scores"]), feats.mean(axis=(1, 2, 3)) @ wa, rtol=1e-5,
                               atol=1e-6)


def test_action_and_context_branches_differ_after_sgd():
    """The two classifiers are separate draws, so SGD on cross-entropy alone pulls the branches apart.

    With one shared draw (and zero map logits) both branches were the same function and stayed so:
    max|s_a - s_c| = 0 after any number of steps.
    """
    keras.utils.set_random_seed(0)
    feats = np.random.default_rng(0).normal(size=(4, 2, 3, 3, 8)).astype("float32")
    labels = np.array([0, 1, 2, 0])
    head = ActionContextAttention(num_classes=3)
    optimizer = keras.optimizers.SGD(0.1)
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, head(feats)["logits"]))
        optimizer.apply_gradients(zip(tape.gradient(loss, head.trainable_weights), head.trainable_weights))
    out = head(feats)
    assert np.max(np.abs(np.asarray(out["action_scores"]) - np.asarray(out["context_scores"]))) > 1e-2
    assert np.max(np.abs(np.asarray(out["action_map"]) - np.asarray(out["context_map"]))) > 1e-6


def test_still_image_features_and_finite_gradients():
    feats = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 5, 8)).astype("float32") * 30.0)
    layer = ActionContextAttention(num_classes=4, per_class=True, attention_initializer="glorot_uniform")
    with tf.GradientTape() as tape:
        tape.watch(feats)
        out = layer(feats)
        loss = tf.reduce_sum(out["logits"] ** 2) + tf.reduce_sum(out["action_map"] * out["context_map"])
    grads = tape.gradient(loss, layer.trainable_weights + [feats])
    assert out["context_map"].shape == (2, 4, 5, 4)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert any(np.abs(g).max() > 0 for g in grads[:4])  # the maps' own weights learn


@pytest.mark.parametrize("per_class,shape", [(False, (2, 2, 2, 3, 6)), (True, (2, 3, 2, 6))])
def test_check_layer(per_class, shape):
    # Config and .keras round trips, dtype policies, gradients to every weight; the five outputs (clips and still
    # images) against the numpy reference.
    k = 4 if per_class else 1
    maps = shape[:-1] + (k,)
    check_layer(ActionContextAttention, dict(num_classes=4, per_class=per_class,
                                             attention_initializer="glorot_uniform", name="head"),
                input_shape=shape,
                expected_output_shape={"logits": (2, 4), "action_scores": (2, 4), "context_scores": (2, 4),
                                       "action_map": maps, "context_map": maps},
                expected_output=lambda layer, x: numpy_reference(x, [np.asarray(w) for w in layer.weights],
                                                                 per_class), atol=1e-5, rtol=1e-4)


def test_layer_validation():
    with pytest.raises(ValueError, match="num_classes=0"):
        ActionContextAttention(num_classes=0)
    with pytest.raises(ValueError, match="per_class='yes'"):
        ActionContextAttention(num_classes=2, per_class="yes")
    with pytest.raises(ValueError, match="input_shape"):
        ActionContextAttention(num_classes=2)(np.zeros((2, 3), "float32"))


# ---- models (kerasvid.models.action_context) ----
from kerasvid.layers.action_context import I3DFlowInput  # noqa: E402
from kerasvid.losses.action_context import FactorizationLoss  # noqa: E402
from kerasvid.models import action_context as ac  # noqa: E402
from tests.helpers import check_model, reference_num_params  # noqa: E402


def head_params(depth, num_classes, maps=1):
    """Two 1x1x1 map convs (D*K + K each) and two classifiers (D*n + n each, class-agnostic)."""
    return 2 * (depth * maps + maps) + 2 * (depth * num_classes + num_classes)


def factorization_loss_fn(labels):
    loss = FactorizationLoss()
    return lambda outputs: loss(labels, outputs)


def test_i3d_builder(tmp_path):
    model = ac.i3d(num_classes=3, input_shape=(8, 32, 32, 2), modality="flow", dropout_rate=0.0)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 8, 32, 32, 2)).astype("float32")
    # (.keras round trips of the I3D models: tests/test_zoo.py at the default inputs, and the two tests below)
    check_model(model, x, expected_output_shape=(2, 3), expected_num_params=reference_num_params(2, 3),
                check_serialization=False, train_steps=0)
    with pytest.raises(ValueError, match="3 input channels"):
        ac.i3d(input_shape=(8, 32, 32, 2))
    with pytest.raises(ValueError, match="modality='depth'"):
        ac.i3d(modality="depth")


def test_two_stream_action_context_model():
    rng = np.random.default_rng(1)
    model = ac.i3d_action_context(num_classes=4, input_shape=(8, 64, 64, 3), outputs="all")
    rgb = rng.uniform(-1, 1, size=(2, 8, 64, 64, 3)).astype("float32")
    flow = rng.uniform(-1, 1, size=(2, 8, 64, 64, 2)).astype("float32")
    expected_params = reference_num_params(3) + reference_num_params(2) + 2 * head_params(1024, 4)
    shapes = {"logits": (2, 4), "action_scores": (2, 4), "context_scores": (2, 4),
              "action_map": (2, 1, 2, 2, 2), "context_map": (2, 1, 2, 2, 2)}
    # The stream scores are averaged: rebuild each stream's head output from the model's own layers.
    parts = keras.Model(model.inputs, [model.get_layer(f"{s}_action_context")(
        model.get_layer(f"{s}_i3d_Mixed_5c").output)["logits"] for s in ("rgb", "flow")])
    rgb_logits, flow_logits = (np.asarray(t) for t in parts([rgb, flow]))
    out = check_model(model, [rgb, flow], expected_output_shape=shapes, expected_num_params=expected_params,
                      check_serialization=False, train_steps=0)  # training: image variant below
    np.testing.assert_allclose(np.asarray(out["logits"]), (rgb_logits + flow_logits) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["logits"]),
                               np.asarray(out["action_scores"]) + np.asarray(out["context_scores"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["action_map"]).sum(axis=(1, 2, 3)), np.ones((2, 2)), atol=1e-5)
    logits_model = ac.i3d_action_context(num_classes=4, input_shape=(8, 64, 64, 3), streams=("rgb",))
    assert logits_model.output.shape == (None, 4) and len(logits_model.inputs) == 1


@pytest.mark.large
def test_tvnet_flow_stream_is_computed_in_the_model(tmp_path):
    model = ac.i3d_action_context(num_classes=3, input_shape=(8, 32, 32, 3), streams=("flow",),
                                  flow_source="tvnet", tvnet_kwargs={"iterations": 2})
    assert len(model.inputs) == 1 and model.inputs[0].shape == (None, 8, 32, 32, 3)
    # A bright square moving right by 2 px per frame.
    clip = -np.ones((1, 8, 32, 32, 3), "float32")
    for t in range(8):
        clip[0, t, 10:20, 4 + 2 * t:14 + 2 * t] = 1.0
    flow_in = keras.Model(model.inputs, model.get_layer("tvnet_flow_scaling").output)(clip)
    assert flow_in.shape == (1, 8, 32, 32, 2)
    flow_in = np.asarray(flow_in)
    np.testing.assert_array_equal(flow_in[:, -1], flow_in[:, -2])  # T-1 fields, the last one repeated
    assert np.abs(flow_in).max() <= 1.0 and np.abs(flow_in[..., 0]).max() > 0.0
    check_model(model, clip, expected_output_shape=(1, 3), tmp_path=tmp_path, train_steps=0)


def test_i3d_flow_input_scaling():
    flow = np.array([-30.0, -10.0, 0.0, 5.0, 40.0], "float32").reshape(1, 5, 1, 1, 1)
    flow = np.concatenate([flow, -flow], axis=-1)
    out = np.asarray(I3DFlowInput(num_frames=6)(flow))
    np.testing.assert_allclose(out[0, :, 0, 0, 0], [-1.0, -0.5, 0.0, 0.25, 1.0, 1.0])
    np.testing.assert_allclose(out[0, :, 0, 0, 1], [1.0, 0.5, 0.0, -0.25, -1.0, -1.0])
    with pytest.raises(ValueError, match="flow fields <= num_frames"):
        I3DFlowInput(num_frames=3)(flow)
    # Config and .keras round trips, dtype policies, the gradient to the flow; the same numbers.
    _, out = check_layer(I3DFlowInput, dict(bound=20.0, num_frames=6), input_data=flow,
                         expected_output_shape=(1, 6, 1, 1, 2))
    np.testing.assert_allclose(np.asarray(out)[0, :, 0, 0, 0], [-1.0, -0.5, 0.0, 0.25, 1.0, 1.0])


@pytest.mark.large
def test_still_image_variant(tmp_path):
    keras.utils.set_random_seed(0)  # MobileNetV2 with batch-2 BatchNorm: one large step can overshoot from some inits
    model = ac.action_context_image(num_classes=5, input_shape=(64, 64, 3), backbone="mobilenet_v2",
                                    per_class=True, outputs="all")
    x = np.random.default_rng(2).uniform(-1, 1, size=(2, 64, 64, 3)).astype("float32")
    shapes = {"logits": (2, 5), "action_scores": (2, 5), "context_scores": (2, 5),
              "action_map": (2, 2, 2, 5), "context_map": (2, 2, 2, 5)}
    backbone_params = keras.applications.MobileNetV2(include_top=False, weights=None,
                                                     input_shape=(64, 64, 3)).count_params()
    per_class_head = 2 * (1280 * 5 + 5) + 2 * (5 * 1280 + 5)
    out = check_model(model, x, expected_output_shape=shapes, expected_num_params=backbone_params + per_class_head,
                      tmp_path=tmp_path, loss_fn=factorization_loss_fn(np.array([0, 4])), train_steps=3,
                      learning_rate=1e-3)
    np.testing.assert_allclose(np.asarray(out["context_map"]).sum(axis=(1, 2)), np.ones((2, 5)), atol=1e-5)
    with pytest.raises(ValueError, match="backbone='vgg99'"):
        ac.action_context_image(backbone="vgg99")
    with pytest.raises(ValueError, match="classifier_activation must be None"):
        ac.action_context_image(outputs="all", classifier_activation="softmax")
