"""TVNet: the TV-L1 optical-flow solver unrolled into trainable Keras layers.

From "End-to-End Learning of Motion Representation for Video Understanding" (Fan, Huang, Gan, Ermon, Gong, Huang,
CVPR 2018). The forward pass follows the authors' released `tvnet.py` (MIT) detail for detail so that TVNet-50
(1 scale, 1 warp, 50 iterations, untrained) reproduces their published flow for the sample pair; see
`tests/fixtures/tvnet/README.md`.
"""
import math

import functools

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record
from tensorflow.python.ops import control_flow_util

from kerasvid.layers._blocks import sublayer_list
from kerasvid.ops.differences import backward_divergence_term, centered_gradient, forward_difference
from kerasvid.ops.median import median_filter
from kerasvid.ops.resize import resize_align_corners, resize_half_pixel
from kerasvid.ops.warp import PADDINGS, bicubic_warp, bilinear_warp

__all__ = ["TVNet", "TVNetBlock"]

# Released TVNet's "GRAD_IS_ZERO": the epsilon of the dual-update norm, of |grad I|^2 and of rho.
EPSILON = 1e-12

# Luma weights (ITU-R BT.601) for the channels (B, G, R); TVNet floors the weighted sum.
_BGR_LUMA_WEIGHTS = (0.114, 0.587, 0.299)
# Image pyramids: the released one (every level resampled from the full image, align corners) and OpenCV's
# DualTVL1 one (each level from the previous, half-pixel bilinear; at zoom 0.5 the mean of 2x2 blocks).
PYRAMIDS = ("released", "cascade")
# OpenCV's DualTVL1 stops its pyramid before the first level with a side under 16 pixels.
CASCADE_MIN_SIZE = 16
WARP_INTERPOLATIONS = {"bilinear": bilinear_warp, "bicubic": bicubic_warp}
# Which input channel holds B, G, R for each channel order.
CHANNEL_ORDERS = {"rgb": (2, 1, 0), "bgr": (0, 1, 2)}

# The released 5x5 Gaussian (sigma ~0.8), applied with SAME zero padding.
_GAUSSIAN_5X5 = np.array([[0.000874, 0.006976, 0.01386, 0.006976, 0.000874],
                         [0.006976, 0.0557, 0.110656, 0.0557, 0.006976],
                         [0.01386, 0.110656, 0.219833, 0.110656, 0.01386],
                         [0.006976, 0.0557, 0.110656, 0.0557, 0.006976],
                         [0.000874, 0.006976, 0.01386, 0.006976, 0.000874]], np.float32)


def tv_dual_update(p, grad_u, step, epsilon=EPSILON):
    """Projected dual ascent step of TV-L1 with an analytic gradient (TVNet supp. Eq. 1 and Eq. 2).

        p'_d = (p_d + (tau/theta) grad u_d) / (1 + (tau/theta) sqrt(|grad u_d|^2 + eps))        (supp. Eq. 1)

    The backward pass is the closed form of supp. Eq. 2 instead of autodiff through the square root: with
    `D = 1 + step * s`, `s = sqrt(|grad u|^2 + eps)` (never 0),

        dL/dp      = g / D
        dL/dgrad u = step * g / D - step * grad u / (s * D) * <g, p'>

    which only needs the outputs and `s`, `D` (no stored autodiff intermediates) and is finite everywhere.

    Args:
        p: dual variable, tensor `[..., 2]` (last axis = the x and y components of one flow channel's dual field).
        grad_u: forward gradient of the primal, same shape as `p` (last axis = d/dx, d/dy).
        step: `tau / theta`, a Python float.
        epsilon: the epsilon under the square root.

    Returns:
        `p'`, same shape as `p`.
    """
    out = _dual_update_components(p[..., 0], p[..., 1], grad_u[..., 0], grad_u[..., 1], step, epsilon)
    return tf.stack(out, axis=-1)


def _dual_update_components(p_x, p_y, grad_x, grad_y, step, epsilon=EPSILON):
    """`tv_dual_update` on the two components of the dual field as separate tensors (same maths and gradient).

    The solver's loop keeps every field as its own `[batch, H, W]` tensor: XLA vectorises those along W, where a
    trailing axis of 2 (or 2 x 2) does not vectorise (1.8x slower per iteration on CPU).

    Returns:
        `(p'_x, p'_y)`.
    """
    step = float(step)

    @tf.custom_gradient
    def _update(p_x, p_y, grad_x, grad_y):
        norm = tf.sqrt(tf.square(grad_x) + tf.square(grad_y) + epsilon)
        denominator = 1.0 + step * norm
        out_x = (p_x + step * grad_x) / denominator
        out_y = (p_y + step * grad_y) / denominator

        def grad(upstream_x, upstream_y):
            d_x, d_y = upstream_x / denominator, upstream_y / denominator
            inner = upstream_x * out_x + upstream_y * out_y
            scale = step / (norm * denominator) * inner
            return d_x, d_y, step * d_x - grad_x * scale, step * d_y - grad_y * scale

        return (out_x, out_y), grad

    return _update(p_x, p_y, grad_x, grad_y)


def tvl1_iteration(u, p, rho_c, image_gradient, gradient_kernel, divergence_kernel, tau, lbda, theta):
    """One TV-L1 iteration with explicit kernels: the computation of `TVNetBlock` (see its docstring).

    Args:
        u, p, rho_c, image_gradient: as in `TVNetBlock.call`.
        gradient_kernel: `[2, 2, 2]` forward-gradient taps `[flow channel, direction (x, y), tap]`.
        divergence_kernel: `[2, 2, 2]` divergence taps, same layout.
        tau, lbda, theta: Python floats.

    Returns:
        `(u, p)` after the iteration.
    """
    fields = _tvl1_iteration_components(_split_fields(u, p), rho_c[..., 0], image_gradient[..., 0],
                                       image_gradient[..., 1], gradient_kernel, divergence_kernel, tau, lbda, theta)
    return _join_fields(fields)


def _split_fields(u, p):
    """`u [B, H, W, 2]`, `p [B, H, W, 2, 2]` -> `(u_1, u_2, p_11, p_12, p_21, p_22)`, each `[B, H, W]`."""
    return u[..., 0], u[..., 1], p[..., 0, 0], p[..., 0, 1], p[..., 1, 0], p[..., 1, 1]


def _join_fields(fields):
    """The inverse of `_split_fields`: `(u, p)`."""
    u_1, u_2, p_11, p_12, p_21, p_22 = fields
    return (tf.stack([u_1, u_2], axis=-1),
            tf.stack([tf.stack([p_11, p_12], axis=-1), tf.stack([p_21, p_22], axis=-1)], axis=-2))


def _squared_gradient_norm(grad_x, grad_y):
    """`|grad I|^2 + eps`, the `g` of `TVNetBlock`."""
    return tf.square(grad_x) + tf.square(grad_y) + EPSILON


def _tvl1_iteration_components(fields, rho_c, grad_x, grad_y, gradient_kernel, divergence_kernel, tau, lbda, theta,
                              grad_sq=None):
    """`tvl1_iteration` with every field a separate `[batch, H, W]` tensor (the solver loop's layout).

    Args:
        fields: `(u_1, u_2, p_11, p_12, p_21, p_22)` (`p_ck`: flow channel c, direction k = x, y).
        rho_c, grad_x, grad_y: `[batch, H, W]`, the warp's constants.
        gradient_kernel, divergence_kernel, tau, lbda, theta: as in `tvl1_iteration`.
        grad_sq: optional `|grad I_2w|^2 + eps` (fixed within a warp: the solver loop computes it once).

    Returns:
        the six fields after the iteration.
    """
    u_1, u_2, p_11, p_12, p_21, p_22 = fields
    l_t = lbda * theta
    if grad_sq is None:
        grad_sq = _squared_gradient_norm(grad_x, grad_y)
    rho = rho_c + (grad_x * u_1 + grad_y * u_2) + EPSILON
    below = rho < -l_t * grad_sq
    above = rho > l_t * grad_sq
    middle = ~below & ~above & (grad_sq > EPSILON)
    # the -rho/g branch only where g > eps (g == eps exactly where the image is flat)
    factor = tf.where(below, l_t, tf.where(above, -l_t, tf.where(middle, -rho / grad_sq, tf.zeros_like(rho))))
    gradient_kernel = tf.convert_to_tensor(gradient_kernel)
    divergence_kernel = tf.convert_to_tensor(divergence_kernel)
    out = []
    for c, (u, grad, p_x, p_y) in enumerate(((u_1, grad_x, p_11, p_12), (u_2, grad_y, p_21, p_22))):
        divergence = (backward_divergence_term(p_x, 2, (divergence_kernel[c, 0, 0], divergence_kernel[c, 0, 1]))
                      + backward_divergence_term(p_y, 1, (divergence_kernel[c, 1, 0], divergence_kernel[c, 1, 1])))
        u = (u + factor * grad) + theta * divergence
        d_x = forward_difference(u, 2, (gradient_kernel[c, 0, 0], gradient_kernel[c, 0, 1]))
        d_y = forward_difference(u, 1, (gradient_kernel[c, 1, 0], gradient_kernel[c, 1, 1]))
        out.append((u,) + _dual_update_components(p_x, p_y, d_x, d_y, tau / theta))
    (u_1, p_11, p_12), (u_2, p_21, p_22) = out
    return u_1, u_2, p_11, p_12, p_21, p_22


@keras.saving.register_keras_serializable(package="kerasvid")
class TVNetBlock(keras.layers.Layer):
    """One unrolled TV-L1 iteration with trainable forward-gradient and divergence kernels (a TVNet "iteration").

    From "End-to-End Learning of Motion Representation for Video Understanding" (Fan et al., CVPR 2018), the
    iteration of the dual TV-L1 solver (Zach et al. 2007) in the form of the released TVNet code. For a flow
    `u = (u_1, u_2)` with dual fields `p_c = (p_c1, p_c2)`, warped second frame `I_2w`, its gradient `grad I_2w`,
    `g = |grad I_2w|^2 + eps` and `rho_c = I_2w - grad I_2w . u_warp - I_1` (fixed within a warp):

        rho = rho_c + grad I_2w . u + eps
        v   = u + { lambda theta grad I_2w         if rho < -lambda theta g
                  { -lambda theta grad I_2w        if rho >  lambda theta g
                  { -rho / g grad I_2w             otherwise (and 0 where g <= eps)
        u_c = v_c + theta div(p_c)
        p_c = (p_c + tau/theta grad u_c) / (1 + tau/theta sqrt(|grad u_c|^2 + eps))     (supp. Eq. 1)

    The `grad` and `div` convolutions start as the `[-1, 1]` finite differences and are trainable (16 scalars:
    a 2-tap kernel per flow channel c, per direction x/y, for the gradient and for the divergence); the dual
    update uses `tv_dual_update`, a `tf.custom_gradient` implementing supp. Eq. 2.

    Args:
        tau: time step of the dual update.
        lbda: weight of the data term (lambda).
        theta: coupling weight of `(u - v)^2`.
        **kwargs: standard layer arguments (`name`, `trainable`, `dtype`).

    Call arguments:
        u: flow `[batch, H, W, 2]` (u_1 = x, u_2 = y).
        p: dual variables `[batch, H, W, 2, 2]`; `p[..., c, k]` = `p_{c+1, k+1}` (flow channel c, direction k).
        rho_c: `[batch, H, W, 1]`, the constant part of the linearised residual for the current warp.
        image_gradient: `[batch, H, W, 2]`, `(d/dx, d/dy)` of the warped second frame.

    Returns:
        `(u, p)` after the iteration, same shapes.

    Example:

    >>> block = TVNetBlock()
    >>> u, p = block(tf.zeros((1, 8, 8, 2)), tf.zeros((1, 8, 8, 2, 2)), tf.ones((1, 8, 8, 1)),
    ...              tf.ones((1, 8, 8, 2)))
    """

    def __init__(self, tau=0.25, lbda=0.15, theta=0.3, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("tau", tau), ("lbda", lbda), ("theta", theta)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"`{name}` must be a positive number, got {name}={value!r}")
        self.tau = float(tau)
        self.lbda = float(lbda)
        self.theta = float(theta)

    def build(self, *args, **kwargs):
        init = keras.initializers.Constant(np.tile(np.array([-1.0, 1.0], np.float32), (2, 2, 1)))
        # [flow channel c, direction (x, y), tap]
        self.gradient_kernel = self.add_weight(name="gradient_kernel", shape=(2, 2, 2), initializer=init)
        self.divergence_kernel = self.add_weight(name="divergence_kernel", shape=(2, 2, 2), initializer=init)

    def call(self, u, p, rho_c, image_gradient):
        return tvl1_iteration(u, p, rho_c, image_gradient, self.gradient_kernel, self.divergence_kernel,
                              self.tau, self.lbda, self.theta)

    def compute_output_spec(self, u, p, rho_c, image_gradient):
        return (keras.KerasTensor(u.shape, u.dtype), keras.KerasTensor(p.shape, p.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(tau=self.tau, lbda=self.lbda, theta=self.theta)
        return config


@functools.lru_cache(maxsize=None)
def _xla_available():
    """Whether XLA can compile and run a function on this machine (probed once, eagerly)."""
    try:
        with tf.init_scope():
            probe = tf.function(lambda x: x + 1.0, jit_compile=True)
            return bool(probe(tf.constant(1.0)).numpy() == 2.0)
    except (tf.errors.OpError, NotImplementedError, ValueError, RuntimeError):
        return False


def _zoom_size(height, width, factor):
    """Size of a pyramid level, `int(side * factor + 0.5)` (released TVNet's `zoom_size`)."""
    return int(float(height) * factor + 0.5), int(float(width) * factor + 0.5)


def pyramid_sizes(height, width, scales, zoom):
    """Sizes of the image pyramid, finest first, as the released TVNet chooses them, capped to what fits.

    `n = min(1 + ln(sqrt(H^2 + W^2) / 4) / ln(1 / zoom), scales)` levels (truncated to an int), further reduced so
    that every level is at least 2x2 (the centred gradient needs two pixels per side).

    Returns:
        list of `(height, width)` for scale 0 (full size), 1, ..., n - 1.
    """
    limit = 1 + math.log(math.sqrt(height ** 2 + width ** 2) / 4.0) / math.log(1.0 / zoom)
    count = max(1, int(min(limit, scales)))
    sizes = [_zoom_size(height, width, np.float32(zoom) ** s) for s in range(count)]
    while len(sizes) > 1 and min(sizes[-1]) < 2:
        sizes.pop()
    return sizes


def cascade_sizes(height, width, scales, zoom):
    """Sizes of the level-by-level pyramid (`pyramid="cascade"`), finest first, as OpenCV's `DualTVL1OpticalFlow`
    chooses them.

    Each level's sides are `round(side * zoom)` of the previous level's (round half to even, as `cv::resize` with a
    scale factor), up to `scales` levels; as in OpenCV, the first level narrower or lower than
    `CASCADE_MIN_SIZE` (16) pixels and every level after it are dropped (OpenCV then lowers `nscales`). The full-size
    level is always kept.

    Example:
    >>> cascade_sizes(112, 112, 5, 0.5)  # [(112, 112), (56, 56), (28, 28)]: 14x14 is under 16 px
    """
    sizes = [(height, width)]
    while len(sizes) < scales:
        h, w = sizes[-1]
        level = (round(h * zoom), round(w * zoom))
        if min(level) < CASCADE_MIN_SIZE:
            break
        sizes.append(level)
    return sizes


@keras.saving.register_keras_serializable(package="kerasvid")
class TVNet(keras.layers.Layer):
    """TVNet: multi-scale TV-L1 optical flow unrolled into trainable layers (Fan et al., CVPR 2018).

    From "End-to-End Learning of Motion Representation for Video Understanding". Given two frames, computes the
    flow `u` minimising the TV-L1 energy `sum |grad u_1| + |grad u_2| + lambda |I_2(x + u) - I_1|` with the dual
    algorithm of Zach et al., exactly as the authors' released forward pass:

    1. grey = floor(luma) with weights `(0.299, 0.587, 0.114)` for RGB (`(0.114, 0.587, 0.299)` for BGR);
    2. joint min-max stretch of the two grey images to [0, 255] (per sample; `stretch=False` skips it);
    3. the released 5x5 Gaussian (SAME zero padding);
    4. a pyramid of `n = min(1 + ln(diag / 4) / ln(1 / zoom), scales)` levels of size `int(side * zoom^s + 0.5)`
       (align-corners bilinear resampling), coarse to fine, the flow upsampled and divided by `zoom`;
    5. per scale: duals `p = 0`; `warps` times: warp `I_2`, `dI_2/dx`, `dI_2/dy` (centred differences) by the
       current flow, then `iterations` `TVNetBlock`s (supp. Eq. 1 with the Eq. 2 gradient).

    Options of OpenCV's `DualTVL1OpticalFlow` that the released TVNet lacks (their defaults keep TVNet-50 equal to
    the released flow): `outer_iterations` repeats each warp's `iterations` (OpenCV's outer/inner iterations; the
    blocks' kernels are shared by the repetitions, so the weights do not grow), `median_filtering` median-filters
    the flow before each repetition (OpenCV: 5), and `epsilon` stops a sample once an iteration moves its flow by
    at most `epsilon^2 H W` (summed squared change; OpenCV: 0.01). The scale step is `zoom` (OpenCV's `scaleStep`).
    `pyramid="cascade"` builds the pyramid as OpenCV does (each level resized from the previous one, half-pixel
    bilinear, so zoom 0.5 averages 2x2 blocks instead of sampling the full image; the flow is upsampled the same
    way, and levels under 16 px dropped as OpenCV drops them), `presmoothing=False` leaves out the released 5x5
    Gaussian (OpenCV does not smooth), `stretch=False` feeds the grey frames unstretched (OpenCV's input), and
    `warp_interpolation="bicubic"` warps as OpenCV does.

    Speed: by default the solver (steps 4-5) runs compiled with XLA, its backward pass too, inside any caller
    (eager, `tf.function`, `model.predict`, a training loop); see `jit_compile`.

    Every `TVNetBlock` (scale x warp x iteration) has its own 16 trainable kernel scalars, as in the released model
    (TVNet-50 = 1 scale, 1 warp, 50 iterations: 800). With `learn_initial_flow=True` the initial flow `u_0` at the
    coarsest scale is a trainable `[1, h, w, 2]` weight (zeros at init), as in the released model; the default
    starts from zero flow with no weight, which keeps the layer free of a fixed input size except through the
    pyramid. `scales` is a maximum: inputs too small for the requested pyramid use fewer levels (see
    `pyramid_sizes`; `num_scales` tells how many after building). H and W must be static and >= 2.

    Args:
        scales: maximum number of pyramid levels.
        warps: warps per scale.
        iterations: TV-L1 iterations per warp.
        tau: time step of the dual update.
        lbda: data-term weight lambda.
        theta: coupling weight theta.
        zoom: pyramid down-sampling factor in (0, 1).
        channel_order: `"rgb"` or `"bgr"`, the channel order of the input frames (the released demo reads BGR
            with OpenCV; feeding the same pixels as RGB with `channel_order="rgb"` gives the same grey image).
        learn_initial_flow: add a trainable initial flow at the coarsest scale.
        (The layer's dtype policy defaults to float32, also under a global mixed-precision policy: the
        solver always computes in float32.)
        warp_padding: border mode of the warps, see `kerasvid.ops.bilinear_warp` (`"border"` or `"zeros"`).
        unroll: False (default): the iterations of each warp run in a `tf.while_loop` over the blocks' stacked
            kernels; True: unrolled, one set of ops per `TVNetBlock` (the released graph). Same numbers and
            gradients; the loop's graph is ~`iterations` times smaller, so it traces and compiles faster
            (timings: `benchmarks/tvnet.py`, README).
        outer_iterations: repetitions of the `iterations` of each warp (OpenCV's `outerIterations`).
        median_filtering: odd side of the median filter applied to the flow before each repetition (1 = off;
            `kerasvid.ops.median.median_filter`, replicated borders as OpenCV's `medianBlur`).
        epsilon: stopping threshold (OpenCV's `epsilon`); 0 = always run every iteration.
        pyramid: `"released"` (default): each level resampled from the full-size image with aligned corners, the
            flow upsampled the same way (released TVNet); `"cascade"`: each level `kerasvid.ops.resize.
            resize_half_pixel` of the previous one with ratio `1 / zoom` (OpenCV's `resize(INTER_LINEAR)`; sizes
            from `cascade_sizes`: OpenCV's, no level under 16 px), the flow upsampled half-pixel bilinearly.
        presmoothing: apply the released 5x5 Gaussian to the grey images (default True; OpenCV: none).
        stretch: True (default, released step 2): stretch the grey pair jointly to [0, 255] (its minimum to 0, its
            maximum to 255); False: use the grey frames as they are (what OpenCV's DualTVL1 is given). The two
            agree only on pairs that already span 0-255; TV-L1 is not invariant to the stretch (lambda weighs the
            grey differences).
        warp_interpolation: `"bilinear"` (default, released) or `"bicubic"` (`kerasvid.ops.warp.bicubic_warp`,
            OpenCV's `INTER_CUBIC`) for warping the second frame and its gradient.
        jit_compile: None (default): compile the solver with XLA unless `unroll=True`, XLA is unavailable, an
            enclosing function is already XLA-compiled, or a distribution strategy spreads replicas over CPU devices
            (where XLA cannot reach mirrored variables); True: always; False: never. The first call per input shape
            compiles (seconds; the backward pass compiles on the first gradient).
        **kwargs: standard layer arguments.

    Call arguments:
        frame1: `[batch, H, W, 3]` first frames, 0-255 (any numeric dtype), or a clip `[batch, T, H, W, 3]` with
            `frame2=None`, in which case the flow of every consecutive pair is computed.
        frame2: `[batch, H, W, 3]` second frames, or None for a clip.

    Returns:
        float32 flow `[batch, H, W, 2]` in pixels (channel 0 = x, channel 1 = y), such that
        `frame2(x + u) ~ frame1(x)`; for a clip, `[batch, T - 1, H, W, 2]`.

    Example:

    >>> tvnet = kerasvid.layers.TVNet(iterations=10)
    >>> flow = tvnet(tf.zeros((2, 32, 32, 3)), tf.zeros((2, 32, 32, 3)))  # [2, 32, 32, 2]
    """

    def __init__(self, scales=1, warps=1, iterations=50, tau=0.25, lbda=0.15, theta=0.3, zoom=0.5,
                 channel_order="rgb", learn_initial_flow=False, warp_padding="border", unroll=False,
                 outer_iterations=1, median_filtering=1, epsilon=0.0, jit_compile=None, pyramid="released",
                 presmoothing=True, warp_interpolation="bilinear", stretch=True, **kwargs):
        # float32 whatever the global policy: the 1e-12 epsilons and the thresholding need it
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        if self.compute_dtype != "float32" or self.variable_dtype != "float32":
            raise ValueError(f"TVNet computes in float32 (its 1e-12 epsilons and thresholds need it), got "
                             f"dtype={kwargs['dtype']!r} (compute {self.compute_dtype}, variables "
                             f"{self.variable_dtype}); leave `dtype` unset: under a mixed global policy TVNet stays "
                             f"float32 and the rest of the model is mixed")
        for name, value in (("scales", scales), ("warps", warps), ("iterations", iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {name}={value!r}")
        if not isinstance(zoom, (int, float)) or not 0.0 < zoom < 1.0:
            raise ValueError(f"`zoom` must be in (0, 1), got zoom={zoom!r}")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"`channel_order` must be 'rgb' or 'bgr', got channel_order={channel_order!r}")
        if warp_padding not in PADDINGS:
            raise ValueError(f"`warp_padding` must be one of {PADDINGS}, got warp_padding={warp_padding!r}")
        if isinstance(outer_iterations, bool) or not isinstance(outer_iterations, int) or outer_iterations < 1:
            raise ValueError(f"`outer_iterations` must be an integer >= 1, got outer_iterations={outer_iterations!r}")
        if (isinstance(median_filtering, bool) or not isinstance(median_filtering, int) or median_filtering < 1
                or median_filtering % 2 == 0):
            raise ValueError(f"`median_filtering` must be an odd integer >= 1 (1 = off), got "
                             f"median_filtering={median_filtering!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise ValueError(f"`epsilon` must be a number >= 0 (0 = no stopping test), got epsilon={epsilon!r}")
        if pyramid not in PYRAMIDS:
            raise ValueError(f"`pyramid` must be one of {PYRAMIDS}, got pyramid={pyramid!r}")
        for name, value in (("presmoothing", presmoothing), ("stretch", stretch)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False, got {name}={value!r}")
        if warp_interpolation not in WARP_INTERPOLATIONS:
            raise ValueError(f"`warp_interpolation` must be one of {tuple(WARP_INTERPOLATIONS)}, got "
                             f"warp_interpolation={warp_interpolation!r}")
        if jit_compile not in (None, True, False):
            raise ValueError(f"`jit_compile` must be None (automatic), True or False, got jit_compile={jit_compile!r}")
        TVNetBlock(tau, lbda, theta)  # validates tau, lbda, theta
        self.scales = scales
        self.warps = warps
        self.iterations = iterations
        self.tau = float(tau)
        self.lbda = float(lbda)
        self.theta = float(theta)
        self.zoom = float(zoom)
        self.channel_order = channel_order
        self.learn_initial_flow = bool(learn_initial_flow)
        self.warp_padding = warp_padding
        self.unroll = bool(unroll)
        self.outer_iterations = outer_iterations
        self.median_filtering = median_filtering
        self.epsilon = float(epsilon)
        self.jit_compile = jit_compile
        self.pyramid = pyramid
        self.stretch = stretch
        self.presmoothing = presmoothing
        self.warp_interpolation = warp_interpolation
        self.sizes = None
        self.blocks = []
        # the XLA-compiled solver, created on first use; kept out of Keras/TF tracking (it is not state)
        object.__setattr__(self, "_compiled_solver", None)

    @property
    def num_scales(self):
        """Pyramid levels actually used (known after `build`)."""
        return None if self.sizes is None else len(self.sizes)

    def build(self, input_shape, *args, **kwargs):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (4, 5) or input_shape[-1] != 3:
            raise ValueError(f"TVNet expects frames [batch, H, W, 3] or a clip [batch, T, H, W, 3], got shape "
                             f"{input_shape}")
        height, width = input_shape[-3], input_shape[-2]
        if height is None or width is None or height < 2 or width < 2:
            raise ValueError(f"TVNet needs a static height and width of at least 2 pixels, got shape {input_shape}")
        self.sizes = (pyramid_sizes if self.pyramid == "released" else cascade_sizes)(height, width, self.scales,
                                                                                     self.zoom)
        blocks = []
        for s in reversed(range(len(self.sizes))):
            h, w = self.sizes[s]
            for warp in range(self.warps):
                for it in range(self.iterations):
                    block = TVNetBlock(self.tau, self.lbda, self.theta, name=f"scale{s}_warp{warp}_iter{it}",
                                       dtype="float32")
                    block.build((None, h, w, 2))
                    blocks.append(block)
        self.blocks = sublayer_list(self, "blocks", blocks)
        if self.learn_initial_flow:
            h, w = self.sizes[-1]
            self.initial_flow = self.add_weight(name="initial_flow", shape=(1, h, w, 2), initializer="zeros")

    # -- preprocessing (released TVNet steps 1-3) --
    def _grey(self, frames):
        # Summed in B, G, R order whatever the channel order: the floor makes the rounding of the sum visible,
        # and this order reproduces the released output (RGB and BGR inputs then give identical grey images).
        blue, green, red = (frames[..., c:c + 1] for c in CHANNEL_ORDERS[self.channel_order])
        weights = _BGR_LUMA_WEIGHTS
        return tf.floor(weights[0] * blue + weights[1] * green + weights[2] * red)

    @staticmethod
    def _normalize(grey1, grey2):
        low = tf.minimum(tf.reduce_min(grey1, axis=[1, 2, 3], keepdims=True),
                         tf.reduce_min(grey2, axis=[1, 2, 3], keepdims=True))
        high = tf.maximum(tf.reduce_max(grey1, axis=[1, 2, 3], keepdims=True),
                          tf.reduce_max(grey2, axis=[1, 2, 3], keepdims=True))
        span = high - low
        safe = tf.where(span > 0, span, tf.ones_like(span))
        return (tf.where(span > 0, 255.0 * (grey1 - low) / safe, grey1),
                tf.where(span > 0, 255.0 * (grey2 - low) / safe, grey2))

    @staticmethod
    def _smooth(grey):
        kernel = tf.constant(_GAUSSIAN_5X5[:, :, None, None], grey.dtype)
        return tf.nn.conv2d(grey, kernel, strides=1, padding="SAME")

    def _flow(self, frame1, frame2):
        frame1 = tf.cast(frame1, "float32")
        frame2 = tf.cast(frame2, "float32")
        # preprocessing stays outside XLA: the floor of the luma sum must round exactly as the released graph
        image1, image2 = self._grey(frame1), self._grey(frame2)
        if self.stretch:
            image1, image2 = self._normalize(image1, image2)
        if self.presmoothing:
            image1, image2 = self._smooth(image1), self._smooth(image2)
        if not self._use_xla():
            return self._solve(image1, image2)
        return self._solve_compiled(image1, image2)

    def _solve_compiled(self, image1, image2):
        """`_solve` compiled with XLA, forward and backward.

        The gradient of a compiled `tf.while_loop` cannot leave XLA (its accumulators are TensorLists), so the
        backward pass is a second compiled function that recomputes the forward pass and differentiates it inside
        XLA (the custom gradient of supp. Eq. 2 included); the solver's outputs are its only stored activations.
        """
        weights = list(self.trainable_weights)
        if self._compiled_solver is None or [id(w) for w in self._compiled_solver[2]] != [id(w) for w in weights]:

            def backward(image1, image2, upstream):
                with tf.GradientTape() as tape:
                    tape.watch([image1, image2])
                    flow = self._solve(image1, image2)
                grads = tape.gradient(flow, [image1, image2] + weights, output_gradients=upstream)
                return [tf.zeros_like(w) if g is None else g for g, w in zip(grads, [image1, image2] + weights)]

            object.__setattr__(self, "_compiled_solver", (
                tf.function(self._solve, jit_compile=True, reduce_retracing=True),
                tf.function(backward, jit_compile=True, reduce_retracing=True), weights))
        forward, backward, weights = self._compiled_solver

        # The weights enter as inputs: the compiled call is not recorded by the tape, so they are how the
        # gradient reaches the variables.
        @tf.custom_gradient
        def solve(image1, image2, *variables):
            def grad(upstream, variables=None):
                return backward(image1, image2, upstream), [tf.zeros_like(v) for v in variables or ()]

            with record.stop_recording():  # the tape must not differentiate the compiled loop itself
                return forward(image1, image2), grad

        return solve(image1, image2, *[getattr(w, "value", w) for w in weights])

    def _use_xla(self):
        """Whether to run the solver compiled with XLA (see the `jit_compile` argument)."""
        if self.jit_compile is False or (self.jit_compile is None and self.unroll):
            return False
        if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
            return False  # an enclosing jit-compiled function compiles the solver already
        if self.jit_compile:
            return True
        if tf.distribute.has_strategy():
            strategy = tf.distribute.get_strategy()
            devices = getattr(strategy.extended, "worker_devices", ())
            if strategy.num_replicas_in_sync > 1 and any("CPU" in d.upper() for d in devices):
                return False  # XLA cannot reach variables mirrored over logical CPU devices
        return _xla_available()

    def _solve(self, image1, image2):
        """Pyramid, warps and iterations (released TVNet steps 4-5) on the smoothed grey images."""
        batch = tf.shape(image1)[0]
        blocks = iter(self.blocks)
        if self.pyramid == "released":
            levels1 = [resize_align_corners(image1, size) for size in self.sizes]
            levels2 = [resize_align_corners(image2, size) for size in self.sizes]
        else:
            levels1, levels2 = [image1], [image2]
            for size in self.sizes[1:]:
                levels1.append(resize_half_pixel(levels1[-1], size, 1.0 / self.zoom))
                levels2.append(resize_half_pixel(levels2[-1], size, 1.0 / self.zoom))
        u = None
        for s in reversed(range(len(self.sizes))):
            size = self.sizes[s]
            level1, level2 = levels1[s], levels2[s]
            if u is None:
                u = (tf.tile(tf.cast(self.initial_flow, "float32"), tf.stack([batch, 1, 1, 1]))
                     if self.learn_initial_flow else tf.zeros(tf.stack([batch, size[0], size[1], 2])))
            else:  # coarse-to-fine: upsample the flow and rescale it to the finer pixel grid
                upsample = resize_align_corners if self.pyramid == "released" else resize_half_pixel
                u = upsample(u, size) / np.float32(self.zoom)
            grad_x, grad_y = centered_gradient(level2)
            stacked = tf.concat([level2, grad_x, grad_y], axis=-1)
            p = tf.zeros(tf.stack([batch, size[0], size[1], 2, 2]))
            threshold = self.epsilon ** 2 * size[0] * size[1]
            for _ in range(self.warps):
                warped = WARP_INTERPOLATIONS[self.warp_interpolation](stacked, u, padding=self.warp_padding)
                # XLA fuses the warp's gathers into every consumer (rho_c, each gradient, |grad|^2), running them
                # 3-4 times; a product with the identity is a dot, whose result XLA keeps in memory, so they run
                # once (bicubic at 250x370: 15 -> 6.5 ms per warp; the values are unchanged)
                warped = tf.einsum("bhwc,cd->bhwd", warped, tf.eye(3, dtype=warped.dtype))
                image_gradient = warped[..., 1:3]
                rho_c = warped[..., 0:1] - tf.reduce_sum(image_gradient * u, axis=-1, keepdims=True) - level1
                warp_blocks = [next(blocks) for _ in range(self.iterations)]
                u, p = self._warp_iterations(warp_blocks, u, p, rho_c, image_gradient, threshold)
        return u

    def _warp_iterations(self, blocks, u, p, rho_c, image_gradient, threshold):
        """The iterations of one warp: `outer_iterations` x (median filter, `iterations` TV-L1 iterations).

        With `epsilon > 0` a sample stops (its flow and duals freeze) once the squared change of its flow in one
        iteration, summed over pixels, is at most `epsilon^2 H W` (OpenCV's DualTVL1 test, checked before every
        outer and inner iteration); the other samples of the batch go on.
        """
        stopping = self.epsilon > 0
        if self.unroll and self.outer_iterations == 1 and self.median_filtering == 1 and not stopping:
            for block in blocks:  # the released graph, one TVNetBlock per iteration
                u, p = block(u, p, rho_c, image_gradient)
            return u, p

        # Every field its own [batch, H, W] tensor (XLA vectorises those, not a trailing axis of 2).
        constants = (rho_c[..., 0], image_gradient[..., 0], image_gradient[..., 1])
        grad_sq = _squared_gradient_norm(constants[1], constants[2])
        error = tf.fill(tf.shape(u)[:1], np.float32(np.inf))

        def median(fields, error):
            u = tf.stack(fields[:2], axis=-1)
            filtered = median_filter(u, self.median_filtering)
            if stopping:
                filtered = tf.where((error > threshold)[:, None, None, None], filtered, u)
            return (filtered[..., 0], filtered[..., 1]) + tuple(fields[2:])

        def step(fields, error, gradient_kernel, divergence_kernel):
            new = _tvl1_iteration_components(fields, *constants, gradient_kernel, divergence_kernel,
                                            self.tau, self.lbda, self.theta, grad_sq)
            if not stopping:
                return new, error
            active = error > threshold
            new_error = tf.reduce_sum(tf.square(new[0] - fields[0]) + tf.square(new[1] - fields[1]), axis=[1, 2])
            # Freezing the stopped samples needs the old and new fields in one XLA fusion, which costs 2.5x per
            # iteration on CPU: only done once some sample of the batch has stopped.
            new = tf.cond(tf.reduce_all(active), lambda: tuple(new),
                          lambda: tuple(tf.where(active[:, None, None], n, f) for n, f in zip(new, fields)))
            return new, tf.where(active, new_error, error)

        fields = _split_fields(u, p)
        if self.unroll:
            for _ in range(self.outer_iterations):
                if self.median_filtering > 1:
                    fields = median(fields, error)
                for block in blocks:
                    fields, error = step(fields, error, block.gradient_kernel, block.divergence_kernel)
            return _join_fields(fields)

        gradient_kernels = tf.stack([tf.convert_to_tensor(b.gradient_kernel) for b in blocks])
        divergence_kernels = tf.stack([tf.convert_to_tensor(b.divergence_kernel) for b in blocks])
        count = self.iterations
        total = count * self.outer_iterations

        # One flat loop over outer x inner iterations; the median runs in a `tf.cond` at the start of each outer
        # iteration (a loop nested in another one would not compile with XLA for the gradient, and a Python loop
        # of loops compiles for minutes).
        def iterate(i, fields, error):
            k = i % count
            if self.median_filtering > 1:
                fields = tf.cond(tf.equal(k, 0), lambda: median(fields, error), lambda: tuple(fields))
            return step(fields, error, gradient_kernels[k], divergence_kernels[k])

        if stopping:
            def body(i, *state):
                fields, error = iterate(i, state[:-1], state[-1])
                return (i + 1,) + tuple(fields) + (error,)

            state = tf.while_loop(lambda i, *state: (i < total) & tf.reduce_any(state[-1] > threshold), body,
                                  (tf.constant(0),) + fields + (error,), maximum_iterations=total)
        else:  # no constant loop variable: tf2xla fails on the specialised body it would make
            def body(i, *fields):
                return (i + 1,) + tuple(iterate(i, fields, error)[0])

            state = tf.while_loop(lambda i, *fields: i < total, body, (tf.constant(0),) + fields,
                                  maximum_iterations=total)
        return _join_fields(state[1:7])

    def call(self, frame1, frame2=None):
        if frame2 is None:
            if frame1.shape.rank != 5 or frame1.shape[1] is None or frame1.shape[1] < 2:
                raise ValueError(f"With one input TVNet expects a clip [batch, T >= 2, H, W, 3], got shape "
                                 f"{frame1.shape}; pass two frames as tvnet(frame1, frame2)")
            steps = frame1.shape[1]
            spatial = frame1.shape[2:]
            first = tf.reshape(frame1[:, :-1], (-1,) + tuple(spatial))
            second = tf.reshape(frame1[:, 1:], (-1,) + tuple(spatial))
            flow = self._flow(first, second)
            return tf.reshape(flow, (-1, steps - 1) + tuple(spatial[:2]) + (2,))
        if frame1.shape.rank != 4 or tuple(frame1.shape[1:]) != tuple(frame2.shape[1:]):
            raise ValueError(f"TVNet expects two frames of the same shape [batch, H, W, 3], got {frame1.shape} and "
                             f"{frame2.shape}")
        return self._flow(frame1, frame2)

    def compute_output_spec(self, frame1, frame2=None):
        shape = tuple(frame1.shape)
        if frame2 is None:
            return keras.KerasTensor(shape[:1] + (shape[1] - 1,) + shape[2:4] + (2,), "float32")
        return keras.KerasTensor(shape[:3] + (2,), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(scales=self.scales, warps=self.warps, iterations=self.iterations, tau=self.tau,
                      lbda=self.lbda, theta=self.theta, zoom=self.zoom, channel_order=self.channel_order,
                      learn_initial_flow=self.learn_initial_flow, warp_padding=self.warp_padding,
                      unroll=self.unroll, outer_iterations=self.outer_iterations,
                      median_filtering=self.median_filtering, epsilon=self.epsilon, jit_compile=self.jit_compile,
                      pyramid=self.pyramid, presmoothing=self.presmoothing,
                      warp_interpolation=self.warp_interpolation, stretch=self.stretch)
        return config
