"""The registry: every registered model's recorded figures are recomputed (.keras round trips: test_persistence)."""
import importlib
import inspect
import os
import pkgutil
import sys
import textwrap

import keras
import pytest

import kerasvid
from kerasvid import _submodules, zoo
from kerasvid.models.common import count_gflops
from kerasvid.training.loop import sublayers
from tests.conftest import large_models

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


# The full-size builds take 2-15 s each on 2 cores: the smallest runs in the quick loop, the rest are large. The
# .keras round trip of every model (config and every variable) is test_persistence.py's, at a small input.
@pytest.mark.parametrize("name", [n if n == "c2d_resnet18" else pytest.param(n, marks=pytest.mark.large) for n in MODELS])
def test_metadata(name):
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
    # The public walk of the BatchNorm re-estimation finds every layer Keras tracks (the private walk).
    tracked = {id(layer) for layer in model._flatten_layers(include_self=False)}
    assert {id(layer) for layer in sublayers(model)} == tracked


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


def _small_input(name):
    default = zoo.model_info(name).default_input
    return (64, 64, default[-1]) if len(default) == 3 else (min(default[0], 4), 32, 32, default[-1])


@pytest.mark.parametrize("name, kwargs", large_models([(name, {}) for name in MODELS]
                                                      + [("i3d_action_context", {"outputs": "all"})]))
def test_heads_are_float32_under_mixed_bfloat16(name, kwargs):
    """Every output of every registered model (logits, scores, distances, selectors, maps) is float32 under the
    `mixed_bfloat16` policy, while the trunk computes in bfloat16."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = zoo.get_model(name, num_classes=5, input_shape=_small_input(name), **kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    outputs = model.output if isinstance(model.output, dict) else {"output": model.output}
    assert {k: str(v.dtype) for k, v in outputs.items()} == {k: "float32" for k in outputs}
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    assert all(v.dtype == "float32" for v in model.weights)


# ----- module discovery: a new paper is its files, with no list to update -----------------------------------------
def _public_modules(package):
    return sorted(m.name for m in pkgutil.iter_modules(importlib.import_module(package).__path__)
                  if not m.name.startswith("_"))


def test_the_zoo_imports_every_model_module_and_exposes_every_builder():
    modules = _public_modules("kerasvid.models")
    assert {"cpnet", "resnet_video", "tvnet_inception"} <= set(modules)
    for name in modules:
        assert f"kerasvid.models.{name}" in sys.modules, name
    for name in MODELS:
        builder = zoo.model_info(name).builder
        assert builder.__module__.rsplit(".", 1)[-1] in modules
        assert getattr(zoo, name) is builder


def test_every_task_module_registers_on_first_use():
    names = kerasvid.tasks.list_tasks()
    assert {"classification", "actor_observer", "action_context"} <= set(names)
    for name in _public_modules("kerasvid.tasks"):
        assert f"kerasvid.tasks.{name}" in sys.modules, name


@pytest.mark.parametrize("package, kind", [("kerasvid.layers", "layers"), ("kerasvid.losses", "losses"),
                                           ("kerasvid.ops", "ops")])
def test_layers_and_losses_export_the_public_names_of_every_module(package, kind):
    """Every `__all__` name of every module is reachable from the package; every public layer class (layers) or
    public class and function (losses) a module defines is in its `__all__`, so none is forgotten."""
    pkg = importlib.import_module(package)
    for name in _public_modules(package):
        module = importlib.import_module(f"{package}.{name}")
        for public in getattr(module, "__all__", ()):
            assert getattr(pkg, public) is getattr(module, public), f"{package}.{public}"
        defined = [n for n, obj in vars(module).items() if not n.startswith("_") and getattr(
            obj, "__module__", None) == module.__name__ and (inspect.isclass(obj) or inspect.isfunction(obj))]
        if kind == "layers":
            defined = [n for n in defined if inspect.isclass(getattr(module, n))
                       and issubclass(getattr(module, n), keras.layers.Layer)]
        missing = sorted(set(defined) - set(getattr(module, "__all__", ())))
        assert not missing, f"{module.__name__} defines {missing} but does not list them in __all__"


def test_the_public_names_import_from_the_package_namespaces():
    from kerasvid import layers, losses

    for name in ("VideoSoftmax", "CPModule", "ActionContextAttention", "I3DFlowInput", "NonLocalBlock",
                 "PairwiseDistance", "SelectorScale", "TVNet", "TVNetBlock"):
        assert isinstance(getattr(layers, name), type) and issubclass(getattr(layers, name), keras.layers.Layer)
    for name in ("ActorObserverLoss", "actor_observer_objective", "dist_ratio", "equalize_grad_norm", "margin_rank",
                 "FactorizationLoss", "action_removal_loss", "attention_overlap_loss", "context_consistency_loss",
                 "conjugate_uninformative_loss", "factorization_classification_loss", "EndpointError",
                 "endpoint_error", "tvl1_energy"):
        assert callable(getattr(losses, name)), name
    assert callable(zoo.cpnet_resnet101) and callable(zoo.c2d_resnet18)
    from kerasvid import ops

    for name in ("cp_knn", "bilinear_warp", "resize_align_corners", "resize_half_pixel", "bicubic_warp",
                 "median_filter", "forward_difference"):
        assert callable(getattr(ops, name)), name


def test_discovery_finds_a_module_dropped_into_a_package(tmp_path, monkeypatch):
    pkg = tmp_path / "dropin_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from kerasvid import _submodules
        _submodules.export_public_names(globals())
    """))
    (pkg / "alpha.py").write_text("__all__ = ['Alpha']\nclass Alpha: pass\ndef helper(): pass\n")
    (pkg / "beta.py").write_text("__all__ = ['beta']\ndef beta(): return 2\n")
    (pkg / "_private.py").write_text("raise AssertionError('a private module was imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("dropin_pkg")
    assert module.__all__ == ["Alpha", "beta"] and module.beta() == 2 and not hasattr(module, "helper")
    assert "dropin_pkg._private" not in sys.modules
    # A name exported twice, or listed but not defined, is an error naming both places.
    (pkg / "gamma.py").write_text("__all__ = ['beta', 'nothing']\nbeta = 3\n")
    importlib.invalidate_caches()
    with pytest.raises(ImportError, match=r"'beta' is exported by both dropin_pkg.beta and dropin_pkg.gamma"):
        _submodules.public_names(_submodules.import_modules("dropin_pkg"))
    (pkg / "gamma.py").write_text("__all__ = ['nothing']\n")
    sys.modules.pop("dropin_pkg.gamma")
    importlib.invalidate_caches()
    with pytest.raises(ImportError, match=r"dropin_pkg.gamma.__all__ lists 'nothing'"):
        _submodules.public_names(_submodules.import_modules("dropin_pkg"))
    for name in [n for n in sys.modules if n.startswith("dropin_pkg")]:
        monkeypatch.delitem(sys.modules, name)
