"""cp_knn against a brute-force numpy reference (kerasvid.ops.knn)."""
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.ops import knn as knn_module
from kerasvid.ops.knn import _group_size, _top_k_indices, cp_knn, default_chunk_size
from tests.helpers import all_graph_shapes


def brute_force_knn(points, num_frames, k):
    """Loops over every query: full squared distances in float64, own frame removed, stable sort by (d, j)."""
    batch, n, _ = points.shape
    per_frame = n // num_frames
    out = np.zeros((batch, n, k), np.int64)
    pts = points.astype(np.float64)
    for b in range(batch):
        for i in range(n):
            d = np.sum((pts[b] - pts[b, i]) ** 2, axis=1)
            cand = np.array([j for j in range(n) if j // per_frame != i // per_frame])
            order = np.lexsort((cand, d[cand]))  # primary key distance, ties -> lower index
            out[b, i] = cand[order[:k]]
    return out


def squared_distances(points):
    pts = points.astype(np.float64)
    return np.sum((pts[:, :, None] - pts[:, None]) ** 2, axis=-1)


# (batch, frames, points per frame, channels, k)
CASES = [(1, 2, 3, 1, 1), (2, 3, 4, 2, 3), (1, 4, 5, 3, 15), (3, 2, 6, 4, 6), (2, 5, 2, 8, 4),
         (1, 4, 16, 2, 3), (2, 3, 16, 2, 2), (1, 8, 9, 3, 5)]  # the last three use two-stage selection


@pytest.mark.parametrize("batch,frames,per_frame,channels,k", CASES)
@pytest.mark.parametrize("chunk_size", [None, 1, 4, 1000])
def test_integer_points_match_brute_force_exactly(batch, frames, per_frame, channels, k, chunk_size):
    # Small integers: every distance is exact in float32 and ties are frequent, so this pins the tie rule.
    rng = np.random.RandomState(batch * 100 + frames * 10 + per_frame)
    points = rng.randint(-2, 3, size=(batch, frames * per_frame, channels)).astype(np.float32)
    got = cp_knn(tf.constant(points), frames, k, chunk_size=chunk_size).numpy()
    assert got.dtype == np.int32 and got.shape == (batch, frames * per_frame, k)
    np.testing.assert_array_equal(got, brute_force_knn(points, frames, k))


@pytest.mark.parametrize("batch,frames,per_frame,channels,k", CASES)
def test_float_points_nearest_distances_and_chunked_equals_dense(batch, frames, per_frame, channels, k):
    rng = np.random.RandomState(7 + k)
    points = rng.randn(batch, frames * per_frame, channels).astype(np.float32)
    dense = cp_knn(points, frames, k, chunk_size=frames * per_frame).numpy()
    for chunk in (1, 3, frames * per_frame - 1):
        np.testing.assert_array_equal(cp_knn(points, frames, k, chunk_size=chunk).numpy(), dense)
    ref = brute_force_knn(points, frames, k)
    d = squared_distances(points)
    rows = np.arange(frames * per_frame)[None, :, None]
    bidx = np.arange(batch)[:, None, None]
    np.testing.assert_allclose(d[bidx, rows, dense], d[bidx, rows, ref], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dense, ref)  # random floats: no near-ties at these sizes


@pytest.mark.parametrize("frames,side,k", [(8, 4, 12), (2, 5, 3), (3, 7, 20)])
def test_frame_pair_form_equals_single_block_and_brute_force(frames, side, k):
    # CPNet-like layouts (several groups per frame, a prime frame size, k above the frame size) with frequent
    # ties: the dense frame-pair form, one full score block and the brute force agree index for index.
    n = frames * side * side
    points = np.random.RandomState(n + k).randint(-1, 2, size=(2, n, 3)).astype(np.float32)
    pairs = cp_knn(points, frames, k, chunk_size=n).numpy()
    np.testing.assert_array_equal(pairs, knn_module._query_chunk_knn(tf.constant(points), frames, k, n).numpy())
    np.testing.assert_array_equal(pairs, brute_force_knn(points, frames, k))


@pytest.mark.parametrize("group,k", [(4, 3), (8, 1), (5, 8), (20, 2)])
def test_two_stage_selection_equals_top_k_with_ties(group, k):
    scores = np.random.RandomState(group + k).randint(0, 4, size=(3, 7, 40)).astype(np.float32)  # many ties
    want = tf.math.top_k(scores, k=k).indices.numpy()
    np.testing.assert_array_equal(_top_k_indices(tf.constant(scores), k, group).numpy(), want)


def test_group_size():
    assert _group_size(6272, 12) == 32 and _group_size(392, 8) == 28 and _group_size(72, 5) == 12
    assert _group_size(12, 6) == 1 and _group_size(7 * 11, 2) == 11 and _group_size(2 * 53, 2) == 1


def test_no_neighbour_in_own_frame_even_when_identical():
    # Every frame holds the same points, so the query itself (distance 0) is the best "candidate"; it must
    # never be returned, and the k=2 nearest of point (t, s) are (t', s) of the two other frames.
    frame = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], np.float32)
    points = np.tile(frame, (3, 1))[None]
    got = cp_knn(points, 3, 2, chunk_size=5).numpy()[0]
    per_frame = 4
    assert np.all(got // per_frame != (np.arange(12) // per_frame)[:, None])
    for i in range(12):
        t, s = divmod(i, per_frame)
        assert sorted(got[i]) == sorted(tt * per_frame + s for tt in range(3) if tt != t)


def tf32_round(x):
    """Rounds float32 values to TF32 (10 explicit mantissa bits, round half to even), as tensor cores read them."""
    bits = tf.bitcast(tf.cast(x, tf.float32), tf.int32)
    lsb = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 13), 1)
    return tf.bitcast(tf.bitwise.bitwise_and(bits + 0xFFF + lsb, ~0x1FFF), tf.float32)


def tf32_matmul(a, b):
    return tf.matmul(tf32_round(a), tf32_round(b), transpose_b=True)


def naive_tf32_knn(points, num_frames, k):
    """The matmul-only kNN (scores `2 f_i.f_j - |f_j|^2` from augmented vectors) with TF32-rounded inputs."""
    sq = np.sum(points * points, axis=-1, keepdims=True)
    left = np.concatenate([2 * points, -sq, np.ones_like(sq)], axis=-1)
    right = np.concatenate([points, np.ones_like(sq), -sq], axis=-1)
    scores = tf32_matmul(left, right).numpy()
    frame = np.arange(points.shape[1]) // (points.shape[1] // num_frames)
    scores[:, frame[:, None] == frame[None, :]] = -np.inf
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_exact_under_simulated_tf32_matmuls(monkeypatch, offset):
    # Features with a common offset, like ReLU-fed ones. TF32 rounds the matmul inputs to 10 mantissa bits; the
    # candidates it proposes are re-ranked with element-wise float32 distances, so the neighbours stay exact.
    rng = np.random.default_rng(0)
    points = (offset + rng.normal(size=(2, 4 * 49, 64))).astype(np.float32)
    ref = brute_force_knn(points, 4, 8)
    assert np.mean(naive_tf32_knn(points, 4, 8) != ref) > 0.005  # the simulation does change neighbours
    monkeypatch.setattr(knn_module, "_score_matmul", tf32_matmul)
    assert not knn_module._tf32_matmuls_possible()  # this CPU: the matmul ranks directly, and TF32 would spoil it
    assert np.mean(cp_knn(points, 4, 8).numpy() != ref) > 0.001
    monkeypatch.setattr(knn_module, "_tf32_matmuls_possible", lambda: True)  # as on a GPU with TF32 on
    for chunk_size in (None, 50):
        np.testing.assert_array_equal(cp_knn(points, 4, 8, chunk_size=chunk_size).numpy(), ref)


@pytest.mark.parametrize("batch,frames,per_frame,channels,k", CASES)
def test_rerank_path_keeps_the_tie_rule(monkeypatch, batch, frames, per_frame, channels, k):
    # The GPU (TF32) path with exact float32 matmuls: integer points, frequent ties, the lower index first.
    monkeypatch.setattr(knn_module, "_tf32_matmuls_possible", lambda: True)
    rng = np.random.RandomState(batch * 100 + frames * 10 + per_frame)
    points = rng.randint(-2, 3, size=(batch, frames * per_frame, channels)).astype(np.float32)
    ref = brute_force_knn(points, frames, k)
    for chunk_size in (None, 4):
        np.testing.assert_array_equal(cp_knn(tf.constant(points), frames, k, chunk_size=chunk_size).numpy(), ref)


def test_exact_for_points_far_from_the_origin():
    # |f|^2 ~ 1.6e7 against distances ~ 0.1: the matmul form alone loses every digit; centring and re-ranking do not.
    rng = np.random.default_rng(1)
    points = (1000.0 + 0.05 * rng.normal(size=(1, 3 * 16, 8))).astype(np.float32)
    ref = brute_force_knn(points, 3, 5)
    for chunk_size in (None, 7):
        np.testing.assert_array_equal(cp_knn(points, 3, 5, chunk_size=chunk_size).numpy(), ref)


def test_hand_example():
    points = np.array([[[0.0], [5.0], [1.0], [4.0]]], np.float32)  # frame 0 = {0, 5}, frame 1 = {1, 4}
    np.testing.assert_array_equal(cp_knn(points, 2, 2).numpy()[0], [[2, 3], [3, 2], [0, 1], [1, 0]])


def test_float64_and_float16_inputs():
    rng = np.random.RandomState(3)
    points = rng.randn(1, 12, 3)
    ref = brute_force_knn(points, 3, 4)
    np.testing.assert_array_equal(cp_knn(tf.constant(points, tf.float64), 3, 4).numpy(), ref)
    half = points.astype(np.float16)
    np.testing.assert_array_equal(cp_knn(tf.constant(half), 3, 4).numpy(),
                                  brute_force_knn(half.astype(np.float32), 3, 4))


def _graph_shapes(n, chunk_size, frames=4):
    fn = tf.function(lambda p: cp_knn(p, frames, 3, chunk_size=chunk_size))
    return all_graph_shapes(fn.get_concrete_function(tf.TensorSpec([2, n, 5], tf.float32)).graph)


def test_chunked_graph_has_no_n_by_n_tensor():
    n = 36
    dense = _graph_shapes(n, None)
    assert (2, 6, 9, 9) in dense  # the inspection does see the dense form's 6 frame-pair blocks of 9 x 9 ...
    chunked = _graph_shapes(n, 8)
    assert (2, 8, n) in chunked  # ... and the chunked score blocks
    assert not [s for s in chunked if sum(d == n for d in s) >= 2], chunked


def test_automatic_chunking_above_budget(monkeypatch):
    assert default_chunk_size(100, budget=100 * 100 * 4) == 100
    assert default_chunk_size(100, budget=100 * 4 * 7) == 7
    assert default_chunk_size(100, budget=1) == 1
    # 32 x 28 x 28 points: 160 MiB fits 1671 rows, 16 balanced chunks rather than 15 full ones and a remainder
    assert default_chunk_size(32 * 28 * 28) == 1568
    monkeypatch.setattr(knn_module, "DENSE_BUDGET_BYTES", 36 * 4 * 5)  # a 5 x 36 block fits, the pairs do not
    shapes = _graph_shapes(36, None)
    assert (2, 5, 36) in shapes and (2, 6, 9, 9) not in shapes
    rng = np.random.RandomState(0)
    points = rng.randint(-2, 3, size=(2, 36, 5)).astype(np.float32)
    np.testing.assert_array_equal(cp_knn(points, 4, 3).numpy(), brute_force_knn(points, 4, 3))


def test_dynamic_batch_and_no_gradient():
    fn = tf.function(lambda p: cp_knn(p, 2, 2, chunk_size=3),
                     input_signature=[tf.TensorSpec([None, 8, 2], tf.float32)])
    points = np.random.RandomState(1).randn(3, 8, 2).astype(np.float32)
    np.testing.assert_array_equal(fn(points).numpy(), brute_force_knn(points, 2, 2))
    x = tf.Variable(points)
    with tf.GradientTape() as tape:
        idx = cp_knn(x, 2, 2)
        y = tf.reduce_sum(tf.gather(x, idx, batch_dims=1))  # gradient reaches x via the gather only
    grad = tape.gradient(y, x).numpy()
    counts = np.zeros(points.shape[:2])
    for b in range(3):
        np.add.at(counts[b], idx.numpy()[b].ravel(), 1)
    np.testing.assert_allclose(grad, np.repeat(counts[..., None], 2, axis=-1))


@pytest.mark.parametrize("shape,frames,k,chunk,match", [
    ((1, 6, 2), 1, 1, None, "num_frames` must be >= 2"),
    ((1, 6, 2), 3, 5, None, "k=5 with 4 candidates"),
    ((1, 6, 2), 3, 0, None, "`k` must be an integer >= 1"),
    ((6, 2), 3, 1, None, "must have rank 3"),
    ((1, 1, 6, 2), 3, 1, None, "must have rank 3"),
    ((1, 7, 2), 3, 1, None, "multiple of `num_frames`"),
    ((1, 6, 2), 3, 1, 0, "`chunk_size` must be an integer >= 1"),
])
def test_errors(shape, frames, k, chunk, match):
    with pytest.raises(ValueError, match=match):
        cp_knn(tf.zeros(shape), frames, k, chunk_size=chunk)


def test_integer_dtype_is_rejected():
    with pytest.raises(ValueError, match="float tensor, got dtype int32"):
        cp_knn(tf.zeros((1, 4, 2), tf.int32), 2, 1)
