"""Finds the modules of a package, so that adding a file is all it takes to add a model, a task, a layer or a loss.

`kerasvid.zoo` imports every module of `kerasvid.models` (each registers its builders), `kerasvid.tasks` every
module of itself (each registers its tasks), and `kerasvid.layers` / `kerasvid.losses` / `kerasvid.ops` re-export
the names in the `__all__` of each of their modules. Modules whose name starts with "_" (e.g. `layers/_blocks.py`) are
private and skipped.
"""
import importlib
import pkgutil


def import_modules(package):
    """Imports every public module of `package` (a package name such as "kerasvid.models"), in name order.

    Returns:
        The imported modules.
    """
    path = importlib.import_module(package).__path__
    names = sorted(info.name for info in pkgutil.iter_modules(path) if not info.name.startswith("_"))
    return [importlib.import_module(f"{package}.{name}") for name in names]


def public_names(modules):
    """Maps each name in the `__all__` of `modules` to its object.

    Raises:
        ImportError: two modules export the same name, or a module lists a name it does not define.
    """
    names, owner = {}, {}
    for module in modules:
        for name in getattr(module, "__all__", ()):
            if name in owner:
                raise ImportError(f"{name!r} is exported by both {owner[name]} and {module.__name__}; rename one.")
            if not hasattr(module, name):
                raise ImportError(f"{module.__name__}.__all__ lists {name!r}, which the module does not define.")
            names[name], owner[name] = getattr(module, name), module.__name__
    return names


def export_public_names(namespace):
    """Imports every public module of the package whose `__init__` has the globals `namespace`, puts the names of
    their `__all__` into it and sets its `__all__` (`kerasvid.layers`, `kerasvid.losses`, `kerasvid.ops`)."""
    public = public_names(import_modules(namespace["__name__"]))
    namespace.update(public)
    namespace["__all__"] = sorted(public)
