"""Makes kerasvid's serializable classes known to Keras after a plain `import kerasvid` (stdlib only).

A `.keras` file names its layers `kerasvid>CPModule`, `kerasvid>TVNet`, ...; Keras finds such a name only in its
registry of custom objects, which a class joins when its module is imported, and Keras never imports a module named
in a file outside its own packages. `import kerasvid` must stay cheap (no TensorFlow: `kerasvid convert --help`), so
instead of importing every layer up front, Keras's registry is given one fallback: a lookup of a missing
`kerasvid>...` name imports the modules that register kerasvid's classes, then looks again. Keras may be imported
before or after kerasvid; an import hook installs the fallback as soon as Keras's registry module exists.
"""
import importlib
import importlib.abc
import sys

_REGISTRY_MODULE = "keras.src.saving.object_registration"
# The modules whose import registers every serializable kerasvid class (layers, losses, learning-rate schedules).
_REGISTERING_MODULES = ("kerasvid.layers", "kerasvid.losses", "kerasvid.training.schedules")
_PREFIX = "kerasvid>"


class _Registry(dict):
    """Keras's custom-object registry, importing kerasvid's registering modules on a missing `kerasvid>` name."""

    def _load(self, name):
        if isinstance(name, str) and name.startswith(_PREFIX) and not dict.__contains__(self, name):
            for module in _REGISTERING_MODULES:
                importlib.import_module(module)

    def __contains__(self, name):
        self._load(name)
        return dict.__contains__(self, name)

    def __getitem__(self, name):
        self._load(name)
        return dict.__getitem__(self, name)

    def get(self, name, default=None):
        self._load(name)
        return dict.get(self, name, default)


def _install(registry_module):
    if not isinstance(registry_module.GLOBAL_CUSTOM_OBJECTS, _Registry):
        registry_module.GLOBAL_CUSTOM_OBJECTS = _Registry(registry_module.GLOBAL_CUSTOM_OBJECTS)


class _Hook(importlib.abc.MetaPathFinder):
    """Runs `_install` right after Keras's registry module is executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _REGISTRY_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def exec_and_install(module, exec_module=exec_module):
                    exec_module(module)
                    if module.__name__ == _REGISTRY_MODULE:  # a loader may be shared by other modules
                        _install(module)

                spec.loader.exec_module = exec_and_install
                return spec
        return None


def install():
    """Installs the fallback now if Keras is loaded, else when it is (idempotent)."""
    if _REGISTRY_MODULE in sys.modules:
        _install(sys.modules[_REGISTRY_MODULE])
    elif not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())
