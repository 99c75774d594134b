"""The two-stream layers (kerasvid.layers.two_stream) through the layer harness, against numpy."""
import numpy as np

from kerasvid.layers.two_stream import ScoreFusion, StackFlows
from tests.helpers import check_layer


def test_stack_flows():
    flows = np.random.RandomState(0).randn(2, 3, 4, 5, 2).astype("float32")
    check_layer(StackFlows, {}, input_data=flows, expected_output_shape=(2, 1, 4, 5, 6),
                expected_output=lambda layer, f: f.transpose(0, 2, 3, 1, 4).reshape(2, 1, 4, 5, 6))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_score_fusion():
    rng = np.random.RandomState(1)
    rgb, flow = rng.randn(2, 5).astype("float32"), rng.randn(2, 5).astype("float32")
    # One call argument, the list of the streams' logits.
    check_layer(ScoreFusion, dict(weights=[1.0, 1.5], softmax=True), input_data=([rgb, flow],),
                expected_output_shape=(2, 5),
                expected_output=lambda layer, streams: _softmax(streams[0]) + 1.5 * _softmax(streams[1]))
    check_layer(ScoreFusion, dict(weights=[2.0, 0.5], softmax=False), input_data=([rgb, flow],),
                expected_output=lambda layer, streams: 2.0 * streams[0] + 0.5 * streams[1], policies=())
