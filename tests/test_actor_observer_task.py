"""Tests for kerasvid.tasks.actor_observer on tiny Charades-Ego style frame folders (small CNN trunk, 16x16 frames)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.data import actor_observer as tr
from kerasvid.layers import VideoSoftmax
from kerasvid.losses import ActorObserverLoss, actor_observer_objective
from kerasvid.tasks import TaskConfig, get_task, list_tasks
from kerasvid.tasks.actor_observer import ActorObserverTask, video_weights
from kerasvid.training import TrainConfig, Trainer
from tests.helpers import run_script_result
from tests.small_actor_observer import HEADER, SmallActorObserverTask, small_config, write_video


@pytest.fixture(scope="module")
def charades_ego(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("frames"))
    for vid, count, shade in (("AA", 24, 10), ("AAEGO", 16, 60), ("BB", 20, 110), ("BBEGO", 20, 160),
                              ("CC", 16, 30), ("CCEGO", 16, 90), ("CH1", 30, 200)):
        write_video(root, vid, count, shade)
    paths = {}
    for name, ids in (("train", ("AA", "AAEGO", "BB", "BBEGO")), ("eval", ("CC", "CCEGO"))):
        paths[name] = os.path.join(root, f"{name}.csv")
        with open(paths[name], "w") as f:
            f.write(HEADER + "".join(f"{i},S,K,5,5,Yes,x,y,z,,10\n" for i in ids))
    paths["charades"] = os.path.join(root, "charades.csv")
    with open(paths["charades"], "w") as f:
        f.write(HEADER + "CH1,S,K,5,5,Yes,x,y,z,c002 0.10 0.50;c000 0.60 1.00,1.2\n")
    return root, paths


def test_samples_and_dataset(charades_ego):
    root, paths = charades_ego
    assert "actor_observer" in list_tasks()
    task = SmallActorObserverTask(small_config(paths, root))
    samples, num_pairs = task.samples("train")
    assert num_pairs == 2
    # AA: 24 third-person frames, anchors 0,4,...,20; every anchor's positive has a negative >= 6 frames away.
    assert sum(s.video_index == 0 for s in samples) == 6 and sum(s.video_index == 1 for s in samples) == 5
    task.build_model()
    inputs, labels = next(iter(task.build_dataset(training=True)))
    assert {k: tuple(v.shape) for k, v in inputs.items()} == {
        "first_person": (4, 1, 16, 16, 3), "third_person": (4, 1, 16, 16, 3),
        "first_person_negative": (4, 1, 16, 16, 3), "video_index": (4,)}
    assert np.all(labels.numpy() == -1) and set(inputs["video_index"].numpy()) <= {0, 1}
    assert 0.0 <= float(tf.reduce_min(inputs["third_person"])) and float(tf.reduce_max(inputs["third_person"])) <= 1
    # Evaluation: fixed triplets, centre crops of the flat-shaded frames: the frame's shade / 255.
    eval_batches = list(task.build_dataset(training=False))
    again = list(task.build_dataset(training=False))
    assert sum(int(b[1].shape[0]) for b in eval_batches) == 4  # CC: anchors 0, 4, 8, 12
    np.testing.assert_array_equal(eval_batches[0][0]["first_person_negative"], again[0][0]["first_person_negative"])
    first = eval_batches[0][0]["third_person"].numpy()[0]
    assert abs(float(first.mean()) - 30 / 255) < 3 / 255  # JPEG of a flat frame of shade 30


@pytest.mark.parametrize("read", ["per_sample", "after_batch"])
def test_compute_loss_is_the_actor_observer_objective(charades_ego, read):
    root, paths = charades_ego
    task = SmallActorObserverTask(small_config(paths, root, softmax_decay=0.95, softmax_read=read))
    model = task.build_model()
    assert [layer.num_videos for layer in task.video_softmaxes] == [3, 3, 3] and task.video_softmaxes[0].decay == 0.95
    assert all(layer.read == read for layer in task.video_softmaxes)
    inputs, labels = next(iter(task.build_dataset(training=True)))
    # The same objective from fresh states, computed directly.
    outputs = model([inputs[k] for k in ("first_person", "third_person", "first_person_negative")], training=True)
    fresh = [VideoSoftmax(3, decay=0.95, read=read) for _ in range(3)]
    want = actor_observer_objective(outputs, inputs["video_index"], fresh, ActorObserverLoss())
    loss, stats = task.compute_loss(model, inputs, labels, global_batch_size=4)
    np.testing.assert_allclose(float(loss), float(want["objective"]), rtol=1e-5)
    correct = np.sum(outputs["d_pos"].numpy() < outputs["d_neg"].numpy())
    assert float(stats["triplet_accuracy"][0]) == correct and float(stats["triplet_accuracy"][1]) == 4
    assert int(task.loss.count.numpy()) == 4
    np.testing.assert_array_equal(task.video_softmaxes[1].count.numpy(), fresh[1].count.numpy())


def test_trainer_runs_with_accumulation_and_evaluates(charades_ego, tmp_path):
    root, paths = charades_ego
    task = get_task("actor_observer", small_config(paths, root))
    task.build_network = SmallActorObserverTask.build_network.__get__(task)
    trainer = Trainer(task, tf.distribute.get_strategy(), str(tmp_path),
                      TrainConfig(train_steps=2, accumulation_steps=2, log_every=1, learning_rate=0.01))
    trainer.train()
    assert int(task.loss.count.numpy()) == 2 * 2 * 4  # steps x micro-batches x batch
    results = trainer.evaluate()
    assert results["num_examples"] == 4
    for key in ("triplet_accuracy", "weighted_triplet_accuracy", "top1_selected_accuracy", "top50_selected_accuracy"):
        assert 0.0 <= results[key] <= 1.0, (key, results)
    # The task's state round-trips through a checkpoint.
    path = tf.train.Checkpoint(**task.checkpoint_objects()).save(str(tmp_path / "state"))
    saved = task.video_softmaxes[0].log_sigma.numpy().copy()
    task.video_softmaxes[0].reset_state()
    tf.train.Checkpoint(**task.checkpoint_objects()).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(task.video_softmaxes[0].log_sigma.numpy(), saved)


def test_classification_mixed_setup(charades_ego):
    root, paths = charades_ego
    config = small_config(paths, root, charades_csv=paths["charades"], triplet_repeats=2, frame_stride=4)
    config.num_classes = 3
    task = SmallActorObserverTask(config)
    samples, _ = task.samples("train")
    labelled = [s for s in samples if not s.is_triplet]
    # CH1 (30 frames): every 4th frame strictly inside c002 (0.1-0.5 s: frames 4, 8) and c000 (0.6-1.0 s: 16, 20).
    assert sorted((s.label, s.third_person[-10:-4]) for s in labelled) == [
        (0, "000017"), (0, "000021"), (2, "000005"), (2, "000009")]
    assert all(s.video_index == 2 for s in labelled) and len(samples) == 4 + 2 * 11
    model = task.build_model()
    batch = [s for s in samples if not s.is_triplet][:2] + [s for s in samples if s.is_triplet][:2]
    inputs = {k: tf.stack([task._load(getattr(s, k), tf.constant([0, 0], tf.int64), False) for s in batch])
              for k in ("first_person", "third_person", "first_person_negative")}
    inputs["video_index"] = tf.constant([s.video_index for s in batch])
    labels = tf.constant([s.label for s in batch])
    loss, _ = task.compute_loss(model, inputs, labels, global_batch_size=4)
    outputs = model([inputs[k] for k in ("first_person", "third_person", "first_person_negative")], training=True)
    logits = outputs["logits"].numpy()
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ce = -(log_probs[0, batch[0].label] + log_probs[1, batch[1].label])
    fresh = [VideoSoftmax(3) for _ in range(3)]
    triplet = actor_observer_objective(outputs, inputs["video_index"], fresh, ActorObserverLoss(),
                                       labels=labels)["triplet_objective"]
    np.testing.assert_allclose(float(loss), float(triplet) + 2.0 * ce, rtol=1e-5)  # the summed cross-entropy


def test_training_data_gets_the_charades_augmentation(charades_ego, monkeypatch):
    """The task hands the classification frames' crop area and colour jitter (the reference's (0.08, 1), 0.4 by
    default, or the task_kwargs) to `triplet_dataset` (tests/test_actor_observer_data.py checks what it does with
    them)."""
    root, paths = charades_ego
    calls = []
    monkeypatch.setattr(tr, "triplet_dataset", lambda *a, **k: calls.append((a, k)))
    for kwargs, want in (({}, ((0.8, 1.0), (0.08, 1.0), 0.4)),
                         ({"crop_scale": (0.5, 1.0), "charades_crop_scale": (0.2, 0.9), "charades_color_jitter": 0.0},
                          ((0.5, 1.0), (0.2, 0.9), 0.0))):
        SmallActorObserverTask(small_config(paths, root, **kwargs)).build_dataset(training=True)
        args, k = calls[-1]
        assert (tuple(args[5]), tuple(k["classification_crop_scale"]), k["classification_color_jitter"]) == want


def test_video_weights_and_validation(charades_ego):
    root, paths = charades_ego
    f = np.array([[0.0, 1.0, 0.0], [np.log(3.0), 1.0, 0.0], [5.0, 5.0, 5.0]])
    # Video 0: p_x = (1, 3) / 2, p_y = p_z = 1; video 1 alone: all ones.
    np.testing.assert_allclose(video_weights(f, [0, 0, 1]), [0.5, 1.5, 1.0], rtol=1e-12)
    with pytest.raises(ValueError, match="num_frames must be 1"):
        ActorObserverTask(TaskConfig(num_frames=8)).validate({"train"})
    with pytest.raises(ValueError, match="frames_root"):
        ActorObserverTask(TaskConfig(num_frames=1)).validate({"train"})
    with pytest.raises(ValueError, match="Unknown actor_observer task_kwargs \\['decay'\\]"):
        ActorObserverTask(TaskConfig(num_frames=1, task_kwargs={"decay": 0.9}))
    with pytest.raises(ValueError, match="`softmax_read` must be 'per_sample' or 'after_batch', got 'batch'"):
        ActorObserverTask(TaskConfig(num_frames=1, task_kwargs={"softmax_read": "batch"}))
    with pytest.raises(ValueError, match="num_classes"):
        ActorObserverTask(small_config(paths, root, charades_csv=paths["charades"])).validate({"train"})
    with pytest.raises(ValueError, match=r"charades_crop_scale=\(0.0, 1.0\)"):
        ActorObserverTask(TaskConfig(num_frames=1, task_kwargs={"charades_crop_scale": (0.0, 1.0)}))
    with pytest.raises(ValueError, match=r"crop_scale=\(0.9, 0.8\)"):
        ActorObserverTask(TaskConfig(num_frames=1, task_kwargs={"crop_scale": (0.9, 0.8)}))
    with pytest.raises(ValueError, match="charades_color_jitter=1.5"):
        ActorObserverTask(TaskConfig(num_frames=1, task_kwargs={"charades_color_jitter": 1.5}))


def test_actor_observer_config_is_typed_and_its_flags_are_derived():
    """task_kwargs become a ActorObserverConfig; config_flags derives one flag per field (name, default, help, enum,
    float pairs) and builds the same config back from parsed flags."""
    import dataclasses

    from absl import flags

    from kerasvid import config_flags
    from kerasvid.tasks.actor_observer import ActorObserverConfig

    options = ActorObserverTask(TaskConfig(num_frames=1, task_kwargs={"margin": 0.2, "min_gap": 120})).options
    assert options == ActorObserverConfig(margin=0.2, min_gap=120) and options.fps == 24.0
    flag_values = flags.FlagValues()
    names = config_flags.define_flags(ActorObserverConfig, flag_values)
    assert names == [f.name for f in dataclasses.fields(ActorObserverConfig)]
    assert flag_values["fps"].help == "frame rate of the frame folders."
    assert flag_values["triplet_loss"].parser.enum_values == ["dist_ratio", "margin_rank"]
    flag_values(["prog", "--crop_scale=0.5,1", "--triplet_loss=margin_rank", "--min_gap=120",
                 "--nobalance_gradients"])
    assert config_flags.from_flags(ActorObserverConfig, flag_values) == ActorObserverConfig(
        crop_scale=(0.5, 1.0), triplet_loss="margin_rank", min_gap=120, balance_gradients=False)
    flag_values["crop_scale"].value = ["0.5", "x"]
    with pytest.raises(ValueError, match=r"--crop_scale must be numbers, got '0.5,x'"):
        config_flags.from_flags(ActorObserverConfig, flag_values)
    flag_values["crop_scale"].value = ["0.9", "0.8"]  # converted, then checked by the config
    with pytest.raises(ValueError, match=r"crop_scale=\(0.9, 0.8\)"):
        config_flags.from_flags(ActorObserverConfig, flag_values)


_MIRRORED_SCRIPT = """
import json, os, sys, tempfile
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tests.small_actor_observer import HEADER, SmallActorObserverTask, small_config, write_video
from kerasvid.training import TrainConfig, Trainer

root = tempfile.mkdtemp()
for vid, count, shade in (("AA", 24, 10), ("AAEGO", 16, 60), ("BB", 20, 110), ("BBEGO", 20, 160)):
    write_video(root, vid, count, shade)
paths = {"train": os.path.join(root, "train.csv"), "eval": ""}
with open(paths["train"], "w") as f:
    f.write(HEADER + "".join(f"{i},S,K,5,5,Yes,x,y,z,,10\\n" for i in ("AA", "AAEGO", "BB", "BBEGO")))

def run(strategy):
    keras.utils.set_random_seed(0)
    task = SmallActorObserverTask(small_config(paths, root))
    trainer = Trainer(task, strategy, tempfile.mkdtemp(),
                      TrainConfig(train_steps=3, accumulation_steps=2, log_every=1, learning_rate=0.05))
    initial = [w.numpy() for w in trainer.model.weights]
    trainer.train()
    return ([w.numpy() for w in trainer.model.weights], initial, [l.log_sigma.numpy() for l in task.video_softmaxes],
            [float(task.loss.running_loss.numpy()), float(task.loss.running_weight.numpy()),
             int(task.loss.count.numpy())])

single = run(tf.distribute.get_strategy())
mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print("RESULT" + json.dumps({
    "weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(single[0], mirrored[0])),
    "weight_change": max(float(np.max(np.abs(a - b))) for a, b in zip(single[0], single[1])),
    "log_sigma_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(single[2], mirrored[2])),
    "loss_single": single[3], "loss_mirrored": mirrored[3]}))
"""


@pytest.mark.large
def test_trainer_under_mirrored_strategy_equals_single_device():
    """The real loop on 2 logical CPUs (accumulation 2, 3 steps): weights, VideoSoftmax and loss states match."""
    r = run_script_result(_MIRRORED_SCRIPT, timeout=400)
    assert r["weight_change"] > 1e-3, r  # training moved the weights
    assert r["weight_diff"] < 1e-6 and r["log_sigma_diff"] < 1e-6, r
    assert r["loss_mirrored"][2] == r["loss_single"][2] == 3 * 2 * 4, r
    np.testing.assert_allclose(r["loss_mirrored"][:2], r["loss_single"][:2], rtol=1e-6)


def test_alignment_error_of_the_eval_pairs(charades_ego):
    from kerasvid import metrics

    root, paths = charades_ego
    task = SmallActorObserverTask(small_config(paths, root))
    model = task.build_model()
    result = task.alignment_error(model, split="eval", batch_size=3)
    # By hand: every 4th frame of CC / CCEGO (16 frames each -> 4 + 4), 6 fps, radius 3.
    trunk = model.get_layer("small")
    seed = tf.constant([0, 0], tf.int64)

    def embed(vid):
        frames = tf.stack([task._load(tr.frame_path(root, vid, i), seed, False) for i in range(0, 16, 4)])
        return trunk(frames).numpy()

    distances = np.linalg.norm(embed("CCEGO")[:, None] - embed("CC")[None], axis=-1)
    want = metrics.median_alignment_error([distances], fps=6.0, radius=3)
    assert result["num_videos"] == 1 and want > 0  # (a non-zero error also pins the 6 fps time scale)
    assert result["median_alignment_error_s"] == pytest.approx(want)


@pytest.mark.large
def test_trainer_checkpoints_and_restores_the_task_state(charades_ego, tmp_path):
    """The loop saves the VideoSoftmax and loss states with the model; a rerun of the finished command restores them."""
    from kerasvid.training import TrainConfig, Trainer

    root, paths = charades_ego
    model_dir = str(tmp_path / "run")

    def trainer():
        keras.utils.set_random_seed(0)
        task = SmallActorObserverTask(small_config(paths, root))
        return task, Trainer(task, tf.distribute.get_strategy(), model_dir,
                             TrainConfig(train_steps=2, log_every=1, learning_rate=0.05))

    task, first = trainer()
    first.train()
    trained = [layer.log_sigma.numpy().copy() for layer in task.video_softmaxes]
    running = float(task.loss.running_loss.numpy())
    assert int(task.loss.count.numpy()) > 0 and any(np.any(s != 0) for s in trained)
    task2, second = trainer()
    second.train()  # already at train_steps: restores, trains nothing
    for a, layer in zip(trained, task2.video_softmaxes):
        np.testing.assert_array_equal(layer.log_sigma.numpy(), a)
    assert float(task2.loss.running_loss.numpy()) == running
