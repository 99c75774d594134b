"""NonLocalBlock against a numpy embedded-Gaussian reference (kerasvid.layers.non_local)."""
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.layers.non_local import NonLocalBlock
from tests.helpers import check_layer, np_batch_norm, np_dense, randomize


def np_non_local(x, block, training=False):
    x = x.astype(np.float64)
    batch, frames, height, width, channels = x.shape
    theta = np_dense(x, block.theta).reshape(batch, -1, block._dims[-1])
    phi, g = np_dense(x, block.phi), np_dense(x, block.g)
    if block.subsample:  # 2x2 spatial max pooling
        phi = phi.reshape(batch, frames, height // 2, 2, width // 2, 2, -1).max(axis=(3, 5))
        g = g.reshape(batch, frames, height // 2, 2, width // 2, 2, -1).max(axis=(3, 5))
    phi = phi.reshape(batch, -1, theta.shape[-1])
    g = g.reshape(phi.shape)
    logits = np.einsum("bnc,bmc->bnm", theta, phi)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    z = np_batch_norm(np_dense(weights @ g, block.out_conv), block.out_bn, training)
    return x + z.reshape(x.shape)


@pytest.mark.parametrize("kwargs", [dict(), dict(inner_channels=3, subsample=True)])
@pytest.mark.parametrize("training", [False, True])
def test_matches_numpy_and_identity_at_init(kwargs, training):
    x = np.random.RandomState(0).randn(2, 3, 4, 4, 6).astype(np.float32)
    block = NonLocalBlock(**kwargs)
    np.testing.assert_array_equal(block(x, training=training).numpy(), x)
    randomize(block, seed=1)
    want = np_non_local(x, block, training)
    assert np.abs(want - x).max() > 0.1
    np.testing.assert_allclose(block(x, training=training).numpy(), want, rtol=1e-4, atol=1e-4)


def test_parameter_count_matches_formula():
    block = NonLocalBlock()
    block.build((None, 2, 7, 7, 512))
    c, inner = 512, 256
    assert block.count_params() == 3 * (c * inner + inner) + (inner * c + c) + 4 * c == 527616


@pytest.mark.parametrize("subsample,training", [(True, False), (False, True)])
def test_check_layer(subsample, training):
    # Config and .keras round trips, dtype policies, gradients; the outputs against the numpy reference.
    # TF has no float16 MaxPool3D kernel on the CPU (bfloat16 and float32 only), so the subsampled block is checked
    # under mixed_float16 only where a GPU runs the tests.
    policies = ("mixed_bfloat16", "mixed_float16") if not subsample or tf.config.list_logical_devices("GPU") \
        else ("mixed_bfloat16",)
    check_layer(NonLocalBlock, dict(inner_channels=4, subsample=subsample, epsilon=1e-4, momentum=0.9, name="nl"),
                input_shape=(2, 2, 4, 4, 8), call_kwargs=dict(training=training), policies=policies,
                expected_output_shape=(2, 2, 4, 4, 8),
                expected_output=lambda layer, x: np_non_local(x, layer, training), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kwargs,shape,match", [
    (dict(), (1, 4, 4, 8), "rank-5 input"),
    (dict(subsample=True), (1, 2, 3, 4, 8), "even H and W"),
    (dict(inner_channels=0), None, "`inner_channels` must be a positive integer"),
    (dict(subsample=1), None, "`subsample` must be True or False"),
])
def test_errors(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        NonLocalBlock(**kwargs).build(shape)
