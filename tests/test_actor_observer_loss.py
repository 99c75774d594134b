"""Tests for kerasvid.losses actor-observer pieces against hand-computed values and a plain-python Eq. 14-15."""
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers import VideoSoftmax
from kerasvid.losses import ActorObserverLoss, dist_ratio, equalize_grad_norm, margin_rank
from tests.helpers import check_layer, run_script_result



def reference_running_mean(batches, decay=0.9, state=None):
    """Plain-python supp Eq. 14-15, one sample at a time; returns the (L, W) after each batch."""
    L, W = state if state is not None else (None, None)
    after = []
    for l, w in batches:
        for li, wi in zip(map(float, l), map(float, w)):
            if W is None:
                L, W = li, wi
            else:
                W_new = (1 - decay) * wi + decay * W
                L = ((1 - decay) * wi * li + decay * W * L) / W_new
                W = W_new
        after.append((L, W))
    return after


def reference_objective(l, w, L, eps=1e-5):
    n = (np.sum(w, dtype="float64") + eps) / len(l)
    return float(np.sum((np.asarray(l, "float64") - L) * w) / n)


def test_dist_ratio_and_margin_rank_values():
    d_pos = np.array([0.5, 2.0, 1.0], "float32")
    d_neg = np.array([1.5, 1.0, 1.0], "float32")
    # The authors' form X + log(exp(-X) + exp(-Y)).
    want = d_pos + np.log(np.exp(-d_pos) + np.exp(-d_neg))
    np.testing.assert_allclose(dist_ratio(d_pos, d_neg).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(margin_rank(d_pos, d_neg).numpy(), [0.0, 1.0, 0.0])
    np.testing.assert_allclose(margin_rank(d_pos, d_neg, margin=0.25).numpy(), [0.0, 1.25, 0.25])
    assert np.isfinite(dist_ratio(np.float32(1e4), np.float32(-1e4)).numpy())
    with pytest.raises(ValueError, match="margin=-1"):
        margin_rank(d_pos, d_neg, margin=-1)


def test_hand_computed_objective():
    loss = ActorObserverLoss(decay=0.9)
    out = loss(np.array([1.0, 2.0], "float32"), np.array([1.0, 3.0], "float32"))
    # W = 0.1*3 + 0.9*1 = 1.2, L = (0.1*3*2 + 0.9*1*1)/1.2 = 1.25, n = (4 + 1e-5)/2.
    np.testing.assert_allclose(loss.running_loss.numpy(), 1.25, rtol=1e-6)
    np.testing.assert_allclose(loss.running_weight.numpy(), 1.2, rtol=1e-6)
    np.testing.assert_allclose(float(out), ((1 - 1.25) * 1 + (2 - 1.25) * 3) / (4.00001 / 2), rtol=1e-6)


def test_matches_reference_over_batches():
    rng = np.random.default_rng(0)
    batches = [(rng.uniform(0, 3, 6).astype("float32"), rng.uniform(0.1, 4, 6).astype("float32"))
               for _ in range(4)]
    expected = reference_running_mean(batches, decay=0.8)
    loss = ActorObserverLoss(decay=0.8)
    step = tf.function(lambda l, w: loss(l, w))
    for (l, w), (L, W) in zip(batches, expected):
        out = step(l, w.reshape(-1, 1))
        np.testing.assert_allclose(loss.running_loss.numpy(), L, rtol=1e-6)
        np.testing.assert_allclose(loss.running_weight.numpy(), W, rtol=1e-6)
        np.testing.assert_allclose(float(out), reference_objective(l, w, L), rtol=1e-5, atol=1e-6)
    before = (loss.running_loss.numpy(), loss.running_weight.numpy())
    loss(*batches[0], training=False)
    assert (loss.running_loss.numpy(), loss.running_weight.numpy()) == before
    loss.reset_state()
    loss(np.array([7.0], "float32"), np.array([0.5], "float32"))
    np.testing.assert_allclose([loss.running_loss.numpy(), loss.running_weight.numpy()], [7.0, 0.5])


def test_selector_gradient_has_eq28_form():
    """d objective / d f for w = p_x p_y p_z (VideoSoftmax outputs): autodiff == p (l - L)/n + normaliser term."""
    rng = np.random.default_rng(1)
    B = 6
    index = rng.integers(0, 3, B)
    fs = [tf.constant(rng.normal(0, 1, B).astype("float32")) for _ in range(3)]
    l = tf.constant(rng.uniform(0, 2, B).astype("float32"))
    softmaxes = [VideoSoftmax(num_videos=3) for _ in range(3)]
    loss = ActorObserverLoss()
    loss(rng.uniform(0, 2, 4).astype("float32"), rng.uniform(0.5, 2, 4).astype("float32"))  # a prior state
    with tf.GradientTape() as tape:
        tape.watch(fs + [l])
        ps = [sm(f, index, training=True) for sm, f in zip(softmaxes, fs)]
        w = ps[0] * ps[1] * ps[2]
        objective = loss(l, w)
    grads = tape.gradient(objective, fs + [l])
    w, l_np, L = w.numpy().astype("float64"), l.numpy().astype("float64"), float(loss.running_loss.numpy())
    n = (w.sum() + 1e-5) / B
    normaliser_term = np.sum((l_np - L) * w) / (w.sum() + 1e-5)
    eq28 = w * (l_np - L) / n  # p(l - L), p = w the triplet's weight, rescaled by 1/n
    for g in grads[:3]:
        np.testing.assert_allclose(g.numpy(), eq28 - w / n * normaliser_term, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[3].numpy(), w / n, rtol=1e-5)  # L is a constant


def test_equalize_grad_norm():
    a = tf.constant([1.0, 2.0, 3.0])
    b = tf.constant([0.5, -0.5])
    c = tf.constant([4.0])
    with tf.GradientTape() as tape:
        tape.watch([a, b, c])
        a2, b2, c2 = equalize_grad_norm(a, b, c)
        objective = tf.reduce_sum(3.0 * a2) + tf.reduce_sum(b2 * b2 * 10.0) + 0.0 * tf.reduce_sum(c2)
    np.testing.assert_array_equal(a2.numpy(), a.numpy())
    ga, gb, gc = tape.gradient(objective, [a, b, c])
    np.testing.assert_allclose(ga.numpy(), [3.0, 3.0, 3.0])
    raw_gb = np.array([10.0, -10.0])
    np.testing.assert_allclose(gb.numpy(), raw_gb / np.linalg.norm(raw_gb) * np.linalg.norm(ga), rtol=1e-6)
    np.testing.assert_array_equal(gc.numpy(), [0.0])
    single = equalize_grad_norm(a)
    assert isinstance(single, tf.Tensor)
    with pytest.raises(ValueError, match="at least one"):
        equalize_grad_norm()


def test_check_layer():
    # Config and .keras round trips (the running mean saved exactly), dtype policies (the objective stays
    # float32), gradients to l and w; the second call (folding the batch in again) against Eq. 14-15.
    rng = np.random.default_rng(4)
    l, w = rng.uniform(0, 3, 5).astype("float32"), rng.uniform(0.1, 4, 5).astype("float32")

    def expected(layer, l, w):
        running_loss = reference_running_mean([(l, w)] * 2, decay=0.95)[1][0]
        return reference_objective(l, w, running_loss, eps=1e-3)

    check_layer(ActorObserverLoss, dict(decay=0.95, epsilon=1e-3, name="ao"), input_data=(l, w),
                call_kwargs=dict(training=True), perturb=0, expected_output_shape=(), mixed_output_dtype="float32",
                expected_output=expected, rtol=1e-5)


def test_checkpoint_and_validation(tmp_path):
    loss = ActorObserverLoss(decay=0.95, epsilon=1e-3, name="ao")
    loss(np.array([1.0, 3.0], "float32"), np.array([2.0, 1.0], "float32"))
    path = tf.train.Checkpoint(loss=loss).save(str(tmp_path / "ckpt"))
    restored = ActorObserverLoss(decay=0.95)
    restored.build()
    tf.train.Checkpoint(loss=restored).restore(path).assert_existing_objects_matched()
    assert restored.running_loss.numpy() == loss.running_loss.numpy()
    assert restored.count.numpy() == 2
    with pytest.raises(ValueError, match="decay=0"):
        ActorObserverLoss(decay=0)
    with pytest.raises(ValueError, match="epsilon=-1"):
        ActorObserverLoss(epsilon=-1)


_DISTRIBUTED_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerasvid.losses import ActorObserverLoss, equalize_grad_norm

    rng = np.random.default_rng(0)
    steps, batch = 4, 6
    l = rng.uniform(0, 3, (steps, batch)).astype("float32")
    w = rng.uniform(0.1, 3, (steps, batch)).astype("float32")
    # Triplet masks (classification samples out): all in at step 0, none on replica 0's half at step 2.
    m = rng.uniform(size=(steps, batch)) < 0.7
    m[0], m[2, :3] = True, False

    def objective_and_grads(loss, l, w, m):
        with tf.GradientTape() as tape:
            tape.watch([l, w])
            l2, w2 = equalize_grad_norm(l, w)  # the gradient of w gets the (global) norm of l's
            value = loss(l2, w2 * w2, triplet_mask=m)
        return value, tape.gradient(value, w)

    single = ActorObserverLoss()
    single_values, single_grads = [], []
    for s in range(steps):
        v, g = objective_and_grads(single, tf.constant(l[s]), tf.constant(w[s]), tf.constant(m[s]))
        single_values.append(float(v)); single_grads.append(g.numpy())

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        loss = ActorObserverLoss()
        loss.build()
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((l.reshape(-1), w.reshape(-1), m.reshape(-1))).batch(batch))
    step = tf.function(lambda a, b, c: objective_and_grads(loss, a, b, c))
    values, grads = [], []
    for a, b, c in data:
        v, g = strategy.run(step, (a, b, c))
        values.append(float(strategy.reduce("SUM", v, axis=None)))
        grads.append(np.concatenate([t.numpy() for t in strategy.experimental_local_results(g)]))
    copies = strategy.experimental_local_results(loss.running_loss.value)
    print("RESULT" + json.dumps({
        "num_copies": len(copies),
        "state_err": max(abs(float(c.numpy()) - float(single.running_loss.numpy())) for c in copies),
        "weight_err": abs(float(loss.running_weight.numpy()) - float(single.running_weight.numpy())),
        "value_err": max(abs(a - b) for a, b in zip(values, single_values)),
        "grad_err": float(np.max(np.abs(np.stack(grads) - np.stack(single_grads)))),
    }))
""")


@pytest.mark.large
def test_mirrored_strategy_matches_single_device():
    """Loss state, summed objective and gradients (through n and equalize_grad_norm) equal single-device ones, also
    with triplet masks (a replica without any triplet included)."""
    r = run_script_result(_DISTRIBUTED_SCRIPT, timeout=300)
    assert r["num_copies"] == 2, r
    assert r["state_err"] < 1e-5 and r["weight_err"] < 1e-5, r
    assert r["value_err"] < 1e-5, r
    assert r["grad_err"] < 1e-5, r


def _numpy_video_softmax(f, index, decay=0.9):
    """Supp Eq. 5-6 by hand: per video, the first sample sets S = e^f, later ones S <- d S + (1 - d) e^f (update
    before read); the output is e^f / S."""
    state, out = {}, []
    for fi, vi in zip(map(float, f), map(int, index)):
        state[vi] = np.exp(fi) if vi not in state else decay * state[vi] + (1 - decay) * np.exp(fi)
        out.append(np.exp(fi) / state[vi])
    return np.array(out)


def test_mixed_batch_loss_counts_only_the_triplets():
    """The reference evaluates the loss on the triplet subset: classification samples leave L, W, n and B alone."""
    loss = ActorObserverLoss(decay=0.9)
    loss(np.array([1.0, 2.0], "float32"), np.array([1.0, 3.0], "float32"))  # prior state L = 1.25, W = 1.2
    l = np.array([0.5, 0.0, 2.0, 0.0, 1.5], "float32")
    w = np.array([2.0, 0.0, 1.0, 0.0, 0.5], "float32")
    mask = np.array([True, False, True, False, True])
    out = loss(l, w, triplet_mask=mask)
    (L, W), = reference_running_mean([(l[mask], w[mask])], state=(1.25, 1.2))
    np.testing.assert_allclose([loss.running_loss.numpy(), loss.running_weight.numpy()], [L, W], rtol=1e-6)
    assert int(loss.count.numpy()) == 2 + 3
    # n = (sum of the 3 triplet weights + eps) / 3, not / 5.
    np.testing.assert_allclose(float(out), reference_objective(l[mask], w[mask], L), rtol=1e-5)
    # A batch without any triplet: objective 0, state unchanged.
    before = (loss.running_loss.numpy(), loss.running_weight.numpy(), loss.count.numpy())
    out = loss(l[:2], w[:2], triplet_mask=[False, False])
    assert float(out) == 0.0
    assert (loss.running_loss.numpy(), loss.running_weight.numpy(), loss.count.numpy()) == before


def test_objective_classification_mixed():
    """A batch mixing triplets and classification samples, against the reference's scaling computed by hand: the
    triplet objective over the triplets only, plus 2 x the summed (not averaged) cross-entropy."""
    from kerasvid.losses import actor_observer_objective

    rng = np.random.default_rng(4)
    labels = np.array([-1, 2, -1, 0, -1])
    index = np.array([0, 3, 1, 3, 0])  # classification samples use the dummy video 3; video 0 appears twice
    d_pos = np.array([1.0, 0.5, 2.0, 0.3, 0.7], "float32")
    d_neg = np.array([0.5, 1.5, 1.0, 0.3, 1.9], "float32")
    selectors = {f"selector_{s}": rng.normal(size=5).astype("float32") for s in "xyz"}
    logits = rng.normal(size=(5, 3)).astype("float32")
    outputs = {"d_pos": tf.constant(d_pos), "d_neg": tf.constant(d_neg), "logits": tf.constant(logits),
               **{k: tf.constant(v) for k, v in selectors.items()}}
    softmaxes = [VideoSoftmax(num_videos=4) for _ in range(3)]
    loss = ActorObserverLoss()
    result = actor_observer_objective(outputs, index, softmaxes, loss, labels=labels, balance_gradients=False)

    tri = labels < 0
    w = np.prod([_numpy_video_softmax(selectors[f"selector_{s}"][tri], index[tri]) for s in "xyz"], axis=0)
    np.testing.assert_allclose(result["weights"].numpy()[tri], w, rtol=1e-5)
    assert np.all(result["weights"].numpy()[~tri] == 0)
    l = np.log1p(np.exp(d_pos[tri] - d_neg[tri]))
    # Fresh state: the first triplet sets L and W, the two others fold in (the classification samples do not).
    L, W = l[0], w[0]
    for li, wi in zip(l[1:], w[1:]):
        W_new = 0.1 * wi + 0.9 * W
        L, W = (0.1 * wi * li + 0.9 * W * L) / W_new, W_new
    np.testing.assert_allclose([loss.running_loss.numpy(), loss.running_weight.numpy()], [L, W], rtol=1e-5)
    n = (w.sum() + 1e-5) / 3
    triplet = np.sum((l - L) * w) / n
    np.testing.assert_allclose(float(result["triplet_objective"]), triplet, rtol=1e-5)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ce = -(log_probs[1, 2] + log_probs[3, 0])
    np.testing.assert_allclose(float(result["classification_loss"]), 2.0 * ce, rtol=1e-5)
    np.testing.assert_allclose(float(result["objective"]), triplet + 2.0 * ce, rtol=1e-5)

    # A following batch with no triplet (deviation from the reference, docs/actor_observer.md): the reference
    # would fold its sample 0, a classification frame, into L and W; kerasvid leaves them (and the count) as they
    # were, the triplet objective is 0 and the objective is 2 x the summed cross-entropy.
    only = np.array([1, 3])
    result = actor_observer_objective({k: tf.gather(v, only) for k, v in outputs.items()}, index[only], softmaxes,
                                      loss, labels=labels[only], balance_gradients=False)
    np.testing.assert_allclose([loss.running_loss.numpy(), loss.running_weight.numpy()], [L, W], rtol=1e-5)
    assert int(loss.count.numpy()) == 3 and float(result["triplet_objective"]) == 0.0
    np.testing.assert_allclose(float(result["objective"]), 2.0 * ce, rtol=1e-5)
    with pytest.raises(ValueError, match="no classifier"):
        actor_observer_objective({k: v for k, v in outputs.items() if k != "logits"}, index, softmaxes,
                                 ActorObserverLoss(), labels=labels)
