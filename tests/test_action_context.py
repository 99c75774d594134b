"""ActionContextAttention against a numpy reference, and the I3D action/context models."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers.action_context import ActionContextAttention


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


def test_layer_config_and_validation():
    layer = ActionContextAttention(num_classes=7, per_class=True, name="head")
    clone = ActionContextAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="num_classes=0"):
        ActionContextAttention(num_classes=0)
    with pytest.raises(ValueError, match="per_class='yes'"):
        ActionContextAttention(num_classes=2, per_class="yes")
    with pytest.raises(ValueError, match="input_shape"):
        ActionContextAttention(num_classes=2)(np.zeros((2, 3), "float32"))
