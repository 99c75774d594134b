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
