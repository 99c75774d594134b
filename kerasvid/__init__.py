"""kerasvid: a TensorFlow 2.21 / Keras 3 model zoo for video understanding.

Submodules are imported lazily so that `import kerasvid` stays cheap:
`kerasvid.zoo`, `kerasvid.layers`, `kerasvid.ops`, `kerasvid.losses`, `kerasvid.data`, ...
"""
import importlib
import pkgutil

from kerasvid import _registration

__version__ = "0.1.0"

# Every public submodule (found on disk, imported only when first used): a new module needs no line here.
# `keras.saving.load_model` finds kerasvid's layers after a plain `import kerasvid` (imported when first needed).
_registration.install()

_SUBMODULES = tuple(sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")))


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"kerasvid.{name}")
    raise AttributeError(f"module 'kerasvid' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
