"""Evaluation metrics in numpy: top-k accuracy, Charades mAP, actor-observer triplet accuracy and alignment error.

They work on arrays gathered after a model has run (`model.predict`, or the evaluation loop); `topk_hits` and
`binary_hits` are the TensorFlow rules behind them, which the training loop's accuracy uses too. No metric
rewards a tie or a non-finite score: a constant or NaN model scores 0 (or chance), never 1.
"""
import math

import numpy as np
import tensorflow as tf


def _as_2d_scores(scores, what="scores"):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"`{what}` must be a 2-D array [num_samples, num_classes], got shape {scores.shape}")
    return scores


def nonfinite_rows(scores):
    """Bool `[N]`: rows of `scores` (`[N, ...]`) with a NaN or infinite value (predictions the metrics count as
    misses)."""
    scores = np.asarray(scores, dtype=np.float64)
    return ~np.isfinite(scores.reshape(scores.shape[0], -1)).all(axis=1)


def topk_hits(positives, scores, k=1):
    """Per-sample top-k hits, in TensorFlow (graph or eager; the numpy metrics below call it too).

    A sample is a hit when fewer than `k` *negative* classes score at least as high as its best positive class:
    a class tied with the true class ranks above it, so a constant model scores 0, not 1. A row with any
    non-finite score (NaN, inf) is a miss, and so is a row without a positive class.

    Args:
        positives: bool (or 0/1) `[N, num_classes]`: the one-hot or multi-hot labels.
        scores: float `[N, num_classes]` (logits or probabilities).
        k: int >= 1.

    Returns:
        bool tensor `[N]`.
    """
    scores = tf.convert_to_tensor(scores)
    positives = tf.cast(positives, tf.bool)
    best_positive = tf.reduce_max(tf.where(positives, scores, tf.cast(-np.inf, scores.dtype)), axis=-1)
    rank = tf.reduce_sum(tf.cast(tf.logical_and(tf.logical_not(positives), scores >= best_positive[:, None]),
                                 tf.int32), axis=-1)
    finite = tf.reduce_all(tf.math.is_finite(scores), axis=-1)
    return tf.logical_and(tf.logical_and(finite, tf.reduce_any(positives, axis=-1)), rank < k)


def binary_hits(multi_hot, logits):
    """Elementwise hits of multi-label predictions `logits > 0` (TensorFlow); non-finite logits are misses.

    Args:
        multi_hot: 0/1 `[N, num_classes]`.
        logits: float `[N, num_classes]`.

    Returns:
        bool tensor `[N, num_classes]`.
    """
    logits = tf.convert_to_tensor(logits)
    predicted = logits > 0
    return tf.logical_and(tf.math.is_finite(logits), tf.equal(predicted, tf.cast(multi_hot, tf.bool)))


def topk_accuracy(labels, scores, k=1):
    """Fraction of samples whose label is among the `k` highest scores (`topk_hits`: ties rank the label below
    the classes tied with it; non-finite rows are misses).

    Args:
        labels: int array `[N]` in `[0, num_classes)`, or a multi-hot array `[N, num_classes]` (a hit when a
            positive class is in the top k).
        scores: float array `[N, num_classes]` (logits or probabilities).
        k: int in `[1, num_classes]`.

    Returns:
        float in [0, 1] (NaN for no sample).

    Example:

    >>> topk_accuracy([0, 2], [[0.9, 0.1, 0.0], [0.5, 0.3, 0.2]], k=2)
    0.5
    >>> topk_accuracy([0, 1], [[0.5, 0.5], [float("nan"), 1.0]], k=1)  # a tie and a NaN: two misses
    0.0
    """
    scores = _as_2d_scores(scores)
    labels = np.asarray(labels)
    n, num_classes = scores.shape
    if not 1 <= k <= num_classes:
        raise ValueError(f"`k` must be in [1, {num_classes}], got k={k}")
    if labels.ndim == 2:
        if labels.shape != scores.shape:
            raise ValueError(f"multi-hot `labels` shape {labels.shape} does not match `scores` shape {scores.shape}")
        positives = labels.astype(bool)
    else:
        labels = labels.reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"`labels` has {labels.shape[0]} entries but `scores` has {n} rows")
        if n and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"`labels` must be in [0, {num_classes}), got values in [{labels.min()}, "
                             f"{labels.max()}]")
        positives = np.zeros(scores.shape, bool)
        positives[np.arange(n), labels.astype(np.int64)] = True
    if n == 0:
        return float("nan")
    return float(np.mean(topk_hits(positives, scores, k).numpy()))


def top1_predictions(labels, scores):
    """The predicted class of each sample, with ties resolved against the label (as `topk_hits` ranks them):
    when the label ties with other classes at the top, the prediction is the first of those others. So
    `predictions == labels` exactly where top-1 is a hit (for finite rows); a confusion matrix built from it
    agrees with `topk_accuracy`.

    Args:
        labels: int array `[N]`.
        scores: float array `[N, num_classes]` (finite rows).

    Returns:
        int array `[N]`.
    """
    scores = _as_2d_scores(scores)
    labels = np.asarray(labels, np.int64).reshape(-1)
    top = scores == scores.max(axis=1, keepdims=True)
    others = top.copy()
    others[np.arange(len(labels)), labels] = False
    return np.where(others.any(axis=1), others.argmax(axis=1), labels)


def average_precision(relevant, scores):
    """Average precision of one ranking: `sum_n (R_n - R_{n-1}) P_n` over the distinct score thresholds.

    Tied scores form one threshold (as in scikit-learn's `average_precision_score`), so the result does not
    depend on the input order and a constant score gives the fraction of relevant items (chance), not 1. Items
    with a non-finite score are never retrieved: a relevant one counts as a miss (an all-NaN ranking scores 0).

    Args:
        relevant: bool array `[N]`.
        scores: float array `[N]`.

    Returns:
        float, NaN when there is no relevant item.
    """
    relevant = np.asarray(relevant, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    num_relevant = int(relevant.sum())
    if not num_relevant:
        return float("nan")
    finite = np.isfinite(scores)
    scores, hits = scores[finite], relevant[finite]
    if not hits.any():
        return 0.0
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]  # the end of each group of equal scores
    true_pos = np.cumsum(hits)[last_of_tie]
    retrieved = np.flatnonzero(last_of_tie) + 1
    recall_gain = np.diff(np.r_[0, true_pos]) / num_relevant
    return float(np.sum(recall_gain * true_pos / retrieved))


def mean_average_precision(multi_hot, scores, return_per_class=False):
    """Charades-style mean average precision over classes (`average_precision` per class: ties are one
    threshold, non-finite scores are never retrieved).

    As the Charades evaluation does, rows (videos) without any positive label are moved to the bottom of every
    ranking (their scores are set to -inf), and classes without any positive are left out of the mean (their AP
    is NaN).

    Args:
        multi_hot: array `[N, num_classes]` of 0/1 (or bool) labels.
        scores: float array `[N, num_classes]`.
        return_per_class: also return the per-class APs.

    Returns:
        float mAP (NaN when no class has a positive), or `(mAP, per_class_ap)` with `return_per_class=True`.

    Example:

    >>> mean_average_precision([[1, 0], [0, 1], [1, 0]], [[0.9, 0.2], [0.8, 0.7], [0.1, 0.3]])
    0.916...
    """
    scores = _as_2d_scores(scores).copy()
    gt = np.asarray(multi_hot).astype(bool)
    if gt.shape != scores.shape:
        raise ValueError(f"`multi_hot` shape {gt.shape} does not match `scores` shape {scores.shape}")
    scores[~gt.any(axis=1)] = -np.inf
    per_class = np.array([average_precision(gt[:, c], scores[:, c]) for c in range(gt.shape[1])])
    valid = ~np.isnan(per_class)
    mean = float(np.mean(per_class[valid])) if valid.any() else float("nan")
    return (mean, per_class) if return_per_class else mean


def _triplet_arrays(d_pos, d_neg, weights):
    d_pos = np.asarray(d_pos, dtype=np.float64).reshape(-1)
    d_neg = np.asarray(d_neg, dtype=np.float64).reshape(-1)
    weights = np.ones_like(d_pos) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if not d_pos.shape == d_neg.shape == weights.shape:
        raise ValueError(f"`d_pos`, `d_neg` and `weights` must have the same length, got {d_pos.shape[0]}, "
                         f"{d_neg.shape[0]} and {weights.shape[0]}")
    return d_pos, d_neg, weights


def triplet_correct(d_pos, d_neg, weights=None):
    """Bool `[N]`: triplets ranked correctly, `d_pos < d_neg` with finite distances and weight (a tie, a NaN or
    an infinite value is a miss)."""
    d_pos, d_neg, weights = _triplet_arrays(d_pos, d_neg, weights)
    finite = np.isfinite(d_pos) & np.isfinite(d_neg) & np.isfinite(weights)
    return finite & (d_pos < d_neg)


def triplet_accuracy(d_pos, d_neg, weights=None):
    """Weighted fraction of triplets ranked correctly, `sum w [d_pos < d_neg] / sum w`.

    Ties (`d_pos == d_neg`) and non-finite distances are misses. A triplet whose weight is not finite is a miss
    weighted by the largest finite weight (1 when none is finite), so a NaN selector cannot hide it.

    Args:
        d_pos: distances first-person -> third-person `[N]`.
        d_neg: distances third-person -> negative first-person `[N]`.
        weights: optional selector weights `[N]` (>= 0); uniform when None.

    Returns:
        float in [0, 1] (NaN when the weights sum to 0).
    """
    d_pos, d_neg, weights = _triplet_arrays(d_pos, d_neg, weights)
    correct = triplet_correct(d_pos, d_neg, weights)
    finite_weights = weights[np.isfinite(weights)]
    weights = np.where(np.isfinite(weights), weights, finite_weights.max() if finite_weights.size else 1.0)
    total = weights.sum()
    return float(np.sum(weights * correct) / total) if total > 0 else float("nan")


def topk_selected_accuracy(d_pos, d_neg, weights, percent):
    """Triplet accuracy on the `percent`% of triplets with the highest selector weight (at least one triplet).

    The actor-observer evaluation reports it for percent in {1, 2, 5, 10, 50}: a good selector picks triplets that
    the embedding ranks correctly. Ties never help: among equal weights the misses are selected first (a
    constant selector gains nothing), and a non-finite weight ranks first as a miss.

    Args:
        d_pos: `[N]` positive distances.
        d_neg: `[N]` negative distances.
        weights: `[N]` selector weights.
        percent: float in (0, 100].

    Returns:
        float in [0, 1]: unweighted accuracy (`triplet_correct`) over the `max(1, ceil(N * percent / 100))`
        highest-weight triplets.
    """
    d_pos, d_neg, weights = _triplet_arrays(d_pos, d_neg, weights)
    if not 0 < percent <= 100:
        raise ValueError(f"`percent` must be in (0, 100], got percent={percent}")
    count = max(1, math.ceil(d_pos.size * percent / 100.0))
    correct = triplet_correct(d_pos, d_neg, weights)
    key = np.where(np.isfinite(weights), weights, np.inf)
    chosen = np.lexsort((correct, -key))[:count]  # by decreasing weight, then misses (False) first
    return float(np.mean(correct[chosen]))


def box_smooth(matrix, radius):
    """Mean over the `(2 radius + 1)^2` window around each entry, counting only the entries inside the matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if radius == 0:
        return matrix.copy()

    def window_sum(a):
        padded = np.pad(a, radius)
        c = np.pad(np.cumsum(np.cumsum(padded, axis=0), axis=1), ((1, 0), (1, 0)))
        size = 2 * radius + 1
        return c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]

    return window_sum(matrix) / window_sum(np.ones_like(matrix))


def alignment_error(distances, fps=6.0, radius=3, rng=None):
    """Alignment error (seconds) of one paired video from its first/third-person distance matrix.

    Actor-observer evaluation (Sigurdsson et al. 2018): box-smooth `M[i, j] = ||f(ego_i) - f(third_j)||` with a
    `(2 radius + 1)^2` window, take the arg-min `(i, j)` (a random one among ties), and compare the third-person
    time `j / fps` with the time linearly mapped from the first-person frame, `(i / m) * n / fps`, for `m` first-
    and `n` third-person frames.

    Args:
        distances: float array `[m, n]`, rows first-person frames, columns third-person frames (both sampled at
            `fps` frames per second).
        fps: sampling rate of the frames (6 in the paper: every 4th frame at 24 fps).
        radius: smoothing radius (3); 0 disables smoothing.
        rng: `numpy.random.Generator` for tie-breaking (a fixed seed-0 generator when None).

    Returns:
        float, `|j / fps - (i / m) * n / fps|` seconds. Non-finite distances are never the arg-min; a matrix
        without a finite entry gives the largest error of any `(i, j)` (a miss, not a lucky guess).
    """
    distances = _as_2d_scores(distances, "distances")
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"`radius` must be a non-negative int, got radius={radius!r}")
    if fps <= 0:
        raise ValueError(f"`fps` must be positive, got fps={fps}")
    m, n = distances.shape
    if m == 0 or n == 0:
        raise ValueError(f"`distances` must be non-empty, got shape {distances.shape}")
    rng = np.random.default_rng(0) if rng is None else rng
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    errors = np.abs(j / fps - (i / m) * n / fps)
    finite = np.isfinite(distances)
    if not finite.any():  # a broken embedding is a miss: the worst error this matrix allows
        return float(errors.max())
    # Non-finite distances can never be the match: they become the largest finite distance.
    smoothed = box_smooth(np.where(finite, distances, distances[finite].max()), radius)
    candidates = np.argwhere(smoothed == smoothed.min())
    i, j = candidates[rng.integers(len(candidates))]
    return float(errors[i, j])


def median_alignment_error(distance_matrices, fps=6.0, radius=3, rng=None):
    """Median over videos of `alignment_error` (the number the paper reports, in seconds)."""
    rng = np.random.default_rng(0) if rng is None else rng
    errors = [alignment_error(d, fps, radius, rng) for d in distance_matrices]
    if not errors:
        raise ValueError("`distance_matrices` is empty")
    return float(np.median(errors))
