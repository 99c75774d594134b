"""The actor-observer head layers (kerasvid.layers.heads) through the layer harness, against numpy."""
import numpy as np

from kerasvid.layers.heads import PairwiseDistance, SelectorScale
from tests.helpers import check_layer


def test_pairwise_distance():
    rng = np.random.RandomState(0)
    a, b = rng.randn(3, 5).astype("float32"), rng.randn(3, 5).astype("float32")
    check_layer(PairwiseDistance, dict(epsilon=1e-3), input_data=(a, b), expected_output_shape=(3,),
                expected_output=lambda layer, a, b: np.sqrt(np.sum((a - b + 1e-3) ** 2, axis=-1)))


def test_selector_scale():
    h = np.random.RandomState(1).randn(4, 1).astype("float32")
    layer, _ = check_layer(SelectorScale, dict(initial_scale=0.25), input_data=h, expected_output_shape=(4,),
                           expected_output=lambda layer, h: np.tanh(h[:, 0]) * np.exp(layer.log_scale.numpy()))
    assert abs(float(np.exp(layer.log_scale.numpy())) - 0.25) > 1e-3  # the harness moved the scale
