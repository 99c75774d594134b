"""Temporal samplers: choose frame indices first, so that only the chosen frames are decoded.

All functions but `video_clip_indices` (host-side numpy, for the CLIs) are graph-safe, take the video's frame
count `n` as a scalar tensor and return int32 indices `[num_clips, num_frames]` into the video. Videos shorter than a clip are looped (index mod n), as in Model Garden.
"""
import numpy as np
import tensorflow as tf

SAMPLERS = ("dense", "tsn")


def _check(num_frames, stride, num_clips):
    if int(num_frames) < 1:
        raise ValueError(f"`num_frames` must be >= 1, got {num_frames}.")
    if int(stride) < 1:
        raise ValueError(f"`stride` must be >= 1, got {stride}.")
    if int(num_clips) < 1:
        raise ValueError(f"`num_clips` must be >= 1, got {num_clips}.")


def dense_clip_offsets(n, num_frames, stride, training, num_clips=1, seed=None):
    """Start frames of dense clips (`num_frames` frames `stride` apart, span (num_frames - 1) * stride + 1).

    Training: one uniformly random offset in [0, max(n - span, 0)] per clip. Eval: 1 clip -> centred; several ->
    evenly spaced from the first to the last possible start (Model Garden's `sample_linspace_sequence`).

    Args:
        n: int scalar tensor, number of frames in the video (>= 1).
        num_frames, stride, num_clips: ints.
        training: bool (Python).
        seed: stateless seed `[2]` (training only).

    Returns:
        int32 `[num_clips]`.
    """
    _check(num_frames, stride, num_clips)
    n = tf.cast(n, tf.int32)
    slack = tf.maximum(n - ((num_frames - 1) * stride + 1), 0)
    if training:
        return tf.random.stateless_uniform([num_clips], seed, 0, slack + 1, dtype=tf.int32)
    if num_clips == 1:
        return tf.reshape(slack // 2, [1])
    return tf.cast(tf.round(tf.linspace(0.0, tf.cast(slack, tf.float32), num_clips)), tf.int32)


def dense_clip_indices(n, num_frames, stride=1, training=False, num_clips=1, seed=None):
    """Frame indices of dense clips, looped for short videos.

    Returns:
        int32 `[num_clips, num_frames]`: offset + arange(num_frames) * stride, mod n.

    Example:
    >>> dense_clip_indices(tf.constant(10), 4, stride=2)  # centred: [[1, 3, 5, 7]]
    """
    offsets = dense_clip_offsets(n, num_frames, stride, training, num_clips, seed)
    idx = offsets[:, None] + tf.range(num_frames, dtype=tf.int32)[None, :] * stride
    return tf.math.floormod(idx, tf.maximum(tf.cast(n, tf.int32), 1))


def segment_indices(n, num_frames, training=False, num_clips=1, seed=None):
    """TSN segment sampling: split the video into `num_frames` equal segments and take one frame from each.

    Training: a uniformly random frame in each segment. Eval: clip c takes the frame at fraction
    (c + 0.5) / num_clips of each segment (1 clip -> segment middles). Videos with fewer frames than segments
    repeat frames (indices floor(segment position)).

    Returns:
        int32 `[num_clips, num_frames]`.

    Example:
    >>> segment_indices(tf.constant(16), 4)  # [[2, 6, 10, 14]]
    """
    _check(num_frames, 1, num_clips)
    nf = tf.cast(n, tf.float32)
    seg = nf / num_frames
    starts = tf.range(num_frames, dtype=tf.float32) * seg
    if training:
        frac = tf.random.stateless_uniform([num_clips, num_frames], seed, 0.0, 1.0)
    else:
        frac = tf.broadcast_to(((tf.range(num_clips, dtype=tf.float32) + 0.5) / num_clips)[:, None],
                               [num_clips, num_frames])
    idx = tf.cast(tf.floor(starts[None, :] + frac * seg), tf.int32)
    return tf.clip_by_value(idx, 0, tf.maximum(tf.cast(n, tf.int32) - 1, 0))


def sample_indices(sampler, n, num_frames, stride=1, training=False, num_clips=1, seed=None):
    """Dispatches to `dense_clip_indices` ("dense") or `segment_indices` ("tsn")."""
    if sampler == "dense":
        return dense_clip_indices(n, num_frames, stride, training, num_clips, seed)
    if sampler == "tsn":
        return segment_indices(n, num_frames, training, num_clips, seed)
    raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")


def video_clip_indices(num_video_frames, num_frames, stride=1, num_clips=1, sampler="dense"):
    """Frame indices `[N, T]` (numpy, host-side) of the clips of a video of `num_video_frames` frames, for tools that
    decode a video file themselves (`kerasvid predict`, `kerasvid extract`).

    `num_clips >= 1`: the evaluation clips of `kerasvid.data.samplers.sample_indices` (centred, or evenly spaced).
    `num_clips == 0`: consecutive non-overlapping dense clips from frame 0 (`T * stride` apart) covering the video;
    a video shorter than one clip gives one looped clip.
    """
    if num_clips > 0:
        return sample_indices(sampler, int(num_video_frames), num_frames, stride, False, num_clips).numpy()
    if sampler != "dense":
        raise ValueError(f"--num_clips=0 (clips covering the video) needs --sampler=dense, got {sampler!r}.")
    span, step = (num_frames - 1) * stride + 1, num_frames * stride
    count = max(1, (num_video_frames - span) // step + 1)
    idx = np.arange(count)[:, None] * step + np.arange(num_frames)[None, :] * stride
    return (idx % num_video_frames).astype(np.int32)
