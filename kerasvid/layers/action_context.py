"""Attentive action and context factorization head (kerasvid's formulation of Wang et al., BMVC 2021)."""
import keras
from keras import ops

from kerasvid.layers.initializers import weight_initializer

__all__ = ["ActionContextAttention", "I3DFlowInput"]

OUTPUT_KEYS = ("logits", "action_scores", "context_scores", "action_map", "context_map")


@keras.saving.register_keras_serializable(package="kerasvid")
class ActionContextAttention(keras.layers.Layer):
    """Factorizes a feature map into an action part and a context part with two softmax attention maps.

    From "Attentive Action and Context Factorization" (Wang, Tran, Bertasius, Torresani, Hoai, BMVC 2021). Only the
    paper's supplement is available, so this is kerasvid's own reading (docs/action_context.md): for a feature map
    `F` with positions p = (t, h, w) and K maps (K = 1 class-agnostic, K = num_classes with `per_class=True`),

        alpha[:, k] = softmax_p(F[p] . u_k + a_k)         beta[:, k] = softmax_p(F[p] . v_k + c_k)
        f_a[k] = sum_p alpha[p, k] F[p]                   f_c[k] = sum_p beta[p, k] F[p]
        s_a = W_a f_a + b_a                               s_c = W_c f_c + b_c
        s = s_a + s_c

    where the softmax runs over all T*H*W positions (so each map is non-negative and sums to 1), `W_a f_a` is a
    dense layer on the single descriptor (K = 1) or, per class, `s_a[k] = w_a[k] . f_a[k]` (K = num_classes).
    The map logits start at zero (`attention_initializer="zeros"`), i.e. both maps start uniform and the head
    starts as average pooling followed by two linear classifiers.

    Args:
        num_classes: number of classes.
        per_class: one action and one context map per class (True) or one class-agnostic map each (False).
        attention_initializer: initializer of the two 1x1x1 map convolutions.
        kernel_initializer: initializer of the two classifiers. Each of the four kernels is its own draw (its seed
            derived from the initializer's seed and the kernel's name), so the two branches start different.
        **kwargs: base Layer arguments (name, dtype, ...).

    Call arguments:
        features: `[batch, T, H, W, D]` feature map (e.g. I3D `Mixed_5c`); `[batch, H, W, D]` for still images.

    Returns:
        A dict: `logits` `[batch, num_classes]` (= s), `action_scores` (s_a), `context_scores` (s_c), and
        `action_map` / `context_map` (alpha, beta) `[batch, T, H, W, K]` (`[batch, H, W, K]` for images).

    Example:
        >>> head = kerasvid.layers.ActionContextAttention(num_classes=13)
        >>> out = head(np.random.rand(2, 16, 8, 11, 1024).astype("float32"))
        >>> out["logits"].shape, out["action_map"].shape
        (TensorShape([2, 13]), TensorShape([2, 16, 8, 11, 1]))
    """

    def __init__(self, num_classes, per_class=False, attention_initializer="zeros",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"`num_classes` must be an integer >= 1, got num_classes={num_classes!r}")
        if not isinstance(per_class, bool):
            raise ValueError(f"`per_class` must be a bool, got per_class={per_class!r}")
        self.num_classes = num_classes
        self.per_class = per_class
        self.attention_initializer = keras.initializers.get(attention_initializer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def num_maps(self):
        return self.num_classes if self.per_class else 1

    def build(self, input_shape):
        if len(input_shape) not in (4, 5):
            raise ValueError(f"ActionContextAttention expects [batch, T, H, W, D] or [batch, H, W, D] features, "
                             f"got input_shape={tuple(input_shape)}")
        depth = input_shape[-1]
        if depth is None:
            raise ValueError(f"The channel axis of the features must be known, got input_shape={tuple(input_shape)}")
        k, n = self.num_maps, self.num_classes
        # Each kernel is its own draw (seeds derived from the initializer's one seed): with one shared draw the
        # action and context branches would start, and with zero map logits stay, the same function.
        self.action_attention_kernel = self.add_weight(
            name="action_attention_kernel", shape=(depth, k),
            initializer=weight_initializer(self.attention_initializer, "action_attention_kernel"))
        self.action_attention_bias = self.add_weight(name="action_attention_bias", shape=(k,), initializer="zeros")
        self.context_attention_kernel = self.add_weight(
            name="context_attention_kernel", shape=(depth, k),
            initializer=weight_initializer(self.attention_initializer, "context_attention_kernel"))
        self.context_attention_bias = self.add_weight(name="context_attention_bias", shape=(k,), initializer="zeros")
        # Class-agnostic: a dense [D, num_classes]; per class: one weight vector per class on its own descriptor.
        clf_shape = (n, depth) if self.per_class else (depth, n)
        self.action_kernel = self.add_weight(
            name="action_kernel", shape=clf_shape,
            initializer=weight_initializer(self.kernel_initializer, "action_kernel"))
        self.action_bias = self.add_weight(name="action_bias", shape=(n,), initializer="zeros")
        self.context_kernel = self.add_weight(
            name="context_kernel", shape=clf_shape,
            initializer=weight_initializer(self.kernel_initializer, "context_kernel"))
        self.context_bias = self.add_weight(name="context_bias", shape=(n,), initializer="zeros")
        self.built = True

    def _branch(self, flat, att_kernel, att_bias, kernel, bias):
        # flat: [B, N, D] -> map [B, N, K] (softmax over N), descriptors [B, K, D], scores [B, num_classes]
        att = ops.softmax(ops.matmul(flat, att_kernel) + att_bias, axis=1)
        desc = ops.einsum("bnk,bnd->bkd", att, flat)
        if self.per_class:
            scores = ops.einsum("bkd,kd->bk", desc, kernel) + bias
        else:
            scores = ops.matmul(desc[:, 0, :], kernel) + bias
        return att, scores

    def call(self, features):
        shape = ops.shape(features)
        depth = features.shape[-1]
        flat = ops.reshape(features, (shape[0], -1, depth))
        alpha, s_a = self._branch(flat, self.action_attention_kernel, self.action_attention_bias,
                                  self.action_kernel, self.action_bias)
        beta, s_c = self._branch(flat, self.context_attention_kernel, self.context_attention_bias,
                                 self.context_kernel, self.context_bias)
        map_shape = tuple(shape[:-1]) + (self.num_maps,)
        return {
            "logits": s_a + s_c,
            "action_scores": s_a,
            "context_scores": s_c,
            "action_map": ops.reshape(alpha, map_shape),
            "context_map": ops.reshape(beta, map_shape),
        }

    def compute_output_shape(self, input_shape):
        scores = (input_shape[0], self.num_classes)
        maps = tuple(input_shape[:-1]) + (self.num_maps,)
        return {"logits": scores, "action_scores": scores, "context_scores": scores, "action_map": maps,
                "context_map": maps}

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "per_class": self.per_class,
            "attention_initializer": keras.initializers.serialize(self.attention_initializer),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config


@keras.saving.register_keras_serializable(package="kerasvid")
class I3DFlowInput(keras.layers.Layer):
    """Turns optical flow in pixels into the input of an I3D flow stream.

    As for the kinetics-i3d flow models: the flow is clipped to `[-bound, bound]` pixels and divided by `bound`
    (so it lies in [-1, 1]); a clip of T frames has T - 1 flow fields, so with `num_frames` the last field is
    repeated until the clip has `num_frames` fields (the I3D flow stream then sees the RGB stream's geometry).

        out_t = clip(u_t, -bound, bound) / bound,   u_t = u_{T'-1} for t >= T'

    Args:
        bound: the clipping bound in pixels (20 in kinetics-i3d).
        num_frames: pad the time axis to this length by repeating the last field (None: no padding).
        **kwargs: base Layer arguments.

    Call arguments:
        flow: `[batch, T', H, W, 2]` flow fields in pixels (e.g. from `kerasvid.layers.TVNet` on a clip).

    Returns:
        `[batch, num_frames or T', H, W, 2]` in [-1, 1].

    Example:
        >>> I3DFlowInput(num_frames=8)(np.full((1, 7, 4, 4, 2), 30.0, "float32")).shape
        TensorShape([1, 8, 4, 4, 2])
    """

    def __init__(self, bound=20.0, num_frames=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(bound, (int, float)) or isinstance(bound, bool) or bound <= 0:
            raise ValueError(f"`bound` must be a positive number, got bound={bound!r}")
        if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
            raise ValueError(f"`num_frames` must be None or an integer >= 1, got num_frames={num_frames!r}")
        self.bound = float(bound)
        self.num_frames = num_frames

    def call(self, flow):
        flow = ops.clip(flow, -self.bound, self.bound) / self.bound
        steps = flow.shape[1]
        if self.num_frames is not None:
            if steps is None or steps > self.num_frames:
                raise ValueError(f"I3DFlowInput(num_frames={self.num_frames}) needs a static number of flow fields "
                                 f"<= num_frames, got shape {tuple(flow.shape)}")
            if steps < self.num_frames:
                last = ops.repeat(flow[:, -1:], self.num_frames - steps, axis=1)
                flow = ops.concatenate([flow, last], axis=1)
        return flow

    def compute_output_shape(self, input_shape):
        steps = self.num_frames if self.num_frames is not None else input_shape[1]
        return (input_shape[0], steps) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"bound": self.bound, "num_frames": self.num_frames})
        return config
