"""The compiled kNN selection kernel (kerasvid.ops.native) against the TF-ops selection and a brute-force reference."""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers import CPModule
from kerasvid.ops import native
from kerasvid.ops.knn import cp_knn
from tests.test_knn import CASES, brute_force_knn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def op_types(fn, *args):
    return {op.type for op in fn.get_concrete_function(*args).graph.get_operations()}


def test_the_kernel_builds_and_loads_here():
    # The project's CI machines have a C++ compiler: a build failure there is a defect, not a skip.
    assert native.native_status().startswith("loaded from "), native.native_status()


@pytest.mark.parametrize("batch,frames,per_frame,channels,k", CASES + [(2, 3, 37, 3, 7), (1, 2, 300, 2, 4)])
def test_integer_points_match_brute_force_exactly(batch, frames, per_frame, channels, k):
    # Small integers: exact float32 distances and many ties (the lower index wins). The extra cases have more
    # points per frame than one 16 x 16 tile (partial groups on both sides of a block).
    rng = np.random.RandomState(batch * 100 + frames * 10 + per_frame)
    points = rng.randint(-2, 3, size=(batch, frames * per_frame, channels)).astype(np.float32)
    fn = tf.function(lambda p: cp_knn(p, frames, k, compiled=True))
    assert "KerasvidFramePairTopK" in op_types(fn, tf.TensorSpec(points.shape))
    np.testing.assert_array_equal(fn(points).numpy(), brute_force_knn(points, frames, k))


@pytest.mark.parametrize("frames,per_frame,channels,k", [(8, 49, 16, 12), (4, 196, 8, 8), (3, 100, 5, 40),
                                                          (2, 17, 3, 17)])
def test_float_points_equal_the_tf_ops_selection(frames, per_frame, channels, k):
    # ReLU-fed features as in a CPNet; both selections rank the same scores (the per-frame matmuls give the batched
    # blocks' bits on this project's machines), so the indices are equal.
    rng = np.random.RandomState(per_frame)
    points = np.maximum(rng.randn(2, frames * per_frame, channels), 0).astype(np.float32)
    stock = cp_knn(points, frames, k).numpy()
    np.testing.assert_array_equal(tf.function(lambda p: cp_knn(p, frames, k, compiled=True))(points).numpy(), stock)
    if per_frame < 60:
        np.testing.assert_array_equal(stock, brute_force_knn(points, frames, k))


@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_nan_or_infinite_points_give_valid_indices_of_other_frames(poison):
    # One NaN (or inf) point makes the clip's centring, hence every score, NaN: no crash, and each query still gets
    # k distinct keys of other frames (NaN ranks as -inf, ties to the lower index).
    points = np.random.RandomState(0).randn(1, 3 * 20, 4).astype(np.float32)
    points[0, 5] = np.nan if poison == "nan" else np.inf
    got = tf.function(lambda p: cp_knn(p, 3, 6, compiled=True))(points).numpy()[0]
    frame = np.arange(60) // 20
    assert got.min() >= 0 and got.max() < 60
    assert np.all(frame[got] != frame[:, None])
    assert all(len(set(row)) == 6 for row in got)


def brute_force_from_rows(rows, frames, k):
    """The op's contract on its own inputs: each query's scores against the other frames' points, NaN as -inf,
    ranked by (-score, key index)."""
    batch, per_frame = rows[0].shape[:2]
    n = frames * per_frame
    out = np.zeros((batch, n, k), np.int64)
    for b in range(batch):
        full = np.full((n, n), np.nan)
        for a in range(frames - 1):
            for c in range(a + 1, frames):
                block = rows[a][b, :, (c - a - 1) * per_frame:(c - a) * per_frame]
                full[a * per_frame:(a + 1) * per_frame, c * per_frame:(c + 1) * per_frame] = block
                full[c * per_frame:(c + 1) * per_frame, a * per_frame:(a + 1) * per_frame] = block.T
        for i in range(n):
            keys = np.array([j for j in range(n) if j // per_frame != i // per_frame])
            score = full[i, keys]
            score = np.where(np.isnan(score), -np.inf, score)
            out[b, i] = keys[np.lexsort((keys, -score))[:k]]
    return out


@pytest.mark.parametrize("batch,frames,per_frame,k,poisoned", [(2, 4, 70, 20, False), (1, 3, 70, 12, True),
                                                                (1, 5, 9, 36, True), (2, 2, 17, 3, False)])
def test_score_rows_with_ties_nan_and_inf_match_brute_force(batch, frames, per_frame, k, poisoned):
    # On the kernel's own inputs: 70 points a frame is a full unit of 64 queries and a partial one of 6 (not a
    # multiple of 16), k=20 needs three row segments, k=36 every key of other frames; NaN and +-inf among small
    # integers (many ties).
    rng = np.random.RandomState(per_frame + k)
    rows = []
    for a in range(frames - 1):
        x = rng.randint(-2, 3, size=(batch, per_frame, (frames - 1 - a) * per_frame)).astype(np.float32)
        if poisoned:
            draw = rng.rand(*x.shape)
            x[draw < 0.3] = np.nan
            x[(draw >= 0.3) & (draw < 0.35)] = np.inf
            x[(draw >= 0.35) & (draw < 0.4)] = -np.inf
        rows.append(x)
    got = native.frame_pair_top_k([tf.constant(x) for x in rows], frames, k).numpy()
    np.testing.assert_array_equal(got, brute_force_from_rows(rows, frames, k))
    empty = native.frame_pair_top_k([tf.constant(x[:0]) for x in rows], frames, k)
    assert empty.shape == (0, frames * per_frame, k)


def test_shape_errors_name_the_shape():
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 frames need 3 score rows, got 2"):
        native.frame_pair_top_k([tf.zeros([1, 3, 9]), tf.zeros([1, 3, 6])], 4, 2)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"rows\[2\] of 4 frames of 3 points must be \[1, 3, 3\], got shape \[1,3,4\]"):
        native.frame_pair_top_k([tf.zeros([1, 3, 9]), tf.zeros([1, 3, 6]), tf.zeros([1, 3, 4])], 4, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="k=7 exceeds the 6 points of other frames"):
        native.frame_pair_top_k([tf.zeros([1, 6, 6])], 2, 7)


def test_scatter_add_rows_matches_numpy_add_at():
    rng = np.random.RandomState(5)
    updates = rng.randn(2, 7, 3, 5).astype(np.float32)
    indices = rng.randint(0, 7, size=(2, 7, 3)).astype(np.int32)
    indices[0, :, 0] = 2  # many sources into one row
    want = np.zeros((2, 7, 5), np.float64)
    for b in range(2):
        np.add.at(want[b], indices[b].reshape(-1), updates[b].reshape(-1, 5).astype(np.float64))
    got = native.scatter_add_rows(tf.constant(updates), tf.constant(indices), 7).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    indices[1, 4, 2] = 7
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"index 7 outside \[0, 7\)"):
        native.scatter_add_rows(tf.constant(updates), tf.constant(indices), 7)


def test_xla_functions_keep_the_tf_ops_selection():
    points = np.random.RandomState(1).randn(1, 4 * 16, 3).astype(np.float32)
    fn = tf.function(lambda p: cp_knn(p, 4, 5, compiled=True), jit_compile=True)
    np.testing.assert_array_equal(fn(points).numpy(), brute_force_knn(points, 4, 5))
    assert "KerasvidFramePairTopK" not in op_types(fn, tf.TensorSpec(points.shape))


MLP_OPS = {"KerasvidGatherMoments", "KerasvidCpMlpForward", "KerasvidCpMlpBackward"}


def _training_step_with_and_without_kernels(layer, x):
    """(the traced function with the kernels, [output, gradients..., moving statistics...] with and without)."""
    layer.build(x.shape)
    for w in layer.weights:  # every weight nonzero, so that the outputs depend on the neighbours
        w.assign(np.random.RandomState(len(w.path)).uniform(0.5, 1.5, w.shape).astype(np.float32))

    def step(compiled):
        @tf.function
        def fn(t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = layer(t, training=True)
                loss = tf.reduce_sum(y * tf.sin(y))
            return [y] + tape.gradient(loss, [t] + layer.trainable_weights)

        if compiled:
            return fn, [v.numpy() for v in fn(x)]
        with native.disabled():  # traced as where the library is unavailable
            return fn, [v.numpy() for v in fn(x)]

    moving = [v.numpy() for v in layer.non_trainable_weights]
    fn, with_kernel = step(True)
    with_kernel += [v.numpy() for v in layer.non_trainable_weights]
    for v, value in zip(layer.non_trainable_weights, moving):
        v.assign(value)
    _, without = step(False)
    without += [v.numpy() for v in layer.non_trainable_weights]
    inference = tf.function(lambda t: layer(t, training=False))
    assert not {t for t in op_types(inference, tf.TensorSpec(x.shape)) if t.startswith("Kerasvid")}
    return fn, with_kernel, without


def test_cp_module_uses_the_knn_kernels_when_training_only_with_equal_outputs_and_gradients():
    # A one-layer MLP keeps the TF-ops MLP (the fused kernels take the two-layer MLP of the paper's modules), so the
    # kNN selection and the gather gradient are compared alone.
    x = tf.constant(np.maximum(np.random.RandomState(2).randn(2, 4, 6, 6, 8), 0).astype(np.float32))
    fn, with_kernel, without = _training_step_with_and_without_kernels(CPModule(k=5, mlp_units=(6,)), x)
    ops = op_types(fn, tf.TensorSpec(x.shape))
    assert {"KerasvidFramePairTopK", "KerasvidScatterAddRows"} <= ops and not MLP_OPS & ops
    # Equal bits on this project's machines: the per-frame score matmuls give the batched ones' bits and the scatter
    # adds in ScatterNd's order (checked on several shapes); another CPU or oneDNN build could round differently.
    for got, want in zip(with_kernel, without):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mlp_units", [None, (5, 20)])
def test_cp_module_fuses_its_two_layer_mlp_when_training(mlp_units):
    # The paper's two-layer MLP runs in the fused kernels. Its sums run in another order than the TF ops' (and its
    # statistics in float64), so the float32 results are compared with the same module in float64: the fused path's
    # error must be of the size of the TF-ops path's (batch-statistics gradients cancel, so both are ~1e-6 relative).
    x = np.maximum(np.random.RandomState(3).randn(2, 4, 6, 6, 8), 0)

    def run(dtype, compiled):
        layer = CPModule(k=5, mlp_units=mlp_units, dtype=dtype, name="cp")
        layer.build(x.shape)
        for i, w in enumerate(layer.weights):  # nonzero, so that the outputs depend on the neighbours
            w.assign(np.random.RandomState(i).uniform(0.5, 1.5, w.shape).astype(dtype))
        fn = tf.function(lambda t: _loss_gradients(layer, t), autograph=False)
        with contextlib.ExitStack() as stack:
            if not compiled:
                stack.enter_context(native.disabled())
            values = fn(tf.constant(x, dtype))
        ops = op_types(fn, tf.TensorSpec(x.shape, dtype))
        return ops, [np.asarray(v, np.float64) for v in values] + [v.numpy() for v in layer.non_trainable_weights]

    ops, fused = run("float32", True)
    assert MLP_OPS | {"KerasvidFramePairTopK"} <= ops
    _, plain = run("float32", False)
    _, exact = run("float64", False)
    for got, tf_ops, want in zip(fused, plain, exact):
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= 5 * np.abs(tf_ops - want).max() + 1e-7 * scale


def _loss_gradients(layer, t):
    with tf.GradientTape() as tape:
        tape.watch(t)
        y = layer(t, training=True)
        loss = tf.reduce_sum(y * tf.sin(y))
    return [y] + tape.gradient(loss, [t] + layer.trainable_weights)


def test_disabled_or_without_a_compiler_the_tf_ops_selection_runs(tmp_path):
    # A fresh process each (the library is loaded once per process): the reason is logged, the indices unchanged.
    script = ("import numpy as np, tensorflow as tf\n"
              "from kerasvid.ops import native\n"
              "from kerasvid.ops.knn import cp_knn\n"
              "p = np.random.RandomState(3).randn(1, 40, 3).astype(np.float32)\n"
              "fn = tf.function(lambda t: cp_knn(t, 4, 3, compiled=True))\n"
              "ops = {o.type for o in fn.get_concrete_function(tf.TensorSpec(p.shape)).graph.get_operations()}\n"
              "assert 'KerasvidFramePairTopK' not in ops\n"
              "assert (fn(p).numpy() == cp_knn(p, 4, 3).numpy()).all()\n"
              "print('STATUS', native.native_status())\n")
    cases = {"disabled": {"KERASVID_NATIVE": "0"},
             "no compiler": {"CXX": "/nonexistent/c++", "PATH": os.path.dirname(sys.executable),
                             "KERASVID_CACHE_DIR": str(tmp_path)}}
    for name, env in cases.items():
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **env})
        assert done.returncode == 0, done.stderr[-2000:]
        status = done.stdout.split("STATUS ", 1)[1].strip()
        if name == "disabled":
            assert status == "disabled by KERASVID_NATIVE=0"
        else:
            assert status.startswith("unavailable (RuntimeError: no C++ compiler found"), status
            assert "using TF ops" in done.stderr


def test_a_model_trained_with_the_kernel_exports_graphs_that_plain_tensorflow_serves(tmp_path):
    # Training traces the kernel; every export traces inference, which keeps stock ops, so a process without kerasvid
    # (TF Serving's situation: no custom op library) loads and runs the SavedModels.
    import keras

    from kerasvid import export

    inputs = keras.Input((4, 6, 6, 8))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling3D()(CPModule(k=3, name="cp")(inputs)))
    x = np.maximum(np.random.RandomState(4).randn(2, 4, 6, 6, 8), 0).astype(np.float32)
    optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def train_step(t):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(t, training=True) - 1.0))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    train_step(x)
    assert MLP_OPS | {"KerasvidFramePairTopK"} <= op_types(train_step, tf.TensorSpec(x.shape))
    expected = model(x, training=False).numpy()
    model.export(str(tmp_path / "keras_export"), verbose=False)
    tf.saved_model.save(model, str(tmp_path / "tf_saved"))
    spec = [tf.TensorSpec([None, 4, 6, 6, 8], tf.float32)]
    export.write_archive(str(tmp_path / "kerasvid_export"), model,
                         {"serving_default": (lambda t: {"y": model(t, training=False)}, spec)}, {"model": "cp"})
    np.save(tmp_path / "x.npy", x)
    folders = [str(tmp_path / d) for d in ("keras_export", "kerasvid_export", "tf_saved")]
    script = (f"import numpy as np, tensorflow as tf, sys\n"
              f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
              f"m = [tf.saved_model.load(d) for d in {folders!r}]\n"
              f"a, b = m[0].serve(x), m[1].signatures['serving_default'](tf.constant(x))['y']\n"
              f"assert 'kerasvid' not in sys.modules\n"
              f"np.save({str(tmp_path / 'served.npy')!r}, np.stack([np.asarray(a), np.asarray(b)]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(tmp_path),
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    served = np.load(tmp_path / "served.npy")
    np.testing.assert_allclose(served[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served[1], expected, rtol=1e-5, atol=1e-6)


def test_disabled_context_and_quantized_cp_modules_are_refused():
    points = np.random.RandomState(6).randn(1, 4 * 8, 3).astype(np.float32)
    fn = tf.function(lambda p: cp_knn(p, 4, 3, compiled=True))
    with native.disabled():
        assert "KerasvidFramePairTopK" not in op_types(fn, tf.TensorSpec(points.shape))
    assert "KerasvidFramePairTopK" in op_types(fn, tf.TensorSpec([2, 32, 3]))  # outside it again
    import keras

    inputs = keras.Input((3, 4, 4, 8))
    model = keras.Model(inputs, CPModule(k=2, name="cp")(inputs))
    model.quantize("int8")  # Keras quantizes the module's Dense sublayers, whose float kernels the module reads
    with pytest.raises(ValueError, match=r"CPModule 'cp' does not support Keras quantization: its 1x1 conv "
                                         r"'mlp0_conv' is in 'int8' mode"):
        model(np.zeros((1, 3, 4, 4, 8), np.float32))


def test_the_cache_is_reused_readable_by_all_and_rebuilt_when_it_does_not_load(tmp_path):
    # Three fresh processes on one cache: the first builds, the second loads without rebuilding, the third finds the
    # library truncated (as after a crash before its data reached the disk) and rebuilds it.
    script = "from kerasvid.ops import native\nprint('STATUS', native.native_status())\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, "KERASVID_CACHE_DIR": str(tmp_path)}

    def run():
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env)
        assert done.returncode == 0 and "loaded from" in done.stdout, done.stderr[-2000:]
        return done

    run()
    (built,) = tmp_path.rglob("*.so")
    assert built.stat().st_mode & 0o044 == 0o044  # group and others may read it (mkstemp makes files 0600)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".so"]  # no temporary left
    mtime = built.stat().st_mtime_ns
    run()
    assert built.stat().st_mtime_ns == mtime and list(tmp_path.rglob("*.so")) == [built]  # not rebuilt
    built.write_bytes(b"")
    again = run()
    assert "rebuilding" in again.stderr and built.stat().st_size > 0


def _mlp_composite(p, q, indices, gamma0, beta0, kernel, gamma1, beta1, epsilon):
    """`max_rows` written with TF ops on the formed [B, N, k, U] rows (the max-pool's gradient goes to the first of
    equal maxima, as the kernel's)."""
    h = tf.gather(p, indices, batch_dims=1) + q[:, :, None]
    mean0, variance0 = tf.nn.moments(h, [0, 1, 2])
    x = tf.nn.relu((h - mean0) * tf.math.rsqrt(variance0 + epsilon) * gamma0 + beta0)
    z = tf.einsum("bnkc,cu->bnku", x, kernel)
    mean1, variance1 = tf.nn.moments(z, [0, 1, 2])
    y = (z - mean1) * tf.math.rsqrt(variance1 + epsilon) * gamma1 + beta1
    pooled = tf.squeeze(tf.nn.max_pool2d(y, [1, indices.shape[-1]], [1, indices.shape[-1]], "VALID"), 2)
    return tf.nn.relu(pooled), (mean0, variance0), (mean1, variance1)


@pytest.mark.parametrize("batch,points,k,units,out,ties", [(2, 37, 5, 20, 40, False), (1, 64, 12, 32, 64, False),
                                                           (1, 9, 1, 3, 5, False), (2, 12, 4, 16, 16, True)])
def test_fused_mlp_equals_the_composite_with_its_gradients(batch, points, k, units, out, ties):
    # Widths that are and are not multiples of the 16 lanes, k = 1, negative scales (the minimum's path), and with
    # `ties` every query's proposals repeated (equal rows: the first gets the maximum's gradient).
    from kerasvid.ops import cp_mlp

    rng = np.random.RandomState(points + k)
    p, q = (tf.constant(rng.randn(batch, points, units).astype(np.float32)) for _ in range(2))
    indices = rng.randint(0, points, size=(batch, points, k)).astype(np.int32)
    if ties:
        indices[..., 1::2] = indices[..., 0::2]
    indices = tf.constant(indices)
    gamma0, beta0 = rng.randn(units).astype(np.float32), rng.randn(units).astype(np.float32)
    kernel = (rng.randn(units, out) / np.sqrt(units)).astype(np.float32)
    gamma1, beta1 = rng.randn(out).astype(np.float32), rng.randn(out).astype(np.float32)
    gamma1 = np.abs(gamma1) * np.where(np.arange(out) % 2, -1, 1).astype(np.float32)  # both signs
    args = [tf.constant(v) for v in (p, q, gamma0, beta0, kernel, gamma1, beta1)]
    upstream = tf.constant(rng.randn(batch, points, out).astype(np.float32))

    def run(fn):
        with tf.GradientTape() as tape:
            tape.watch(args)
            outputs = fn(*args)
            loss = tf.reduce_sum(outputs[0] * upstream)
        return tf.nest.flatten(outputs) + tape.gradient(loss, args)

    fused = run(lambda p, q, g0, b0, w, g1, b1: cp_mlp.max_rows(p, q, indices, g0, b0, 1e-3, w, g1, b1, 1e-3))
    want = run(lambda p, q, g0, b0, w, g1, b1: _mlp_composite(p, q, indices, g0, b0, w, g1, b1, 1e-3))
    for got, expected in zip(fused, want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_fused_mlp_shape_and_index_errors_name_the_values():
    library = native.library()
    p, ones, zeros = tf.zeros([1, 4, 3]), tf.ones([3]), tf.zeros([3])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"index 4 outside \[0, 4\)"):
        library.kerasvid_gather_moments(p, p, tf.constant([[[0], [1], [2], [4]]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"per_neighbour and per_query must be \[batch, N, U\]"):
        library.kerasvid_gather_moments(p, tf.zeros([1, 4, 2]), tf.zeros([1, 4, 2], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"k >= 1 proposals a query, got k=0"):
        library.kerasvid_cp_mlp_forward(p, p, tf.zeros([1, 4, 0], tf.int32), ones, zeros, zeros, tf.zeros([3, 5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"kernel must be \[3, units\], got \[2,5\]"):
        library.kerasvid_cp_mlp_forward(p, p, tf.zeros([1, 4, 2], tf.int32), ones, zeros, zeros, tf.zeros([2, 5]))
    indices = tf.zeros([1, 4, 2], tf.int32)
    z_max, z_min, arg_max, arg_min, mean, variance, x_mean = library.kerasvid_cp_mlp_forward(
        p, p, indices, ones, zeros, zeros, tf.ones([3, 5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"arg_max / arg_min must lie in \[0, 2\), got 2 and 0"):
        library.kerasvid_cp_mlp_backward(p, p, indices, ones, zeros, zeros, tf.ones([3, 5]), arg_max + 2, arg_min,
                                         z_max, z_min, mean, variance, x_mean)


def test_fused_mlp_precision_does_not_depend_on_the_mean_and_nan_propagates():
    # Rows whose mean is 1000 times their spread: centred statistics and gradients keep the fused path's error vs a
    # float64 composite within a few times the float32 composite's (uncentred sums lost everything here), and a NaN
    # in the rows makes every output NaN, not a finite number. The loss reads the outputs' values and the batch
    # statistics: at this magnitude float32 rounding moves rows across the ReLU's kink and swaps nearly tied maxima
    # in either path, which moves gradients routed through them by O(1) (a property of float32, not of a path).
    from kerasvid.ops import cp_mlp

    rng = np.random.RandomState(1)
    batch, points, k, units, out = 2, 64, 8, 24, 40
    values = [rng.randn(batch, points, units) + 1000.0, rng.randn(batch, points, units), rng.uniform(0.5, 1, units),
              np.full(units, 6.0), rng.randn(units, out) / np.sqrt(units), rng.randn(out), rng.randn(out)]
    indices = tf.constant(rng.randint(0, points, (batch, points, k)).astype(np.int32))
    weights = [rng.randn(*shape) for shape in [(units,), (units,), (out,), (out,)]]

    def run(fn, dtype):
        args = [tf.constant(v.astype(dtype)) for v in values]
        with tf.GradientTape() as tape:
            tape.watch(args)
            pooled, *statistics = tf.nest.flatten(fn(*args))
            loss = sum(tf.reduce_sum(s * w.astype(dtype)) for s, w in zip(statistics, weights))
        gradients = tape.gradient(loss, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [np.asarray(v, np.float64) for v in [pooled] + statistics + gradients]

    def fused_fn(p, q, g0, b0, w, g1, b1):
        return cp_mlp.max_rows(p, q, indices, g0, b0, 1e-3, w, g1, b1, 1e-3)

    def composite(p, q, g0, b0, w, g1, b1):
        return _mlp_composite(p, q, indices, g0, b0, w, g1, b1, 1e-3)

    fused, single, exact = run(fused_fn, np.float32), run(composite, np.float32), run(composite, np.float64)
    for got, tf_ops, want in zip(fused, single, exact):
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= 5 * np.abs(tf_ops - want).max() + 1e-7 * scale
    values[0][0, 2, 1] = np.nan
    assert np.isnan(run(fused_fn, np.float32)[0]).all()  # (TF's max-pool skips NaN: the composite gives numbers)


def test_scatter_add_rows_broadcasts_one_update_over_its_k_uses():
    rng = np.random.RandomState(7)
    updates = rng.randn(2, 6, 1, 4).astype(np.float32)
    indices = rng.randint(0, 6, size=(2, 6, 3)).astype(np.int32)
    want = np.zeros((2, 6, 4))
    for b, n, m in np.ndindex(2, 6, 3):
        want[b, indices[b, n, m]] += updates[b, n, 0]
    got = native.scatter_add_rows(tf.constant(updates), tf.constant(indices), 6).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
