"""kerasvid: a TensorFlow 2.21 / Keras 3 model zoo for video understanding.

Submodules are imported lazily so that `import kerasvid` stays cheap:
`kerasvid.zoo`, `kerasvid.layers`, `kerasvid.ops`, `kerasvid.losses`, `kerasvid.data`, ...
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = ("backbones", "data", "export", "layers", "losses", "metrics", "models", "ops", "tasks",
               "training", "viz", "zoo")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"kerasvid.{name}")
    raise AttributeError(f"module 'kerasvid' has no attribute {name!r}")
