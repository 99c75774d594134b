"""kerasvid.layers: public names (each paper's module appends its import line here)."""
from kerasvid.layers.video_softmax import VideoSoftmax
from kerasvid.layers.cp_module import CPModule  # noqa: F401
from kerasvid.layers.action_context import ActionContextAttention, I3DFlowInput  # noqa: F401
from kerasvid.layers.non_local import NonLocalBlock  # noqa: F401
from kerasvid.layers.heads import PairwiseDistance, SelectorScale  # noqa: F401
from kerasvid.layers.tvnet import TVNet, TVNetBlock  # noqa: F401
from kerasvid.layers.two_stream import ScoreFusion, StackFlows  # noqa: F401
