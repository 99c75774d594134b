"""Losses of the attentive action and context factorization (kerasvid's formulation, docs/action_context.md).

An action sample x (label y) is paired with its conjugate x' (the same clip with the actors' pixels removed and
filled in). With the head's scores s = s_a + s_c (`kerasvid.layers.ActionContextAttention`):

    L = w_cls * CE(s(x), y)                                         classification (optionally class-weighted)
      + w_rem * mean_{y' in y} max(0, m - (s_a(x)_y' - s_a(x')_y'))  action removal: the action evidence must drop
      + w_con * mean_k (s_c(x)_k - s_c(x')_k)^2                     context consistency: the context is unchanged
      + w_ovl * sum_p min(alpha_p, beta_p)                           attention overlap (histogram intersection)
      + w_uni * KL(u || softmax(s(x')))                              conjugate uninformative: without its actor a
                                                                     clip must not predict the action (u uniform;
                                                                     the background class if there is one; for
                                                                     multi-label, sigmoid cross-entropy to 0)

Weighted means: every term is `sum_i w_i l_i / sum_i w_i` over the samples that take part (the classification
weights come from `negative_weight`, the pair terms from `pair_weights`, e.g. 0 where a clip has no conjugate).
Defaults: w_cls = w_rem = w_con = 1, w_ovl = 0, w_uni = 0, m = 1. The last term is kerasvid's addition (why, with
the measured effect on a shuffled background: docs/action_context.md and benchmarks/action_context.py).
"""
import keras
import tensorflow as tf

__all__ = ["FactorizationLoss", "action_removal_loss", "attention_overlap_loss", "context_consistency_loss",
           "conjugate_uninformative_loss", "factorization_classification_loss"]

def _weighted_mean(values, weights):
    values = tf.convert_to_tensor(values, tf.float32)
    weights = tf.cast(weights, values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def _positive_mask(labels, num_classes, multi_label, background_class):
    """[B, K] float mask of each sample's positive classes (all zero for negative clips)."""
    if multi_label:
        return tf.cast(labels, tf.float32)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    mask = tf.one_hot(labels, num_classes)
    if background_class is not None:
        mask = mask * tf.cast(tf.not_equal(labels, background_class), tf.float32)[:, None]
    return mask


def conjugate_uninformative_loss(conjugate_logits, multi_label=False, background_class=None, pair_weights=None):
    """Penalises a conjugate (actor removed) that still predicts an action.

    Single-label: `KL(u || softmax(s(x')))` with u uniform over the K classes (0 when the scores are all equal), or the
    cross-entropy to `background_class` when there is one. Multi-label: sigmoid cross-entropy of every class to 0.

    Args:
        conjugate_logits: `[batch, K]` scores s(x') of the conjugates.
        multi_label: sigmoid scores instead of softmax.
        background_class: index of the "no action" class, or None.
        pair_weights: optional `[batch]` (0 where a clip has no conjugate).

    Returns:
        The weighted mean over the conjugates (a scalar).
    """
    logits = tf.convert_to_tensor(conjugate_logits, tf.float32)
    weights = tf.ones(tf.shape(logits)[:1]) if pair_weights is None else pair_weights
    if multi_label:
        per = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.zeros_like(logits), logits), axis=-1)
    elif background_class is not None:
        target = tf.fill(tf.shape(logits)[:1], int(background_class))
        per = tf.nn.sparse_softmax_cross_entropy_with_logits(target, logits)
    else:
        k = tf.cast(tf.shape(logits)[-1], tf.float32)
        per = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1) - tf.math.log(k)
    return _weighted_mean(per, weights)


def factorization_classification_loss(labels, logits, multi_label=False, negative_weight=1.0,
                                      background_class=None):
    """Cross-entropy of the combined scores s(x), with negative clips down-weighted.

    The HACS-30 recipe of the supplement (Sec. 2.4) weighs negative clips 0.01 and positive clips 1.0.

    Args:
        labels: `[batch]` int class indices, or `[batch, K]` multi-hot when `multi_label`.
        logits: `[batch, K]` scores s(x).
        multi_label: sigmoid cross-entropy averaged over classes (Hollywood2, VOC actions) instead of softmax.
        negative_weight: weight of negative clips: all-zero rows (multi-label) or `labels == background_class`.
        background_class: the class index of negative clips in the single-label case (None: no negatives).

    Returns:
        Scalar `sum_i w_i CE_i / sum_i w_i`.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    if multi_label:
        targets = tf.cast(labels, tf.float32)
        per_sample = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), -1)
        negative = tf.equal(tf.reduce_sum(targets, -1), 0.0)
    else:
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        negative = (tf.equal(labels, background_class) if background_class is not None
                    else tf.zeros_like(labels, tf.bool))
    weights = tf.where(negative, tf.cast(negative_weight, tf.float32), 1.0)
    return _weighted_mean(per_sample, weights)


def action_removal_loss(labels, action_scores, conjugate_action_scores, margin=1.0, multi_label=False,
                        background_class=None, pair_weights=None):
    """Hinge on the drop of the action score of the true class(es) from x to its conjugate x'.

    `max(0, margin - (s_a(x)_y - s_a(x')_y))`, averaged over the positive classes of each sample and then over the
    pairs (negative clips, which have no actor to remove, take no part).

    Args:
        labels: `[batch]` int or `[batch, K]` multi-hot labels of x.
        action_scores: `[batch, K]` s_a(x).
        conjugate_action_scores: `[batch, K]` s_a(x').
        margin: the required drop m.
        multi_label: labels are multi-hot.
        background_class: single-label index of negative clips (excluded).
        pair_weights: optional `[batch]` weights (0 where x has no conjugate).

    Returns:
        Scalar loss.
    """
    s_a = tf.convert_to_tensor(action_scores, tf.float32)
    s_a_conj = tf.convert_to_tensor(conjugate_action_scores, tf.float32)
    mask = _positive_mask(labels, tf.shape(s_a)[-1], multi_label, background_class)
    hinge = tf.nn.relu(margin - (s_a - s_a_conj))
    count = tf.reduce_sum(mask, -1)
    per_sample = tf.math.divide_no_nan(tf.reduce_sum(hinge * mask, -1), count)
    weights = tf.cast(count > 0, tf.float32)
    if pair_weights is not None:
        weights = weights * tf.cast(tf.reshape(pair_weights, [-1]), tf.float32)
    return _weighted_mean(per_sample, weights)


def context_consistency_loss(context_scores, conjugate_context_scores, pair_weights=None):
    """Squared difference of the context scores of x and x', averaged over classes and pairs.

    Args:
        context_scores: `[batch, K]` s_c(x).
        conjugate_context_scores: `[batch, K]` s_c(x').
        pair_weights: optional `[batch]` weights (0 where x has no conjugate).

    Returns:
        Scalar loss.
    """
    diff = tf.convert_to_tensor(context_scores, tf.float32) - tf.convert_to_tensor(conjugate_context_scores,
                                                                                     tf.float32)
    per_sample = tf.reduce_mean(tf.square(diff), -1)
    weights = tf.ones_like(per_sample) if pair_weights is None else tf.reshape(pair_weights, [-1])
    return _weighted_mean(per_sample, weights)


def attention_overlap_loss(action_map, context_map):
    """Histogram intersection `sum_p min(alpha_p, beta_p)` of the two maps, averaged over samples and maps.

    0 when the action and context maps are disjoint, 1 when they are equal (both sum to 1 over positions).

    Args:
        action_map: `[batch, ..., K]` alpha (sums to 1 over the middle axes).
        context_map: same shape, beta.

    Returns:
        Scalar loss.
    """
    alpha = tf.convert_to_tensor(action_map, tf.float32)
    beta = tf.convert_to_tensor(context_map, tf.float32)
    axes = list(range(1, len(alpha.shape) - 1))
    return tf.reduce_mean(tf.reduce_sum(tf.minimum(alpha, beta), axis=axes))


@keras.saving.register_keras_serializable(package="kerasvid")
class FactorizationLoss(keras.losses.Loss):
    """The weighted sum of the five factorization terms, computed from two head outputs (a `keras.losses.Loss`).

    `terms(labels, outputs, conjugate_outputs, pair_weights)` returns every term (what a training loop logs);
    calling the loss, `loss(labels, (outputs, conjugate_outputs))` or `loss(labels, outputs)`, returns the total.
    The terms are already weighted means over the batch (see the module docstring), so the Keras reduction leaves
    the total as it is; per-pair weights go through `terms(pair_weights=...)`, not `sample_weight`.

    Args:
        classification_weight: w_cls.
        removal_weight: w_rem.
        consistency_weight: w_con.
        overlap_weight: w_ovl (0 by default: the two maps may overlap).
        margin: the action-removal margin m.
        multi_label: labels are multi-hot `[batch, K]`.
        negative_weight: classification weight of negative clips (0.01 in the HACS-30 recipe).
        background_class: single-label index of negative clips, or None.
        uninformative_weight: w_uni (0 by default).
        name, reduction, dtype: `keras.losses.Loss` arguments.

    `terms` arguments:
        labels: labels of the action samples.
        outputs: the head's dict for x (`logits`, `action_scores`, `context_scores`, `action_map`, `context_map`).
        conjugate_outputs: the head's dict for x' (None: classification and overlap only).
        pair_weights: optional `[batch]` (0 where x has no conjugate).

    Returns (`terms`):
        A dict with the total `loss` and each term: `classification`, `action_removal`, `context_consistency`,
        `attention_overlap`, `conjugate_uninformative`.

    Example:
        >>> loss_fn = FactorizationLoss(negative_weight=0.01, background_class=0)
        >>> terms = loss_fn.terms(labels, model(clips), model(conjugates))
        >>> terms["loss"]  # == loss_fn(labels, (model(clips), model(conjugates)))
    """

    def __init__(self, classification_weight=1.0, removal_weight=1.0, consistency_weight=1.0, overlap_weight=0.0,
                 margin=1.0, multi_label=False, negative_weight=1.0, background_class=None, uninformative_weight=0.0,
                 name="factorization_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        for key, value in (("classification_weight", classification_weight), ("removal_weight", removal_weight),
                           ("uninformative_weight", uninformative_weight),
                           ("consistency_weight", consistency_weight), ("overlap_weight", overlap_weight),
                           ("margin", margin), ("negative_weight", negative_weight)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{key}` must be a number >= 0, got {key}={value!r}")
        # The config's fields as attributes (as TVNet's constructor stores its own): `get_config` reads them back.
        self.classification_weight = float(classification_weight)
        self.removal_weight = float(removal_weight)
        self.consistency_weight = float(consistency_weight)
        self.overlap_weight = float(overlap_weight)
        self.margin = float(margin)
        self.multi_label = bool(multi_label)
        self.negative_weight = float(negative_weight)
        self.background_class = background_class
        self.uninformative_weight = float(uninformative_weight)

    def terms(self, labels, outputs, conjugate_outputs=None, pair_weights=None):
        """Every term and the total `loss` (see the class docstring)."""
        missing = [k for k in ("logits", "action_scores", "context_scores", "action_map", "context_map")
                   if k not in outputs]
        if missing:
            raise ValueError(f"`outputs` must be the ActionContextAttention dict; missing keys {missing} "
                             f"(build the model with outputs='all')")
        zero = tf.constant(0.0)
        terms = {
            "classification": factorization_classification_loss(
                labels, outputs["logits"], self.multi_label, self.negative_weight, self.background_class),
            "action_removal": zero,
            "context_consistency": zero,
            "attention_overlap": (attention_overlap_loss(outputs["action_map"], outputs["context_map"])
                                  if self.overlap_weight else zero),
            "conjugate_uninformative": zero,
        }
        if conjugate_outputs is not None:
            terms["action_removal"] = action_removal_loss(
                labels, outputs["action_scores"], conjugate_outputs["action_scores"], self.margin, self.multi_label,
                self.background_class, pair_weights)
            terms["context_consistency"] = context_consistency_loss(
                outputs["context_scores"], conjugate_outputs["context_scores"], pair_weights)
            if self.uninformative_weight:
                terms["conjugate_uninformative"] = conjugate_uninformative_loss(
                    conjugate_outputs["logits"], self.multi_label, self.background_class, pair_weights)
        terms["loss"] = (self.classification_weight * terms["classification"]
                         + self.removal_weight * terms["action_removal"]
                         + self.consistency_weight * terms["context_consistency"]
                         + self.overlap_weight * terms["attention_overlap"]
                         + self.uninformative_weight * terms["conjugate_uninformative"])
        return terms

    def __call__(self, y_true, y_pred, sample_weight=None):
        if isinstance(sample_weight, dict):
            raise TypeError("FactorizationLoss()(labels, outputs, conjugate_outputs) is "
                            "`.terms(labels, outputs, conjugate_outputs)` (the dict of terms); calling the loss "
                            "takes (labels, (outputs, conjugate_outputs)) and returns the total")
        if sample_weight is not None:
            raise ValueError(f"FactorizationLoss takes no sample_weight (its terms are weighted means already); pass "
                             f"per-pair weights to `.terms(pair_weights=...)`, got sample_weight={sample_weight!r}")
        return super().__call__(y_true, y_pred)

    def call(self, y_true, y_pred):
        """`y_pred`: the head's dict for x, or the pair `(outputs, conjugate_outputs)`; returns the total."""
        if isinstance(y_pred, (tuple, list)):
            if len(y_pred) != 2:
                raise ValueError(f"`y_pred` must be the head's dict or a pair (outputs, conjugate_outputs), got "
                                 f"{len(y_pred)} items")
            return self.terms(y_true, *y_pred)["loss"]
        return self.terms(y_true, y_pred)["loss"]

    def get_config(self):
        config = super().get_config()
        config.update({"classification_weight": self.classification_weight, "removal_weight": self.removal_weight,
                       "consistency_weight": self.consistency_weight, "overlap_weight": self.overlap_weight,
                       "margin": self.margin, "multi_label": self.multi_label,
                       "negative_weight": self.negative_weight, "background_class": self.background_class,
                       "uninformative_weight": self.uninformative_weight, "dtype": self.dtype})
        return config
