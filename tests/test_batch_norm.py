"""FusedBatchNormalization against keras.layers.BatchNormalization (kerasvid.layers.batch_norm)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers.batch_norm import FusedBatchNormalization
from tests.helpers import check_layer

X = (np.random.default_rng(0).normal(size=(2, 3, 4, 5, 6)) * 3 + 1).astype("float32")


def _keras_reference(layer, x):
    """The same weights in a plain keras BatchNormalization, inference mode."""
    ref = keras.layers.BatchNormalization(axis=layer.axis, epsilon=layer.epsilon, momentum=layer.momentum)
    ref.build(x.shape)
    ref.set_weights(layer.get_weights())
    return ref(x, training=False).numpy()


def test_check_layer():
    check_layer(FusedBatchNormalization, dict(epsilon=1e-5, momentum=0.9), input_data=X,
                expected_output_shape=X.shape, expected_output=_keras_reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("training, trainable", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("rank", [2, 4, 5])
def test_matches_keras_batch_norm_outputs_gradients_and_statistics(training, trainable, rank):
    x = tf.constant(X.reshape((-1,) + X.shape[5 - rank + 1:]) if rank < 5 else X)
    rng = np.random.default_rng(rank)
    weights = [rng.uniform(0.5, 1.5, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)]
    results = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        bn = cls(epsilon=1e-5, momentum=0.9)
        bn.build(x.shape)
        bn.set_weights(weights)
        bn.trainable = trainable
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=training)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads = tape.gradient(loss, [x, bn.gamma, bn.beta])
        results.append([y] + [g if g is not None else tf.zeros(6) for g in grads]
                       + [bn.moving_mean, bn.moving_variance])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
    moved = not np.allclose(np.asarray(results[1][-1]), weights[3])
    assert moved == (training and trainable)


def test_uncovered_settings_fall_back_to_keras():
    layer = FusedBatchNormalization(axis=1, scale=False)
    out = layer(X, training=True)
    ref = keras.layers.BatchNormalization(axis=1, scale=False)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref(X, training=True)), rtol=1e-5, atol=1e-5)
