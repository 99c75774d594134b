"""Actor and Observer losses (Sigurdsson et al., CVPR 2018): triplet losses, the online normalised
importance-sampling objective (supp Eq. 7-15, 28) and the gradient balancing of supp §2."""
import keras
import tensorflow as tf

from kerasvid.ops.distribute import decayed_sum_coefficients, gather_across_replicas, replica_sum

__all__ = ["ActorObserverLoss", "actor_observer_objective", "dist_ratio", "equalize_grad_norm", "margin_rank"]


def dist_ratio(d_pos, d_neg):
    """Distance-ratio triplet loss `l = softplus(d_pos - d_neg)`.

    The authors' `DistRatio`, `l = X + log(exp(-X) + exp(-Y))` with `X = d_pos`, `Y = d_neg`, which is
    `softplus(X - Y)` (a soft version of `d_pos < d_neg`; `dl/dX = sigmoid(X - Y)`).

    Args:
        d_pos: float tensor `[B]`, distance first-person -> third-person (`||f(x) - f(y)||`).
        d_neg: float tensor `[B]`, distance third-person -> negative first-person (`||f(y) - f(z)||`).

    Returns:
        float tensor `[B]`, the per-triplet loss.
    """
    return tf.nn.softplus(tf.convert_to_tensor(d_pos) - tf.convert_to_tensor(d_neg))


def margin_rank(d_pos, d_neg, margin=0.0):
    """Margin ranking triplet loss `l = max(0, d_pos - d_neg + margin)` (the authors' `MarginRank`, margin 0).

    Args:
        d_pos: float tensor `[B]`, positive-pair distances.
        d_neg: float tensor `[B]`, negative-pair distances.
        margin: float >= 0.

    Returns:
        float tensor `[B]`, the per-triplet loss.
    """
    if not isinstance(margin, (int, float)) or margin < 0:
        raise ValueError(f"`margin` must be a non-negative float, got margin={margin!r}")
    return tf.nn.relu(tf.convert_to_tensor(d_pos) - tf.convert_to_tensor(d_neg) + margin)


@keras.saving.register_keras_serializable(package="kerasvid")
class ActorObserverLoss(keras.layers.Layer):
    """Online normalised importance-sampling objective of Actor and Observer (supp Eq. 7-15 and 28).

    The loss of the paper is `L = sum_tau p(tau) l(tau) / sum_tau p(tau)` over the triplets `tau` of the training
    set, with `p` the selector's (VideoSoftmax) weight. It is estimated online by a running weighted mean `L_N`,
    folded in sample by sample (the first sample ever sets `L = l`, `W = w`), with `d = decay`:

        W_N = (1 - d) * w + d * W_{N-1}                                    (Eq. 15, k = 1 - d)
        L_N = ((1 - d) * w * l + d * W_{N-1} * L_{N-1}) / W_N             (Eq. 14)

    The returned objective is `sum_i (l_i - L) * w_i / n` with `L` the running mean after the whole batch (a
    constant) and `n = (sum_i w_i + epsilon) / B` (not a constant). With `triplet_mask`, only the masked-in samples
    are triplets: the others (the classification samples of the mixed setup) leave the running mean, `n`, `B` and
    the sum untouched, as in the reference, which evaluates this loss on the triplet subset of the batch only; a
    batch without triplets returns 0 and leaves the state as it was. That is a deliberate deviation: the reference,
    given an empty triplet subset, evaluates the loss on sample 0 instead (a classification frame, whose x, y, z
    are the same third-person frame), which folds that sample into the running mean; its `(l, w)` say nothing
    about the triplet loss that `L` estimates (Eq. 14-15), so kerasvid does not fold it. Its gradient with respect to a selector score `f`
    with `w = p` and `dp/df = p` is `p_i (l_i - L) / n - p_i * sum_j (l_j - L) w_j / (n^2 B)`: the Eq. 28 form
    `p (l - L)`, rescaled by `1/n`, plus the derivative of `n`, which vanishes when `L` is the batch's own weighted
    mean. The state (`running_loss`, `running_weight`) is global over all triplets (the authors' `LossAll`, used in
    both of their experiments), changes only when `training`, and is saved with the layer.

    Under `tf.distribute` each replica folds in the gathered global batch (same state as single-device training on
    the global batch), and returns its share `sum_{i local} (l_i - L) w_i / n_global`, so that the SUM over
    replicas (the `tf.distribute` convention for losses) is the single-device objective.

    Args:
        decay: float in (0, 1), `d` above (the reference code's `--finaldecay`, 0.9).
        epsilon: float >= 0 added to `sum w` in `n` (1e-5).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        per_triplet_loss: float tensor `[B]` (or `[B, 1]`), `l_i`, e.g. `dist_ratio(d_pos, d_neg)`.
        weights: float tensor `[B]` (or `[B, 1]`), `w_i >= 0`, e.g. the product of the three VideoSoftmax outputs.
        training: bool (default True), whether to update the running mean.
        triplet_mask: None (every sample is a triplet) or bool `[B]`, True for the triplets.

    Returns:
        float32 scalar, the objective.

    Example:

    >>> loss = kerasvid.losses.ActorObserverLoss(decay=0.9)
    >>> float(loss(np.array([1.0, 2.0], "float32"), np.array([1.0, 3.0], "float32")))  # L = 1.25
    0.99999...
    """

    def __init__(self, decay=0.9, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ValueError(f"`decay` must be a float in (0, 1), got decay={decay!r}")
        if not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise ValueError(f"`epsilon` must be a non-negative float, got epsilon={epsilon!r}")
        self.decay = float(decay)
        self.epsilon = float(epsilon)

    def build(self, per_triplet_loss_shape=None, weights_shape=None):
        def state(name, dtype):
            # `autocast=False`: read in float32 under a mixed dtype policy too (the objective is computed in it).
            return self.add_weight(name=name, shape=(), initializer="zeros", trainable=False, dtype=dtype,
                                   aggregation="only_first_replica", autocast=False)

        self.running_loss = state("running_loss", "float32")
        self.running_weight = state("running_weight", "float32")
        self.count = state("count", "int32")

    def call(self, per_triplet_loss, weights, training=True, triplet_mask=None):
        l = tf.reshape(tf.cast(per_triplet_loss, tf.float32), [-1])
        w = tf.reshape(tf.cast(weights, tf.float32), [-1])
        mask = tf.ones_like(l) if triplet_mask is None else tf.reshape(tf.cast(triplet_mask, tf.float32), [-1])
        (l_all, w_all, mask_all), _, _ = gather_across_replicas(tf.stop_gradient(l), tf.stop_gradient(w), mask)
        is_triplet = mask_all > 0
        running_loss, running_weight = self._fold(l_all, w_all, is_triplet)
        num_triplets = tf.reduce_sum(tf.cast(is_triplet, tf.int32))
        if training:
            self.running_loss.assign(running_loss)
            self.running_weight.assign(running_weight)
            self.count.assign(self.count + num_triplets)
        local = mask > 0
        n = (replica_sum(tf.reduce_sum(tf.where(local, w, 0.0))) + self.epsilon) / tf.cast(
            tf.maximum(num_triplets, 1), tf.float32)
        return tf.reduce_sum(tf.where(local, (l - running_loss) * w, 0.0)) / n

    def _fold(self, l, w, is_triplet):
        """Running mean and weight after folding in the triplets' `(l, w)` sample by sample (Eq. 14-15, closed
        form); the other samples are put in a segment of their own and ignored."""
        segments = tf.where(is_triplet, 0, 1)
        seen = tf.fill(tf.shape(segments), self.count > 0)
        log_c, log_p = decayed_sum_coefficients(segments, seen, self.decay)
        last = tf.reduce_max(tf.where(is_triplet, tf.range(tf.shape(l)[0]), -1))  # the state after the last triplet
        c, p = tf.exp(tf.gather(log_c, tf.maximum(last, 0))), tf.exp(tf.gather(log_p, tf.maximum(last, 0)))
        weight = tf.reduce_sum(tf.where(is_triplet, c * w, 0.0)) + p * self.running_weight
        weighted = tf.reduce_sum(tf.where(is_triplet, c * w * l, 0.0)) + p * self.running_weight * self.running_loss
        # All-zero weights leave the running mean where it was; a batch without triplets leaves the whole state.
        changed = (weight > 0) & (last >= 0)
        mean = tf.where(changed, weighted / tf.where(changed, weight, 1.0), self.running_loss)
        weight = tf.where(last >= 0, weight, self.running_weight)
        return tf.stop_gradient(mean), tf.stop_gradient(weight)

    def reset_state(self):
        """Forgets the running mean."""
        for v in (self.running_loss, self.running_weight, self.count):
            v.assign(tf.zeros_like(v))

    def compute_output_shape(self, per_triplet_loss_shape=None, weights_shape=None):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update({"decay": self.decay, "epsilon": self.epsilon})
        return config


def equalize_grad_norm(*tensors):
    """Identity whose backward pass rescales every input's gradient to the norm of the first input's gradient.

    The supplement's gradient balancing (§2: "rescaling all gradients to have norm equal to the triplet loss
    gradient"); the authors apply it to `(d_pos, d_neg, p_x, p_y, p_z)`. Norms are over the whole (global) batch:
    under `tf.distribute` the squared norms are summed over replicas. A zero gradient stays zero.

    Args:
        *tensors: one or more float tensors; the first one's gradient sets the norm.

    Returns:
        The tensors unchanged (a tuple, or the tensor itself when one is given).
    """
    if not tensors:
        raise ValueError("`equalize_grad_norm` needs at least one tensor, got none")
    tensors = [tf.convert_to_tensor(t) for t in tensors]

    @tf.custom_gradient
    def _identity(*xs):
        def grad(*upstream):
            upstream = [tf.zeros_like(x) if g is None else g for g, x in zip(upstream, xs)]
            norms = [tf.sqrt(replica_sum(tf.reduce_sum(tf.square(g)))) for g in upstream]
            return [g * tf.math.divide_no_nan(norms[0], norm) for g, norm in zip(upstream, norms)]

        return [tf.identity(x) for x in xs], grad

    outputs = _identity(*tensors)
    return outputs[0] if len(tensors) == 1 else tuple(outputs)


def actor_observer_objective(outputs, video_index, video_softmaxes, loss, labels=None, classification_weight=2.0,
                             triplet_loss=dist_ratio, balance_gradients=True, training=True):
    """The full actor-observer training objective of one (per-replica) batch.

    `w = p_x p_y p_z` with `p_s = VideoSoftmax_s(selector_s)` (one state per stream), `l = triplet_loss(d_pos,
    d_neg)`, and the online importance-sampling objective of `ActorObserverLoss`. With `balance_gradients`,
    `(d_pos, d_neg, p_x, p_y, p_z)` pass through `equalize_grad_norm` first (supp §2). In the classification-mixed
    setup (`labels` given), samples with `label >= 0` are third-person frames with a class: they get zero triplet
    weight (and must carry a dummy `video_index`), stay out of the triplet objective (its running mean, `n` and
    batch size count the triplets only), and add `classification_weight` x their summed (not averaged)
    cross-entropy of `outputs["logits"]` (2.0 in the authors' experiment). This is the reference code's scaling
    (`ActorObserverLossAllWithClassifier`: the triplet loss over the triplet subset plus `clsweight` x the sum of
    the classification subset's cross-entropies); a batch without triplets (or without classification samples)
    contributes 0 for that half, and a batch without triplets leaves the `ActorObserverLoss` state unchanged (the
    reference folds its sample 0 into the running mean; see `ActorObserverLoss`).

    Args:
        outputs: the dict of `actor_observer_network` (`d_pos`, `d_neg`, `selector_x/y/z`, optionally `logits`).
        video_index: int `[B]`, the paired video of each sample (the VideoSoftmax key).
        video_softmaxes: three `VideoSoftmax` layers, for the x, y and z streams.
        loss: an `ActorObserverLoss`.
        labels: None (triplets only) or int `[B]`: -1 for triplets, the class for classification samples.
        classification_weight: weight of the classification term.
        triplet_loss: `dist_ratio` or `margin_rank`.
        balance_gradients: apply `equalize_grad_norm`.
        training: update the VideoSoftmax and loss states.

    Returns:
        dict: `objective` (scalar, this replica's share), `triplet_objective`, `classification_loss` (scalars),
        `per_triplet_loss` and `weights` (`[B]`).
    """
    if len(video_softmaxes) != 3:
        raise ValueError(f"`video_softmaxes` must be three VideoSoftmax layers (x, y, z), got {len(video_softmaxes)}")
    probs = [sm(outputs[key], video_index, training=training)
             for sm, key in zip(video_softmaxes, ("selector_x", "selector_y", "selector_z"))]
    d_pos, d_neg = outputs["d_pos"], outputs["d_neg"]
    if balance_gradients:
        d_pos, d_neg, *probs = equalize_grad_norm(d_pos, d_neg, *probs)
    per_triplet = triplet_loss(d_pos, d_neg)
    weights = probs[0] * probs[1] * probs[2]
    classification = tf.constant(0.0)
    if labels is not None:
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        is_class = labels >= 0
        weights = weights * tf.cast(tf.logical_not(is_class), weights.dtype)
        if "logits" not in outputs:
            raise ValueError("`labels` were given but the model has no classifier (`logits`); build it with "
                             "num_classes")
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0),
                                                            logits=tf.cast(outputs["logits"], tf.float32))
        classification = classification_weight * tf.reduce_sum(tf.where(is_class, ce, 0.0))
        triplet_mask = tf.logical_not(is_class)
    else:
        triplet_mask = None
    triplet_objective = loss(per_triplet, weights, training=training, triplet_mask=triplet_mask)
    return {"objective": triplet_objective + classification, "triplet_objective": triplet_objective,
            "classification_loss": classification, "per_triplet_loss": per_triplet, "weights": weights}
