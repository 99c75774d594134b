"""Tests for kerasvid.layers.VideoSoftmax against a plain-python transcription of supp Eq. 5-6."""
import math
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers import VideoSoftmax
from tests.helpers import check_layer, run_script_result



def reference_video_softmax(batches, decay=0.9, read="per_sample", state=None):
    """Plain-python float64 VideoSoftmax: one sample at a time, update before read (supp Eq. 5-6, log space)."""
    state = {} if state is None else state
    outputs = []
    for f, index in batches:
        out = []
        for fi, v in zip(map(float, f), map(int, index)):
            if v not in state:
                state[v] = fi
            else:
                a, b = math.log(decay) + state[v], math.log(1 - decay) + fi
                m = max(a, b)
                state[v] = m + math.log(math.exp(a - m) + math.exp(b - m))
            out.append(math.exp(fi - state[v]))
        if read == "after_batch":
            out = [math.exp(float(fi) - state[int(v)]) for fi, v in zip(f, index)]
        outputs.append(np.array(out))
    return outputs, state


def _batches(seed, num_batches=4, batch=7, num_videos=5, scale=2.0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, scale, batch).astype("float32"), rng.integers(0, num_videos, batch))
            for _ in range(num_batches)]


def test_hand_computed_sequence():
    # Video 0: f=0 then f=1, video 1: f=2; d=0.9, k=0.1.
    layer = VideoSoftmax(num_videos=2, decay=0.9)
    out = layer(np.array([0.0, 2.0, 1.0], "float32"), np.array([0, 1, 0]), training=True).numpy()
    sigma0 = 0.9 * 1.0 + 0.1 * math.e  # Eq. 5 after the second frame of video 0
    np.testing.assert_allclose(out, [1.0, 1.0, math.e / sigma0], rtol=1e-6)
    np.testing.assert_allclose(layer.log_sigma.numpy(), [math.log(sigma0), 2.0], rtol=1e-6)
    np.testing.assert_array_equal(layer.count.numpy(), [2, 1])
    # Next batch: video 1 gets f=0 -> Sigma = 0.9 e^2 + 0.1.
    out = layer(np.array([0.0], "float32"), np.array([1]), training=True).numpy()
    np.testing.assert_allclose(out, [1.0 / (0.9 * math.exp(2.0) + 0.1)], rtol=1e-6)


@pytest.mark.parametrize("read", ["per_sample", "after_batch"])
def test_matches_reference_interleaved_videos(read):
    batches = _batches(0)
    layer = VideoSoftmax(num_videos=5, decay=0.9, read=read)
    expected, state = reference_video_softmax(batches, 0.9, read)
    for (f, index), want in zip(batches, expected):
        got = layer(f, index.reshape(-1, 1), training=True).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    seen = sorted(state)
    np.testing.assert_allclose(layer.log_sigma.numpy()[seen], [state[v] for v in seen], rtol=1e-6, atol=1e-6)
    counts = np.bincount(np.concatenate([i for _, i in batches]), minlength=5)
    np.testing.assert_array_equal(layer.count.numpy(), counts)


@pytest.mark.large
def test_graph_and_xla_match_eager():
    batches = _batches(1, num_batches=3)
    expected, _ = reference_video_softmax(batches, 0.8)
    for jit in (False, True):
        layer = VideoSoftmax(num_videos=5, decay=0.8)
        step = tf.function(lambda f, i: layer(f, i, training=True), jit_compile=jit)
        for (f, index), want in zip(batches, expected):
            np.testing.assert_allclose(step(f, index).numpy(), want, rtol=1e-6, atol=1e-6)


def test_inference_reads_without_writing():
    batches = _batches(2, num_batches=2)
    layer = VideoSoftmax(num_videos=5)
    layer(*batches[0], training=True)
    before = layer.log_sigma.numpy().copy(), layer.count.numpy().copy()
    out = layer(*batches[1], training=False).numpy()
    np.testing.assert_array_equal(layer.log_sigma.numpy(), before[0])
    np.testing.assert_array_equal(layer.count.numpy(), before[1])
    expected, _ = reference_video_softmax(batches)
    np.testing.assert_allclose(out, expected[1], rtol=1e-6, atol=1e-6)


def test_gradient_treats_normaliser_as_constant():
    f = tf.constant([0.3, -1.0, 2.0, 0.5])
    index = tf.constant([0, 0, 1, 0])
    layer = VideoSoftmax(num_videos=2)
    with tf.GradientTape() as tape:
        tape.watch(f)
        out = layer(f, index, training=True)
    jac = tape.jacobian(out, f).numpy()
    np.testing.assert_allclose(jac, np.diag(out.numpy()), rtol=1e-6)


def test_large_scores_are_finite_and_exact():
    f = np.array([1e4, -1e4, 1e4 - 3.0, -1e4 + 5.0, 1e4], "float32")
    index = np.array([0, 1, 0, 1, 2])
    layer = VideoSoftmax(num_videos=3)
    out = layer(f, index, training=True).numpy()
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(layer.log_sigma.numpy()))
    expected, _ = reference_video_softmax([(f.astype("float64"), index)])
    np.testing.assert_allclose(out, expected[0], rtol=1e-5)
    out = layer(-f, index, training=True).numpy()
    assert np.all(np.isfinite(out))


def test_bad_video_index_is_an_error():
    layer = VideoSoftmax(num_videos=3)
    with pytest.raises(ValueError, match=r"video_index.*\[0, 3\).*\[3\]"):
        layer(np.zeros(2, "float32"), np.array([0, 3]), training=True)
    with pytest.raises(ValueError, match=r"\[-1\]"):
        layer(np.zeros(2, "float32"), np.array([-1, 0]), training=True)
    step = tf.function(lambda f, i: layer(f, i, training=True))
    with pytest.raises(tf.errors.InvalidArgumentError, match="video_index"):
        step(tf.zeros(2), tf.constant([0, 5]))


def test_reset_state():
    layer = VideoSoftmax(num_videos=2)
    layer(np.array([1.0, 2.0], "float32"), np.array([0, 0]), training=True)
    layer.reset_state()
    np.testing.assert_array_equal(layer.count.numpy(), [0, 0])
    # After a reset the first frame of a video sets Sigma = exp(f) again: output 1.
    np.testing.assert_allclose(layer(np.array([5.0], "float32"), np.array([0]), training=True).numpy(), [1.0])


@pytest.mark.parametrize("read", ["per_sample", "after_batch"])
def test_check_layer(read):
    # Config and .keras round trips (the state saved exactly), dtype policies (the output stays float32), the
    # gradient to f; the second training call (from the state the first one left) against the reference.
    f, index = _batches(3, num_batches=1, num_videos=4)[0]
    check_layer(VideoSoftmax, dict(num_videos=4, decay=0.95, read=read, name="vs"),
                input_data=(f, index.astype("int32")), call_kwargs=dict(training=True), perturb=0,
                expected_output_shape=(7,), mixed_output_dtype="float32",
                expected_output=lambda layer, f, index: reference_video_softmax([(f, index)] * 2, 0.95, read)[0][1])


def test_state_in_checkpoint(tmp_path):
    f_in = keras.Input(shape=(1,))
    i_in = keras.Input(shape=(), dtype="int32")
    model = keras.Model([f_in, i_in], VideoSoftmax(num_videos=4, decay=0.95, name="vs")(f_in, i_in))
    batches = _batches(3, num_batches=2, num_videos=4)
    for f, index in batches:
        model.get_layer("vs")(f, index, training=True)
    state = model.get_layer("vs").log_sigma.numpy().copy()

    ckpt_path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    model.get_layer("vs").reset_state()
    tf.train.Checkpoint(model=model).restore(ckpt_path).assert_existing_objects_matched()
    np.testing.assert_array_equal(model.get_layer("vs").log_sigma.numpy(), state)


def test_validation():
    with pytest.raises(ValueError, match="num_videos=0"):
        VideoSoftmax(num_videos=0)
    with pytest.raises(ValueError, match="decay=1.0"):
        VideoSoftmax(num_videos=2, decay=1.0)
    with pytest.raises(ValueError, match="read='all'"):
        VideoSoftmax(num_videos=2, read="all")


_DISTRIBUTED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerasvid.layers import VideoSoftmax

    rng = np.random.default_rng(0)
    f = rng.normal(0, 2, (5, 6)).astype("float32")      # 5 steps, global batch 6 (3 per replica)
    index = rng.integers(0, 4, (5, 6)).astype("int32")
    results = {}
    for read in ("per_sample", "after_batch"):
        single = VideoSoftmax(num_videos=4, read=read)
        single_out = [single(f[s], index[s], training=True).numpy() for s in range(5)]
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            layer = VideoSoftmax(num_videos=4, read=read)
            layer.build((None,), (None,))
        data = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices((f.reshape(-1), index.reshape(-1))).batch(6))
        step = tf.function(lambda x, i: layer(x, i, training=True))
        outs = []
        for x, i in data:
            per_replica = strategy.run(step, (x, i))
            outs.append(np.concatenate([t.numpy() for t in strategy.experimental_local_results(per_replica)]))
        copies = [v.numpy() for v in strategy.experimental_local_results(layer.log_sigma.value)]
        results[read] = {
            "out_err": float(np.max(np.abs(np.stack(outs) - np.stack(single_out)))),
            "state_err": max(float(np.max(np.abs(c - single.log_sigma.numpy()))) for c in copies),
            "count_equal": all(np.array_equal(v.numpy(), single.count.numpy())
                               for v in strategy.experimental_local_results(layer.count.value)),
            "num_copies": len(copies),
        }
    print("RESULT" + json.dumps(results))
""")


@pytest.mark.large
def test_mirrored_strategy_state_equals_single_device():
    results = run_script_result(_DISTRIBUTED_SCRIPT, timeout=300)
    for read, r in results.items():
        assert r["num_copies"] == 2, (read, r)
        assert r["state_err"] < 1e-5, (read, r)
        assert r["out_err"] < 1e-5, (read, r)
        assert r["count_equal"], (read, r)
