"""video_dataset: which frames it decodes, view layout, labels, determinism, corrupt input.

Frame t of the test videos is a uniform grey of value 20 + 10 t, so the mean of an output frame tells which source
frame the pipeline picked (JPEG keeps uniform images to within 1 grey level).
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasvid.data import pipeline, schema, writer
from kerasvid.data.config import VideoDataConfig


def _grey_video(num_frames, label, h=24, w=32, vid="v"):
    frames = [writer.encode_jpeg(np.full((h, w, 3), 20 + 10 * t, np.uint8), 95) for t in range(num_frames)]
    return schema.make_sequence_example(frames, label, video_id=vid)


def _frame_values(image):
    """Mean grey level of each frame -> source frame index."""
    return np.round((image.mean(axis=(-3, -2, -1)) - 20) / 10).astype(int)


@pytest.fixture(scope="module")
def grey_records(tmp_path_factory):
    d = tmp_path_factory.mktemp("grey")
    examples = [_grey_video(n, [i % 3], vid=f"v{i}") for i, n in enumerate([10, 3, 20, 16])]
    writer.write_records(examples, str(d), "eval", 1)
    return writer.file_pattern(str(d), "eval")


def _eval(pattern, **kw):
    args = dict(num_frames=4, image_size=(16, 16), training=False, batch_size=4, normalization="none")
    args.update(kw)
    return next(iter(pipeline.video_dataset(pattern, **args)))


@pytest.mark.large
def test_eval_centre_clip_and_looping(grey_records):
    features, labels = _eval(grey_records, stride=2)
    idx = _frame_values(features["image"].numpy())
    # n=10: span 7, offset 1; n=3: looped from 0; n=20: offset 6; n=16: offset 4.
    np.testing.assert_array_equal(idx, [[1, 3, 5, 7], [0, 2, 1, 0], [6, 8, 10, 12], [4, 6, 8, 10]])
    assert labels.numpy().tolist() == [0, 1, 2, 0] and labels.dtype == tf.int32
    assert features["image"].shape == (4, 4, 16, 16, 3)


def test_eval_multi_view_layout_is_clip_major(grey_records):
    features, labels = _eval(grey_records, num_clips=2, num_crops=3)
    image = features["image"].numpy()
    assert image.shape == (4 * 6, 4, 16, 16, 3) and labels.shape == (4,)
    idx = _frame_values(image).reshape(4, 2, 3, 4)  # [video, clip, crop, T]
    np.testing.assert_array_equal(idx[2, 0, 0], [0, 1, 2, 3])  # n=20: clips at 0 and 16
    np.testing.assert_array_equal(idx[2, 1, 2], [16, 17, 18, 19])
    assert (idx[:, :, 0] == idx[:, :, 2]).all()  # crops of one clip share its frames


def test_tsn_sampler(grey_records):
    features, _ = _eval(grey_records, sampler="tsn")
    idx = _frame_values(features["image"].numpy())
    np.testing.assert_array_equal(idx[3], [2, 6, 10, 14])  # n=16
    np.testing.assert_array_equal(idx[2], [2, 7, 12, 17])  # n=20: floor(5k + 2.5)


def test_eval_crop_equals_shared_preprocessing(grey_records, tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (4, 30, 40, 3)).astype(np.uint8)
    encoded = [writer.encode_jpeg(f, 95) for f in raw]
    writer.write_records([schema.make_sequence_example(encoded, [1])], str(tmp_path), "x", 1)
    features, _ = _eval(writer.file_pattern(str(tmp_path), "x"), normalization="imagenet", batch_size=1)
    decoded = tf.stack([tf.io.decode_jpeg(e) for e in encoded])
    from kerasvid.data import preprocess
    expected = preprocess.normalize(preprocess.resize_and_center_crop(decoded, (16, 16)), "imagenet")
    np.testing.assert_allclose(features["image"].numpy()[0], expected.numpy(), atol=1e-5)


@pytest.mark.large
def test_labels_multi_hot_and_range_check(tmp_path):
    writer.write_records([_grey_video(4, [1, 3]), _grey_video(4, [0])], str(tmp_path), "m", 1)
    pattern = writer.file_pattern(str(tmp_path), "m")
    _, labels = _eval(pattern, num_classes=5, multi_label=True, batch_size=2)
    np.testing.assert_array_equal(labels.numpy(), [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"record 0 of \S*m-00000-of-00001.tfrecord: label 3 but num_classes is 3"):
        _eval(pattern, num_classes=3, multi_label=True, batch_size=2)


def test_model_garden_record_reads(tmp_path):
    ex = tf.train.SequenceExample()
    ex.context.feature["clip/label/index"].int64_list.value.append(2)
    for t in range(5):
        ex.feature_lists.feature_list["image/encoded"].feature.add().bytes_list.value.append(
            writer.encode_jpeg(np.full((20, 20, 3), 20 + 10 * t, np.uint8), 95))
    with tf.io.TFRecordWriter(str(tmp_path / "mg.tfrecord")) as w:
        w.write(ex.SerializeToString())
    features, labels = _eval(str(tmp_path / "mg.tfrecord"), batch_size=1)
    np.testing.assert_array_equal(_frame_values(features["image"].numpy()), [[0, 1, 2, 3]])
    assert labels.numpy().tolist() == [2]


@pytest.mark.large
def test_training_is_deterministic_with_seed(grey_records):
    def first_two(seed):
        ds = pipeline.video_dataset(grey_records, num_frames=4, image_size=(16, 16), batch_size=2, seed=seed,
                                    deterministic=True, color_jitter=0.2)
        return [b[0]["image"].numpy() for b in ds.take(2)]

    a, b, c = first_two(3), first_two(3), first_two(4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_training_flip_swaps_mirror_labels(tmp_path):
    # Left half dark, right half bright; label 0 and its mirror class 1.
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[:, 8:] = 250
    ex = schema.make_sequence_example([writer.encode_jpeg(frame, 95)] * 2, [0])
    writer.write_records([ex], str(tmp_path), "f", 1)
    ds = pipeline.video_dataset(writer.file_pattern(str(tmp_path), "f"), num_frames=2, image_size=(16, 16),
                                batch_size=1, num_classes=3, mirror_labels={0: 1}, crop="center", seed=0,
                                normalization="none", eval_short_side=16)
    seen = set()
    for features, label in ds.take(24):
        img = features["image"].numpy()[0, 0, :, :, 0]
        flipped = img[:, :8].mean() > img[:, 8:].mean()
        assert label.numpy()[0] == (1 if flipped else 0)
        seen.add(flipped)
    assert seen == {True, False}


@pytest.mark.large
def test_corrupt_shard_raises_and_is_counted_when_skipping(tmp_path):
    examples = [_grey_video(4, [i], vid=f"v{i}") for i in range(6)]
    paths = writer.write_records(examples, str(tmp_path), "c", 2)  # shard 0: v0 v2 v4; shard 1: v1 v3 v5
    data = open(paths[0], "rb").read()
    with open(paths[0], "wb") as f:
        f.write(data[: int(len(data) * 0.5)])  # truncated: v0 survives
    pattern = writer.file_pattern(str(tmp_path), "c")
    args = dict(num_frames=2, image_size=(8, 8), training=False, batch_size=1)
    size = len(data) // 2
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"shard {paths[0]} after record 1 \\(byte [0-9]+ of {size}\\): truncated or corrupt"):
        list(pipeline.video_dataset(pattern, **args))
    ds = pipeline.video_dataset(pattern, on_error="skip", **args)
    labels = sorted(int(y[0]) for _, y in ds)
    assert labels == [0, 1, 3, 5]
    assert ds.error_counter.shards == 1 and ds.error_counter.records == 0
    assert ds.error_counter.messages[0].startswith(f"shard {paths[0]} after record 1 ")


@pytest.mark.large
def test_corrupt_record_is_skipped_and_counted(tmp_path):
    good = _grey_video(3, [1])
    bad = schema.make_sequence_example([b"not a jpeg", b"nor this"], [2])
    writer.write_records([good, bad, b"\x00garbage proto", good], str(tmp_path), "r", 1)
    pattern = writer.file_pattern(str(tmp_path), "r")
    args = dict(num_frames=2, image_size=(8, 8), training=False, batch_size=2)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(pipeline.video_dataset(pattern, **args))
    counter = pipeline.ErrorCounter()
    ds = pipeline.video_dataset(pattern, on_error="skip", error_counter=counter, **args)
    batches = [y.numpy().tolist() for _, y in ds]
    assert batches == [[1, 1]]
    assert counter.records == 2 and counter.shards == 0
    shard = pipeline.list_files(pattern)[0]
    assert counter.messages == [f"record 1 of {shard}: frame 0 (of 2) is not a valid JPEG",
                                f"record 2 of {shard}: not a tf.train.SequenceExample (the record does not parse: "
                                f"garbage bytes?)"]


@pytest.mark.large
def test_skipping_checkpoints_and_resumes_with_the_same_batches(tmp_path, capfd):
    """on_error="skip" is made of graph ops only: the iterator saves, restores, and the skip totals continue."""
    good = [_grey_video(3 + i, [i % 3], vid=f"v{i}") for i in range(6)]
    bad = schema.make_sequence_example([writer.encode_jpeg(np.zeros((8, 8, 3), np.uint8)), b"\xff\xd8broken"], [0])
    writer.write_records(good[:3] + [bad] + good[3:], str(tmp_path), "s", 1)
    pattern = writer.file_pattern(str(tmp_path), "s")
    ds = pipeline.video_dataset(pattern, num_frames=2, image_size=(8, 8), batch_size=2, seed=3, deterministic=True,
                                on_error="skip", shuffle_buffer=1, prefetch=None)
    it = iter(ds)
    first = [next(it)[1].numpy().tolist() for _ in range(2)]  # 7 records, 1 bad: 4 of the 6 good ones
    ckpt = tf.train.Checkpoint(iterator=it)
    path = ckpt.save(str(tmp_path / "ckpt"))
    expected = [next(it)[1].numpy().tolist() for _ in range(4)]
    ckpt.restore(path)
    got = [next(it)[1].numpy().tolist() for _ in range(4)]
    assert got == expected and sorted(sum(first + expected[:1], [])) == [0, 0, 1, 1, 2, 2]
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "kerasvid.data: skipped record 3 of" in line]
    # Skipped once before the checkpoint, and once per later epoch; after the restore the running total goes on
    # from the checkpoint's value (the count is iterator state), not from 0.
    # Every line names the record and the reason. Totals: 1 before the checkpoint, more as the epochs go on (the
    # pipeline reads ahead, so how many is not fixed), and after the restore the count continues from the
    # checkpoint's state (it is iterator state): it never starts again from 1.
    assert lines and all(line.split(": ", 2)[2].startswith("frame 1 (of 2) is not a valid JPEG (") for line in lines)
    totals = [int(line.rsplit("(", 1)[1].split()[0]) for line in lines]
    assert totals[0] == 1 and min(totals[1:]) >= 2 and len(totals) >= 3, totals


def test_hidden_temporary_shards_are_never_read(tmp_path):
    writer.write_records([_grey_video(2, [0])], str(tmp_path), "t", 1)
    with open(tmp_path / ".t-00000-of-00002.tfrecord.tmp-1", "wb") as f:
        f.write(b"partial")
    assert pipeline.list_files(str(tmp_path / "t-*")) == [str(tmp_path / "t-00000-of-00001.tfrecord")]
    assert pipeline.list_files(str(tmp_path)) == [str(tmp_path / "t-00000-of-00001.tfrecord")]


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_frames=0), "num_frames"),
    (dict(multi_label=True), "num_classes"),
    (dict(sampler="random"), "sampler"),
    (dict(on_error="ignore"), "on_error"),
    (dict(normalization="caffe_rgb"), "normalization"),
])
def test_bad_arguments(grey_records, kwargs, match):
    args = dict(num_frames=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pipeline.video_dataset(grey_records, **args)
    with pytest.raises(ValueError, match="No record files"):
        pipeline.video_dataset(os.path.join(os.path.dirname(grey_records), "nothing-*"), num_frames=4)


def test_iterator_position_checkpoints_and_restores(grey_records, tmp_path):
    """The training loop stores the data position: a restored iterator continues with the same batches."""
    ds = pipeline.video_dataset(grey_records, num_frames=4, image_size=(16, 16), batch_size=2, seed=5,
                                deterministic=True, prefetch=None)
    it = iter(ds)
    next(it)
    ckpt = tf.train.Checkpoint(iterator=it)
    path = ckpt.save(str(tmp_path / "ckpt"))
    expected = [next(it)[0]["image"].numpy() for _ in range(2)]
    ckpt.restore(path)
    got = [next(it)[0]["image"].numpy() for _ in range(2)]
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_input_context_shards_records(grey_records):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    ds = pipeline.video_dataset(grey_records, num_frames=2, image_size=(8, 8), training=False, batch_size=4,
                                input_context=ctx)
    assert [y.numpy().tolist() for _, y in ds] == [[1, 0]]  # records 1 and 3 of the single shard


@pytest.mark.large
def test_decode_examples_equals_eval_pipeline_without_labels(grey_records):
    records = [r for r in tf.data.TFRecordDataset(pipeline.list_files(grey_records))]
    unlabeled = tf.train.SequenceExample.FromString(records[0].numpy())
    del unlabeled.context.feature[schema.LABEL_INDEX]
    serialized = tf.stack([unlabeled.SerializeToString(deterministic=True)] + records[1:])
    config = VideoDataConfig(num_frames=4, stride=2, image_size=(16, 16), training=False, num_clips=2)
    got = tf.function(lambda s: pipeline.decode_examples(s, config))(serialized)
    features, _ = _eval(grey_records, stride=2, num_clips=2, normalization="imagenet")
    assert got.shape == (8, 4, 16, 16, 3)
    np.testing.assert_allclose(got.numpy(), features["image"].numpy(), atol=1e-6)


def test_auto_shard_policy_option(grey_records):
    ds = pipeline.video_dataset(grey_records, num_frames=2, image_size=(8, 8), training=False)
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    ds = pipeline.video_dataset(grey_records, num_frames=2, image_size=(8, 8), training=False, auto_shard="off")
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF


@pytest.mark.large
def test_training_with_skipped_records_checkpoints_and_resumes(tmp_path):
    """--data_kwargs=on_error=skip under the real training loop: checkpoints save the data iterator (this crashed
    with `EagerPyFunc is stateful` when skipping used Python), and a resumed run ends on the same weights."""
    import keras

    from kerasvid.tasks import TaskConfig
    from kerasvid.tasks.classification import ClassificationTask
    from kerasvid.training import TrainConfig, Trainer, get_strategy

    class Tiny(ClassificationTask):
        def build_model(self):
            inputs = keras.Input((2, 8, 8, 3))
            x = keras.layers.Flatten()(inputs)
            return keras.Model(inputs, keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(1))(x))

    examples = [_grey_video(3 + i % 4, [i % 3], vid=f"v{i}") for i in range(8)]
    examples[3] = schema.make_sequence_example([b"\xff\xd8 not a jpeg"] * 3, [1])
    examples[6] = b"garbage, not a proto"
    writer.write_records(examples, str(tmp_path / "data"), "train", 2)
    config = TaskConfig(model="tiny", num_classes=3, train_pattern=writer.file_pattern(str(tmp_path / "data"),
                                                                                      "train"),
                        num_frames=2, image_size=(8, 8), batch_size=2, seed=1, deterministic=True,
                        shuffle_buffer=4, normalization="zero_one", data_kwargs={"on_error": "skip"})

    def train(model_dir, steps):
        keras.utils.set_random_seed(0)
        trainer = Trainer(Tiny(config), get_strategy("default"), str(model_dir),
                          TrainConfig(train_steps=steps, log_every=2, checkpoint_every=2, learning_rate=0.1))
        trainer.train()
        return [v.numpy() for v in trainer.model.trainable_variables]

    full = train(tmp_path / "full", 8)
    train(tmp_path / "resumed", 4)
    assert tf.train.latest_checkpoint(str(tmp_path / "resumed")).endswith("ckpt-4")
    resumed = train(tmp_path / "resumed", 8)
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(a, b)


@pytest.mark.large
def test_data_config_gives_the_keyword_call_batches(grey_records):
    """`video_dataset(pattern, VideoDataConfig(...))` is the keyword call; overrides replace config fields."""
    from kerasvid.data import VideoDataConfig

    args = dict(num_frames=4, image_size=(16, 16), batch_size=2, seed=5, deterministic=True, color_jitter=0.2)
    by_keyword = next(iter(pipeline.video_dataset(grey_records, **args)))
    config = VideoDataConfig(**args)
    by_config = next(iter(pipeline.video_dataset(grey_records, config)))
    np.testing.assert_array_equal(by_config[0]["image"].numpy(), by_keyword[0]["image"].numpy())
    np.testing.assert_array_equal(by_config[1].numpy(), by_keyword[1].numpy())
    # An override: the eval pipeline of the same config, as `_eval` reads it.
    features, labels = next(iter(pipeline.video_dataset(grey_records, config, training=False, batch_size=4,
                                                        normalization="none", stride=2)))
    np.testing.assert_array_equal(_frame_values(features["image"].numpy()),
                                  [[1, 3, 5, 7], [0, 2, 1, 0], [6, 8, 10, 12], [4, 6, 8, 10]])
    assert config.training and config.batch_size == 2  # the config itself is unchanged


def test_unknown_data_settings_name_the_key_and_the_valid_ones(grey_records):
    from kerasvid.data import VideoDataConfig
    from kerasvid.tasks import TaskConfig
    from kerasvid.tasks.classification import ClassificationTask

    with pytest.raises(ValueError, match=r"Unknown video_dataset keyword key \['flipp'\].*'flip'.*'num_frames'"):
        pipeline.video_dataset(grey_records, num_frames=4, flipp=False)
    with pytest.raises(ValueError, match=r"Unknown data_kwargs keys \['a', 'b'\].*'color_jitter'"):
        VideoDataConfig(num_frames=4).replace(b=1, a=2)
    task = ClassificationTask(TaskConfig(num_classes=3, train_pattern=grey_records, eval_pattern=grey_records,
                                         data_kwargs={"flip": False, "colour_jitter": 0.1}))
    with pytest.raises(ValueError, match=r"Unknown data_kwargs key \['colour_jitter'\].*'color_jitter'"):
        task.build_dataset(training=True)
    task.config.data_kwargs = {"flip": False, "eval_short_side": 20}
    train, evaluation = task.data_config(True), task.data_config(False)
    assert (train.flip, train.training, train.num_classes, train.batch_size) == (False, True, 3, 8)
    assert (evaluation.eval_short_side, evaluation.training, evaluation.num_clips) == (20, False, 1)
    with pytest.raises(TypeError, match="num_frames"):
        pipeline.video_dataset(grey_records, image_size=8)
    with pytest.raises(TypeError, match="VideoDataConfig"):
        pipeline.video_dataset(grey_records, {"num_frames": 4})


def test_a_setting_given_twice_with_two_values_is_refused():
    """TaskConfig(num_frames=8, image_size=(112, 112), data_kwargs={"num_frames": 16, "image_size": (64, 64)})
    would build an 8x112x112 model fed 16x64x64 clips: one ValueError names both values of both settings."""
    from kerasvid.tasks import TaskConfig

    with pytest.raises(ValueError) as error:
        TaskConfig(num_frames=8, image_size=(112, 112), data_kwargs={"num_frames": 16, "image_size": (64, 64)})
    assert str(error.value).startswith("Settings given twice with different values: data_kwargs "
                                       "image_size=(64, 64) but image_size=(112, 112); data_kwargs num_frames=16 "
                                       "but num_frames=8.")
    with pytest.raises(ValueError, match=r"data_kwargs normalization='caffe' but normalization='imagenet'"):
        TaskConfig(data_kwargs={"normalization": "caffe"})  # "auto" without weights is imagenet
    with pytest.raises(ValueError, match=r"data_kwargs num_classes=5 but num_classes=3"):
        TaskConfig(label_names=("a", "b", "c"), data_kwargs={"num_classes": 5})
    # The same value twice (an int size is a square) and the data-only settings are accepted.
    config = TaskConfig(image_size=64, label_names=("a", "b"),
                        data_kwargs={"image_size": 64, "num_classes": 2, "batch_size": 8, "flip": False})
    assert config.image_size == (64, 64) and config.data_kwargs["flip"] is False


def test_task_config_train_and_validation_data():
    """TaskConfig.train_data / validation_data: the shared settings once, the task's views, then data_kwargs."""
    from kerasvid.tasks import TaskConfig

    config = TaskConfig(num_frames=4, stride=2, image_size=16, batch_size=6, eval_batch_size=2, eval_clips=2,
                        eval_crops=3, label_names=("a", "b"), seed=3, data_kwargs={"flip": False})
    shared = dict(num_frames=4, stride=2, image_size=(16, 16), num_classes=2, normalization="imagenet", seed=3,
                  flip=False)
    assert config.train_data == VideoDataConfig(training=True, batch_size=6, **shared)
    assert config.validation_data == VideoDataConfig(training=False, batch_size=2, num_clips=2, num_crops=3, **shared)
    assert TaskConfig().train_data.num_classes is None  # no classes known yet


@pytest.mark.large
def test_no_autograph_could_not_transform_warning(tmp_path):
    """Every function the pipeline hands to tf.data converts: AutoGraph prints no "could not transform" warning
    (it did for the two lambdas of one line in `_count_and_drop`), skipping or not, training or eval views."""
    import logging

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    writer.write_records([_grey_video(4, [0]), b"garbage", _grey_video(6, [1])], str(tmp_path), "w", 1)
    pattern = writer.file_pattern(str(tmp_path), "w")
    handler = Collect()
    tf.get_logger().addHandler(handler)
    try:
        skipped = list(pipeline.video_dataset(pattern, num_frames=2, image_size=8, training=False, batch_size=1,
                                              on_error="skip", num_clips=2, num_crops=3))
        next(iter(pipeline.video_dataset(pattern, num_frames=2, image_size=8, batch_size=1, on_error="skip",
                                         seed=0)))
    finally:
        tf.get_logger().removeHandler(handler)
    assert len(skipped) == 2 and skipped[0][0]["image"].shape == (6, 2, 8, 8, 3)
    assert not [m for m in messages if "could not transform" in m], messages
