"""Synthetic moving digits: motion classes, boxes, backgrounds, ego/exo pairs, and the written records."""
import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasvid.data import pipeline, schema, synthetic


@pytest.fixture(scope="module")
def clips():
    return synthetic.render_moving_digits(num_videos=16, num_classes=8, num_frames=8, height=48, width=48, seed=3)


def _centres(boxes):
    return np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)


def test_boxes_move_in_the_class_direction(clips):
    c = _centres(clips["boxes"])  # [N, T, 2] (y, x)
    for label, path in zip(clips["labels"], c):
        d = path[-1] - path[0]
        angle = np.arctan2(d[0], d[1]) % (2 * np.pi)
        expected = 2 * np.pi * label / 8
        assert abs((angle - expected + np.pi) % (2 * np.pi) - np.pi) < 0.12, (label, angle)
        assert np.linalg.norm(d) > 0.3  # the digit travels a good part of the frame


def test_box_is_the_digit_ink_and_inside_the_frame(clips):
    for i in range(4):
        for t in (0, 7):
            ys, xs = np.nonzero(clips["alpha"][i, t] > 0.25)
            expected = [ys.min() / 48, xs.min() / 48, (ys.max() + 1) / 48, (xs.max() + 1) / 48]
            np.testing.assert_allclose(clips["boxes"][i, t], expected, atol=1e-6)
    assert clips["boxes"].min() >= 0 and clips["boxes"].max() <= 1


def test_time_reversal_and_mirror_pairs():
    assert synthetic.time_reversal_pairs(4) == [(0, 2), (1, 3)]
    assert synthetic.mirror_pairs(4) == {0: 2, 2: 0}  # right <-> left; down and up map to themselves
    assert synthetic.mirror_pairs(8) == {0: 4, 4: 0, 1: 3, 3: 1, 5: 7, 7: 5}
    assert synthetic.class_names(4) == ["move_right", "move_down", "move_left", "move_up"]


def test_motion_class_is_recoverable_from_the_decoded_pixels(tmp_path):
    """An independent decoder (bright-pixel centroid of the first and last JPEG frames) recovers the class."""
    pattern = synthetic.write_synthetic_dataset(str(tmp_path), num_videos=24, num_classes=4, num_frames=8,
                                                height=48, width=48, seed=5, num_shards=2)
    ds = pipeline.video_dataset(pattern, num_frames=8, image_size=(48, 48), training=False, batch_size=24,
                                normalization="none", eval_short_side=48)
    features, labels = next(iter(ds))
    video = features["image"].numpy().min(-1)  # the digit is near-white in every channel
    correct = 0
    for v, label in zip(video, labels.numpy()):
        pts = [np.argwhere(f > 200).mean(0) for f in (v[0], v[-1])]
        d = pts[1] - pts[0]
        pred = int(np.round((np.arctan2(d[0], d[1]) % (2 * np.pi)) / (np.pi / 2))) % 4
        correct += pred == label
    assert correct >= 23
    names = open(os.path.join(tmp_path, "labels.txt")).read().split()
    assert names == synthetic.class_names(4)
    meta = json.load(open(os.path.join(tmp_path, "synthetic.json")))
    assert meta["mirror_labels"] == {"0": 2, "2": 0}
    # Records carry label text and per-frame boxes.
    ex = next(schema.read_examples(tf.io.gfile.glob(pattern)[0]))
    assert ex.context.feature[schema.LABEL_TEXT].bytes_list.value[0].decode() in names
    assert len(ex.feature_lists.feature_list[schema.BBOX_YMIN].feature) == 8


def test_class_and_shuffled_backgrounds():
    a = synthetic.render_moving_digits(12, 4, 4, 32, 32, seed=0, background="class")
    np.testing.assert_array_equal(a["textures"], a["labels"])
    b = synthetic.render_moving_digits(12, 4, 4, 32, 32, seed=0, background="shuffled")
    assert (b["textures"] != b["labels"]).any() and b["textures"].min() >= 0
    with pytest.raises(ValueError, match="background"):
        synthetic.render_moving_digits(4, 4, 4, 32, 32, background="plaid")


def test_ego_exo_pairs(tmp_path):
    out = synthetic.write_synthetic_ego_exo(str(tmp_path), num_videos=6, num_classes=4, num_frames=8, height=32,
                                            width=32, seed=1, num_shards=1)
    exo = {e.context.feature[schema.VIDEO_ID].bytes_list.value[0].decode(): e
           for e in schema.read_examples(tf.io.gfile.glob(out["exo"])[0])}
    ego = {e.context.feature[schema.VIDEO_ID].bytes_list.value[0].decode(): e
           for e in schema.read_examples(tf.io.gfile.glob(out["ego"])[0])}
    rows = list(csv.DictReader(open(out["pairs"])))
    assert len(rows) == 6
    for row in rows:
        x, g = exo[row["exo_id"]], ego[row["ego_id"]]
        assert row["ego_id"] == row["exo_id"] + "EGO"
        for e in (x, g):
            assert e.context.feature[schema.LABEL_INDEX].int64_list.value[0] == int(row["label"])
        vis = [[f.int64_list.value[0] for f in e.feature_lists.feature_list[schema.FRAME_VISIBLE].feature]
               for e in (x, g)]
        assert len(vis[0]) == len(vis[1]) == 8
        assert min(vis[0]) == 0 or min(vis[1]) == 0  # the digit is hidden for a stretch in one view

    # Where the exo view hides the digit, no near-white digit pixels remain.
    clips = synthetic.render_moving_digits(6, 4, 8, 32, 32, seed=1)
    views = synthetic.render_ego_exo(clips, seed=1)
    hidden = views["visible_exo"] == 0
    assert hidden.any()
    assert views["exo"][hidden].min(-1).max() < 200
    assert (views["exo"][~hidden].min(-1).max(axis=(-2, -1)) > 200).all()
