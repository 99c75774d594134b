"""Factorization losses against numbers worked out by hand (docs/action_context.md)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from kerasvid.losses import action_context as fl
from tests.helpers import check_loss


def test_classification_single_label_with_negative_weight():
    logits = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    ce0 = math.log(1 + 2 * math.exp(-2))  # class 0 of [2, 0, 0]
    ce1 = math.log(2 + math.e)  # class 2 of [0, 1, 0]
    got = fl.factorization_classification_loss([0, 2], logits, negative_weight=0.01, background_class=2)
    assert float(got) == pytest.approx((ce0 + 0.01 * ce1) / 1.01, rel=1e-6)
    got = fl.factorization_classification_loss([0, 2], logits)
    assert float(got) == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def test_classification_multi_label_negative_rows():
    logits = [[0.0, 2.0], [-1.0, 1.0]]
    pos = (math.log(2) + math.log(1 + math.exp(2))) / 2
    neg = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2
    got = fl.factorization_classification_loss([[1, 0], [0, 0]], logits, multi_label=True, negative_weight=0.5)
    assert float(got) == pytest.approx((pos + 0.5 * neg) / 1.5, rel=1e-6)


def test_action_removal_hinge():
    s_a = [[0.0, 3.0], [1.0, 0.0]]
    s_a_conj = [[0.0, 2.5], [-1.0, 0.0]]
    # sample 0: drop 0.5 < margin 1 -> 0.5; sample 1: drop 2 -> 0
    assert float(fl.action_removal_loss([1, 0], s_a, s_a_conj, margin=1.0)) == pytest.approx(0.25)
    assert float(fl.action_removal_loss([1, 0], s_a, s_a_conj, pair_weights=[1, 0])) == pytest.approx(0.5)
    assert float(fl.action_removal_loss([1, 0], s_a, s_a_conj, margin=3.0)) == pytest.approx((2.5 + 1.0) / 2)
    # background clips take no part
    assert float(fl.action_removal_loss([1, 0], s_a, s_a_conj, background_class=0)) == pytest.approx(0.5)
    # multi-label: mean over the positive classes (hinges 1 and 0.5)
    got = fl.action_removal_loss([[1, 1]], [[1.0, 1.0]], [[1.0, 0.5]], multi_label=True)
    assert float(got) == pytest.approx(0.75)


def test_context_consistency_and_overlap():
    s_c = [[1.0, 2.0], [0.0, 0.0]]
    s_c_conj = [[0.0, 0.0], [0.0, 1.0]]
    assert float(fl.context_consistency_loss(s_c, s_c_conj)) == pytest.approx((2.5 + 0.5) / 2)
    assert float(fl.context_consistency_loss(s_c, s_c_conj, pair_weights=[1.0, 3.0])) == pytest.approx(1.0)
    alpha = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]], "float32")[..., None]
    beta = np.array([[0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]], "float32")[..., None]
    assert float(fl.attention_overlap_loss(alpha, beta)) == pytest.approx(0.75)


def test_factorization_loss_total_and_gradient_signs():
    outputs = {"logits": tf.Variable([[2.0, 0.0, 0.0]]), "action_scores": tf.Variable([[0.5, 0.0, 0.0]]),
               "context_scores": tf.Variable([[1.0, 0.0, 0.0]]),
               "action_map": tf.constant([[[0.5], [0.5]]]), "context_map": tf.constant([[[0.5], [0.5]]])}
    conj = {"logits": tf.constant([[0.0, 0.0, 0.0]]), "action_scores": tf.constant([[0.25, 0.0, 0.0]]),
            "context_scores": tf.constant([[0.0, 0.0, 0.0]]),
            "action_map": tf.constant([[[1.0], [0.0]]]), "context_map": tf.constant([[[0.0], [1.0]]])}
    loss_fn = fl.FactorizationLoss(classification_weight=2.0, removal_weight=3.0, consistency_weight=0.5,
                                   overlap_weight=0.1, margin=1.0)
    with tf.GradientTape() as tape:
        terms = loss_fn.terms([0], outputs, conj)
    ce = math.log(1 + 2 * math.exp(-2))
    assert float(terms["classification"]) == pytest.approx(ce, rel=1e-6)
    assert float(terms["action_removal"]) == pytest.approx(0.75)  # 1 - (0.5 - 0.25)
    assert float(terms["context_consistency"]) == pytest.approx(1.0 / 3)
    assert float(terms["attention_overlap"]) == pytest.approx(1.0)
    assert float(terms["loss"]) == pytest.approx(2 * ce + 3 * 0.75 + 0.5 / 3 + 0.1, rel=1e-6)
    g_action = tape.gradient(terms["loss"], outputs["action_scores"]).numpy()
    np.testing.assert_allclose(g_action, [[-3.0, 0.0, 0.0]])  # raising s_a(x)_y lowers the hinge
    assert fl.FactorizationLoss.from_config(loss_fn.get_config()).get_config() == loss_fn.get_config()
    only_cls = fl.FactorizationLoss().terms([0], outputs)
    assert float(only_cls["loss"]) == pytest.approx(ce, rel=1e-6)
    # Calling the loss (a keras.losses.Loss) gives the total; the harness checks its config, serialization,
    # .keras round trip, low-precision predictions and gradients.
    assert float(fl.FactorizationLoss()([0], outputs)) == pytest.approx(ce, rel=1e-6)
    kwargs = dict(classification_weight=2.0, removal_weight=3.0, consistency_weight=0.5, overlap_weight=0.1,
                  margin=1.0, uninformative_weight=0.5, background_class=None, name="fact")  # x' uniform: KL 0
    check_loss(fl.FactorizationLoss, kwargs, [0], (outputs, conj), expected=2 * ce + 3 * 0.75 + 0.5 / 3 + 0.1)
    with pytest.raises(TypeError, match=r"\.terms\(labels, outputs, conjugate_outputs\)"):
        loss_fn([0], outputs, conj)


def test_factorization_loss_validation():
    with pytest.raises(ValueError, match="margin=-1"):
        fl.FactorizationLoss(margin=-1)
    with pytest.raises(ValueError, match="outputs='all'"):
        fl.FactorizationLoss()([0], {"logits": [[0.0]]})


def test_conjugate_uninformative_term_by_hand():
    from kerasvid.losses import FactorizationLoss, conjugate_uninformative_loss

    logits = np.array([[0.0, 0.0, 0.0], [np.log(2.0), 0.0, 0.0]], "float32")
    # KL(u || p): row 0 is uniform -> 0; row 1 has p = (1/2, 1/4, 1/4) -> -(1/3)(log 1/2 + 2 log 1/4) - log 3.
    row1 = -(np.log(0.5) + 2 * np.log(0.25)) / 3 - np.log(3.0)
    assert float(conjugate_uninformative_loss(logits)) == pytest.approx(row1 / 2, rel=1e-6)
    assert float(conjugate_uninformative_loss(logits, pair_weights=np.array([1.0, 0.0]))) == pytest.approx(0.0, abs=1e-7)
    # With a background class: cross-entropy to it (row 1: -log 1/4).
    assert float(conjugate_uninformative_loss(logits, background_class=2, pair_weights=np.array([0.0, 1.0]))) == (
        pytest.approx(-np.log(0.25), rel=1e-6))
    # Multi-label: sigmoid cross-entropy of every class to 0: log(1 + e^s).
    multi = float(conjugate_uninformative_loss(logits, multi_label=True))
    assert multi == pytest.approx((3 * np.log(2.0) + np.log(3.0) + 2 * np.log(2.0)) / 6, rel=1e-6)
    # In FactorizationLoss: off by default, weighted when on.
    outputs = {"logits": logits, "action_scores": logits, "context_scores": logits,
               "action_map": np.full((2, 1, 1, 1, 1), 1.0, "float32"),
               "context_map": np.full((2, 1, 1, 1, 1), 1.0, "float32")}
    labels = np.array([0, 1])
    off = FactorizationLoss().terms(labels, outputs, outputs)
    on = FactorizationLoss(uninformative_weight=2.0).terms(labels, outputs, outputs)
    assert float(off["conjugate_uninformative"]) == 0.0
    assert float(on["loss"] - off["loss"]) == pytest.approx(2.0 * row1 / 2, rel=1e-5)
    assert FactorizationLoss.from_config(FactorizationLoss(uninformative_weight=2.0).get_config()).uninformative_weight == 2.0
