"""Tests for the actor-observer network (kerasvid.models.actor_observer) and its training objective."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers import VideoSoftmax
from kerasvid.losses import ActorObserverLoss, actor_observer_objective, dist_ratio
from kerasvid.models import actor_observer as ao
from kerasvid.models.registry import model_info
from tests.helpers import check_model

# keras.applications.ResNet152: 60,419,944 parameters with its 1000-way top (documented figure).
RESNET152_NOTOP = 60_419_944 - (2048 * 1000 + 1000)
SELECTOR_FC = 2048 + 1


def _small_trunk(size=32, dim=16):
    """A small conv trunk (the network logic does not depend on the trunk; the ResNet ones are tested above)."""
    frames = keras.Input((1, size, size, 3))
    x = keras.layers.Reshape((size, size, 3))(frames)
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(x)
    return keras.Model(frames, keras.layers.Dense(dim)(keras.layers.Flatten()(x)), name="small")


def _frames(rng, batch, size):
    return [rng.normal(0, 1, (batch, 1, size, size, 3)).astype("float32") for _ in range(3)]


@pytest.mark.large
def test_resnet152_builder_counts_and_one_balanced_training_step():
    """The real builder (at 32x32 to keep the test short; the parameter count does not depend on the input size and
    benchmarks/actor_observer_step.py runs the same step at 224x224): parameter count from keras.applications'
    figure, and one training step in which the gradients reaching d_pos and d_neg have equal norms (all five: the
    next test)."""
    model = ao.actor_observer_resnet152(num_classes=157, input_shape=(1, 32, 32, 3))
    expected = RESNET152_NOTOP + 2 * SELECTOR_FC + 3 + 2048 * 157 + 157
    assert model.count_params() == expected == model_info("actor_observer_resnet152").num_params
    assert model.get_layer("trunk").count_params() == RESNET152_NOTOP

    rng = np.random.default_rng(0)
    x, y, z = _frames(rng, 2, 32)
    index = tf.constant([0, 1])
    softmaxes = [VideoSoftmax(num_videos=2) for _ in range(3)]
    with tf.GradientTape() as tape:
        outputs = model([x, y, z], training=True)
        result = actor_observer_objective(outputs, index, softmaxes, ActorObserverLoss(), balance_gradients=True)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "d_pos": (2,), "d_neg": (2,), "selector_x": (2,), "selector_y": (2,), "selector_z": (2,), "logits": (2, 157)}
    *grads, g_pos, g_neg = tape.gradient(result["objective"],
                                         model.trainable_variables + [outputs["d_pos"], outputs["d_neg"]])
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None and "predictions" not in v.path]
    assert not missing, missing
    assert float(tf.norm(g_pos)) > 0
    assert float(tf.norm(g_neg)) == pytest.approx(float(tf.norm(g_pos)), rel=1e-5)
    optimizer = keras.optimizers.SGD(1e-3, momentum=0.9)
    optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
    assert np.isfinite(float(result["objective"]))


def test_selector_gradients_are_balanced():
    """equalize_grad_norm inside the objective: the five gradients have equal norms (small trunk, 32x32)."""
    model = ao.actor_observer_network(input_shape=(1, 32, 32, 3), trunk=_small_trunk())
    rng = np.random.default_rng(1)
    frames = _frames(rng, 4, 32)
    probs = {}

    # benchmarks/actor_observer_step.py records the softmax outputs the same way (tests do not import benchmarks).
    class Spy(VideoSoftmax):
        """Records its output so that the test can take the gradient with respect to it."""

        def call(self, f, video_index, training=None):
            probs[self.name] = super().call(f, video_index, training=training)
            return probs[self.name]

    spies = [Spy(num_videos=3, name=f"spy_{s}") for s in "xyz"]
    with tf.GradientTape() as tape:
        outputs = model(frames, training=True)
        result = actor_observer_objective(outputs, tf.constant([0, 1, 1, 2]), spies, ActorObserverLoss())
    # Gradients with respect to the equalizer's inputs: (d_pos, d_neg, p_x, p_y, p_z).
    grads = tape.gradient(result["objective"], [outputs["d_pos"], outputs["d_neg"]] +
                          [probs[f"spy_{s}"] for s in "xyz"])
    norms = [float(tf.norm(g)) for g in grads]
    assert norms[0] > 0
    np.testing.assert_allclose(norms, norms[0], rtol=1e-5)


def test_network_numbers_and_serialization(tmp_path):
    model = ao.actor_observer_network(num_classes=5, input_shape=(1, 32, 32, 3), variant="share",
                                      trunk=_small_trunk())
    rng = np.random.default_rng(2)
    x, y, z = _frames(rng, 2, 32)
    trunk = model.get_layer("small")
    fx, fy, fz = (trunk(t, training=False).numpy() for t in (x, y, z))
    out = model([x, y, z], training=False)
    np.testing.assert_allclose(out["d_pos"].numpy(), np.linalg.norm(fx - fy + 1e-6, axis=1), rtol=1e-5)
    np.testing.assert_allclose(out["d_neg"].numpy(), np.linalg.norm(fy - fz + 1e-6, axis=1), rtol=1e-5)
    kernel, bias = model.get_layer("selector_first_fc").get_weights()
    # exp(ln 0.5) = 0.5 at initialisation.
    np.testing.assert_allclose(out["selector_x"].numpy(), 0.5 * np.tanh(fx @ kernel + bias)[:, 0], rtol=1e-5)
    np.testing.assert_allclose(out["selector_z"].numpy(), 0.5 * np.tanh(fz @ kernel + bias)[:, 0], rtol=1e-5)
    w_cls, b_cls = model.get_layer("predictions").get_weights()
    np.testing.assert_allclose(out["logits"].numpy(), fy @ w_cls + b_cls, rtol=1e-4, atol=1e-5)

    def objective(outputs):
        return tf.reduce_mean(dist_ratio(outputs["d_pos"], outputs["d_neg"]) + outputs["selector_x"] ** 2)

    expected_shapes = {"d_pos": (2,), "d_neg": (2,), "selector_x": (2,), "selector_y": (2,), "selector_z": (2,),
                       "logits": (2, 5)}
    check_model(model, [x, y, z], expected_output_shape=expected_shapes, tmp_path=tmp_path, loss_fn=objective,
                train_steps=2, learning_rate=1e-3)


def test_variants_and_validation():
    share = ao.actor_observer_network(input_shape=(1, 32, 32, 3), variant="share", trunk=_small_trunk())
    noshare = ao.actor_observer_network(input_shape=(1, 32, 32, 3), variant="noshare", trunk=_small_trunk())
    assert noshare.count_params() - share.count_params() == 16 + 1  # one more Dense(1) on 16-d features
    rng = np.random.default_rng(3)
    x, y, _ = _frames(rng, 2, 32)
    # With z = x the shared first-person selector scores x and z alike; the unshared one does not.
    out = share([x, y, x], training=False)
    np.testing.assert_allclose(out["selector_x"].numpy(), out["selector_z"].numpy(), rtol=1e-6)
    out = noshare([x, y, x], training=False)
    assert not np.allclose(out["selector_x"].numpy(), out["selector_z"].numpy())
    assert "logits" not in out
    assert math.isclose(float(np.exp(share.get_layer("selector_y").log_scale.numpy())), 0.5, rel_tol=1e-6)
    with pytest.raises(ValueError, match="variant='both'"):
        ao.actor_observer_network(depth=18, input_shape=(1, 32, 32, 3), variant="both")
    with pytest.raises(ValueError, match="pooling='max'"):
        ao.actor_observer_network(depth=18, input_shape=(1, 32, 32, 3), pooling="max")
    frames = keras.Input((1, 8, 8, 3))
    small = keras.Model(frames, keras.layers.Dense(6)(keras.layers.Flatten()(frames)), name="small")
    custom = ao.actor_observer_network(input_shape=(1, 8, 8, 3), trunk=small)
    assert custom.count_params() == 8 * 8 * 3 * 6 + 6 + 2 * (6 + 1) + 3
    out = custom([np.ones((2, 1, 8, 8, 3), "float32")] * 3)
    np.testing.assert_allclose(out["d_pos"].numpy(), np.sqrt(6) * 1e-6, rtol=1e-3)  # identical frames
    with pytest.raises(ValueError, match="one \\[B, D\\] output"):
        ao.actor_observer_network(input_shape=(1, 8, 8, 3), trunk=keras.Model(frames, frames))
    with pytest.raises(ValueError, match="initial_scale=0"):
        ao.SelectorScale(initial_scale=0)
