"""Tests for kerasvid.metrics against brute force, scikit-learn and hand-computed values."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, top_k_accuracy_score

from kerasvid import metrics


def test_topk_accuracy_hand_and_sklearn():
    scores = np.array([[0.9, 0.1, 0.0], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    labels = np.array([0, 2, 1])
    assert metrics.topk_accuracy(labels, scores, 1) == pytest.approx(1 / 3)
    assert metrics.topk_accuracy(labels, scores, 2) == pytest.approx(2 / 3)
    assert metrics.topk_accuracy(labels, scores, 3) == 1.0
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 7))
    labels = rng.integers(0, 7, 50)
    for k in (1, 3, 5):
        want = top_k_accuracy_score(labels, scores, k=k, labels=np.arange(7))
        assert metrics.topk_accuracy(labels, scores, k) == pytest.approx(want)
    with pytest.raises(ValueError, match="k=8"):
        metrics.topk_accuracy(labels, scores, 8)
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        metrics.topk_accuracy(labels + 1, scores, 1)


def test_map_matches_sklearn_without_ties():
    rng = np.random.default_rng(1)
    gt = rng.random((40, 6)) < 0.3
    gt[:, 5] = False  # a class without positives is left out of the mean
    gt[np.arange(40), rng.integers(0, 5, 40)] = True  # every row has a label here
    scores = rng.normal(size=gt.shape)
    mean, per_class = metrics.mean_average_precision(gt.astype(int), scores, return_per_class=True)
    want = [average_precision_score(gt[:, c], scores[:, c]) for c in range(5)]
    np.testing.assert_allclose(per_class[:5], want, rtol=1e-12)
    assert np.isnan(per_class[5])
    assert mean == pytest.approx(np.mean(want))


def test_map_moves_rows_without_labels_to_the_bottom():
    gt = np.array([[1, 0], [0, 0], [0, 1], [1, 0]])
    scores = np.array([[0.6, 0.1], [0.99, 0.99], [0.2, 0.5], [0.3, 0.4]])
    # Row 1 has no label: ignored in both rankings. Class 0 ranks rows 0 (+), 3 (+), 2: AP 1.
    # Class 1 ranks rows 2 (+), 3, 0: AP 1.
    assert metrics.mean_average_precision(gt, scores) == pytest.approx(1.0)
    # Without the rule row 1 would be a top-ranked false positive: class 0 AP = (1/2 + 2/3) / 2.
    assert metrics.average_precision(gt[:, 0], scores[:, 0]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert np.isnan(metrics.mean_average_precision(np.zeros((2, 2)), np.ones((2, 2))))
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        metrics.mean_average_precision(np.zeros((2, 2)), np.ones((2, 3)))


def test_triplet_accuracies():
    d_pos = np.array([1.0, 2.0, 0.5, 3.0])
    d_neg = np.array([2.0, 1.0, 1.0, 1.0])  # correct: 0, 2
    w = np.array([0.5, 0.1, 2.0, 0.4])
    assert metrics.triplet_accuracy(d_pos, d_neg) == 0.5
    assert metrics.triplet_accuracy(d_pos, d_neg, w) == pytest.approx(2.5 / 3.0)
    assert metrics.topk_selected_accuracy(d_pos, d_neg, w, 25) == 1.0  # the top-1 triplet (index 2)
    assert metrics.topk_selected_accuracy(d_pos, d_neg, w, 50) == 1.0  # indices 2, 0
    assert metrics.topk_selected_accuracy(d_pos, d_neg, w, 75) == pytest.approx(2 / 3)  # 2, 0, 3
    assert metrics.topk_selected_accuracy(d_pos, d_neg, w, 1) == 1.0  # at least one triplet
    with pytest.raises(ValueError, match="percent=0"):
        metrics.topk_selected_accuracy(d_pos, d_neg, w, 0)
    with pytest.raises(ValueError, match="4, 4 and 3"):
        metrics.triplet_accuracy(d_pos, d_neg, w[:3])


def test_box_smooth_matches_brute_force():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(9, 13))
    got = metrics.box_smooth(a, 3)
    want = np.empty_like(a)
    for i in range(9):
        for j in range(13):
            want[i, j] = a[max(0, i - 3):i + 4, max(0, j - 3):j + 4].mean()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_array_equal(metrics.box_smooth(a, 0), a)


def test_alignment_error_on_synthetic_matrices():
    m, n = 30, 60  # first-person video at half the length in frames of the third-person one
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    aligned = np.abs(j - i * n / m) + 1.0
    # The arg-min of a perfectly aligned matrix is on the mapped diagonal: zero error; smoothing (which averages
    # fewer entries near the border) may move it by a frame.
    assert metrics.alignment_error(aligned, radius=0) == 0.0
    assert metrics.alignment_error(aligned) <= 1.0 / 6.0 + 1e-12
    # A single sharp minimum at (i=10, j=50): error |50/6 - (10/30)*60/6| = |8.333 - 3.333| = 5 s (no smoothing).
    spike = np.ones((m, n))
    spike[10, 50] = 0.0
    assert metrics.alignment_error(spike, radius=0) == pytest.approx(5.0)
    # A column of equal minima at j = 24 (4 s): the row is a random one of the ties, error |4 - i / 3|.
    band = np.ones((m, n))
    band[:, 24] = 0.0
    errors = {metrics.alignment_error(band, radius=0, rng=np.random.default_rng(s)) for s in range(6)}
    assert len(errors) > 1
    assert errors <= {abs(4.0 - row / 3) for row in range(m)}
    assert metrics.median_alignment_error([aligned, spike, aligned], radius=0) == 0.0
    with pytest.raises(ValueError, match="radius=-1"):
        metrics.alignment_error(aligned, radius=-1)


# ----- ties and non-finite scores never help (each assertion fails on the old "ties favour the label") --
def test_topk_ties_rank_the_label_below_and_constant_or_nan_models_score_zero():
    # Row 0: the label ties with class 1 at the top -> rank 2 (a miss at k=1, a hit at k=2).
    # Row 1: the label is alone at the top -> a hit. Row 2: a NaN anywhere in the row -> a miss at every k.
    scores = np.array([[0.4, 0.4, 0.2], [0.1, 0.7, 0.2], [np.nan, 0.5, 0.5]])
    labels = np.array([0, 1, 1])
    assert metrics.topk_accuracy(labels, scores, 1) == pytest.approx(1 / 3)
    assert metrics.topk_accuracy(labels, scores, 2) == pytest.approx(2 / 3)
    assert metrics.topk_accuracy(labels, scores, 3) == pytest.approx(2 / 3)
    labels = np.arange(10) % 4
    assert metrics.topk_accuracy(labels, np.full((10, 4), 0.25), 1) == 0.0  # was 1.0
    assert metrics.topk_accuracy(labels, np.full((10, 4), 0.25), 3) == 0.0  # 3 classes tie above every label
    assert metrics.topk_accuracy(labels, np.full((10, 4), np.nan), 1) == 0.0  # was 1.0
    assert metrics.topk_accuracy(labels, np.full((10, 4), np.inf), 4) == 0.0
    np.testing.assert_array_equal(metrics.nonfinite_rows(scores), [False, False, True])


def test_topk_multi_hot_ties_between_positives_are_a_hit_ties_with_a_negative_are_not():
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1], [0.2, 0.3, 0.9], [0.2, 0.3, 0.9]])
    multi_hot = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # Row 0: both top classes are positive. Row 1: the positive ties with a negative. Row 2: one negative above
    # (a top-2 hit). Row 3: no positive at all.
    assert metrics.topk_accuracy(multi_hot, scores, 1) == pytest.approx(1 / 4)
    assert metrics.topk_accuracy(multi_hot, scores, 2) == pytest.approx(3 / 4)


def test_topk_hits_in_a_graph_equals_the_numpy_metric():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(40, 5)), 1).astype(np.float32)  # many ties
    scores[3, 2] = np.nan
    labels = rng.integers(0, 5, 40)
    fn = tf.function(lambda p, s: metrics.topk_hits(p, s, 2))
    hits = fn(tf.one_hot(labels, 5) > 0, scores).numpy()
    # Brute force: a hit when the row is finite and fewer than 2 other classes score >= the label.
    want = [np.isfinite(s).all() and np.sum(np.delete(s, l) >= s[l]) < 2 for s, l in zip(scores, labels)]
    np.testing.assert_array_equal(hits, want)
    assert metrics.topk_accuracy(labels, scores, 2) == pytest.approx(np.mean(want))
    binary = metrics.binary_hits(np.array([[1, 0, 0]]), np.array([[np.nan, -1.0, np.inf]])).numpy()
    np.testing.assert_array_equal(binary, [[False, True, False]])  # NaN / inf logits are misses


def test_average_precision_ties_are_one_threshold_and_nan_is_never_retrieved():
    # Constant scores: one threshold holding everything, precision 2/4 at recall 1 -> AP 0.5 (chance), whatever
    # the input order (the old stable sort gave 1.0 with the positives first and 0.75 for [1, 0, 0, 1]).
    assert metrics.average_precision([1, 1, 0, 0], [1.0] * 4) == pytest.approx(0.5)
    assert metrics.average_precision([1, 0, 0, 1], [1.0] * 4) == pytest.approx(0.5)
    # Scores 0.9 (+), 0.5 (+, -) tied, 0.1 (-): thresholds give recall 1/2 at precision 1, then 1 at 2/3.
    assert metrics.average_precision([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics.average_precision([1, 0, 0, 1], [np.nan] * 4) == 0.0
    # A NaN positive is a miss: the other positive is found first -> (1/2) * 1.
    assert metrics.average_precision([1, 1, 0], [np.nan, 0.8, 0.2]) == pytest.approx(0.5)
    assert metrics.mean_average_precision(np.eye(3), np.full((3, 3), np.nan)) == 0.0
    rng = np.random.default_rng(4)
    gt = rng.random((60, 4)) < 0.4
    gt[np.arange(60), rng.integers(0, 4, 60)] = True
    scores = np.round(rng.random(gt.shape), 1)  # ~10 distinct values: many ties
    for c in range(4):
        assert metrics.average_precision(gt[:, c], scores[:, c]) == pytest.approx(
            average_precision_score(gt[:, c], scores[:, c]), rel=1e-12)


def test_triplet_metrics_count_ties_and_nonfinite_as_misses():
    d_pos = np.array([1.0, 1.0, np.nan, 0.5, 0.2])
    d_neg = np.array([2.0, 1.0, 1.0, np.inf, 0.9])  # correct: 0 and 4 (tie, NaN, inf are misses)
    w = np.array([1.0, 1.0, 1.0, 1.0, np.nan])
    assert metrics.triplet_accuracy(d_pos, d_neg) == pytest.approx(2 / 5)
    # Triplet 4's NaN weight makes it a miss, weighted by the largest finite weight (1): 1 / 5 (was NaN).
    assert metrics.triplet_accuracy(d_pos, d_neg, w) == pytest.approx(1 / 5)
    # Constant selector: the misses come first among equal weights, so a constant selector cannot pick the
    # correct triplets by their input order (the old stable order gave 1.0 here).
    d_pos, d_neg = np.array([1.0, 1.0, 3.0, 3.0]), np.array([2.0, 2.0, 1.0, 1.0])
    assert metrics.topk_selected_accuracy(d_pos, d_neg, np.ones(4), 50) == 0.0
    assert metrics.topk_selected_accuracy(d_pos, d_neg, np.ones(4), 100) == 0.5
    # A NaN weight ranks first, as a miss (the old order put it last and selected triplet 0, a hit).
    assert metrics.topk_selected_accuracy(d_pos, d_neg, np.array([2.0, 1.0, 0.5, np.nan]), 25) == 0.0
    assert metrics.topk_selected_accuracy(d_pos, d_neg, np.array([2.0, 1.0, 0.5, 0.1]), 50) == 1.0


def test_alignment_error_of_nonfinite_distances_is_a_miss():
    m, n = 6, 12
    # All NaN: the worst error the matrix allows, max |j/6 - (i/6) * 12/6| = 11/6 s at (0, 11) (was a crash).
    assert metrics.alignment_error(np.full((m, n), np.nan), radius=0) == pytest.approx(11 / 6)
    d = np.ones((m, n))
    d[2, 4] = 0.0
    d[0, 0] = np.nan  # never the arg-min
    assert metrics.alignment_error(d, radius=0) == pytest.approx(abs(4 / 6 - (2 / 6) * 12 / 6))
