"""Shared test helpers. `check_model`: one call checks what every kerasvid model must satisfy.

    from tests.helpers import check_model
    check_model(model, x, expected_output_shape=(2, 5), expected_num_params=1234, tmp_path=tmp_path)

`check_layer` does the same for a layer class (`check_loss` for a `keras.losses.Loss` class):

    from tests.helpers import check_layer
    check_layer(NonLocalBlock, dict(inner_channels=4), input_shape=(1, 2, 4, 4, 8), expected_output_shape=...)

Also: script runner, weights-only parameter count, and the numpy references and graph inspection shared by the
CPNet layer tests (kNN, CP module, non-local block) and the I3D reference widths and parameter count.
"""
import copy
import os

import numpy as np
import keras
import tensorflow as tf


def _flatten(outputs):
    return [np.asarray(o) for o in tf.nest.flatten(outputs)]


def assert_outputs_close(a, b, atol=1e-5):
    fa, fb = _flatten(a), _flatten(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5)


def default_loss(outputs, num_classes_seed=0):
    """Sparse cross-entropy of the logits against fixed pseudo-labels (a model whose output is the logits)."""
    logits = tf.nest.flatten(outputs)[0]
    logits = tf.reshape(logits, (tf.shape(logits)[0], -1))
    labels = tf.math.floormod(tf.range(tf.shape(logits)[0]), tf.shape(logits)[1])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def check_model(model, inputs, expected_output_shape=None, expected_num_params=None, tmp_path=None,
                loss_fn=default_loss, train_steps=3, learning_rate=1e-2, check_serialization=True, atol=1e-5):
    """Checks a built kerasvid model.

    1. Calling it on `inputs` (inference) gives `expected_output_shape` (a tuple, or a dict/structure of tuples).
    2. `count_params()` equals `expected_num_params` exactly (when given).
    3. No Lambda layer anywhere.
    4. `get_config` -> `from_config` rebuilds the same architecture: same config, same outputs with copied weights.
    5. `.keras` save -> `keras.saving.load_model(safe_mode=True)` gives the same outputs (needs `tmp_path`).
    6. `train_steps` steps of Adam on the fixed batch lower `loss_fn(model(inputs, training=True))`.

    Returns:
        The inference outputs (for further numeric checks by the caller).
    """
    outputs = model(inputs, training=False)
    if expected_output_shape is not None:
        got = tf.nest.map_structure(lambda t: tuple(t.shape), outputs)
        assert got == expected_output_shape, f"output shape {got} != expected {expected_output_shape}"
    if expected_num_params is not None:
        assert model.count_params() == expected_num_params, (
            f"count_params() = {model.count_params()} != expected {expected_num_params}")
    lambdas = [layer.name for layer in model._flatten_layers() if isinstance(layer, keras.layers.Lambda)]
    assert not lambdas, f"Lambda layers are not allowed: {lambdas}"
    if check_serialization:
        config = model.get_config()
        clone = model.__class__.from_config(copy.deepcopy(config))  # from_config may consume its argument
        assert clone.get_config() == config, "get_config -> from_config -> get_config is not the identity"
        clone.set_weights(model.get_weights())
        assert_outputs_close(clone(inputs, training=False), outputs, atol)
        if tmp_path is not None:
            path = str(tmp_path / f"{model.name}.keras")
            model.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
            assert_outputs_close(loaded(inputs, training=False), outputs, atol)
    if train_steps:
        keras.utils.set_random_seed(0)
        optimizer = keras.optimizers.Adam(learning_rate)
        losses = []
        for _ in range(train_steps + 1):
            with tf.GradientTape() as tape:
                loss = loss_fn(model(inputs, training=True))
            losses.append(float(loss))
            grads = tape.gradient(loss, model.trainable_variables)
            pairs = [(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None]
            assert pairs, "no trainable variable received a gradient"
            optimizer.apply_gradients(pairs)
        assert losses[-1] < losses[0], f"training did not lower the loss: {losses}"
    return outputs


def _as_inputs(input_data, input_shape, seed):
    """Positional inputs of a layer: `input_data` (an array or a tuple/list of positional inputs, each an array or a
    list of arrays, e.g. `([a, b],)` for a layer called on one list), or float32 normals of `input_shape` (a shape or
    a tuple/list of shapes)."""
    if input_data is None:
        if input_shape is None:
            raise ValueError("check_layer needs `input_data` or `input_shape`")
        shapes = input_shape if input_shape and isinstance(input_shape[0], (tuple, list)) else [input_shape]
        rng = np.random.RandomState(seed)
        return [rng.randn(*shape).astype("float32") for shape in shapes]
    data = list(input_data) if isinstance(input_data, (tuple, list)) else [input_data]
    return [[np.asarray(a) for a in x] if isinstance(x, list) else np.asarray(x) for x in data]


def _is_float(x):
    return tf.as_dtype(x.dtype).is_floating


def _float_weights(layer):
    return [w for w in layer.weights if tf.as_dtype(w.dtype).is_floating]


def _perturb_weights(layer, scale, seed):
    """Moves every float weight away from its initial value (so that a round trip that loses weights shows):
    variances are multiplied by U(0.5, 2), the others get U(-scale, scale) added (zero-initialised gammas too)."""
    rng = np.random.RandomState(seed)
    for w in _float_weights(layer):
        value = np.asarray(w.numpy(), np.float64)
        if "variance" in w.path:
            value = value * rng.uniform(0.5, 2.0, value.shape)
        else:
            value = value + rng.uniform(-scale, scale, value.shape)
        w.assign(value.astype(w.dtype))


def _assert_same(a, b, what, atol, rtol):
    fa, fb = _flatten(a), _flatten(b)
    assert len(fa) == len(fb), f"{what}: {len(fa)} outputs != {len(fb)}"
    for i, (x, y) in enumerate(zip(fa, fb)):
        assert x.shape == y.shape, f"{what}: output {i} has shape {x.shape} != {y.shape}"
        np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), atol=atol, rtol=rtol,
                                   err_msg=f"{what}: output {i} differs")


def _plain(value):
    """Config values compared with the constructor's: tuples as lists (what a JSON round trip gives)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_registered(cls):
    name = keras.saving.get_registered_name(cls)
    assert keras.saving.get_registered_object(name) is cls, (
        f"{cls.__name__} is not registered serializable (registered name {name!r} does not resolve to it): "
        f"decorate it with @keras.saving.register_keras_serializable(package='kerasvid')")


def _check_config_keeps_arguments(config, init_kwargs, cls):
    for key, value in init_kwargs.items():
        assert key in config, f"{cls.__name__}.get_config() drops the argument `{key}` (given {value!r})"
        plain = isinstance(value, (bool, int, float, str, type(None), tuple, list))
        if plain and not (isinstance(value, str) and isinstance(config[key], dict)):  # "he_normal" -> its dict
            assert _plain(config[key]) == _plain(value), (
                f"{cls.__name__}.get_config()[{key!r}] = {config[key]!r}, but the layer was built with {value!r}")


def check_layer(layer_cls, init_kwargs=None, input_data=None, input_shape=None, expected_output=None,
                expected_output_shape=None, expected_output_dtype="float32", call_kwargs=None,
                mixed_output_dtype=None, policies=("mixed_bfloat16", "mixed_float16"), perturb=0.5,
                check_gradient=True, seed=0, atol=1e-5, rtol=1e-5):
    """Checks a kerasvid layer class (or a `keras.losses.Loss` class, see `check_loss`), like Keras core's
    `run_layer_test`.

    1. Built under `keras.utils.set_random_seed(seed)`, called eagerly on the inputs (`input_data`: an array or a
       tuple/list of positional inputs, each an array or a list of arrays; or float32 normals of `input_shape`, a
       shape or a list of shapes) with
       `call_kwargs`, and inside a functional model on `keras.Input`s: the layer is built, the eager outputs have
       `expected_output_shape` (a tuple or a structure of tuples; the model's symbolic shapes agree except for the
       batch) and float outputs are `expected_output_dtype`.
    2. `perturb` > 0 moves every float weight (see `_perturb_weights`) before the outputs are compared, so that a
       round trip that loses a weight (or a zero-initialised gamma that hides one) shows. `expected_output`: an
       array (structure) or `fn(layer, *inputs)` (a reference computed from the layer's weights), compared with the
       outputs after the perturbation.
    3. Registered serializable; `get_config()` keeps every `init_kwargs` entry (same value for plain values);
       `from_config(get_config())` has the same config and, with the same weights, the same outputs; so does
       `keras.saving.deserialize_keras_object(serialize_keras_object(layer))`.
    4. `.keras` save of the functional model -> `load_model(safe_mode=True)`: same class, config, weights (state
       included, exactly) and outputs.
    5. For each dtype policy in `policies`: `compute_dtype` respected (float outputs in it, or in
       `mixed_output_dtype` for layers that return float32 by design), float variables float32 and, drawn under the
       same seed, trainable weights equal to the float32 layer's initial ones (the seeded-reproducibility check; with
       `policies=()` a second float32 layer is built for it), finite outputs.
    6. A layer whose constructor takes `seed`: two layers with the same `seed` (built after different global
       seeds) have the same weights and outputs, also with `training=True` where `call` takes it.
    7. `check_gradient`: the gradient of a fixed random projection of the float outputs exists (is not None) and is
       finite for every trainable weight (for the float inputs when the layer has no trainable weight).

    Stateful layers (a call that updates state) are compared call against call from the same state.

    Returns:
        `(layer, outputs)`: the (perturbed) layer and its eager outputs, for further numeric checks.
    """
    if issubclass(layer_cls, keras.losses.Loss):
        raise TypeError(f"{layer_cls.__name__} is a keras.losses.Loss: use check_loss")
    import inspect
    import json
    import tempfile

    init_kwargs = dict(init_kwargs or {})
    call_kwargs = dict(call_kwargs or {})
    inputs = _as_inputs(input_data, input_shape, seed)
    tensors = tf.nest.map_structure(tf.constant, inputs)

    def make(**extra):
        return layer_cls(**copy.deepcopy(init_kwargs), **extra)

    def call(layer, *args):
        return layer(*args, **call_kwargs)

    # 1. Build, call, shapes and dtypes.
    keras.utils.set_random_seed(seed)
    layer = make()
    outputs = call(layer, *tensors)
    assert layer.built, f"{layer_cls.__name__} is not built after its first call"
    initial_weights = [w.numpy().copy() for w in layer.trainable_weights]  # state may move with the call
    got_shapes = tf.nest.map_structure(lambda t: tuple(t.shape), outputs)
    if expected_output_shape is not None:
        assert got_shapes == expected_output_shape, (
            f"{layer_cls.__name__} output shape {got_shapes} != expected {expected_output_shape}")
    for i, out in enumerate(tf.nest.flatten(outputs)):
        if _is_float(out) and expected_output_dtype is not None:
            assert out.dtype == expected_output_dtype, (
                f"{layer_cls.__name__} output {i} has dtype {out.dtype.name} != {expected_output_dtype}")
    symbolic = tf.nest.map_structure(lambda x: keras.Input(shape=x.shape[1:], dtype=x.dtype.name), inputs)
    model = keras.Model(symbolic, call(layer, *symbolic))
    for sym, eager in zip([tuple(t.shape) for t in model.outputs], _flatten(outputs)):
        assert len(sym) == eager.ndim and all(s in (None, e) for s, e in zip(sym, eager.shape)), (
            f"{layer_cls.__name__}: symbolic output shape {sym} does not match the eager {eager.shape}")

    # 2. Weights away from their initial values, reference outputs.
    if perturb:
        _perturb_weights(layer, perturb, seed + 1)
    outputs = call(layer, *tensors)
    if expected_output is not None:
        want = expected_output(layer, *inputs) if callable(expected_output) else expected_output
        _assert_same(outputs, want, f"{layer_cls.__name__} vs expected_output", atol, rtol)

    # 3. Config round trips.
    _check_registered(layer_cls)
    config = layer.get_config()
    json.dumps(config)  # a config must be JSON (no numpy scalars or objects)
    _check_config_keeps_arguments(config, init_kwargs, layer_cls)
    clone = layer_cls.from_config(copy.deepcopy(config))  # from_config may consume its argument
    assert clone.get_config() == config, (
        f"{layer_cls.__name__}: get_config -> from_config -> get_config is not the identity:\n{clone.get_config()}\n"
        f"!=\n{config}")
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is layer_cls and revived.get_config() == config, (
        f"{layer_cls.__name__}: serialize_keras_object -> deserialize_keras_object changed the layer")
    for other, what in ((clone, "from_config"), (revived, "deserialize_keras_object")):
        call(other, *tensors)
        other.set_weights(layer.get_weights())
        _assert_same(call(other, *tensors), call(layer, *tensors), f"{layer_cls.__name__} {what} clone",
                     atol, rtol)
        other.set_weights(layer.get_weights())  # both at the same state again (a stateful call moves it)

    # 4. .keras round trip.
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/{layer.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    loaded_layer = loaded.get_layer(layer.name)
    assert type(loaded_layer) is layer_cls, f"load_model gave a {type(loaded_layer).__name__}"
    assert loaded_layer.get_config() == config, f"{layer_cls.__name__}: the .keras file changed the config"
    for w, a, b in zip(layer.weights, loaded_layer.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=f"{layer_cls.__name__}: {w.path} changed in the .keras file")
    _assert_same(loaded(tensors), model(tensors), f"{layer_cls.__name__} .keras round trip", atol, rtol)

    # 5. Dtype policies and seeded initial weights.
    def assert_initial_weights(other, what):
        got = [w.numpy() for w in other.trainable_weights]
        assert len(got) == len(initial_weights), f"{what}: {len(got)} weights != {len(initial_weights)}"
        for w, a, b in zip(other.trainable_weights, got, initial_weights):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: initial value of {w.path} differs under the "
                                                        f"same keras.utils.set_random_seed({seed})")

    if "dtype" not in init_kwargs:
        for policy in policies:
            compute = keras.DTypePolicy(policy).compute_dtype
            keras.utils.set_random_seed(seed)
            mixed = make(dtype=policy)
            mixed_outputs = call(mixed, *tensors)
            assert mixed.compute_dtype == compute, f"{layer_cls.__name__}(dtype={policy!r}).compute_dtype"
            for w in _float_weights(mixed):
                assert w.dtype == "float32", f"{policy}: variable {w.path} is {w.dtype}, not float32"
            for i, out in enumerate(tf.nest.flatten(mixed_outputs)):
                if _is_float(out):
                    want = mixed_output_dtype or compute
                    assert out.dtype == want, f"{policy}: output {i} is {out.dtype.name}, not {want}"
                    assert np.all(np.isfinite(np.asarray(tf.cast(out, tf.float32)))), f"{policy}: output {i}"
            assert_initial_weights(mixed, f"{layer_cls.__name__}(dtype={policy!r})")
    if not policies or "dtype" in init_kwargs:
        keras.utils.set_random_seed(seed)
        again = make()
        call(again, *tensors)
        assert_initial_weights(again, f"a second {layer_cls.__name__}")

    # 6. A seed argument reproduces.
    if "seed" in inspect.signature(layer_cls.__init__).parameters:
        seeded = []
        kwargs = dict(call_kwargs)
        if "training" in inspect.signature(layer_cls.call).parameters:
            kwargs["training"] = True
        for global_seed in (seed + 11, seed + 12):
            keras.utils.set_random_seed(global_seed)
            other = layer_cls(**copy.deepcopy({"seed": 1234, **init_kwargs}))
            out = other(*tensors, **kwargs)
            seeded.append(([w.numpy() for w in other.weights], out))
        for a, b in zip(seeded[0][0], seeded[1][0]):
            np.testing.assert_array_equal(a, b, err_msg=f"{layer_cls.__name__}: same `seed`, different weights")
        _assert_same(seeded[0][1], seeded[1][1], f"{layer_cls.__name__}: same `seed`, different outputs", 0, 0)

    # 7. Gradients.
    if check_gradient:
        float_inputs = [t for t in tf.nest.flatten(tensors) if _is_float(t)]
        with tf.GradientTape() as tape:
            tape.watch(float_inputs)
            out = [o for o in tf.nest.flatten(call(layer, *tensors)) if _is_float(o)]
            rng = np.random.RandomState(seed + 2)
            loss = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32) * np.asarray(rng.randn(*o.shape), "float32"))
                             for o in out])
        targets = layer.trainable_weights or float_inputs
        assert targets, f"{layer_cls.__name__}: no trainable weight and no float input to check a gradient on"
        grads = tape.gradient(loss, targets)
        names = [w.path for w in layer.trainable_weights] or [f"input {i}" for i in range(len(float_inputs))]
        missing = [n for n, g in zip(names, grads) if g is None]
        assert not missing, f"{layer_cls.__name__}: no gradient reaches {missing}"
        bad = [n for n, g in zip(names, grads) if not np.all(np.isfinite(np.asarray(g)))]
        assert not bad, f"{layer_cls.__name__}: non-finite gradient for {bad}"
    return layer, outputs


def check_loss(loss_cls, init_kwargs=None, y_true=None, y_pred=None, expected=None, policies=("bfloat16", "float16"),
               rtol=1e-5, mixed_rtol=2e-2):
    """`check_layer` for a `keras.losses.Loss` class (stateless `(y_true, y_pred)` losses).

    1. `loss_cls(**init_kwargs)(y_true, y_pred)` is a finite float32 value, equal to `expected` when given.
    2. Registered serializable; `get_config()` keeps every `init_kwargs` entry; `from_config`,
       `keras.losses.deserialize(keras.losses.serialize(loss))` give the same config and value.
    3. `.keras` round trip of a model compiled with the loss (`load_model(safe_mode=True)`): the loaded model's
       loss is the same class with the same config and value.
    4. `y_pred` in each of `policies` (the compute dtypes of the mixed policies): a finite float32 loss within
       `mixed_rtol` of the float32 one.
    5. A gradient reaches `y_pred` (some tensor of it) and every gradient that does is finite.

    Returns:
        The float32 loss value (a tensor).
    """
    import json
    import tempfile

    init_kwargs = dict(init_kwargs or {})
    loss = loss_cls(**copy.deepcopy(init_kwargs))
    value = loss(y_true, y_pred)
    assert value.dtype == "float32" and np.all(np.isfinite(value.numpy())), f"{loss_cls.__name__}: {value}"
    if expected is not None:
        np.testing.assert_allclose(value.numpy(), expected, rtol=rtol)
    _check_registered(loss_cls)
    config = loss.get_config()
    json.dumps(config)
    _check_config_keeps_arguments(config, init_kwargs, loss_cls)
    clone = loss_cls.from_config(copy.deepcopy(config))
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    for other, what in ((clone, "from_config"), (revived, "keras.losses.deserialize")):
        assert type(other) is loss_cls and other.get_config() == config, f"{loss_cls.__name__} {what} config"
        np.testing.assert_allclose(other(y_true, y_pred).numpy(), value.numpy(), rtol=rtol,
                                   err_msg=f"{loss_cls.__name__} {what} value")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=loss)
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/compiled.keras")
        loaded = keras.saving.load_model(f"{tmp}/compiled.keras", safe_mode=True)
    assert type(loaded.loss) is loss_cls and loaded.loss.get_config() == config, (
        f"{loss_cls.__name__}: the .keras file gave loss {loaded.loss!r}")
    np.testing.assert_allclose(loaded.loss(y_true, y_pred).numpy(), value.numpy(), rtol=rtol)
    for dtype in policies:
        low = tf.nest.map_structure(lambda t: tf.cast(t, dtype) if _is_float(tf.convert_to_tensor(t)) else t,
                                    y_pred)
        mixed = loss(y_true, low)
        assert mixed.dtype == "float32" and np.all(np.isfinite(mixed.numpy())), f"{dtype}: {mixed}"
        np.testing.assert_allclose(mixed.numpy(), value.numpy(), rtol=mixed_rtol, atol=mixed_rtol,
                                   err_msg=f"{loss_cls.__name__} with {dtype} predictions")
    variables = tf.nest.map_structure(lambda t: tf.Variable(t) if _is_float(tf.convert_to_tensor(t)) else t, y_pred)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(loss(y_true, variables))
    flat = [v for v in tf.nest.flatten(variables) if isinstance(v, tf.Variable)]
    grads = [g for g in tape.gradient(total, flat) if g is not None]  # a term that is off leaves its input out
    assert grads, f"{loss_cls.__name__}: no gradient reaches y_pred"
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads), f"{loss_cls.__name__}: non-finite gradient"
    return value


def weights_only_count(model):
    """CPNet supplement Table 1 convention: conv/dense kernels plus the classifier bias (no conv bias, no BN)."""
    n = sum(int(np.prod(w.shape)) for w in model.weights if w.path.endswith("/kernel"))
    return n + int(np.prod(model.get_layer("predictions").bias.shape))


def run_script_result(script, timeout=400):
    """Runs `python -c script` from the repository root (e.g. to set up logical devices before TF starts) and returns
    the JSON the script printed on its last line starting with "RESULT"."""
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT"):])


# Shared by the CPNet layer tests (kNN, CP module, non-local block).


def all_graph_shapes(graph):
    """Static shapes of every op output in a graph and in the bodies of its while loops / conditionals."""
    shapes = []
    for op in graph.get_operations():
        shapes += [tuple(out.shape.as_list()) for out in op.outputs if out.shape.rank is not None]
        for attr in ("body", "cond", "then_branch", "else_branch"):
            try:
                fn_name = op.get_attr(attr).name
            except ValueError:
                continue
            shapes += all_graph_shapes(graph._get_function(fn_name).graph)
    return shapes


def np_batch_norm(x, bn, training):
    gamma, beta, mean, var = [w.astype(np.float64) for w in bn.get_weights()]
    if training:
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    return (x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta


def np_dense(x, dense):
    kernel, bias = dense.get_weights()
    return x @ kernel.astype(np.float64) + bias


def randomize(layer, seed=0):
    """Random weights everywhere, including the moving statistics and the zero-initialised final gamma."""
    rng = np.random.RandomState(seed)
    for w in layer.weights:
        shape = tuple(w.shape)
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, shape).astype(np.float32))
        elif "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            w.assign(rng.uniform(-0.5, 0.5, shape).astype(np.float32))


# Shared by the I3D and action/context model tests.

# GoogLeNet's Inception widths (Szegedy et al. 2015, Table 1), one row per block in I3D's naming:
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5 (a 3x3x3 conv in I3D), pool proj).
GOOGLENET_ROWS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def reference_num_params(in_channels, num_classes=None):
    """Brute-force count: kernel weights + 3 BN vectors (offset, mean, variance) per conv unit."""
    def unit(cin, cout, k):
        return k ** 3 * cin * cout + 3 * cout

    total = unit(in_channels, 64, 7) + unit(64, 64, 1) + unit(64, 192, 3)
    cin = 192
    for row in GOOGLENET_ROWS.values():
        b0, r1, b1, r2, b2, proj = row
        total += unit(cin, b0, 1) + unit(cin, r1, 1) + unit(r1, b1, 3) + unit(cin, r2, 1) + unit(r2, b2, 3)
        total += unit(cin, proj, 1)
        cin = b0 + b1 + b2 + proj
    if num_classes:
        total += cin * num_classes + num_classes
    return total


def write_video(path, num_frames, size=32, step=40):
    """Writes an MPEG-4 video of `num_frames` flat grey frames (frame i has value `step * i`, mod 256), 10 fps;
    the container follows the file's suffix (.mp4 states its frame count, .ts does not). Returns the path."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(num_frames):
            frame = np.full((size, size, 3), (step * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


# ----- the documentation: README.md and docs/*.md ------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def doc_paths():
    """README.md and every page of docs/, repository-relative."""
    return ["README.md"] + sorted(os.path.join("docs", n) for n in os.listdir(os.path.join(REPO, "docs"))
                                  if n.endswith(".md"))


def doc_text(path=None):
    """The text of one documentation file (repository-relative `path`), or of all of them joined."""
    paths = [path] if path else doc_paths()
    texts = []
    for p in paths:
        with open(os.path.join(REPO, p), encoding="utf-8") as f:
            texts.append(f.read())
    return "\n".join(texts)


def doc_block(name, kind="bash"):
    """The body of the fenced block between `<!-- name -->` and `<!-- /name -->`, wherever it is in the docs; a
    test that runs it keeps the page and the code from drifting. Raises if the block is missing or repeated."""
    import re

    found = re.findall(rf"<!-- {name} -->\s*```{kind}\n(.*?)```\s*<!-- /{name} -->", doc_text(), re.S)
    assert len(found) == 1, f"the documentation has {len(found)} blocks <!-- {name} -->"
    return found[0]
