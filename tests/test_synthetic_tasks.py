"""`--synthetic` for the triplet (Actor-Observer) and action_context tasks: the generated data are what the generator
says they are (checked on the files written, by independent decoders), and `train/main.py` trains each paper's
recipe (`--flagfile=zoo/<recipe>.flags --synthetic`) on them in-process, with a small network in place of the
recipe's (the task logic is unchanged)."""
import json
import math
import os
import shlex
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from absl.testing import flagsaver

from kerasvid import train_cli as main  # train/main.py's command (its absl flags are global)
from kerasvid.data import conjugates, discovery, preprocess, schema, synthetic
from kerasvid.data import actor_observer as tr
from kerasvid.layers import ActionContextAttention
from kerasvid.tasks.actor_observer import ActorObserverTask
from tests.helpers import doc_block
from tests.small_actor_observer import SmallActorObserverTask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


def _jpeg(path):
    return tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy().astype(np.float64)


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()]) if len(ys) > 3 else None


# ----- the data -----------------------------------------------------------------------------------------------------
def test_synthetic_charades_ego_pairs_show_the_same_moment(tmp_path):
    """Ego frame k is the generator's crop of the scene at time k: the yellow digit found in the ego JPEG, mapped
    through the recorded crop, lands on the white digit found in exo frame k (not on frame T - 1 - k)."""
    size, frames = 48, 12
    paths = synthetic.write_synthetic_charades_ego(str(tmp_path / "a"), "train", num_videos=6, num_frames=frames,
                                                   height=size, width=size, seed=3)
    records = tr.read_charades_csv(paths["csv"])
    pairs = tr.paired_videos(records)
    assert pairs == [(f"train{i:05d}", f"train{i:05d}EGO") for i in range(6)]
    assert {tr.count_frames(paths["frames_root"], vid) for pair in pairs for vid in pair} == {frames}
    views = json.load(open(paths["views"]))
    labels = {r["id"]: [a.label for a in r["actions"]] for r in records}
    for vid, view in views["videos"].items():
        assert labels[vid] == labels[vid + "EGO"] == [view["label"]]  # one action over the whole video
    assert [r["id"] for r in tr.read_charades_csv(paths["charades_csv"])] == [p[0] for p in pairs]
    ch, cw = views["crop_size"]

    def errors(shift):
        out = []
        for vid, view in views["videos"].items():
            for k in range(frames):
                exo = _jpeg(tr.frame_path(paths["frames_root"], vid, frames - 1 - k if shift else k))
                ego = _jpeg(tr.frame_path(paths["frames_root"], vid + "EGO", k))
                white = exo.min(-1) > 200  # the exo digit: 217-255 in every channel, the noise below 160
                yellow = (ego[..., 0] > 190) & (ego[..., 1] > 160) & (ego[..., 2] < 130)  # the ego digit
                exo_c, ego_c = _centroid(white), _centroid(yellow)
                if exo_c is None or ego_c is None:
                    continue  # hidden in one view (frame/visible 0) or out of the crop
                y0, x0 = view["crop_corners"][k]
                scene = np.array([y0, x0]) + (ego_c + 0.5) * np.array([ch / size, cw / size]) - 0.5
                out.append(np.linalg.norm(scene - exo_c))
        return np.array(out)

    same, reversed_ = errors(False), errors(True)
    assert len(same) > 40
    assert np.median(same) < 1.0 < 4.0 < np.median(reversed_)
    # The views' hidden stretches are where the generator says: no digit ink in a frame it marks invisible.
    for vid, view in views["videos"].items():
        for k in range(frames):
            if not view["visible_exo"][k]:
                assert _centroid(_jpeg(tr.frame_path(paths["frames_root"], vid, k)).min(-1) > 200) is None
    # Deterministic by seed: the same files, byte for byte.
    again = synthetic.write_synthetic_charades_ego(str(tmp_path / "b"), "train", num_videos=6, num_frames=frames,
                                                   height=size, width=size, seed=3)
    for vid in ("train00004", "train00004EGO"):
        assert (open(tr.frame_path(paths["frames_root"], vid, 7), "rb").read()
                == open(tr.frame_path(again["frames_root"], vid, 7), "rb").read())
    assert open(paths["csv"]).read() == open(again["csv"]).read()


@pytest.mark.parametrize("background", synthetic.BACKGROUNDS)
def test_the_background_is_every_frame_without_its_digit(background):
    clips = synthetic.render_moving_digits(3, 4, 5, 32, 32, seed=2, background=background)
    scene = np.broadcast_to(clips["background"][:, None], clips["frames"].shape)
    empty, ink = clips["alpha"] == 0, clips["alpha"] > 0.9
    assert empty.mean() > 0.7 and ink.sum() > 30
    np.testing.assert_array_equal(clips["frames"][empty], scene[empty])
    # The digit (white, 217-255 per channel) over the background (at most 160 anywhere): far brighter.
    assert (clips["frames"][ink].astype(int).min(-1) - scene[ink].astype(int).max(-1)).min() > 30


def _records(pattern):
    return [ex for path in sorted(tf.io.gfile.glob(pattern)) for ex in schema.read_examples(path)]


def test_synthetic_conjugates_are_the_clips_without_their_digit(tmp_path):
    data_dir = str(tmp_path / "data")
    data = discovery.synthetic_data(data_dir, "action_context", num_classes=4, num_frames=6, size=48,
                                    train_videos=6, eval_videos=4, progress=False)
    conj_dir = data["task_kwargs"]["conjugate_dir"]
    assert sorted(map(os.path.basename, tf.io.gfile.glob(data["train_pattern"]))) == sorted(os.listdir(conj_dir))
    originals = _records(data["train_pattern"])
    conjs = [ex for name in sorted(os.listdir(conj_dir)) for ex in schema.read_examples(os.path.join(conj_dir, name))]
    assert len(originals) == len(conjs) == 6
    # The labels the generator draws (balanced, shuffled by the seed), independent of the records.
    known = synthetic.render_moving_digits(6, 4, 6, 48, 48, seed=0)["labels"]
    ctx = lambda ex, key, kind="int64_list": list(getattr(ex.context.feature[key], kind).value)  # noqa: E731
    assert sorted(ctx(ex, schema.LABEL_INDEX)[0] for ex in originals) == sorted(known.tolist())
    for original, conj in zip(originals, conjs):
        vid = ctx(original, schema.VIDEO_ID, "bytes_list")
        assert ctx(conj, conjugates.CONJUGATE_OF, "bytes_list") == vid == ctx(conj, schema.VIDEO_ID, "bytes_list")
        assert ctx(conj, conjugates.CONJUGATE_NUM_BOXES) == [6]
        assert ctx(conj, schema.LABEL_INDEX) == ctx(original, schema.LABEL_INDEX)
        encoded = [f.bytes_list.value[0] for f in conj.feature_lists.feature_list[schema.IMAGE_ENCODED].feature]
        assert len(set(encoded)) == 1  # one background for the whole clip: six identical JPEGs
        boxes = np.stack([[f.float_list.value[0] for f in original.feature_lists.feature_list[k].feature]
                          for k in schema.BBOX_KEYS], -1)  # [T, 4] normalised
        for t, feature in enumerate(original.feature_lists.feature_list[schema.IMAGE_ENCODED].feature):
            frame = tf.io.decode_jpeg(feature.bytes_list.value[0]).numpy().astype(np.float64)
            empty = tf.io.decode_jpeg(encoded[t]).numpy().astype(np.float64)
            y0, x0, y1, x1 = np.round(boxes[t] * 48).astype(int)
            outside = np.ones((48, 48), bool)
            outside[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = False  # the box and a JPEG block margin
            assert np.abs(frame - empty)[outside].mean() < 3.0  # the context is untouched
            ink = frame.min(-1) > 200  # the white digit, all of it inside its box
            assert ink.sum() > 5 and not (ink & outside).any()
            assert empty[ink].mean() < 170 < frame[ink].mean()  # ... and gone from the conjugate
    # Written once: the same call reuses the set; other settings are refused, naming the difference.
    stamp = {name: os.path.getmtime(os.path.join(data_dir, name)) for name in os.listdir(data_dir)}
    assert discovery.synthetic_data(data_dir, "action_context", num_classes=4, num_frames=6, size=48,
                                    train_videos=6, eval_videos=4, progress=False) == data
    assert {name: os.path.getmtime(os.path.join(data_dir, name)) for name in os.listdir(data_dir)} == stamp
    assert discovery.synthetic_settings(data_dir) == data["settings"] == {
        "task": "action_context", "num_classes": 4, "num_frames": 6, "size": 48, "train_videos": 6,
        "eval_videos": 4, "seed": 0}
    with pytest.raises(ValueError, match=r"holds synthetic data made with num_frames=6 \(this command: 8\)"):
        discovery.synthetic_data(data_dir, "action_context", num_classes=4, num_frames=8, size=48, train_videos=6,
                                 eval_videos=4, progress=False)
    with pytest.raises(ValueError, match="need at least 4 frames, got num_frames=3 .--synthetic_frames"):
        discovery.synthetic_data(str(tmp_path / "other"), "actor_observer", num_frames=3)
    with pytest.raises(ValueError, match="makes data for the tasks classification, actor_observer, action_context, "
                                         "got task='detection'"):
        discovery.synthetic_data(str(tmp_path / "other"), "detection")
    assert not os.path.exists(tmp_path / "other")
    with pytest.raises(ValueError, match="task='action_context' .this command: 'actor_observer'"):
        discovery.synthetic_data(data_dir, "actor_observer", num_classes=4, num_frames=6, size=48, train_videos=6,
                                 eval_videos=4, progress=False)


def test_synthetic_task_kwargs_replace_locations_and_fill_sampling():
    made = {"frames_root": "/d/frames", "train_csv": "/d/train.csv", "eval_csv": "/d/heldout.csv",
            "charades_csv": "/d/train_charades.csv", "charades_root": "/d/frames", "fps": 12.0, "anchor_stride": 2,
            "min_gap": 3}
    recipe = {"frames_root": "data/f", "train_csv": "data/t.csv", "eval_csv": "data/e.csv", "softmax_decay": 0.95,
              "min_gap": 1}
    merged, replaced = discovery.with_synthetic_task_kwargs("actor_observer", recipe, made)
    assert merged == {"frames_root": "/d/frames", "train_csv": "/d/train.csv", "eval_csv": "/d/heldout.csv",
                      "softmax_decay": 0.95, "min_gap": 1, "fps": 12.0, "anchor_stride": 2}
    assert replaced == ["frames_root", "train_csv", "eval_csv"]
    # The classification-mixed setup (a charades_csv in the settings) gets the synthetic third-person CSV.
    merged, replaced = discovery.with_synthetic_task_kwargs("actor_observer", {"charades_csv": "data/c.csv"}, made)
    assert (merged["charades_csv"], merged["charades_root"], replaced) == ("/d/train_charades.csv", "/d/frames",
                                                                           ["charades_csv"])


# ----- train/main.py on the recipes: the README's commands ---------------------------------------------------------
def _readme_command(name):
    """The arguments of the `python train/main.py` line in the docs' block `<!-- name -->` (recipe path absolute)."""
    block = doc_block(name)
    argv = shlex.split(block)
    assert argv[:2] == ["python", "train/main.py"] and "--synthetic" in argv
    return [arg.replace("--flagfile=zoo/", f"--flagfile={REPO}/zoo/") for arg in argv[2:]]


def _run(args):
    FLAGS.unparse_flags()
    FLAGS(["main.py", *args])
    return main.run(FLAGS.mode)


def _small_network(self):
    """SmallActorObserverTask's 16x16 CNN trunk instead of ResNet-152; keeps the networks it built."""
    model = SmallActorObserverTask.build_network(self)
    _small_network.built.append(model)
    return model


_small_network.built = []


def test_actor_observer_recipe_trains_on_synthetic_pairs(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ActorObserverTask, "build_network", _small_network)
    run_dir = tmp_path / "run"
    readme = _readme_command("synthetic-actor-observer")
    assert f"--flagfile={REPO}/zoo/actor_observer_third_to_first.flags" in readme
    # The README's line, then tiny sizes (later flags win) for the small trunk.
    args = [*readme, "--synthetic_train_videos=4", "--synthetic_eval_videos=3", "--synthetic_frames=12",
            "--synthetic_size=32", "--image_size=16,16", "--normalization=zero_one", "--eval_batch_size=8",
            "--train_steps=3", "--log_every=1", "--checkpoint_every=3", f"--model_dir={run_dir}"]
    with flagsaver.flagsaver():
        produced = _run(args)
    assert "not on frames_root='data/charades_ego/frames'" in caplog.text  # the recipe's folders, replaced
    assert math.isfinite(produced["train"]["loss"]) and math.isfinite(produced["train"]["triplet_loss"])
    settings = {"task": "actor_observer", "num_classes": 4, "num_frames": 12, "size": 32, "train_videos": 4,
                "eval_videos": 3, "seed": 0}
    assert json.load(open(run_dir / "run_config.json"))["synthetic"] == settings

    # The evaluation by hand: the held-out CSV's pairs, an anchor every 2nd frame (12 -> 6 per video), the
    # positive at the same time (both views have 12 frames), negatives more than 12 // 4 = 3 frames away drawn with
    # the task's evaluation seed (seed + 1); eval crops through the trained trunk, L2 distances.
    data = run_dir / "data"
    pairs = tr.paired_videos(tr.read_charades_csv(str(data / "heldout.csv")))
    counts = {vid: tr.count_frames(str(data / "frames"), vid) for pair in pairs for vid in pair}
    samples = tr.build_triplets(pairs, str(data / "frames"), counts, seed=1, anchor_stride=2, min_gap=3)
    assert len(samples) == 3 * 6 == produced["eval"]["num_examples"]
    assert all(int(s.first_person[-10:-4]) == int(s.third_person[-10:-4]) for s in samples)
    trunk = _small_network.built[-1].get_layer("small")

    def embed(paths):
        x = [preprocess.normalize(preprocess.resize_and_center_crop(
            tf.io.decode_jpeg(tf.io.read_file(p), channels=3)[None], (16, 16)), "zero_one") for p in paths]
        return trunk(tf.concat(x, 0)[:, None]).numpy()

    x, y, z = (embed([getattr(s, k) for s in samples]) for k in ("first_person", "third_person",
                                                                  "first_person_negative"))
    expected = np.mean(np.linalg.norm(x - y, axis=1) < np.linalg.norm(y - z, axis=1))
    assert produced["eval"]["triplet_accuracy"] == pytest.approx(expected)

    # A rerun resumes on the same data; a rerun asking for other data is refused before any work, also when the
    # data are gone (run_config.json records them).
    stamp = os.path.getmtime(data / "DONE")
    with flagsaver.flagsaver():
        assert _run([*args, "--train_steps=4", "--mode=train"])["train"]["triplet_loss"] is not None
        with pytest.raises(app.UsageError, match=r"holds synthetic data made with num_frames=12 \(this command: 16"):
            _run([*args, "--synthetic_frames=16"])
        assert os.path.getmtime(data / "DONE") == stamp
        shutil.rmtree(data)
        with pytest.raises(app.UsageError, match=r"records a run on synthetic data made with num_frames=12 \(this "
                                                 r"command: 16\)"):
            _run([*args, "--synthetic_frames=16"])
    assert not data.exists()


def _small_factorized(name, num_classes, input_shape, **kwargs):
    """A small Conv3D with the ActionContextAttention head in place of the recipe's I3D (its outputs="all" dict)."""
    assert name == "i3d_action_context" and kwargs["outputs"] == "all"
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv3D(8, 3, strides=(1, 2, 2), padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(0))(inputs)
    return keras.Model(inputs, ActionContextAttention(num_classes)(x))


def test_factorization_recipe_trains_on_synthetic_conjugates(tmp_path, monkeypatch, caplog):
    from kerasvid import zoo

    monkeypatch.setattr(zoo, "get_model", _small_factorized)
    run_dir = tmp_path / "run"
    with flagsaver.flagsaver():
        readme = _readme_command("synthetic-action-context")
        assert f"--flagfile={REPO}/zoo/i3d_action_context.flags" in readme
        produced = _run([*readme, "--synthetic_train_videos=8", "--synthetic_eval_videos=8", "--synthetic_frames=8",
                         "--synthetic_size=32", "--num_frames=4", "--image_size=16,16", "--batch_size=4",
                         "--eval_batch_size=8", "--log_every=1", f"--model_dir={run_dir}"])
    assert "not on --train_pattern='data/actionthread/train-*.tfrecord'" in caplog.text
    train = produced["train"]
    assert all(math.isfinite(train[k]) for k in ("loss", "classification", "action_removal",
                                                 "context_consistency"))
    assert json.load(open(run_dir / "run_config.json"))["synthetic"]["task"] == "action_context"
    # 8 training videos in batches of 4: --train_epochs=1 is 2 steps.
    assert produced["eval"]["step"] == 2
    # Evaluated on the 8 held-out videos, whose classes the generator draws with seed 0 + 1000.
    known = synthetic.render_moving_digits(8, 4, 8, 32, 32, seed=1000)["labels"]
    confusion = np.array(produced["eval"]["confusion_matrix"])
    np.testing.assert_array_equal(confusion.sum(1), np.bincount(known, minlength=4))
    assert produced["eval"]["top1"] == pytest.approx(np.trace(confusion) / 8)
    with open(run_dir / "data" / "labels.txt") as f:
        assert f.read().split() == synthetic.class_names(4)


def test_a_corrupt_run_config_is_named_before_any_data_is_written(tmp_path):
    (tmp_path / "run_config.json").write_text("{")
    with flagsaver.flagsaver():
        FLAGS.unparse_flags()
        FLAGS(["main.py", "--task=actor_observer", "--synthetic", "--num_frames=1", "--train_steps=1",
               f"--model_dir={tmp_path}"])
        with pytest.raises(app.UsageError, match=f"'{tmp_path}/run_config.json' is not valid JSON"):
            main.build_configs(FLAGS.mode)
    assert sorted(os.listdir(tmp_path)) == ["run_config.json"]
