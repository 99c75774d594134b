"""The layer harness `tests.helpers.check_layer` passes a correct layer and fails broken ones."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import check_layer, check_loss

X = np.random.RandomState(0).randn(2, 4).astype("float32")


@keras.saving.register_keras_serializable(package="kerasvid_tests")
class Affine(keras.layers.Layer):
    """`x @ kernel + bias + offset`: a correct layer."""

    def __init__(self, units=3, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.offset = offset

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def kernel_value(self):
        return self.kernel

    def call(self, x):
        return tf.matmul(x, tf.cast(self.kernel_value(), x.dtype)) + tf.cast(self.bias, x.dtype) + self.offset

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "offset": self.offset})
        return config


@keras.saving.register_keras_serializable(package="kerasvid_tests")
class DropsOffset(Affine):
    def get_config(self):
        return {k: v for k, v in super().get_config().items() if k != "offset"}


class NotRegistered(Affine):
    pass


@keras.saving.register_keras_serializable(package="kerasvid_tests")
class NoKernelGradient(Affine):
    def kernel_value(self):
        return tf.stop_gradient(self.kernel)


@keras.saving.register_keras_serializable(package="kerasvid_tests")
class AlwaysFloat32(Affine):
    def call(self, x):
        return tf.cast(super().call(x), "float32")


@keras.saving.register_keras_serializable(package="kerasvid_tests")
class SeededNoise(Affine):
    """Adds seeded noise in training; its kernel is drawn from `seed`."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=keras.initializers.GlorotUniform(seed=self.seed))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x, training=False):
        y = super().call(x)
        return y + keras.random.normal(tf.shape(y), seed=self.generator, dtype=y.dtype) if training else y

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="kerasvid_tests")
class IgnoresSeed(SeededNoise):
    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=keras.initializers.GlorotUniform())  # not `self.seed`
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")


def test_correct_layers_pass():
    layer, out = check_layer(Affine, dict(units=3, offset=0.5), input_data=X, expected_output_shape=(2, 3),
                             expected_output=lambda layer, x: x @ layer.kernel.numpy() + layer.bias.numpy() + 0.5)
    assert out.shape == (2, 3)
    check_layer(SeededNoise, dict(units=2, seed=7), input_shape=(2, 4), call_kwargs=dict(training=False))


@pytest.mark.parametrize("cls,kwargs,match", [
    (DropsOffset, dict(offset=0.5), "drops the argument `offset`"),
    (NotRegistered, {}, "not registered serializable"),
    (NoKernelGradient, {}, "no gradient reaches"),
    (AlwaysFloat32, {}, "mixed_bfloat16: output 0 is float32, not bfloat16"),
    (IgnoresSeed, dict(seed=7), "same `seed`, different weights"),
])
def test_broken_layers_fail(cls, kwargs, match):
    with pytest.raises(AssertionError, match=match):
        check_layer(cls, kwargs, input_data=X)


def test_wrong_expected_output_fails():
    with pytest.raises(AssertionError, match="vs expected_output"):
        check_layer(Affine, {}, input_data=X, expected_output=lambda layer, x: x @ layer.kernel.numpy())


def test_a_layer_that_loses_a_weight_on_loading_fails():
    # Without the perturbation the zero bias would load "right" even if it were not saved.
    @keras.saving.register_keras_serializable(package="kerasvid_tests")
    class ForgetsBias(Affine):
        def load_own_variables(self, store):
            self.kernel.assign(store["0"])

    with pytest.raises(AssertionError, match="bias changed in the .keras file"):
        check_layer(ForgetsBias, {}, input_data=X, policies=())


@keras.saving.register_keras_serializable(package="kerasvid_tests")
class SquaredError(keras.losses.Loss):
    def __init__(self, scale=1.0, name="squared_error", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.scale = scale

    def call(self, y_true, y_pred):
        return self.scale * tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="kerasvid_tests")
class SquaredErrorDropsScale(SquaredError):
    def get_config(self):
        return {k: v for k, v in super().get_config().items() if k != "scale"}


def test_check_loss():
    y_true, y_pred = np.zeros((2, 3), "float32"), np.ones((2, 3), "float32")
    check_loss(SquaredError, dict(scale=2.0), y_true, y_pred, expected=2.0)
    with pytest.raises(AssertionError, match="drops the argument `scale`"):
        check_loss(SquaredErrorDropsScale, dict(scale=2.0), y_true, y_pred)
    with pytest.raises(TypeError, match="use check_loss"):
        check_layer(SquaredError, {}, input_data=X)
