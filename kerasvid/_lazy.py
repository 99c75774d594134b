"""Package namespaces whose names are imported on first use (PEP 562), so that importing the package is cheap."""
import importlib


def lazy_exports(package, exports):
    """`(__getattr__, __all__)` for `package` that import `exports = {submodule: (name, ...)}` on first use.

    >>> __getattr__, __all__ = lazy_exports(__name__, {"config": ("TrainConfig",), "loop": ("Trainer",)})
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name):
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(where)
