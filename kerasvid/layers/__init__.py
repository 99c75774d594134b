"""kerasvid.layers: the layers of the papers, `kerasvid.layers.CPModule`, `kerasvid.layers.TVNet`, ...

Every public module of this package is imported and the names in its `__all__` are exported here: a new paper's
layer file declares `__all__` and needs no line in this file.
"""
from kerasvid import _submodules

_submodules.export_public_names(globals())
