"""BN-Inception's average pools count the zero padding, as Caffe/TSN do (so TSN weights port)."""
import keras
import numpy as np
import pytest

from kerasvid.backbones import bn_inception


def _caffe_avg_pool_3x3_pad1(x):
    """Caffe AVE pooling, kernel 3, stride 1, pad 1, by hand: the window sum over the zero-padded map / 9."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[2:4]
    return sum(padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def test_average_pool_counts_the_padding_at_the_border():
    x = np.arange(1, 2 * 4 * 5 * 2 + 1, dtype="float32").reshape(1, 2, 4, 5, 2)
    inp = keras.Input((2, 4, 5, 2))
    out = np.asarray(keras.Model(inp, bn_inception._pool(inp, "avg", 1, "p"))(x))
    # Corner (0, 0) of frame 0, channel 0: the 4 values inside the frame over 9 (TF "same" would divide by 4).
    corner = (x[0, 0, 0, 0, 0] + x[0, 0, 0, 1, 0] + x[0, 0, 1, 0, 0] + x[0, 0, 1, 1, 0]) / 9.0
    assert out[0, 0, 0, 0, 0] == pytest.approx(corner)
    # Bottom edge, middle column: 6 values over 9.
    edge = x[0, 1, 2:4, 1:4, 1].sum() / 9.0
    assert out[0, 1, 3, 2, 1] == pytest.approx(edge)
    np.testing.assert_allclose(out, _caffe_avg_pool_3x3_pad1(x), rtol=1e-6)
    with pytest.raises(ValueError, match="stride=2"):
        bn_inception._pool(inp, "avg", 2, "p2")


def test_inception_block_pools_match_caffe():
    x = keras.Input((1, 32, 32, 3))
    model = keras.Model(x, bn_inception.bn_inception_features(x)["global_pool"])
    probe = keras.Model(model.input, [model.get_layer("inception_3a_pool").input,
                                      model.get_layer("inception_3a_pool").output])
    clip = np.random.default_rng(0).uniform(0, 255, (1, 1, 32, 32, 3)).astype("float32")
    before, after = (np.asarray(t) for t in probe(clip))
    # `before` is the zero-padded map; the pool of the unpadded map must be the Caffe pool.
    np.testing.assert_allclose(after, _caffe_avg_pool_3x3_pad1(before[:, :, 1:-1, 1:-1]), rtol=1e-5, atol=1e-5)
