"""The registry: every registered model's recorded figures are recomputed, and every model round-trips .keras."""
import json
import os

import keras
import numpy as np
import pytest

from kerasvid import zoo
from kerasvid.models.common import count_gflops

MODELS = zoo.list_models()


def test_registry_lists_foundation_models():
    for name in ("c2d_resnet18", "c2d_resnet34", "c2d_resnet50", "c2d_resnet101", "c3d_resnet18"):
        assert name in MODELS
        assert getattr(zoo, name) is zoo.model_info(name).builder
    table = zoo.model_table()
    assert table.count("\n") == len(MODELS) + 1 and "`c2d_resnet18`" in table


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match=r"Unknown model name 'cpnet_resnet_18'.*Did you mean"):
        zoo.get_model("cpnet_resnet_18")


@pytest.mark.parametrize("name", MODELS)
def test_metadata_and_keras_round_trip(name, tmp_path):
    info = zoo.model_info(name)
    model = zoo.get_model(name, num_classes=info.num_classes, input_shape=info.default_input)
    assert info.paper and len(info.default_input) in (3, 4)
    if info.recipe:  # the recipe exists and trains this model
        recipe = os.path.join(os.path.dirname(os.path.dirname(__file__)), info.recipe)
        assert f"--model={name}\n" in open(recipe).read(), recipe
    assert model.count_params() == info.num_params, f"{name}: recorded {info.num_params}, built {model.count_params()}"
    assert count_gflops(model) == pytest.approx(info.gflops, rel=2e-3, abs=2e-3), name
    lambdas = [layer.name for layer in model._flatten_layers() if isinstance(layer, keras.layers.Lambda)]
    assert not lambdas
    path = tmp_path / f"{name}.keras"
    model.save(str(path))
    loaded = keras.saving.load_model(str(path), safe_mode=True)
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_readme_model_table_is_the_registry_table():
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    block = readme.split("<!-- model-table -->\n")[1].split("<!-- /model-table -->")[0]
    assert block.strip() == zoo.model_table().strip(), "regenerate the README table: python -m kerasvid.zoo --markdown"


def test_count_gflops_counts_every_loop_iteration_and_called_functions():
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="kerasvid_test")
    class RepeatedMatmul(keras.layers.Layer):
        """x <- x @ x, 7 times in a while_loop, inside a jit-compiled function: 7 x 2 x 8^3 float ops (plus, per
        iteration, the profiler's 1 op for `i + 1` and 1 for while_v2's own iteration counter)."""

        def call(self, x):
            def loop(x):
                return tf.while_loop(lambda i, x: i < 7, lambda i, x: (i + 1, tf.matmul(x, x)), (0, x),
                                     maximum_iterations=7)[1]

            return tf.function(loop, jit_compile=True)(x)

        def compute_output_spec(self, x):
            return keras.KerasTensor(x.shape, x.dtype)

    inputs = keras.Input((8, 8), batch_size=1)
    model = keras.Model(inputs, RepeatedMatmul()(inputs))
    assert round(count_gflops(model) * 1e9) == 7 * (2 * 8 ** 3 + 2)
