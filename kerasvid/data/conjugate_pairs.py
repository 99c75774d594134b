"""Training pairs of the action/context factorization: each action clip with its conjugate, augmented identically.

The conjugate records are written offline by `kerasvid conjugates` (`kerasvid.data.conjugates`); `pair_dataset`
reads them beside the original records for `kerasvid.tasks.action_context`.
"""
import os

import tensorflow as tf

from kerasvid.data import pipeline, schema
from kerasvid.data.config import VideoDataConfig
from kerasvid.data.conjugates import CONJUGATE_NUM_BOXES, CONJUGATE_OF


# Settings of VideoDataConfig that pair_dataset cannot honour, with the values it runs with (or accepts).
_FIXED = {"training": (True,), "one_hot": (False,), "on_error": ("raise",), "repeat": (None,),
          "drop_remainder": (None, True), "auto_shard": ("data",), "augment": (None,)}


def pair_dataset(file_pattern, conjugate_dir, config=None, *, input_context=None, **overrides):
    """Training batches of (action sample, conjugate) pairs, sampled and augmented identically.

    The conjugate shards (written by `kerasvid.data.conjugates.make_conjugate_records`) mirror the original shards
    record for record; both records of a pair are decoded by the same `kerasvid.data.pipeline.make_decoder`
    function with the same per-pair seed, so the two clips share their frame indices, crop window, flip and colour
    jitter.

    Args:
        file_pattern: the original records (glob, list or directory, as `video_dataset`).
        conjugate_dir: the directory of the conjugate shards (same file names).
        config: a `kerasvid.data.VideoDataConfig` of a training pipeline: the clip geometry, labels, shuffling and
            the decoder's augmentation (crop, flip, mirror_labels, color_jitter, ...) are read from it; a pair
            pipeline always repeats, drops the last incomplete batch and raises on bad records, so `training`,
            `one_hot`, `on_error`, `repeat`, `drop_remainder`, `auto_shard` and `augment` must keep their values
            (a ValueError names the field otherwise). `batch_size` counts pairs.
        input_context: optional `tf.distribute.InputContext`; the pairs are sharded by it.
        **overrides: `VideoDataConfig` fields replacing the config's, or, without a config, the whole config as
            keywords (`pair_dataset(pattern, conjugate_dir, num_frames=8, ...)`), as in `video_dataset`.

    Returns:
        An endless `tf.data.Dataset` of `({"image": [B, T, H, W, 3], "conjugate": [B, T, H, W, 3],
        "pair_weight": [B]}, labels)`; `pair_weight` is 1 where the conjugate had at least one box removed and
        0 otherwise (negative clips, videos without boxes: their conjugate equals the original).

    Raises:
        ValueError: when a conjugate shard is missing; at run time an InvalidArgumentError when a pair's
            `conjugate/of` differs from the original's `video/id` (shards out of step).
    """
    c = VideoDataConfig.resolve(config, "pair_dataset", **overrides)
    for name, allowed in _FIXED.items():
        if getattr(c, name) not in allowed:
            raise ValueError(f"pair_dataset cannot honour {name}={getattr(c, name)!r} (it runs with "
                             f"{name}={allowed[0]!r}): leave it out of the action_context task's data_kwargs")
    pipeline.check_config(c)
    seed, deterministic = c.seed, c.deterministic
    files = pipeline.list_files(file_pattern)
    partners = [os.path.join(conjugate_dir, os.path.basename(f)) for f in files]
    missing = [p for p in partners if not tf.io.gfile.exists(p)]
    if missing:
        raise ValueError(f"Missing conjugate shards for {len(missing)} of {len(files)} record files, e.g. "
                         f"{missing[0]!r}; run `kerasvid conjugates --records=... --output_dir={conjugate_dir}`")
    decode = pipeline.make_decoder(c)
    context = {CONJUGATE_NUM_BOXES: tf.io.FixedLenFeature((), tf.int64, default_value=0),
               CONJUGATE_OF: tf.io.FixedLenFeature((), tf.string, default_value="")}
    id_spec = {schema.VIDEO_ID: tf.io.FixedLenFeature((), tf.string, default_value="")}

    def decode_pair(pair, pair_seed):
        original, conjugate = pair
        features, label = decode(original, pair_seed)
        conj_features, _ = decode(conjugate, pair_seed)
        conj_ctx, _ = tf.io.parse_single_sequence_example(conjugate, context_features=context)
        orig_ctx, _ = tf.io.parse_single_sequence_example(original, context_features=id_spec)
        check = tf.debugging.assert_equal(conj_ctx[CONJUGATE_OF], orig_ctx[schema.VIDEO_ID],
                                          message="conjugate shard out of step with its original shard")
        with tf.control_dependencies([check]):
            weight = tf.cast(conj_ctx[CONJUGATE_NUM_BOXES] > 0, tf.float32)
        return {"image": features["image"], "conjugate": conj_features["image"], "pair_weight": weight}, label

    pairs = tf.data.Dataset.from_tensor_slices((files, partners))
    pairs = pairs.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = pairs.interleave(_read_pair, cycle_length=min(len(files), 8), block_length=1,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if input_context is not None:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if c.shuffle_buffer and c.shuffle_buffer > 1:
        records = records.shuffle(c.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    records = tf.data.Dataset.zip((records.repeat(), tf.data.Dataset.random(seed=seed)))
    ds = records.map(decode_pair, num_parallel_calls=c.num_parallel_calls or None, deterministic=deterministic)
    ds = ds.batch(c.batch_size, drop_remainder=True)
    if c.prefetch:
        ds = ds.prefetch(c.prefetch)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return ds.with_options(options)


def _read_pair(original, conjugate):
    """The records of an original shard zipped with those of its conjugate shard."""
    return tf.data.Dataset.zip((tf.data.TFRecordDataset(original), tf.data.TFRecordDataset(conjugate)))
