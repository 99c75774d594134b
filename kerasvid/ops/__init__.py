"""kerasvid.ops: public names (each paper's module appends its import line here)."""
from kerasvid.ops.knn import cp_knn  # noqa: F401
from kerasvid.ops.warp import bilinear_warp, resize_align_corners  # noqa: F401
