"""Tests of kerasvid.training (schedules, the custom loop, checkpoints/resume, accumulation, clipping, NaN stop,
precise BN, summaries) on a tiny in-memory task; the mirrored-strategy comparison runs in a subprocess."""
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.training import (Checkpointer, DivergenceError, NonFiniteLossError, NonFiniteStateError,
                               Progress, TrainConfig, Trainer, WarmupDecay, build_optimizer, checkpoints,
                               get_strategy, loop)
from tests.training_toy import ToyTask, toy_config, toy_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trainer(model_dir, task=None, **kw):
    keras.utils.set_random_seed(0)
    base = dict(train_steps=10, log_every=5, learning_rate=0.05, optimizer="sgd", momentum=0.9)
    base.update(kw)
    return Trainer(task or ToyTask(toy_config()), get_strategy("default"), str(model_dir), TrainConfig(**base))


def _weights(trainer):
    return [v.numpy() for v in trainer.model.trainable_variables]


# ----- schedules ------------------------------------------------------------------------------------------------
def test_warmup_decay_values_match_hand_computed():
    step = WarmupDecay(0.1, "step", total_steps=100, decay_steps=10, decay_rate=0.1, min_lr=1e-5)
    assert [round(float(step(s)), 8) for s in (0, 9, 10, 25, 99)] == [0.1, 0.1, 0.01, 0.001, 1e-5]
    multi = WarmupDecay(0.1, "multistep", total_steps=100, boundaries=(50, 75), warmup_steps=4)
    # warm-up: 0.1 * (s + 1) / 4 for s < 4.
    np.testing.assert_allclose([float(multi(s)) for s in (0, 3, 4, 49, 50, 80)],
                               [0.025, 0.1, 0.1, 0.1, 0.01, 0.001], rtol=1e-6)
    cos = WarmupDecay(1.0, "cosine", total_steps=12, warmup_steps=2, min_lr=0.0)
    expected = [0.5, 1.0] + [0.5 * (1 + np.cos(np.pi * (s - 2) / 10)) for s in range(2, 13)]
    np.testing.assert_allclose([float(cos(s)) for s in range(13)], expected, atol=1e-6)
    again = WarmupDecay.from_config(cos.get_config())
    assert float(again(7)) == float(cos(7))


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="linear"), "schedule"),
    (dict(schedule="multistep", boundaries=(5, 3)), "increasing"),
    (dict(schedule="cosine", warmup_steps=10, total_steps=10), "warmup_steps"),
    (dict(min_lr=1.0), "min_lr"),
])
def test_warmup_decay_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WarmupDecay(0.1, **kwargs)


def test_build_optimizer_and_config_validation():
    assert isinstance(build_optimizer("adamw", 0.1, weight_decay=0.05), keras.optimizers.AdamW)
    assert isinstance(build_optimizer("sgd", 0.1, mixed_float16=True), keras.optimizers.LossScaleOptimizer)
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match="accumulation_steps"):
        TrainConfig(accumulation_steps=0).validate()
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="float8").validate()
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(ValueError, match="jit_compile"):
            TrainConfig(jit_compile=True).validate("mirrored")


# ----- the loop ---------------------------------------------------------------------------------------------------
def test_training_learns_and_eval_matches_numpy(tmp_path):
    trainer = _trainer(tmp_path, train_steps=30, log_every=10, checkpoint_every=10)
    trainer.train()
    losses = [logs["loss"] for _, logs in trainer.history]
    assert losses[-1] < 0.5 * losses[0]
    results = trainer.evaluate()
    with open(tmp_path / "eval_results.json") as f:
        assert json.load(f)["top1"] == results["top1"]
    # Independent check: top-1 of the model on the same eval clips, computed with numpy.
    x, y = toy_data(24, 3, 2, 4)
    top1 = float(np.mean(np.argmax(trainer.model(x, training=False).numpy(), 1) == y))
    assert results["step"] == 30 and results["num_examples"] == 24
    assert results["top1"] == pytest.approx(top1)
    assert results["top1"] > 0.8
    assert sum(map(sum, results["confusion_matrix"])) == 24
    files = set(os.listdir(tmp_path))
    assert {"checkpoint", "ckpt-10.index", "ckpt-20.index", "ckpt-30.index"} <= files
    assert "best.json" not in files  # best checkpoints come from evaluations during training only


def test_multi_view_eval_averages_views(tmp_path):
    task = ToyTask(toy_config(eval_clips=2, eval_crops=2))
    trainer = _trainer(tmp_path, task=task, train_steps=5)
    trainer.train()
    single = _trainer(tmp_path / "single", task=ToyTask(toy_config()), train_steps=1)
    single.model.set_weights(trainer.model.get_weights())
    # The toy eval repeats each clip V=4 times, so the averaged probabilities equal the single-view ones.
    assert trainer.evaluate(write=False)["top1"] == single.evaluate(write=False)["top1"]
    out = task.eval_outputs(trainer.model, {"image": tf.zeros([8, 2, 4, 4, 3])}, tf.zeros([2], tf.int32))
    assert out["probs"].shape == (2, 3)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    # Dropout (Keras SeedGenerator state), shuffled data (iterator state) and momentum must all be restored.
    full = _trainer(tmp_path / "full", task=ToyTask(toy_config(), dropout=0.5), train_steps=20, checkpoint_every=5)
    full.train()
    first = _trainer(tmp_path / "resumed", task=ToyTask(toy_config(), dropout=0.5), train_steps=10,
                     checkpoint_every=5)
    first.train()
    second = _trainer(tmp_path / "resumed", task=ToyTask(toy_config(), dropout=0.5), train_steps=20,
                      checkpoint_every=5)
    second.train()
    for a, b in zip(_weights(full), _weights(second)):
        np.testing.assert_array_equal(a, b)
    assert full.history[-1][1]["loss"] == second.history[-1][1]["loss"]


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    big = _trainer(tmp_path / "big", task=ToyTask(toy_config(batch_size=8)), train_steps=3)
    big.train()
    acc = _trainer(tmp_path / "acc", task=ToyTask(toy_config(batch_size=4)), train_steps=3, accumulation_steps=2)
    acc.train()
    for a, b in zip(_weights(big), _weights(acc)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_clip_norm_clips_the_global_gradient(tmp_path):
    trainer = _trainer(tmp_path, train_steps=1, learning_rate=1.0, momentum=0.0, clip_norm=0.01)
    before = _weights(trainer)
    trainer.train()
    delta = [a - b for a, b in zip(before, _weights(trainer))]
    assert np.sqrt(sum(float(np.sum(d ** 2)) for d in delta)) == pytest.approx(0.01, rel=1e-4)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, task=ToyTask(toy_config(), nan_at=5), train_steps=10, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 6.*ckpt-4"):
        trainer.train()
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt-4"))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 4
    assert not os.path.exists(tmp_path / "ckpt-6.index")


def test_recalibrate_batch_norm_is_the_average_of_batch_statistics():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.99)(inputs))
    batches = [np.full((2, 3), v, np.float32) + np.array([[0.0], [2.0]], np.float32) for v in (1.0, 4.0, 7.0)]
    ds = tf.data.Dataset.from_tensor_slices((np.stack(batches), np.zeros(3)))
    assert loop.recalibrate_batch_norm(model, ds, 3) == 1
    bn = model.layers[-1]
    # Batch means: 2, 5, 8 -> 5; batch variances (biased): 1 each -> 1.
    np.testing.assert_allclose(bn.moving_mean.numpy(), [5.0] * 3, rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [1.0] * 3, rtol=1e-6)
    assert bn.momentum == 0.99


class _BatchNormList(keras.layers.Layer):
    """A custom layer that keeps its BatchNormalization in a list attribute (like CPModule's `mlp_bns`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norms = [keras.layers.BatchNormalization(momentum=0.9)]

    def call(self, x, training=False):
        return self.norms[0](x, training=training)


def test_recalibrate_batch_norm_finds_nested_layers_and_calls_the_model_on_the_task_inputs():
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    inner = _BatchNormList()
    model = keras.Model([a, b], inner(keras.layers.Subtract()([a, b])))
    # Batches of two streams; the model sees a - b. Batch means of a - b: 1, 3 -> 2; biased variances 0.25, 1 -> 0.625.
    diffs = [np.array([[0.5, 0.5], [1.5, 1.5]], np.float32), np.array([[2.0, 2.0], [4.0, 4.0]], np.float32)]
    ds = tf.data.Dataset.from_tensor_slices(({"a": np.stack(diffs) + 1.0, "b": np.ones((2, 2, 2), np.float32)},
                                             np.zeros(2)))
    assert loop.recalibrate_batch_norm(model, ds, 2, model_inputs=lambda x: [x["a"], x["b"]]) == 1
    bn = inner.norms[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), [2.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [0.625, 0.625], rtol=1e-6)
    assert bn.momentum == 0.9
    assert loop.sublayers(model).count(bn) == 1


class _NoBatchSizeTask:
    """A minimal task (not a `Task` subclass) whose config has no `batch_size`: least squares y = x w, w0 = 0."""

    name = "no_batch_size"
    x = np.arange(24, dtype=np.float32).reshape(12, 2) / 10.0
    y = x @ np.array([[1.0], [-2.0]], np.float32)

    def __init__(self):
        import types

        self.config = types.SimpleNamespace(seed=0)
        self.global_batches = []

    def build_model(self):
        inputs = keras.Input((2,))
        return keras.Model(inputs, keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inputs))

    def build_dataset(self, training, input_context=None):
        return tf.data.Dataset.from_tensor_slices((self.x, self.y)).repeat().batch(6, drop_remainder=True)

    def compute_loss(self, model, inputs, labels, global_batch_size):
        self.global_batches.append(global_batch_size)
        return tf.reduce_sum(tf.square(model(inputs, training=True) - labels)) / global_batch_size, {}

    def model_inputs(self, inputs):
        return inputs

    def checkpoint_objects(self):
        return {}

    def best_metric(self):
        return None


def test_a_task_without_batch_size_in_its_config_trains_with_the_global_batch_of_its_data(tmp_path):
    task = _NoBatchSizeTask()
    trainer = Trainer(task, get_strategy("default"), str(tmp_path),
                      TrainConfig(train_steps=2, log_every=1, learning_rate=0.1, momentum=0.0))
    trainer.train()
    assert set(task.global_batches) == {6}
    # Hand-computed SGD on the mean squared error of batches of 6 (rows 0-5, then 6-11).
    w = np.zeros((2, 1))
    expected = []
    for rows in (slice(0, 6), slice(6, 12)):
        x, y = task.x[rows].astype(np.float64), task.y[rows].astype(np.float64)
        expected.append(float(np.mean((x @ w - y) ** 2)))
        w -= 0.1 * 2 * x.T @ (x @ w - y) / 6
    assert [logs["loss"] for _, logs in trainer.history] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(trainer.model.trainable_variables[0].numpy(), w, rtol=1e-5)
    assert all(logs["clips_per_s"] > 0 for _, logs in trainer.history)


def test_summaries_hold_the_logged_values(tmp_path):
    trainer = _trainer(tmp_path, train_steps=10, log_every=5, image_summaries_every=5)
    trainer.train()
    events = [os.path.join(tmp_path, "train", f) for f in os.listdir(tmp_path / "train")]
    scalars, images = {}, 0
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "images":
                images += 1
                shape = tf.make_ndarray(value.tensor)
                assert int(shape[0]) == 8 and int(shape[1]) == 4  # width = 2 frames x 4, height 4
            elif value.tag == "loss":
                scalars[event.step] = float(tf.make_ndarray(value.tensor))
    assert scalars == pytest.approx({s: logs["loss"] for s, logs in trainer.history})
    assert images == 2


def test_progress_logs_lines_when_not_a_terminal(caplog):
    import io
    import logging as std_logging

    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)  # an earlier in-process absl app may have parsed --verbosity
    try:
        with caplog.at_level(std_logging.INFO):
            progress = Progress(20, initial=0, log_every=10, stream=io.StringIO())
            progress.update(5, {"loss": 1.0})
            progress.update(10, {"loss": 0.5})
    finally:
        absl_logging.set_verbosity(verbosity)
    assert sum("step 10/20 loss=0.5" in r.getMessage() for r in caplog.records) == 1
    assert not any("step 5/20" in r.getMessage() for r in caplog.records)


@pytest.mark.large
def test_mirrored_over_two_logical_cpus_matches_one_device():
    script = textwrap.dedent(f"""
        import sys, tempfile
        sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]
        from kerasvid.training import Trainer, TrainConfig, get_strategy, split_cpu_into_logical_devices
        split_cpu_into_logical_devices(2)
        import keras, numpy as np
        from training_toy import ToyTask, toy_config
        def run(strategy, **kw):
            keras.utils.set_random_seed(0)
            t = Trainer(ToyTask(toy_config()), get_strategy(strategy), tempfile.mkdtemp(),
                        TrainConfig(train_steps=6, log_every=3, learning_rate=0.05, checkpoint_every=3, **kw))
            t.train()
            assert t.strategy.num_replicas_in_sync == (2 if strategy == "mirrored" else 1)
            return [v.numpy() for v in t.model.trainable_variables]
        for kw in ({{}}, {{"clip_norm": 0.05}}):
            diff = max(float(np.abs(a - b).max()) for a, b in zip(run("default", **kw), run("mirrored", **kw)))
            print("maxdiff", diff)
            assert diff < 1e-6, diff
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("maxdiff") == 2


def test_jit_compile_matches_graph_mode_on_one_device(tmp_path):
    graph = _trainer(tmp_path / "graph", train_steps=3)
    graph.train()
    jit = _trainer(tmp_path / "jit", train_steps=3, jit_compile=True)
    jit.train()
    for a, b in zip(_weights(graph), _weights(jit)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_mixed_precision_trains_with_float32_variables(tmp_path, policy):
    try:
        trainer = _trainer(tmp_path, train_steps=4, mixed_precision=policy)
        assert trainer.model.layers[-1].compute_dtype == policy
        assert all(v.dtype == "float32" for v in trainer.model.trainable_variables)
        if policy == "float16":
            assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        before = _weights(trainer)
        trainer.train()
        after = _weights(trainer)
        assert all(np.isfinite(w).all() for w in after)
        assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after))
        assert np.isfinite(trainer.history[-1][1]["loss"])
    finally:
        loop.set_mixed_precision("")


def test_classification_aggregate_eval_by_hand():
    single = ToyTask(toy_config(label_names=("a", "b", "c")))
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]], np.float32)
    r = single.aggregate_eval({"probs": probs, "labels": np.array([0, 1, 1])})
    assert r["num_examples"] == 3 and r["top1"] == pytest.approx(1 / 3) and r["top5"] == 1.0
    assert r["confusion_matrix"] == [[1, 0, 0], [1, 0, 1], [0, 0, 0]]
    assert r["per_class_accuracy"] == {"a": 1.0, "b": 0.0}
    assert sorted(r["most_confused"]) == [["b", "a", 1], ["b", "c", 1]]
    multi = ToyTask(toy_config(num_classes=2, multi_label=True))
    r = multi.aggregate_eval({"probs": np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.3]]),
                              "labels": np.array([[1, 0], [0, 1], [1, 0]], np.float32)})
    # AP(class 0) = (1/1 + 2/3) / 2, AP(class 1) = 1; top-1 hits a positive only in row 0.
    assert r["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert r["top1"] == pytest.approx(1 / 3)
    assert multi.best_metric() == ("map", "max") and single.best_metric() == ("top1", "max")


def test_classification_eval_of_constant_and_nan_predictions_scores_zero_and_counts_nonfinite():
    task = ToyTask(toy_config(label_names=("a", "b", "c")))
    labels = np.array([0, 1, 2, 0])
    probs = np.array([[1 / 3] * 3, [np.nan] * 3, [0.1, 0.2, 0.7], [np.nan, 0.5, 0.5]])
    r = task.aggregate_eval({"probs": probs, "labels": labels})
    # Row 0 ties everywhere (a miss), rows 1 and 3 are non-finite (misses), row 2 is right.
    assert r["num_nonfinite"] == 2 and r["top1"] == pytest.approx(1 / 4)
    assert r["top5"] == pytest.approx(2 / 4)  # top-3 of 3 classes: every finite row is a hit
    assert r["per_class_accuracy"] == {"a": 0.0, "b": 0.0, "c": 1.0}
    assert sum(map(sum, r["confusion_matrix"])) == 2  # the non-finite rows are left out of the matrix
    multi = ToyTask(toy_config(num_classes=2, multi_label=True))
    r = multi.aggregate_eval({"probs": np.full((3, 2), np.nan), "labels": np.array([[1, 0], [0, 1], [1, 1]])})
    assert r["num_nonfinite"] == 3 and r["map"] == 0.0 and r["top1"] == 0.0
    # The training accuracy follows the same rules: constant logits hit nothing, nor do NaN logits.
    hits, count = task.accuracy_stat(tf.constant([[0.0, 0.0, 0.0], [np.nan, 1.0, 0.0]]), tf.constant([0, 1]))
    assert (float(hits), float(count)) == (0.0, 2.0)
    hits, count = multi.accuracy_stat(tf.constant([[np.nan, -1.0]]), tf.constant([[0, 0]]))
    assert (float(hits), float(count)) == (1.0, 2.0)


# ----- divergence and non-finite state ----------------------------------------------------------------------------
def _named_checkpoint(message):
    found = re.search(r"last finite checkpoint \(([^)]*)\)", message)
    return found.group(1) if found else None


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lr_1e6_stops_as_diverged_and_names_a_finite_checkpoint(tmp_path, optimizer):
    # Before: SGD and Adam at lr 1e6 trained all 20 steps to a loss of ~1e5 / ~4e5 and returned normally.
    trainer = _trainer(tmp_path, train_steps=20, learning_rate=1e6, optimizer=optimizer, checkpoint_every=1,
                       max_weight=0)  # the loss test alone (exploding weights would stop it first)
    with pytest.raises(DivergenceError, match=r"more than --divergence_factor=1000 times the median loss") as info:
        trainer.train()
    named = _named_checkpoint(str(info.value))
    assert named and checkpoints.nonfinite_in_checkpoint(named) == []
    for index in tmp_path.glob("ckpt-*.index"):  # every checkpoint left in the directory is finite
        assert checkpoints.nonfinite_in_checkpoint(str(index)[:-len(".index")]) == []


def test_sgd_overflow_never_writes_a_nonfinite_checkpoint(tmp_path):
    # lr 1e38 overflows the weights; with the ratio test off, the NaN/inf checks alone must stop the run.
    trainer = _trainer(tmp_path, train_steps=20, learning_rate=1e38, checkpoint_every=1, divergence_factor=0,
                       max_weight=0)
    with pytest.raises(DivergenceError) as info:
        trainer.train()
    named = _named_checkpoint(str(info.value))
    assert named and checkpoints.nonfinite_in_checkpoint(named) == []
    assert all(checkpoints.nonfinite_in_checkpoint(str(i)[:-6]) == [] for i in tmp_path.glob("ckpt-*.index"))


def test_a_nonfinite_state_is_not_saved_and_eval_of_nonfinite_weights_refuses(tmp_path):
    trainer = _trainer(tmp_path, train_steps=2, checkpoint_every=1)
    trainer.train()  # ckpt-1, ckpt-2 (finite)
    kernel = trainer.model.trainable_variables[0]
    kernel.assign(np.where(np.arange(kernel.shape[-1]) == 0, np.inf, kernel.numpy()))
    ckpt = Checkpointer(str(tmp_path), trainer.strategy, 5, model=trainer.model, optimizer=trainer.optimizer,
                        step=trainer.step)
    with pytest.raises(NonFiniteStateError, match=r"step 3: 1 of \d+ float variables .* not saved. The last finite "
                                                   r"checkpoint is .*ckpt-2"):
        ckpt.save(3)
    assert not list(tmp_path.glob("ckpt-3*"))
    # A non-finite checkpoint written by other code (plain tf.train.Checkpoint) is skipped by latest_finite ...
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=trainer.model, step=trainer.step), str(tmp_path),
                                         max_to_keep=5)
    bad = manager.save(checkpoint_number=4)
    assert checkpoints.nonfinite_in_checkpoint(bad) and ckpt.latest_finite().endswith("ckpt-2")
    # ... and evaluation (or export) of it refuses.
    fresh = _trainer(tmp_path, train_steps=2)
    with pytest.raises(NonFiniteStateError, match=r"ckpt-4 has 1 NaN or infinite weights.*refusing to evaluate"):
        fresh.restore_for_inference()
    with pytest.raises(NonFiniteStateError, match="refusing to evaluate"):
        trainer.evaluate(write=False)


def test_divergence_reference_survives_a_resume(tmp_path):
    first = _trainer(tmp_path, train_steps=3, checkpoint_every=1)
    first.train()
    again = _trainer(tmp_path, train_steps=4)
    again.train()
    reference = again._reference_losses.numpy()  # pylint: disable=protected-access
    assert int(again._reference_count.numpy()) == 4  # pylint: disable=protected-access
    np.testing.assert_array_equal(reference[:3], first._reference_losses.numpy()[:3])  # pylint: disable=protected-access
    with pytest.raises(ValueError, match="divergence_factor"):
        TrainConfig(divergence_factor=0.5).validate()


def test_an_int_image_size_is_a_square():
    # Before: TypeError "object of type 'int' has no len()" in ClassificationTask.validate.
    config = toy_config(image_size=4)
    assert config.image_size == (4, 4)
    task = ToyTask(config)
    task.validate(set())
    assert task.build_model().input_shape == (None, 2, 4, 4, 3)


class _NanGradientTask(ToyTask):
    """The toy loss plus sqrt(0 * w): the loss stays finite, its gradient is NaN (0 * inf)."""

    def compute_loss(self, model, inputs, labels, global_batch_size):
        loss, stats = super().compute_loss(model, inputs, labels, global_batch_size)
        return loss + tf.sqrt(tf.reduce_sum(0.0 * model.trainable_variables[0])), stats


def test_a_nan_gradient_with_a_finite_loss_stops_before_any_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, task=_NanGradientTask(toy_config()), train_steps=5, checkpoint_every=1)
    with pytest.raises(DivergenceError, match=r"gradient norm is nan \(loss [\d.]+\) at step 1\. .*\(none yet\)"):
        trainer.train()
    assert not list(tmp_path.glob("ckpt-*"))


def test_long_steps_are_logged(caplog):
    import logging as std_logging

    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        with caplog.at_level(std_logging.INFO):
            history = []
            Trainer._log_long_step(1, 30.0, history, first=True)  # pylint: disable=protected-access
            for step, seconds in enumerate([0.5] * 5 + [12.0, 6.0], start=2):
                Trainer._log_long_step(step, seconds, history, first=False)  # pylint: disable=protected-access
    finally:
        absl_logging.set_verbosity(verbosity)
    messages = [r.getMessage() for r in caplog.records]
    assert any("Step 1 took 30.0s (it builds" in m for m in messages)
    assert any("Step 7 took 12.0s (median step 0.50s)" in m for m in messages)
    assert not any("Step 8" in m for m in messages)  # 6 s: under the 10 s floor


def test_small_batch_norms_names_the_layers_that_average_too_few_values():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization(name="wide")(inputs)  # 4 x 4 x batch values per channel
    x = keras.layers.Conv2D(2, 4, name="to_1x1")(x)
    x = keras.layers.BatchNormalization(name="narrow")(x)  # 1 x 1 x batch
    model = keras.Model(inputs, x)
    assert loop.small_batch_norms(model, 2) == [("narrow", 2)]
    assert loop.small_batch_norms(model, 1) == [("narrow", 1)]  # "wide" averages 16: enough
    assert loop.small_batch_norms(model, 16) == []


def test_exploding_weights_stop_the_run(tmp_path):
    # One SGD step at a huge learning rate throws the weights far beyond --max_weight while the loss is finite.
    trainer = _trainer(tmp_path, train_steps=4, learning_rate=1e6, momentum=0.0, checkpoint_every=0,
                       max_weight=100.0)
    with pytest.raises(DivergenceError, match=r"A weight reached .* \(> --max_weight=100; largest: .*\) after the "
                                              r"update of step 1 .*exploding"):
        trainer.train()
    assert not [n for n in os.listdir(tmp_path) if n.startswith("ckpt-")]
