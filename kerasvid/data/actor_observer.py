"""Charades / Charades-Ego label files, the actor-observer triplet sampling and its tf.data pipeline.

Layout (Charades-Ego, frames at 24 fps): third-person frames `<root>/<vid>/<vid>-000001.jpg, ...` and the paired
first-person frames `<root>/<vid>EGO/<vid>EGO-000001.jpg, ...`; label CSVs in the Charades format, one row per
video, with `actions` = `"c092 11.90 21.20;c147 0.00 12.60"` (class, start s, end s).

Triplet sampling Q (supp §2 and the reference code): every 4th third-person frame (6 fps) is an anchor `y`; the positive
first-person frame `x` is the linearly time-mapped frame `round(i * (m - 1) / (n - 1))` (`n` third-person, `m`
first-person frames), halves rounded up as the reference's Python 2 `round` does (Python 3 rounds them to even); the
negative `z` is a uniformly random first-person frame more than 10 s (240 frames) from the positive, strictly, as in
the reference; anchors without such a frame are skipped.

The sampling is pure python + numpy; `load_frame`, `triplet_dataset` and `frame_dataset` read the sampled JPEG
frames with tf.data (`kerasvid.tasks.actor_observer` feeds them to the actor-observer model).
"""
import csv
import dataclasses
import io
import os
import re

import numpy as np
import tensorflow as tf

from kerasvid.data import preprocess

EGO_SUFFIX = "EGO"
INPUT_KEYS = ("first_person", "third_person", "first_person_negative")  # the streams x, y, z of a triplet
_ACTION = re.compile(r"^c(\d+)$")


@dataclasses.dataclass(frozen=True)
class Action:
    """One labelled interval: class index (`c092` -> 92), start and end in seconds."""

    label: int
    start: float
    end: float


def parse_actions(text):
    """Parses a Charades `actions` field, `"c092 11.90 21.20;c147 0.00 12.60"`, into a list of `Action`s.

    Args:
        text: the field; empty (or None) for a video without actions.

    Returns:
        list of `Action`, in the order of the field.
    """
    actions = []
    for item in (text or "").split(";"):
        item = item.strip()
        if not item:
            continue
        parts = item.split()
        match = _ACTION.match(parts[0]) if parts else None
        if len(parts) != 3 or match is None:
            raise ValueError(f"An action must be 'c<class> <start> <end>', got {item!r} in {text!r}")
        start, end = float(parts[1]), float(parts[2])
        actions.append(Action(int(match.group(1)), start, end))
    return actions


def read_charades_csv(source):
    """Reads a Charades / Charades-Ego label CSV.

    Args:
        source: a path, or a file-like object with the CSV text.

    Returns:
        list of dicts, one per row: every column as a string, except `actions` (a list of `Action`) and `length`
        (float seconds, when the column exists and is not empty).
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, newline="", encoding="utf-8") as f:
            return read_charades_csv(io.StringIO(f.read()))
    reader = csv.DictReader(source)
    if reader.fieldnames is None or "id" not in reader.fieldnames:
        raise ValueError(f"A Charades CSV needs an 'id' column, got columns {reader.fieldnames}")
    rows = []
    for row in reader:
        row = dict(row)
        row["actions"] = parse_actions(row.get("actions"))
        if row.get("length"):
            row["length"] = float(row["length"])
        rows.append(row)
    return rows


def paired_videos(records):
    """`(third_person_id, first_person_id)` pairs of the records whose `<id>EGO` video is also in the records."""
    ids = {r["id"] for r in records}
    return [(r["id"], r["id"] + EGO_SUFFIX) for r in records
            if not r["id"].endswith(EGO_SUFFIX) and r["id"] + EGO_SUFFIX in ids]


def frame_path(root, video_id, frame):
    """Path of the 0-based `frame` of a video in the Charades frame layout (file numbers start at 1)."""
    return os.path.join(root, video_id, f"{video_id}-{frame + 1:06d}.jpg")


def count_frames(root, video_id):
    """Number of `<video_id>-NNNNNN.jpg` frames in `<root>/<video_id>/` (0 when the folder is missing)."""
    folder = os.path.join(root, video_id)
    if not os.path.isdir(folder):
        return 0
    pattern = re.compile(re.escape(video_id) + r"-\d{6}\.jpg$")
    return sum(1 for name in os.listdir(folder) if pattern.match(name))


def time_mapped_positives(anchors, num_third, num_first):
    """The first-person frames `round(i * (m - 1) / (n - 1))` of third-person frames `i`, halves rounded up.

    The reference (Python 2) rounds halves away from zero; Python 3's `round` and `np.round` round them to even
    (0.24% of the Charades-Ego anchors differ). Computed on integers, `floor((2 i (m - 1) + n - 1) / (2 (n - 1)))`,
    so that an exact half is never lost to floating point.

    Args:
        anchors: int array of third-person frame indices `i >= 0`.
        num_third: number of third-person frames `n`.
        num_first: number of first-person frames `m`.

    Returns:
        int64 array, the positives (all 0 when `n == 1`).
    """
    anchors = np.asarray(anchors, np.int64)
    if num_third <= 1:
        return np.zeros_like(anchors)
    return (2 * anchors * (num_first - 1) + (num_third - 1)) // (2 * (num_third - 1))


def sample_triplet_frames(num_third, num_first, rng, anchor_stride=4, min_gap=240):
    """Samples the triplets of one paired video as frame indices.

    Args:
        num_third: number of third-person frames `n`.
        num_first: number of first-person frames `m`.
        rng: `numpy.random.Generator` (the negatives are random).
        anchor_stride: every `anchor_stride`-th third-person frame is an anchor (4: 6 fps at 24 fps).
        min_gap: the negative is MORE than `min_gap` frames from the positive (240 = 10 s at 24 fps), strictly, as
            in the reference: a frame exactly `min_gap` away is not a negative.

    Returns:
        int array `[K, 3]` of `(third, first_positive, first_negative)` frame indices (0-based); anchors without a
        negative far enough from their positive are skipped.
    """
    for what, v in (("num_third", num_third), ("num_first", num_first), ("anchor_stride", anchor_stride)):
        if int(v) != v or v < 1:
            raise ValueError(f"`{what}` must be a positive int, got {what}={v!r}")
    if int(min_gap) != min_gap or min_gap < 0:
        raise ValueError(f"`min_gap` must be an int >= 0 (negatives are more than `min_gap` frames away), got "
                         f"min_gap={min_gap!r}")
    anchors = np.arange(0, num_third, anchor_stride)
    positives = time_mapped_positives(anchors, num_third, num_first)
    triplets = []
    for third, pos in zip(anchors, positives):
        # Negatives: frames [0, pos - gap - 1] and [pos + gap + 1, m - 1] (|neg - pos| > gap).
        low = max(0, pos - min_gap)  # first frame that is too close
        high = min(num_first, pos + min_gap + 1)  # one past the last frame that is too close
        num_valid = low + (num_first - high)
        if num_valid <= 0:
            continue
        k = int(rng.integers(num_valid))
        neg = k if k < low else high + (k - low)
        triplets.append((third, pos, neg))
    return np.array(triplets, dtype=np.int64).reshape(-1, 3)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training sample of the actor-observer task.

    Attributes:
        third_person: path of the third-person frame `y`.
        first_person: path of the first-person frame `x` (the same as `third_person` for classification samples).
        first_person_negative: path of the negative first-person frame `z` (idem).
        video_index: index of the paired video (the VideoSoftmax key); `num_videos` for classification samples.
        label: -1 for a triplet, else the class of the third-person frame (the classification-mixed setup).
    """

    third_person: str
    first_person: str
    first_person_negative: str
    video_index: int
    label: int = -1

    @property
    def is_triplet(self):
        return self.label < 0


def build_triplets(pairs, root, frame_counts, seed=0, anchor_stride=4, min_gap=240):
    """Triplet samples of every paired video (Charades-Ego layout).

    Args:
        pairs: `(third_person_id, first_person_id)` sequence (e.g. `paired_videos(records)`); the position of a
            pair is its `video_index`.
        root: the frame root.
        frame_counts: dict video id -> number of frames (e.g. from `count_frames`); pairs with a missing or empty
            video are skipped (their index stays reserved).
        seed: seed of the negatives.
        anchor_stride, min_gap: see `sample_triplet_frames`.

    Returns:
        list of `Sample`, video by video.
    """
    rng = np.random.default_rng(seed)
    samples = []
    for index, (third_id, first_id) in enumerate(pairs):
        n, m = frame_counts.get(third_id, 0), frame_counts.get(first_id, 0)
        if n < 1 or m < 1:
            continue
        for third, pos, neg in sample_triplet_frames(n, m, rng, anchor_stride, min_gap):
            samples.append(Sample(frame_path(root, third_id, third), frame_path(root, first_id, pos),
                                  frame_path(root, first_id, neg), index))
    return samples


def build_classification_samples(records, root, frame_counts, num_videos, fps=24.0, frame_stride=4):
    """Third-person frames with an action label, `(y, y, y)` with a class (the classification-mixed setup).

    As the reference's Charades frame loader: every `frame_stride`-th frame of the video (frames 0, 4, 8, ... at
    24 fps, i.e. 6 fps, the last frame excluded) whose time `frame / fps` lies strictly inside an action interval is
    one sample of that action (a frame inside two intervals gives two samples).

    Args:
        records: Charades rows (`read_charades_csv`).
        root: the frame root.
        frame_counts: dict video id -> number of frames; videos without frames are skipped.
        num_videos: the dummy `video_index` given to these samples (one past the paired videos).
        fps: frame rate of the frames.
        frame_stride: the frame grid step (4: 6 fps at 24 fps).

    Returns:
        list of `Sample` with `label >= 0`, video by video, action by action, in frame order.
    """
    if isinstance(frame_stride, bool) or not isinstance(frame_stride, int) or frame_stride < 1:
        raise ValueError(f"`frame_stride` must be an int >= 1, got frame_stride={frame_stride!r}")
    samples = []
    for record in records:
        n = frame_counts.get(record["id"], 0)
        frames = np.arange(0, n - 1, frame_stride)
        times = frames / float(fps)
        for action in record["actions"]:
            for frame in frames[(times > action.start) & (times < action.end)]:
                path = frame_path(root, record["id"], int(frame))
                samples.append(Sample(path, path, path, num_videos, action.label))
    return samples


def mix_samples(triplets, classification, triplet_repeats=6, seed=0):
    """The classification-mixed training set: classification samples plus `triplet_repeats` copies of the
    triplets (the authors use 6), shuffled with `seed`."""
    if triplet_repeats < 0:
        raise ValueError(f"`triplet_repeats` must be >= 0, got triplet_repeats={triplet_repeats!r}")
    samples = list(classification) + list(triplets) * triplet_repeats
    order = np.random.default_rng(seed).permutation(len(samples))
    return [samples[i] for i in order]


def load_frame(path, seed, training, image_size, normalization, crop_scale=(0.8, 1.0), color_jitter=0.0):
    """One JPEG frame as the actor-observer model's input `[1, H, W, 3]` (float32, normalised).

    Training: a random resized crop (area `crop_scale`, aspect ratio in [3/4, 4/3]) resized to `image_size`, a
    random horizontal flip and, with `color_jitter` s > 0, brightness, contrast and saturation factors from
    U[1 - s, 1 + s] (no hue change, as torchvision's `ColorJitter(s, s, s)`), all drawn from `seed`. Evaluation:
    short side resized and the centre crop.

    Args:
        path: string scalar tensor, the JPEG file.
        seed: int64 `[2]` stateless seed (used in training only).
        training: training augmentation or the evaluation crop.
        image_size: `(H, W)` of the output.
        normalization: preset of `kerasvid.data.preprocess.normalize`.
        crop_scale: area range of the training crop.
        color_jitter: strength of the training colour jitter (0: none).

    Returns:
        float32 `[1, H, W, 3]`.
    """
    frame = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)[None]  # [1, H, W, 3]
    if training:
        shape = tf.shape(frame)
        window = preprocess.random_resized_crop_window(shape[1], shape[2], seed, scale=tuple(crop_scale),
                                                       aspect_ratio=(3 / 4, 4 / 3))
        frame = preprocess.crop_window_and_resize(frame, window, image_size)
        flip = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 7)) < 0.5
        frame = tf.cond(flip, lambda: frame[:, :, ::-1], lambda: frame)
        if color_jitter:
            frame = preprocess.color_jitter(frame, color_jitter, tf.random.experimental.stateless_fold_in(seed, 11),
                                            blend=1.0, hue=0.0)
    else:
        frame = preprocess.resize_and_center_crop(frame, image_size)
    return preprocess.normalize(frame, normalization)


def triplet_dataset(samples, training, batch_size, image_size, normalization, crop_scale=(0.8, 1.0), seed=0,
                    deterministic=False, input_context=None, classification_crop_scale=None,
                    classification_color_jitter=0.0):
    """Batches of `Sample`s: `({"first_person", "third_person", "first_person_negative": [B, 1, H, W, 3],
    "video_index": int32 [B]}, labels int32 [B])` (labels -1 for triplets, the class for classification samples).

    Training: sharded by `input_context`, shuffled with `seed` and repeated forever; each sample's three frames get
    independent seeds from `(seed, position)`, so the augmentation is reproducible. The classification samples
    (label >= 0) are augmented as the reference's Charades loader does, with their own crop area and colour jitter.
    Evaluation: the samples once, in order, the last batch kept.

    Args:
        samples: list of `Sample` (e.g. `build_triplets`, `mix_samples`).
        training: training augmentation, shuffling and repetition (see `load_frame`).
        batch_size: samples per batch.
        image_size, normalization, crop_scale: see `load_frame`.
        seed: seed of the shuffle and the augmentation.
        deterministic: fixed element order of the parallel map.
        input_context: optional `tf.distribute.InputContext` (training only).
        classification_crop_scale: training crop area range of the classification samples (None: `crop_scale`;
            the reference: (0.08, 1)).
        classification_color_jitter: training colour jitter of the classification samples (the reference: 0.4).

    Returns:
        `tf.data.Dataset`.
    """
    class_scale = tuple(crop_scale if classification_crop_scale is None else classification_crop_scale)
    columns = {key: [getattr(s, key) for s in samples] for key in INPUT_KEYS}
    columns["video_index"] = np.array([s.video_index for s in samples], np.int32)
    columns["label"] = np.array([s.label for s in samples], np.int32)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if input_context is not None and training:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate()

    def load(position, row):
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), position]), 3)
        def frames(scale, jitter):
            return {key: load_frame(row[key], seeds[i], training, image_size, normalization, scale, jitter)
                    for i, key in enumerate(INPUT_KEYS)}

        if training and (class_scale != tuple(crop_scale) or classification_color_jitter):
            inputs = tf.cond(row["label"] >= 0, lambda: frames(class_scale, classification_color_jitter),
                             lambda: frames(crop_scale, 0.0))
        else:
            inputs = frames(crop_scale, 0.0)
        inputs["video_index"] = row["video_index"]
        return inputs, row["label"]

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or None)
    return ds.batch(batch_size, drop_remainder=training).prefetch(2)


def frame_dataset(root, video_id, stride, batch_size, image_size, normalization):
    """Every `stride`-th frame of a video in evaluation form (`load_frame(training=False)`), batched:
    float32 `[B, 1, H, W, 3]` batches, in frame order (the alignment evaluation embeds these)."""
    paths = [frame_path(root, video_id, i) for i in range(0, count_frames(root, video_id), stride)]
    seed = tf.constant([0, 0], tf.int64)  # unused in evaluation
    return tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: load_frame(p, seed, False, image_size, normalization)).batch(batch_size)
