"""Record schema, atomic sharded writer, samplers and preprocessing: checked against hand-computed values."""
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasvid.data import preprocess, samplers, schema, writer


def _jpeg(value, h=8, w=8):
    return writer.encode_jpeg(np.full((h, w, 3), value, np.uint8), quality=95)


# ---------------------------------------------------------------------------------------------------- schema


def test_sequence_example_round_trip():
    frames = [_jpeg(10), _jpeg(200)]
    boxes = [[(0.1, 0.2, 0.5, 0.6)], []]
    ex = schema.make_sequence_example(frames, [3, 7], label_text=["a", "b"], video_id="vid", filename="x.mp4",
                                      fps=12.5, height=8, width=8, boxes=boxes, visible=[1, 0])
    parsed = schema.parse_sequence_example(
        ex.SerializeToString(), extra_context=(schema.LABEL_TEXT, schema.VIDEO_ID, schema.VIDEO_FPS,
                                               schema.VIDEO_NUM_FRAMES, schema.IMAGE_HEIGHT),
        boxes=True, visible=True)
    assert parsed["frames"].numpy().tolist() == frames
    assert parsed["labels"].numpy().tolist() == [3, 7]
    assert parsed[schema.LABEL_TEXT].numpy().tolist() == [b"a", b"b"]
    assert parsed[schema.VIDEO_ID].numpy() == b"vid"
    assert parsed[schema.VIDEO_FPS].numpy() == pytest.approx(12.5)
    assert parsed[schema.VIDEO_NUM_FRAMES].numpy() == 2
    assert parsed[schema.IMAGE_HEIGHT].numpy() == 8
    np.testing.assert_allclose(parsed["boxes"][0].numpy(), [[0.1, 0.2, 0.5, 0.6]], atol=1e-7)
    assert parsed["boxes"][1].shape[0] == 0
    assert parsed["visible"].numpy().tolist() == [1, 0]
    # The Model Garden / DMVR keys are spelled exactly as theirs.
    assert set(ex.context.feature) >= {"clip/label/index", "clip/label/text", "video/filename"}
    assert "image/encoded" in ex.feature_lists.feature_list


def test_model_garden_two_key_record_parses():
    ex = tf.train.SequenceExample()
    ex.context.feature["clip/label/index"].int64_list.value.append(5)
    for v in (0, 255):
        ex.feature_lists.feature_list["image/encoded"].feature.add().bytes_list.value.append(_jpeg(v))
    parsed = schema.parse_sequence_example(ex.SerializeToString(), extra_context=(schema.VIDEO_ID, schema.VIDEO_FPS))
    assert parsed["labels"].numpy().tolist() == [5]
    assert parsed["frames"].shape == (2,)
    assert parsed[schema.VIDEO_ID].numpy() == b""  # optional keys default


@pytest.mark.parametrize("kwargs, match", [
    (dict(frames_jpeg=[]), "at least one frame"),
    (dict(label_index=[-1]), "label_index"),
    (dict(boxes=[[(0.5, 0.1, 0.2, 0.3)]]), "ymin"),
    (dict(visible=[1, 1]), "one flag per frame"),
])
def test_sequence_example_rejects_bad_input(kwargs, match):
    args = dict(frames_jpeg=[_jpeg(0)], label_index=[0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        schema.make_sequence_example(**args)


# ---------------------------------------------------------------------------------------------------- writer


def test_sharded_writer_round_robin_and_names(tmp_path):
    records = [f"r{i}".encode() for i in range(7)]
    paths = writer.write_records(records, str(tmp_path), "train", 3)
    assert [os.path.basename(p) for p in paths] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    got = [[r.numpy() for r in tf.data.TFRecordDataset(p)] for p in paths]
    assert got == [[b"r0", b"r3", b"r6"], [b"r1", b"r4"], [b"r2", b"r5"]]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)  # no temporary left


def test_sharded_writer_publishes_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with writer.ShardedRecordWriter(str(tmp_path), "train", 2) as w:
            w.write(b"x")
            # While open, only hidden temporaries exist: a reader's glob matches nothing.
            assert tf.io.gfile.glob(writer.file_pattern(str(tmp_path), "train")) == []
            assert all(n.startswith(".") for n in os.listdir(tmp_path))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "a b"])
def test_split_name_is_sanitised(name):
    with pytest.raises(ValueError, match="plain file-name"):
        writer.shard_path("/tmp", name, 0, 1)


# ---------------------------------------------------------------------------------------------------- samplers


def test_dense_clip_indices_hand_computed():
    # span = 3 * 2 + 1 = 7 in 10 frames: slack 3, centred offset 1.
    assert samplers.dense_clip_indices(tf.constant(10), 4, stride=2).numpy().tolist() == [[1, 3, 5, 7]]
    # Short video looped: 3 frames, 5 needed.
    assert samplers.dense_clip_indices(tf.constant(3), 5).numpy().tolist() == [[0, 1, 2, 0, 1]]
    # Three evenly spaced clips in 20 frames (slack 16): offsets 0, 8, 16.
    got = samplers.dense_clip_indices(tf.constant(20), 4, num_clips=3).numpy()
    np.testing.assert_array_equal(got, [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]])


def test_dense_clip_training_offsets_cover_the_valid_range():
    offs = [samplers.dense_clip_offsets(tf.constant(10), 4, 2, True, seed=tf.constant([s, 0])).numpy()[0]
            for s in range(200)]
    assert set(offs) == {0, 1, 2, 3}  # every valid start, nothing beyond 10 - 7


def test_segment_indices_hand_computed():
    assert samplers.segment_indices(tf.constant(16), 4).numpy().tolist() == [[2, 6, 10, 14]]
    # Two eval clips at fractions 1/4 and 3/4 of each 4-frame segment.
    assert samplers.segment_indices(tf.constant(16), 4, num_clips=2).numpy().tolist() == [[1, 5, 9, 13],
                                                                                         [3, 7, 11, 15]]
    # Fewer frames than segments: frames repeat.
    assert samplers.segment_indices(tf.constant(2), 4).numpy().tolist() == [[0, 0, 1, 1]]
    train = samplers.segment_indices(tf.constant(16), 4, training=True, seed=tf.constant([1, 2])).numpy()[0]
    assert all(4 * k <= i < 4 * k + 4 for k, i in enumerate(train))


# ---------------------------------------------------------------------------------------------------- preprocess


def test_normalize_presets_match_numpy():
    x = np.array([[[0, 128, 255]]], np.uint8)
    f = x.astype(np.float32)
    np.testing.assert_allclose(preprocess.normalize(x, "zero_one"), f / 255, atol=1e-6)
    np.testing.assert_allclose(preprocess.normalize(x, "minus_one_one"), f / 127.5 - 1, atol=1e-6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(preprocess.normalize(x, "imagenet"), (f / 255 - mean) / std, atol=1e-5)
    np.testing.assert_allclose(preprocess.normalize(f, "none"), f)
    with pytest.raises(ValueError, match="normalization"):
        preprocess.normalize(x, "caffe_rgb")


def test_resize_and_center_crop_hand_computed():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 10, 14, 3)).astype(np.uint8)
    # Short side already 10: no resize, centre 8x8 crop starts at (1, 3).
    got = preprocess.resize_and_center_crop(frames, (8, 8), short_side=10).numpy()
    np.testing.assert_allclose(got, frames[:, 1:9, 3:11].astype(np.float32), atol=1e-4)
    # Exact 2x downscale: half-pixel bilinear = mean of 2x2 blocks; then centre crop of the 5x7 result.
    blocks = frames.astype(np.float32).reshape(2, 5, 2, 7, 2, 3).mean(axis=(2, 4))
    got = preprocess.resize_and_center_crop(frames, (4, 4), short_side=5).numpy()
    np.testing.assert_allclose(got, blocks[:, 0:4, 1:5], atol=1e-3)
    # Batched input [B, T, H, W, 3] gives the same per clip.
    got_b = preprocess.resize_and_center_crop(frames[None], (4, 4), short_side=5).numpy()
    np.testing.assert_allclose(got_b[0], got, atol=1e-6)


def test_three_crops_slide_along_the_long_side():
    frames = np.arange(1 * 8 * 16 * 1).reshape(1, 8, 16, 1).repeat(3, -1).astype(np.uint8)
    crops = preprocess.resize_and_crops(frames, (8, 8), short_side=8, num_crops=3).numpy()
    assert crops.shape == (3, 1, 8, 8, 3)
    for c, x0 in enumerate([0, 4, 8]):
        np.testing.assert_allclose(crops[c, 0], frames[0, :, x0:x0 + 8].astype(np.float32), atol=1e-4)


def test_mirror_labels_and_flip():
    perm = preprocess.mirror_label_permutation({11: 12, 16: 17}, 27)
    assert perm[11] == 12 and perm[12] == 11 and perm[17] == 16 and perm[5] == 5
    with pytest.raises(ValueError, match="two different classes"):
        preprocess.mirror_label_permutation({3: 3}, 5)
    frames = tf.constant(np.arange(2 * 3 * 1).reshape(1, 2, 3, 1), tf.float32)
    out, labels = preprocess.flip_left_right(frames, tf.constant([11, 5], tf.int64), tf.constant(True), perm)
    np.testing.assert_array_equal(out.numpy()[0, :, :, 0], [[2, 1, 0], [5, 4, 3]])
    assert labels.numpy().tolist() == [12, 5]
    _, same = preprocess.flip_left_right(frames, tf.constant([11]), tf.constant(False), perm)
    assert same.numpy().tolist() == [11]


def test_random_resized_crop_window_respects_ranges():
    for s in range(30):
        y, x, h, w = preprocess.random_resized_crop_window(tf.constant(100), tf.constant(200), tf.constant([s, 1]),
                                                           scale=(0.25, 0.5), aspect_ratio=(0.75, 1.33)).numpy()
        assert 0 <= y and y + h <= 100 and 0 <= x and x + w <= 200
        assert 0.23 <= h * w / 20000 <= 0.52 and 0.7 <= w / h <= 1.4


def test_scale_jitter_window_matches_its_definition():
    # 100x200 frame, short side jittered to s in [50, 60], crop 20x20: window side = ceil(20 * 100 / s) in [34, 40].
    sides = set()
    for s in range(40):
        y, x, h, w = preprocess.scale_jitter_window(tf.constant(100), tf.constant(200), (20, 20),
                                                    tf.constant([s, 3]), (50, 60)).numpy()
        assert h == w and 34 <= h <= 40 and 0 <= y <= 100 - h and 0 <= x <= 200 - w
        sides.add(int(h))
    assert len(sides) >= 4


def test_color_jitter_zero_strength_is_identity_and_blend_halves_the_change():
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)), tf.float32)
    np.testing.assert_allclose(preprocess.color_jitter(x, 0.0, tf.constant([1, 2])), x, atol=1e-3)
    full = preprocess.color_jitter(x, 0.4, tf.constant([1, 2]), blend=1.0)
    half = preprocess.color_jitter(x, 0.4, tf.constant([1, 2]), blend=0.5)
    np.testing.assert_allclose(half, 0.5 * full + 0.5 * x, atol=1e-3)
    assert np.abs(full - x).mean() > 1.0
