"""tf.data video pipelines over kerasvid / Model Garden records: read -> parse -> sample indices -> decode -> augment.

Frame indices are chosen before decoding, and only the chosen frames (and in training only the chosen crop window,
with `tf.image.decode_and_crop_jpeg`) are decoded. Randomness is stateless: each record is zipped with a value of
`tf.data.Dataset.random(seed)`, so with `seed` set and `deterministic=True` two runs yield identical batches.
"""
import logging
import os
import threading

import tensorflow as tf

from kerasvid.data import preprocess, samplers, schema

_log = logging.getLogger("kerasvid.data")
_CROPS = ("random_resized", "scale_jitter", "center")
_AUTO_SHARD = {"data": tf.data.experimental.AutoShardPolicy.DATA, "file": tf.data.experimental.AutoShardPolicy.FILE,
               "auto": tf.data.experimental.AutoShardPolicy.AUTO, "off": tf.data.experimental.AutoShardPolicy.OFF}


class ErrorCounter:
    """Counts what `video_dataset(on_error="skip")` skipped (thread-safe; read it after or during iteration).

    Attributes:
        records: number of records dropped because they failed to parse or decode (or had no frames / labels out
            of range).
        shards: number of shards whose reading stopped at a corrupt or truncated record (the records after it in
            that shard are lost; the ones before were delivered).
        messages: the first 100 shard-level error messages.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.records = 0
        self.shards = 0
        self.messages = []

    @property
    def total(self):
        return self.records + self.shards

    def _add_record(self):
        with self._lock:
            self.records += 1
            n = self.records
        _log.warning("kerasvid.data: skipped a corrupt record (%d records skipped so far).", n)
        return False

    def _add_shard(self, path, error):
        with self._lock:
            self.shards += 1
            if len(self.messages) < 100:
                self.messages.append(f"{path}: {error}")
        _log.warning("kerasvid.data: stopped reading corrupt shard %s: %s", path, error)

    def __repr__(self):
        return f"ErrorCounter(records={self.records}, shards={self.shards})"


def list_files(file_pattern):
    """Expands a glob pattern (or a list of them, or a directory) into a sorted list of complete shards."""
    patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else list(file_pattern)
    files = []
    for p in patterns:
        p = os.fspath(p)
        if tf.io.gfile.isdir(p):
            p = os.path.join(p, "*.tfrecord")
        files.extend(tf.io.gfile.glob(p))
    # Temporary shards of an unfinished write are hidden files; never read them even if a pattern matches.
    files = sorted({f for f in files if not os.path.basename(f).startswith(".")})
    if not files:
        raise ValueError(f"No record files match `file_pattern`={file_pattern!r}.")
    return files


def _read_skipping(files, counter, deterministic):
    def gen(path):
        path = path.decode() if isinstance(path, bytes) else path
        try:
            for record in tf.data.TFRecordDataset(path):
                yield record.numpy()
        except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError) as e:
            counter._add_shard(path, getattr(e, "message", str(e)))

    def one(path):
        return tf.data.Dataset.from_generator(gen, args=(path,), output_signature=tf.TensorSpec([], tf.string))

    return files.interleave(one, cycle_length=4, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=deterministic)


def _validate(num_frames, stride, image_size, batch_size, num_classes, multi_label, one_hot, num_clips, num_crops,
              sampler, on_error, crop, normalization, mirror_labels, auto_shard):
    for name, v in (("num_frames", num_frames), ("stride", stride), ("batch_size", batch_size),
                    ("num_clips", num_clips), ("num_crops", num_crops)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
    if len(image_size) != 2 or any(int(s) < 1 for s in image_size):
        raise ValueError(f"`image_size` must be (height, width), got {image_size!r}.")
    if (multi_label or one_hot or mirror_labels) and not num_classes:
        raise ValueError(f"`num_classes` is required with multi_label / one_hot / mirror_labels, got {num_classes!r}.")
    if sampler not in samplers.SAMPLERS:
        raise ValueError(f"`sampler` must be one of {samplers.SAMPLERS}, got {sampler!r}.")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"`on_error` must be 'raise' or 'skip', got {on_error!r}.")
    if crop not in _CROPS:
        raise ValueError(f"`crop` must be one of {_CROPS}, got {crop!r}.")
    if auto_shard not in _AUTO_SHARD:
        raise ValueError(f"`auto_shard` must be one of {sorted(_AUTO_SHARD)}, got {auto_shard!r}.")
    preprocess.check_normalization(normalization)


def make_decoder(num_frames, stride=1, image_size=(224, 224), training=True, num_classes=None, multi_label=False,
                 one_hot=False, normalization="imagenet", num_clips=1, num_crops=1, sampler="dense",
                 crop="random_resized", crop_scale=(0.49, 1.0), crop_aspect_ratio=(0.5, 2.0),
                 scale_jitter=(256, 320), flip=True, mirror_labels=None, color_jitter=0.0, eval_short_side=None,
                 with_labels=True, augment=None):
    """Returns `fn(serialized, seed) -> ({"image": [V?, T, H, W, 3]}, label)`, the per-record part of
    `video_dataset` (same arguments); `seed` is an int64 scalar. Useful to build custom pipelines.
    With `with_labels=False` the labels are neither checked nor returned: `fn` returns `{"image": ...}`."""
    height, width = int(image_size[0]), int(image_size[1])
    views = num_clips * (1 if training else num_crops)
    perm = None
    if mirror_labels:
        perm = preprocess.mirror_label_permutation(mirror_labels, num_classes)

    def decode_all(encoded):
        return tf.map_fn(lambda s: tf.io.decode_jpeg(s, channels=3), encoded,
                         fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))

    def decode_window(encoded, window):
        return tf.map_fn(lambda s: tf.image.decode_and_crop_jpeg(s, window, channels=3), encoded,
                         fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))

    def fn(serialized, seed):
        parsed = schema.parse_sequence_example(serialized)
        encoded, labels = parsed["frames"], parsed["labels"]
        n = tf.size(encoded)
        checks = [tf.debugging.assert_positive(n, message="record has no frames (`image/encoded` is empty)")]
        if not with_labels:
            pass
        elif num_classes:
            checks.append(tf.debugging.assert_less(labels, tf.cast(num_classes, tf.int64),
                                                   message="label index out of range for num_classes"))
        if with_labels and not (multi_label or one_hot):
            checks.append(tf.debugging.assert_positive(tf.size(labels), message="record has no label"))
        with tf.control_dependencies(checks):
            n = tf.identity(n)
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, tf.constant(7, tf.int64)]), 4)
        idx = samplers.sample_indices(sampler, n, num_frames, stride, training, num_clips, seeds[0])
        chosen = tf.gather(encoded, tf.reshape(idx, [-1]))  # [C*T] only these frames are decoded
        if training:
            shape = tf.image.extract_jpeg_shape(chosen[0])
            if crop == "random_resized":
                window = preprocess.random_resized_crop_window(shape[0], shape[1], seeds[1], crop_scale,
                                                               crop_aspect_ratio)
            elif crop == "scale_jitter":
                window = preprocess.scale_jitter_window(shape[0], shape[1], (height, width), seeds[1], scale_jitter)
            else:
                window = None
            frames = decode_all(chosen) if window is None else decode_window(chosen, window)
            if flip:  # on the uint8 crop, before resizing: 4x less memory to move than after
                do_flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
                frames, labels = preprocess.flip_left_right(frames, labels, do_flip, perm)
            if window is None:
                clips = preprocess.resize_and_center_crop(frames, (height, width), eval_short_side)
            else:
                clips = tf.image.resize(frames, (height, width))
            if color_jitter:
                clips = preprocess.color_jitter(clips, color_jitter, seeds[3])
            clips = tf.reshape(clips, [num_clips, num_frames, height, width, 3])
            if augment is not None:  # clip-consistent RandAugment / random erasing (kerasvid.data.augment)
                clips = augment.clip(clips, tf.random.experimental.stateless_fold_in(seeds[3], 1))
        else:
            crops = preprocess.resize_and_crops(decode_all(chosen), (height, width), eval_short_side, num_crops)
            crops = tf.reshape(crops, [num_crops, num_clips, num_frames, height, width, 3])
            # Views clip-major: view v = clip * num_crops + crop.
            clips = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]), [views, num_frames, height, width, 3])
        image = preprocess.normalize(clips, normalization)
        if views == 1:
            image = image[0]
        if not with_labels:
            return {"image": image}
        if multi_label or one_hot:
            label = tf.reduce_max(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0)
            label = tf.ensure_shape(label, [num_classes])
        else:
            label = tf.cast(labels[0], tf.int32)
        return {"image": image}, label

    fn.views = views
    return fn


def decode_examples(serialized, num_frames, stride=1, image_size=(224, 224), normalization="imagenet", num_clips=1,
                    num_crops=1, sampler="dense", eval_short_side=None):
    """Eval-mode decoding of a batch of serialized SequenceExamples, exactly as `video_dataset(training=False)`.

    Graph-safe, for serving signatures that take records (`serve_examples`); labels are not needed.

    Args:
        serialized: string `[B]`.
        num_frames, stride, image_size, normalization, num_clips, num_crops, sampler, eval_short_side: as in
            `video_dataset`.

    Returns:
        float32 `[B, T, H, W, 3]`, or `[B * V, T, H, W, 3]` (views of a video contiguous) when V > 1.
    """
    decode = make_decoder(num_frames, stride, image_size, False, normalization=normalization, num_clips=num_clips,
                          num_crops=num_crops, sampler=sampler, eval_short_side=eval_short_side, with_labels=False)
    h, w = int(image_size[0]), int(image_size[1])
    shape = ([decode.views] if decode.views > 1 else []) + [num_frames, h, w, 3]
    images = tf.map_fn(lambda s: decode(s, tf.constant(0, tf.int64))["image"], serialized,
                       fn_output_signature=tf.TensorSpec(shape, tf.float32))
    return tf.reshape(images, [-1, num_frames, h, w, 3]) if decode.views > 1 else images


def video_dataset(file_pattern, num_frames, stride=1, image_size=(224, 224), training=True, batch_size=8,
                  num_classes=None, multi_label=False, one_hot=False, normalization="imagenet", num_clips=1,
                  num_crops=1, sampler="dense", shuffle_buffer=64, seed=None, deterministic=False, on_error="raise",
                  error_counter=None, repeat=None, crop="random_resized", crop_scale=(0.49, 1.0),
                  crop_aspect_ratio=(0.5, 2.0), scale_jitter=(256, 320), flip=True, mirror_labels=None,
                  color_jitter=0.0, eval_short_side=None, drop_remainder=None, input_context=None,
                  auto_shard="data", num_parallel_calls=tf.data.AUTOTUNE, prefetch=tf.data.AUTOTUNE, augment=None):
    """A batched `tf.data.Dataset` of video clips from SequenceExample records.

    Training: a dense clip at a random offset (or TSN segments), a random crop window decoded alone and resized,
    a random horizontal flip (with mirror-symmetric labels swapped), optional colour jitter. Eval: the centred clip
    (or `num_clips` evenly spaced clips), short side resized to `eval_short_side` (default crop / 0.875) and the
    centre crop (or `num_crops` crops slid along the longer side). Videos shorter than a clip are looped.

    Multi-view layout (eval with V = num_clips * num_crops > 1): views are folded into the batch, so "image" is
    `[B * V, T, H, W, 3]` with the V views of one video contiguous and clip-major (view v = clip * num_crops + crop),
    while labels stay one per video (`[B]` or `[B, num_classes]`); average `logits.reshape([B, V, K])` over V.

    Args:
        file_pattern: glob, list of globs or directory of `*.tfrecord` shards.
        num_frames: T, frames per clip.
        stride: temporal stride between sampled frames (in stored frames; see `video/fps`).
        image_size: (H, W) of the output.
        training: training sampling/augmentation, shuffling and endless repetition.
        batch_size: videos per batch.
        num_classes: required for multi-hot / one-hot labels and mirror labels; also checks label range.
        multi_label: labels as float32 multi-hot `[B, num_classes]` (Charades).
        one_hot: single-label data as float32 one-hot `[B, num_classes]` (records with several labels become
            multi-hot).
        normalization: "imagenet", "minus_one_one", "zero_one" or "none" (see `preprocess.normalize`).
        num_clips: temporal views (eval) or clips per video (training).
        num_crops: spatial views in eval (1 centre, 3 ...).
        sampler: "dense" (num_frames x stride) or "tsn" (one frame per segment).
        shuffle_buffer: record shuffle buffer in training (files are shuffled too).
        seed: seed for shuffling and augmentation.
        deterministic: fixed element order (with `seed`, batches are reproducible run to run).
        on_error: "raise" (default) or "skip": corrupt / truncated records and shards are skipped and counted in
            `error_counter` (also attached as `dataset.error_counter`) and logged.
        error_counter: an `ErrorCounter` to count into (created when None).
        repeat: number of epochs; None = forever in training, once in eval.
        crop: training crop: "random_resized" (area `crop_scale`, aspect `crop_aspect_ratio`), "scale_jitter"
            (short side ~ U[scale_jitter], random crop) or "center".
        flip: random horizontal flip in training.
        mirror_labels: {a: b} classes that swap under a flip (Jester `{11: 12, 16: 17}`), or pairs.
        color_jitter: strength s of `preprocess.color_jitter` (0 = off).
        eval_short_side: eval resize target of the short side.
        drop_remainder: default True in training, False in eval.
        input_context: optional `tf.distribute.InputContext`; the records are sharded by it.
        auto_shard: tf.data auto-shard policy for multi-worker strategies: "data" (default), "file", "auto", "off".
        num_parallel_calls, prefetch: tf.data parallelism.
        augment: clip-consistent training augmentation (`kerasvid.data.augment.VideoAugment` or a dict of its
            arguments: randaugment, random_erasing, mixup, cutmix); MixUp / CutMix make the labels soft.

    Returns:
        `tf.data.Dataset` of `({"image": float32 [B(*V), T, H, W, 3]}, labels)`; labels int32 `[B]` or float32
        `[B, num_classes]`.

    Example:
    >>> pattern = kerasvid.data.write_synthetic_dataset("/tmp/synth")
    >>> ds = kerasvid.data.video_dataset(pattern, num_frames=8, image_size=(64, 64), batch_size=4)
    >>> features, labels = next(iter(ds))  # features["image"]: (4, 8, 64, 64, 3), labels: (4,)
    """
    _validate(num_frames, stride, image_size, batch_size, num_classes, multi_label, one_hot, num_clips, num_crops,
              sampler, on_error, crop, normalization, mirror_labels, auto_shard)
    files = list_files(file_pattern)
    if augment is not None:  # imports keras: only when augmenting
        from kerasvid.data.augment import from_spec

        augment = from_spec(augment) if training else None
    decode = make_decoder(num_frames, stride, image_size, training, num_classes, multi_label, one_hot,
                          normalization, num_clips, num_crops, sampler, crop, crop_scale, crop_aspect_ratio,
                          scale_jitter, flip, mirror_labels, color_jitter, eval_short_side, augment=augment)
    counter = error_counter if error_counter is not None else ErrorCounter()

    file_ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if on_error == "skip":
        records = _read_skipping(file_ds, counter, deterministic)
    else:
        records = file_ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=1,
                                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if input_context is not None:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training and shuffle_buffer and shuffle_buffer > 1:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    epochs = repeat if repeat is not None else (None if training else 1)
    if epochs != 1:
        records = records.repeat(epochs)
    rng = tf.data.Dataset.random(seed=seed)
    records = tf.data.Dataset.zip((records, rng))

    if on_error == "skip":
        ds = _map_skipping(records, decode, counter, num_frames, image_size, num_classes, multi_label or one_hot,
                           deterministic)
    else:
        ds = records.map(decode, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if drop_remainder is None:
        drop_remainder = training
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:  # MixUp / CutMix: soft labels [B, num_classes]
        ds = augment.mix_batches(ds, seed, num_classes)
    if decode.views > 1:
        h, w = int(image_size[0]), int(image_size[1])
        ds = ds.map(lambda f, y: ({"image": tf.reshape(f["image"], [-1, num_frames, h, w, 3])}, y))
    if prefetch:
        ds = ds.prefetch(prefetch)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    options.experimental_distribute.auto_shard_policy = _AUTO_SHARD[auto_shard]
    ds = ds.with_options(options)
    try:
        ds.error_counter = counter
    except AttributeError:  # pragma: no cover - depends on the Dataset subclass
        pass
    return ds


def _map_skipping(records, decode, counter, num_frames, image_size, num_classes, dense_labels, deterministic):
    """Per-record map that turns a failing record into a counted drop instead of an error.

    Each record becomes a one-element dataset whose decode errors are ignored, followed by a placeholder flagged
    `ok=False`; `take(1)` keeps the real element when it exists, so a drop is visible downstream and counted.
    """
    h, w = int(image_size[0]), int(image_size[1])
    image_shape = ([decode.views] if decode.views > 1 else []) + [num_frames, h, w, 3]
    placeholder = ({"image": tf.zeros(image_shape)},
                   tf.zeros([num_classes], tf.float32) if dense_labels else tf.constant(0, tf.int32))

    def one(record, seed):
        good = tf.data.Dataset.from_tensors((record, seed)).map(lambda r, s: (*decode(r, s), True))
        good = good.ignore_errors(log_warning=True)
        bad = tf.data.Dataset.from_tensors((*placeholder, False))
        return good.concatenate(bad).take(1)

    def keep(features, label, ok):
        counted = tf.cond(ok, lambda: tf.constant(True),
                          lambda: tf.reshape(tf.py_function(counter._add_record, [], tf.bool), []))
        return tf.logical_and(ok, counted)

    ds = records.interleave(one, cycle_length=max(2, os.cpu_count() or 2), block_length=1,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.filter(keep).map(lambda f, y, ok: (f, y))
