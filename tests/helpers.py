"""Shared test helpers. `check_model`: one call checks what every kerasvid model must satisfy.

    from tests.helpers import check_model
    check_model(model, x, expected_output_shape=(2, 5), expected_num_params=1234, tmp_path=tmp_path)

Also: script runner, weights-only parameter count, and the numpy references and graph inspection shared by the
CPNet layer tests (kNN, CP module, non-local block) and the I3D reference widths and parameter count.
"""
import copy

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


def assert_layer_round_trip(layer, input_shape, tmp_path):
    """get_config -> from_config identity, and `.keras` save -> load_model(safe_mode=True) with equal outputs."""
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    inputs = keras.Input(input_shape[1:])
    model = keras.Model(inputs, layer(inputs))
    randomize(layer)
    x = np.random.RandomState(8).randn(*input_shape).astype(np.float32)
    path = str(tmp_path / "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


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


def load_train_main():
    """The `train/main.py` command, `kerasvid.train_cli` (train/main.py is its entry point): its absl flags are
    defined once, on the global `flags.FLAGS`, when it is first imported."""
    from kerasvid import train_cli

    return train_cli


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
