"""Evaluation metrics in numpy: top-k accuracy, Charades mAP, actor-observer triplet accuracy and alignment error.

They work on arrays gathered after a model has run (`model.predict`, or the evaluation loop), not on graph tensors.
"""
import math

import numpy as np


def _as_2d_scores(scores, what="scores"):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"`{what}` must be a 2-D array [num_samples, num_classes], got shape {scores.shape}")
    return scores


def topk_accuracy(labels, scores, k=1):
    """Fraction of samples whose label is among the `k` highest scores.

    A label counts as in the top k when fewer than `k` classes score strictly higher (ties favour the label).

    Args:
        labels: int array `[N]` in `[0, num_classes)`.
        scores: float array `[N, num_classes]` (logits or probabilities).
        k: int in `[1, num_classes]`.

    Returns:
        float in [0, 1].

    Example:

    >>> topk_accuracy([0, 2], [[0.9, 0.1, 0.0], [0.5, 0.3, 0.2]], k=2)
    0.5
    """
    scores = _as_2d_scores(scores)
    labels = np.asarray(labels).reshape(-1)
    n, num_classes = scores.shape
    if labels.shape[0] != n:
        raise ValueError(f"`labels` has {labels.shape[0]} entries but `scores` has {n} rows")
    if not 1 <= k <= num_classes:
        raise ValueError(f"`k` must be in [1, {num_classes}], got k={k}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"`labels` must be in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]")
    if n == 0:
        return float("nan")
    label_scores = scores[np.arange(n), labels]
    higher = np.sum(scores > label_scores[:, None], axis=1)
    return float(np.mean(higher < k))


def average_precision(relevant, scores):
    """Average precision of one ranking: the mean of the precision at the rank of each relevant item.

    Items are ranked by decreasing score; equal scores keep their input order (a stable sort).

    Args:
        relevant: bool array `[N]`.
        scores: float array `[N]`.

    Returns:
        float, NaN when there is no relevant item.
    """
    relevant = np.asarray(relevant, dtype=bool).reshape(-1)
    order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
    hits = relevant[order]
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(np.sum(precision[hits]) / hits.sum())


def mean_average_precision(multi_hot, scores, return_per_class=False):
    """Charades-style mean average precision over classes.

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


def triplet_accuracy(d_pos, d_neg, weights=None):
    """Weighted fraction of triplets ranked correctly, `sum w [d_pos < d_neg] / sum w`.

    Args:
        d_pos: distances first-person -> third-person `[N]`.
        d_neg: distances third-person -> negative first-person `[N]`.
        weights: optional selector weights `[N]` (>= 0); uniform when None.

    Returns:
        float in [0, 1] (NaN when the weights sum to 0).
    """
    d_pos, d_neg, weights = _triplet_arrays(d_pos, d_neg, weights)
    total = weights.sum()
    return float(np.sum(weights * (d_pos < d_neg)) / total) if total > 0 else float("nan")


def topk_selected_accuracy(d_pos, d_neg, weights, percent):
    """Triplet accuracy on the `percent`% of triplets with the highest selector weight (at least one triplet).

    The actor-observer evaluation reports it for percent in {1, 2, 5, 10, 50}: a good selector picks triplets that
    the embedding ranks correctly.

    Args:
        d_pos: `[N]` positive distances.
        d_neg: `[N]` negative distances.
        weights: `[N]` selector weights.
        percent: float in (0, 100].

    Returns:
        float in [0, 1]: unweighted accuracy over the `max(1, ceil(N * percent / 100))` highest-weight triplets
        (ties in weight keep input order).
    """
    d_pos, d_neg, weights = _triplet_arrays(d_pos, d_neg, weights)
    if not 0 < percent <= 100:
        raise ValueError(f"`percent` must be in (0, 100], got percent={percent}")
    count = max(1, math.ceil(d_pos.size * percent / 100.0))
    chosen = np.argsort(-weights, kind="stable")[:count]
    return float(np.mean(d_pos[chosen] < d_neg[chosen]))


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

    Actor-observer evaluation (papers.md §3.5): box-smooth `M[i, j] = ||f(ego_i) - f(third_j)||` with a
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
        float, `|j / fps - (i / m) * n / fps|` seconds.
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
    smoothed = box_smooth(distances, radius)
    candidates = np.argwhere(smoothed == smoothed.min())
    i, j = candidates[rng.integers(len(candidates))]
    return float(abs(j / fps - (i / m) * n / fps))


def median_alignment_error(distance_matrices, fps=6.0, radius=3, rng=None):
    """Median over videos of `alignment_error` (the number the paper reports, in seconds)."""
    rng = np.random.default_rng(0) if rng is None else rng
    errors = [alignment_error(d, fps, radius, rng) for d in distance_matrices]
    if not errors:
        raise ValueError("`distance_matrices` is empty")
    return float(np.median(errors))
