"""Optical-flow conventions shared by `kerasvid.ops`, `kerasvid.losses` and `kerasvid.viz`.

A flow field is `[..., H, W, 2]` in pixels, channel 0 = horizontal displacement `u` (x, along W), channel 1 =
vertical displacement `v` (y, along H). This module imports nothing, so that `kerasvid.viz` (numpy only) and the
TensorFlow losses can both take their constants from it.
"""

# Middlebury `.flo` files (Baker et al., IJCV 2011) mark unknown flow with values above 1e9: a flow component whose
# magnitude exceeds this, or that is not finite, is unknown (black in `viz.flow_to_color`, ignored by
# `losses.endpoint_error`).
UNKNOWN_FLOW_THRESHOLD = 1e9
