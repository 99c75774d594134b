"""tf.data video pipelines over kerasvid / Model Garden records: read -> parse -> sample indices -> decode -> augment.

Frame indices are chosen before decoding, and only the chosen frames (and in training only the chosen crop window,
with `tf.image.decode_and_crop_jpeg`) are decoded. Randomness is stateless: each record is zipped with a value of
`tf.data.Dataset.random(seed)`, so with `seed` set and `deterministic=True` two runs yield identical batches.
"""
import os
import re
import sys
import tempfile
import weakref

import tensorflow as tf

from kerasvid.data import preprocess, samplers, schema
from kerasvid.data.config import VideoDataConfig

_CROPS = ("random_resized", "scale_jitter", "center")
_AUTO_SHARD = {"data": tf.data.experimental.AutoShardPolicy.DATA, "file": tf.data.experimental.AutoShardPolicy.FILE,
               "auto": tf.data.experimental.AutoShardPolicy.AUTO, "off": tf.data.experimental.AutoShardPolicy.OFF}


class ErrorCounter:
    """What `video_dataset(on_error="skip")` skipped, for this process (read it after or during iteration).

    The pipeline reports every skip from inside the tf.data graph (`tf.print`, an op that iterator checkpoints
    accept): one line on stderr naming the shard, the record index and the reason, with the running totals (which
    are part of the iterator state, so they continue across a checkpoint restore), and one line in this counter's
    event file (`path`), which the attributes below read.

    Attributes:
        records: records dropped because they did not parse or decode, had no frames or no label, or a label out
            of range.
        shards: shards whose reading stopped at a corrupt or truncated record (the records after it in that shard
            are lost; the ones before were delivered).
        messages: the first 100 messages (shard level and record level), each naming the file.
    """

    def __init__(self):
        self._path = None

    @property
    def path(self):
        """The event file (created on first use, that is by a skipping pipeline; removed with the counter)."""
        if self._path is None:
            fd, self._path = tempfile.mkstemp(prefix="kerasvid_skipped_", suffix=".tsv")
            os.close(fd)
            weakref.finalize(self, _remove_quietly, self._path)
        return self._path

    def _events(self):
        if self._path is None:
            return []
        try:
            with open(self._path, encoding="utf-8", errors="replace") as f:
                return [line.rstrip("\n").split("\t", 1) for line in f if "\t" in line]
        except FileNotFoundError:
            return []

    @property
    def records(self):
        return sum(1 for kind, _ in self._events() if kind == "record")

    @property
    def shards(self):
        return sum(1 for kind, _ in self._events() if kind == "shard")

    @property
    def messages(self):
        return [message for _, message in self._events()[:100]]

    @property
    def total(self):
        return self.records + self.shards

    def __repr__(self):
        return f"ErrorCounter(records={self.records}, shards={self.shards})"


_BAD_DATA = re.compile(r"assertion failed: \[(.*)\]\s*\n\s*\[\[\{\{node [^}]*bad_record", re.S)


def bad_data_message(error):
    """The one line naming the shard, record and reason of a bad-data error raised while iterating a
    `video_dataset` (an `InvalidArgumentError` whose text also holds TensorFlow's op context), or None when
    `error` is something else. For CLIs: `print(f"error: {bad_data_message(e)}")` instead of a traceback."""
    match = _BAD_DATA.search(getattr(error, "message", None) or str(error))
    return match.group(1) if match else None


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


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
    dirs = [f for f in files if tf.io.gfile.isdir(f)]
    if dirs:
        raise ValueError(f"`file_pattern`={file_pattern!r} matches a directory, not a record file: {dirs[0]!r}.")
    return files


def _str(x):
    return tf.strings.as_string(x) if x.dtype != tf.string else x


def _join(*parts):
    """One string tensor from Python strings and scalar tensors (numbers printed in decimal, strings unquoted)."""
    return tf.strings.join([p if isinstance(p, str) else _str(p) for p in parts])


def _read_records(files, sizes):
    """`(record, path, index, note)` of every readable record, and a marker where a shard ends early.

    A shard's records are read until the first one that does not read (TFRecordDataset stops there: a truncated
    or corrupt shard, or a file that is not a TFRecord file at all). Whether it stopped early is told by the
    bytes read: every complete record takes its length + 16 framing bytes, so a shard was read to its end exactly
    when they add up to the file size. Then a marker follows (`record` empty, `note` saying what happened), which
    the decoding stage turns into a skip or an error. All of it is tf.data graph state, so the iterator
    checkpoints (no Python generator or py_function).
    """

    def read(path, size):
        records = tf.data.TFRecordDataset(path).ignore_errors().map(lambda r: (r, tf.constant(False)))
        end = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(True)))

        def step(state, element):
            record, is_end = element
            count, read_bytes = state
            incomplete = tf.logical_and(is_end, tf.not_equal(read_bytes, size))
            note = tf.cond(incomplete, lambda: _join(
                "shard ", path, " after record ", count, " (byte ", read_bytes, " of ", size, "): truncated or "
                "corrupt, or not a TFRecord file"), lambda: tf.constant(""))
            step_bytes = tf.where(is_end, tf.constant(0, tf.int64), tf.cast(tf.strings.length(record), tf.int64) + 16)
            new_state = (count + tf.where(is_end, tf.constant(0, tf.int64), tf.constant(1, tf.int64)),
                         read_bytes + step_bytes)
            return new_state, (record, path, count, is_end, note)

        out = records.concatenate(end).scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), step)
        out = out.filter(lambda record, path, index, is_end, note: tf.logical_or(tf.logical_not(is_end),
                                                                                  tf.strings.length(note) > 0))
        return out.map(lambda record, path, index, is_end, note: (record, path, index, note))

    return read


def check_config(config):
    """Checks a `VideoDataConfig` up front; each error names the field and the value received."""
    c = config
    for name in ("num_frames", "stride", "batch_size", "num_clips", "num_crops"):
        v = getattr(c, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
    if (c.multi_label or c.one_hot or c.mirror_labels) and not c.num_classes:
        raise ValueError(f"`num_classes` is required with multi_label / one_hot / mirror_labels, got "
                         f"{c.num_classes!r}.")
    if c.sampler not in samplers.SAMPLERS:
        raise ValueError(f"`sampler` must be one of {samplers.SAMPLERS}, got {c.sampler!r}.")
    if c.on_error not in ("raise", "skip"):
        raise ValueError(f"`on_error` must be 'raise' or 'skip', got {c.on_error!r}.")
    if c.crop not in _CROPS:
        raise ValueError(f"`crop` must be one of {_CROPS}, got {c.crop!r}.")
    if c.auto_shard not in _AUTO_SHARD:
        raise ValueError(f"`auto_shard` must be one of {sorted(_AUTO_SHARD)}, got {c.auto_shard!r}.")
    preprocess.check_normalization(c.normalization)


def make_decoder(config, *, with_labels=True):
    """Returns `fn(serialized, seed) -> ({"image": [V?, T, H, W, 3]}, label)`, the per-record part of
    `video_dataset` with the settings of a `VideoDataConfig`; `seed` is an int64 scalar. Useful to build custom
    pipelines. With `with_labels=False` the labels are neither checked nor returned: `fn` returns `{"image": ...}`.

    `fn.views` is the number of views per record; `fn.augment` the `kerasvid.data.augment.VideoAugment` built from
    `config.augment` in training (its clip part runs in `fn`; `video_dataset` mixes the batches with it), or None.
    """
    c = VideoDataConfig.resolve(config, "make_decoder")
    num_frames, training, num_clips, num_crops = c.num_frames, c.training, c.num_clips, c.num_crops
    num_classes, multi_label, one_hot, crop = c.num_classes, c.multi_label, c.one_hot, c.crop
    height, width = c.image_size
    views = num_clips * (1 if training else num_crops)
    perm = None
    if c.mirror_labels:
        perm = preprocess.mirror_label_permutation(c.mirror_labels, num_classes)
    augment = None
    if c.augment is not None and training:  # imports keras: only when augmenting
        from kerasvid.data.augment import from_spec

        augment = from_spec(c.augment)

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
        if with_labels:
            checks.append(tf.debugging.assert_non_negative(labels, message="negative label index"))
        if with_labels and not (multi_label or one_hot):
            checks.append(tf.debugging.assert_positive(tf.size(labels), message="record has no label"))
        with tf.control_dependencies(checks):
            n = tf.identity(n)
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, tf.constant(7, tf.int64)]), 4)
        idx = samplers.sample_indices(c.sampler, n, num_frames, c.stride, training, num_clips, seeds[0])
        chosen = tf.gather(encoded, tf.reshape(idx, [-1]))  # [C*T] only these frames are decoded
        if training:
            shape = tf.image.extract_jpeg_shape(chosen[0])
            if crop == "random_resized":
                window = preprocess.random_resized_crop_window(shape[0], shape[1], seeds[1], c.crop_scale,
                                                               c.crop_aspect_ratio)
            elif crop == "scale_jitter":
                window = preprocess.scale_jitter_window(shape[0], shape[1], (height, width), seeds[1],
                                                        c.scale_jitter)
            else:
                window = None
            frames = decode_all(chosen) if window is None else decode_window(chosen, window)
            if c.flip:  # on the uint8 crop, before resizing: 4x less memory to move than after
                do_flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
                frames, labels = preprocess.flip_left_right(frames, labels, do_flip, perm)
            if window is None:
                clips = preprocess.resize_and_center_crop(frames, (height, width), c.eval_short_side)
            else:
                clips = tf.image.resize(frames, (height, width))
            if c.color_jitter:
                clips = preprocess.color_jitter(clips, c.color_jitter, seeds[3])
            clips = tf.reshape(clips, [num_clips, num_frames, height, width, 3])
            if augment is not None:  # clip-consistent RandAugment / random erasing (kerasvid.data.augment)
                clips = augment.clip(clips, tf.random.experimental.stateless_fold_in(seeds[3], 1))
        else:
            crops = preprocess.resize_and_crops(decode_all(chosen), (height, width), c.eval_short_side, num_crops)
            crops = tf.reshape(crops, [num_crops, num_clips, num_frames, height, width, 3])
            # Views clip-major: view v = clip * num_crops + crop.
            clips = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]), [views, num_frames, height, width, 3])
        image = preprocess.normalize(clips, c.normalization)
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

    fn.views, fn.augment = views, augment
    return fn


def decode_examples(serialized, config):
    """Eval-mode decoding of a batch of serialized SequenceExamples, exactly as `video_dataset(config)`.

    Graph-safe, for serving signatures that take records (`serve_examples`); labels are not needed.

    Args:
        serialized: string `[B]`.
        config: a `VideoDataConfig` with `training=False` (the geometry, `stride`, `normalization`, `num_clips`,
            `num_crops`, `sampler` and `eval_short_side` are read from it).

    Returns:
        float32 `[B, T, H, W, 3]`, or `[B * V, T, H, W, 3]` (views of a video contiguous) when V > 1.
    """
    c = VideoDataConfig.resolve(config, "decode_examples")
    if c.training:
        raise ValueError("decode_examples decodes the evaluation views: pass a VideoDataConfig with "
                         f"training=False, got training={c.training!r}.")
    decode = make_decoder(c, with_labels=False)
    num_frames, (h, w) = c.num_frames, c.image_size
    shape = ([decode.views] if decode.views > 1 else []) + [num_frames, h, w, 3]
    images = tf.map_fn(lambda s: decode(s, tf.constant(0, tf.int64))["image"], serialized,
                       fn_output_signature=tf.TensorSpec(shape, tf.float32))
    return tf.reshape(images, [-1, num_frames, h, w, 3]) if decode.views > 1 else images


def video_dataset(file_pattern, config=None, *, input_context=None, error_counter=None, **overrides):
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
        config: a `kerasvid.data.VideoDataConfig` (its docstring documents every setting).
        input_context: optional `tf.distribute.InputContext`; the records are sharded by it.
        error_counter: an `ErrorCounter` to count skipped records into with `on_error="skip"` (created when None;
            also attached as `dataset.error_counter`).
        **overrides: `VideoDataConfig` fields that replace the config's (`video_dataset(pattern, config,
            flip=False)`), or, without a config, the whole config as keywords (`video_dataset(pattern,
            num_frames=8, image_size=(64, 64))`). An unknown name raises a ValueError listing the valid ones.

    Returns:
        `tf.data.Dataset` of `({"image": float32 [B(*V), T, H, W, 3]}, labels)`; labels int32 `[B]` or float32
        `[B, num_classes]`.

    Example:
    >>> pattern = kerasvid.data.write_synthetic_dataset("/tmp/synth")
    >>> config = kerasvid.data.VideoDataConfig(num_frames=8, image_size=(64, 64), batch_size=4)
    >>> ds = kerasvid.data.video_dataset(pattern, config)
    >>> features, labels = next(iter(ds))  # features["image"]: (4, 8, 64, 64, 3), labels: (4,)
    """
    c = VideoDataConfig.resolve(config, "video_dataset", **overrides)
    check_config(c)
    training, seed, deterministic = c.training, c.seed, c.deterministic
    num_frames, num_classes = c.num_frames, c.num_classes
    image_size = c.image_size
    files = list_files(file_pattern)
    sizes = [tf.io.gfile.stat(f).length for f in files]
    decode = make_decoder(c)
    augment = decode.augment
    counter = error_counter if error_counter is not None else ErrorCounter()

    file_ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64)))
    if training:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = file_ds.interleave(_read_records(files, sizes), cycle_length=min(len(files), 8), block_length=1,
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if input_context is not None:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training and c.shuffle_buffer and c.shuffle_buffer > 1:
        records = records.shuffle(c.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    epochs = c.repeat if c.repeat is not None else (None if training else 1)
    if epochs != 1:
        records = records.repeat(epochs)
    rng = tf.data.Dataset.random(seed=seed)
    records = tf.data.Dataset.zip((records, rng))
    # Evaluation keeps the record order (as a parallel map does in practice); training order is shuffled anyway.
    ds = _guarded_decode(records, decode, num_frames, image_size, num_classes, c.multi_label or c.one_hot,
                         c.on_error == "skip", c.num_parallel_calls, deterministic or not training)
    if c.on_error == "skip":
        ds = _count_and_drop(ds, counter)
    else:
        ds = ds.map(_drop_status)
    drop_remainder = training if c.drop_remainder is None else c.drop_remainder
    ds = ds.batch(c.batch_size, drop_remainder=drop_remainder)
    if augment is not None:  # MixUp / CutMix: soft labels [B, num_classes]
        ds = augment.mix_batches(ds, seed, num_classes)
    if decode.views > 1:
        h, w = image_size

        def fold_views(features, labels):
            return {"image": tf.reshape(features["image"], [-1, num_frames, h, w, 3])}, labels

        ds = ds.map(fold_views)
    if c.prefetch:
        ds = ds.prefetch(c.prefetch)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    options.experimental_distribute.auto_shard_policy = _AUTO_SHARD[c.auto_shard]
    ds = ds.with_options(options)
    try:
        ds.error_counter = counter
    except AttributeError:  # pragma: no cover - depends on the Dataset subclass
        pass
    return ds


def _drop_status(features, label, status, message):
    """`(features, label, status, message)` -> `(features, label)` (on_error="raise": every element is good)."""
    return features, label


_RECORD, _SHARD = 1, 2  # status of a skipped element (0: a good one)


def _first_bad_frame(frames):
    """A one-element dataset: why the frames fail to decode (the first one that is not a JPEG), with graph ops."""
    n = tf.size(frames, out_type=tf.int64)
    decoded = tf.data.Dataset.from_tensor_slices(frames).enumerate().map(
        lambda i, f: (i, tf.size(tf.io.decode_jpeg(f, channels=3), out_type=tf.int64))).ignore_errors()
    # Good frames come in order; the first index that differs from its position is the first bad frame.
    gaps = decoded.concatenate(tf.data.Dataset.from_tensors((n, tf.constant(0, tf.int64)))).scan(
        tf.constant(0, tf.int64), lambda position, e: (position + 1, (e[0], position)))
    first = gaps.filter(lambda i, position: tf.not_equal(i, position)).take(1).map(
        lambda i, position: _join("frame ", position, " (of ", n, ") is not a valid JPEG"))
    other = tf.data.Dataset.from_tensors(tf.constant("the frames do not decode together (frames of different "
                                                     "sizes?)"))
    return first.concatenate(other).take(1)


def _why(record, num_classes, dense_labels):
    """A one-element dataset: why `record` failed to decode, found again with graph ops that cannot fail.

    Datasets (not `reduce`), so that the iterator stays checkpointable; only built for a failing record.
    """

    def simple_reason(serialized):
        context, sequence = tf.io.parse_single_sequence_example(  # lenient: a missing frame list is "no frames"
            serialized, context_features={schema.LABEL_INDEX: tf.io.VarLenFeature(tf.int64)},
            sequence_features={schema.IMAGE_ENCODED: tf.io.FixedLenSequenceFeature((), tf.string,
                                                                                  allow_missing=True)})
        frames, labels = sequence[schema.IMAGE_ENCODED], tf.sparse.to_dense(context[schema.LABEL_INDEX])
        cases = [(tf.equal(tf.size(frames), 0), lambda: tf.constant("no frames (`image/encoded` is empty)"))]
        if not dense_labels:
            cases.append((tf.equal(tf.size(labels), 0),
                          lambda: tf.constant("no label (`clip/label/index` is empty)")))
        cases.append((tf.reduce_any(labels < 0), lambda: _join("negative label ", tf.reduce_min(labels))))
        if num_classes:
            cases.append((tf.reduce_any(labels >= num_classes), lambda: _join(
                "label ", tf.reduce_max(labels), " but num_classes is ", tf.constant(num_classes, tf.int64),
                " (labels must be < num_classes)")))
        return frames, tf.case(cases, default=lambda: tf.constant(""), exclusive=False)

    def explain(frames, reason):
        known = tf.data.Dataset.from_tensors(reason).filter(lambda r: tf.strings.length(r) > 0)
        return known.concatenate(_first_bad_frame(frames)).take(1)

    parsed = tf.data.Dataset.from_tensors(record).map(simple_reason).ignore_errors().flat_map(explain)
    fallback = tf.data.Dataset.from_tensors(tf.constant("not a tf.train.SequenceExample (the record does not "
                                                        "parse: garbage bytes?)"))
    return parsed.concatenate(fallback).take(1)


def _guarded_decode(records, decode, num_frames, image_size, num_classes, dense_labels, skip, num_parallel_calls,
                    deterministic):
    """Decodes `((record, path, index, note), seed)` into `(features, label, status, message)`.

    Each record becomes a one-element dataset whose decode errors are ignored, followed by a fallback element
    (`take(1)` keeps the real one when it exists). The fallback names the shard, the record index and the reason
    (`_why`); when not skipping, it raises that as one `InvalidArgumentError` instead. Shard markers (`note`)
    take the fallback directly.
    """
    h, w = image_size
    image_shape = ([decode.views] if decode.views > 1 else []) + [num_frames, h, w, 3]
    placeholder = ({"image": tf.zeros(image_shape)},
                   tf.zeros([num_classes], tf.float32) if dense_labels else tf.constant(0, tf.int32))

    def one(element, seed):
        record, path, index, note = element
        is_record = tf.equal(tf.strings.length(note), 0)
        good = tf.data.Dataset.from_tensors((record, seed)).filter(lambda r, s: is_record)
        good = good.map(lambda r, s: (*decode(r, s), tf.constant(0), tf.constant(""))).ignore_errors()

        def failed(reason):
            status = tf.where(is_record, _RECORD, _SHARD)
            message = tf.cond(is_record, lambda: _join("record ", index, " of ", path, ": ", reason), lambda: note)
            if not skip:
                with tf.control_dependencies([tf.debugging.Assert(False, [message], name="bad_record")]):
                    status = tf.identity(status)
            return (*placeholder, status, message)

        reason = _why(record, num_classes, dense_labels)
        marker = tf.data.Dataset.from_tensors(tf.constant(""))
        bad = marker.filter(lambda _: tf.logical_not(is_record)).concatenate(reason).take(1).map(failed)
        return good.concatenate(bad).take(1)

    parallel = num_parallel_calls if num_parallel_calls else None
    return records.interleave(one, cycle_length=max(2, os.cpu_count() or 2), block_length=1,
                              num_parallel_calls=parallel, deterministic=deterministic)


def _count_and_drop(ds, counter):
    """Drops skipped elements, reporting each (stderr and the counter's file) with running totals that are part
    of the iterator state (a `scan`), so a restored checkpoint continues the count."""
    event_file = "file://" + counter.path

    def step(totals, element):
        features, label, status, message = element
        totals = (totals[0] + tf.cast(tf.equal(status, _RECORD), tf.int64),
                  totals[1] + tf.cast(tf.equal(status, _SHARD), tf.int64))

        def report():
            kind = tf.where(tf.equal(status, _RECORD), "record", "shard")
            line = _join("kerasvid.data: skipped ", message, " (", totals[0], " records and ", totals[1],
                         " shards skipped so far)")
            ops = [tf.print(line, output_stream=sys.stderr), tf.print(_join(kind, "\t", message),
                                                                       output_stream=event_file)]
            with tf.control_dependencies(ops):
                return tf.constant(False)

        keep = tf.cond(tf.equal(status, 0), lambda: tf.constant(True), report)
        return totals, (features, label, keep)

    # Named functions, not two lambdas on one line: AutoGraph cannot tell such lambdas apart in the source and
    # warns that it "could not transform" them.
    def kept(features, label, keep):
        return keep

    def without_flag(features, label, keep):
        return features, label

    ds = ds.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), step)
    return ds.filter(kept).map(without_flag)
