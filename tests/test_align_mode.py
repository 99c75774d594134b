"""`train/main.py --task=actor_observer --mode=align`: the actor-observer alignment evaluation on synthetic ego/exo data."""
import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from absl.testing import flagsaver

from kerasvid import metrics
from kerasvid import train_cli as main  # train/main.py's command (its absl flags are global)
from kerasvid.data import preprocess, schema, synthetic
from kerasvid.data import actor_observer as tr
from kerasvid.tasks.actor_observer import ActorObserverTask
from tests.small_actor_observer import HEADER, SmallActorObserverTask

FLAGS = flags.FLAGS


@pytest.fixture(scope="module")
def ego_exo(tmp_path_factory):
    """Synthetic paired ego/exo records, unpacked into Charades-Ego frame folders with train / eval CSVs."""
    root = tmp_path_factory.mktemp("egoexo")
    frames_root = str(root / "frames")
    csvs = {}
    for split, n, seed in (("train", 4, 0), ("eval", 3, 1)):
        written = synthetic.write_synthetic_ego_exo(str(root / "records"), split, num_videos=n, num_frames=16,
                                                    height=32, width=32, seed=seed, num_shards=1)
        ids = []
        for view in ("exo", "ego"):
            for ex in schema.read_examples(tf.io.gfile.glob(written[view])[0]):
                vid = ex.context.feature[schema.VIDEO_ID].bytes_list.value[0].decode()
                os.makedirs(os.path.join(frames_root, vid))
                for i, f in enumerate(ex.feature_lists.feature_list[schema.IMAGE_ENCODED].feature):
                    tf.io.write_file(tr.frame_path(frames_root, vid, i), f.bytes_list.value[0])
                ids.append(vid)
        csvs[split] = str(root / f"{split}.csv")
        with open(csvs[split], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(HEADER.rstrip("\n").split(","))  # the Charades-Ego CSV columns
            w.writerows([vid, "S", "K", 5, 5, "Yes", "", "", "", "", 10] for vid in ids)
    return frames_root, csvs


def _small_network(self):
    """The small CNN trunk of the actor_observer task tests instead of ResNet-152 (task logic and dispatch unchanged)."""
    model = SmallActorObserverTask.build_network(self)
    _small_network.built.append(model)
    return model


_small_network.built = []


def _flags(frames_root, csvs, model_dir, mode):
    return ["main.py", "--task=actor_observer", "--model=actor_observer_resnet152", "--num_frames=1", "--image_size=16,16",
            "--batch_size=4", "--eval_batch_size=5", "--train_steps=2", "--normalization=zero_one",
            "--log_every=1", f"--mode={mode}", f"--model_dir={model_dir}",
            f"--task_kwargs=frames_root='{frames_root}',train_csv='{csvs['train']}',eval_csv='{csvs['eval']}',"
            "anchor_stride=2,min_gap=4,fps=12.0"]


@pytest.mark.large
def test_align_mode_reports_the_median_alignment_error(ego_exo, tmp_path, monkeypatch, capsys):
    frames_root, csvs = ego_exo
    monkeypatch.setattr(ActorObserverTask, "build_network", _small_network)
    with flagsaver.flagsaver():
        FLAGS.unparse_flags()
        FLAGS(_flags(frames_root, csvs, tmp_path / "run", "train"))
        main.run(FLAGS.mode)
        FLAGS.unparse_flags()
        FLAGS(_flags(frames_root, csvs, tmp_path / "run", "align"))  # restores the trained checkpoint
        produced = main.run(FLAGS.mode)
    results = json.loads((tmp_path / "run" / "alignment_results.json").read_text())
    assert results == json.loads(json.dumps(produced["align"]))
    assert "median alignment error" in capsys.readouterr().out
    assert results["step"] == 2 and results["num_videos"] == 3 and results["fps"] == 6.0

    # By hand, with the restored weights: every 2nd frame of each pair (8 + 8), eval preprocessing, L2 distances.
    trunk = _small_network.built[-1].get_layer("small")

    def embed(vid):
        frames = [tf.io.decode_jpeg(tf.io.read_file(tr.frame_path(frames_root, vid, i)), channels=3)[None]
                  for i in range(0, 16, 2)]
        x = tf.concat([preprocess.normalize(preprocess.resize_and_center_crop(f, (16, 16)), "zero_one")
                       for f in frames], 0)
        return trunk(x[:, None]).numpy()

    matrices = [np.linalg.norm(embed(f"eval{i:05d}EGO")[:, None] - embed(f"eval{i:05d}")[None], axis=-1)
                for i in range(3)]
    assert results["median_alignment_error_s"] == pytest.approx(metrics.median_alignment_error(matrices, fps=6.0))
    assert results["median_alignment_error_unsmoothed_s"] == pytest.approx(
        metrics.median_alignment_error(matrices, fps=6.0, radius=0))
    rng = np.random.default_rng(0)
    assert results["random_matrix_error_s"] == pytest.approx(
        metrics.median_alignment_error([rng.random((8, 8)) for _ in range(3)], fps=6.0))
    assert [v["third_person"] for v in results["per_video"]] == ["eval00000", "eval00001", "eval00002"]
    assert np.median([v["error_s"] for v in results["per_video"]]) == pytest.approx(
        results["median_alignment_error_s"])


def test_align_mode_needs_the_triplet_task(tmp_path):
    with flagsaver.flagsaver():
        FLAGS.unparse_flags()
        FLAGS(["main.py", "--mode=align", "--num_classes=2", f"--model_dir={tmp_path}"])
        with pytest.raises(app.UsageError,
                           match="--mode=align .* needs --task=actor_observer, got --task=classification"):
            main.build_configs(FLAGS.mode)
