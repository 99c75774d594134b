"""One file per paper; builders register themselves with `kerasvid.models.registry.register_model`.

`kerasvid.zoo` imports every module of this package, so a new paper's model file needs no line elsewhere.
"""
