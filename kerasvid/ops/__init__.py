"""kerasvid.ops: the tensor functions under the layers, `kerasvid.ops.cp_knn`, `kerasvid.ops.bilinear_warp`, ...

Every public module of this package is imported and the names in its `__all__` are exported here: a new paper's
op file declares `__all__` and needs no line in this file.
"""
from kerasvid import _submodules

_submodules.export_public_names(globals())
