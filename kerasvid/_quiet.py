"""TensorFlow's loading noise, dropped for every command (`kerasvid <command>`, `python train/main.py`,
`python -m kerasvid.zoo`); real errors pass through.

On a machine without a GPU, `import tensorflow` and its first device probe write notices straight to file
descriptor 2, before any log level applies (`I0000 ... oneDNN custom operations are on`, `Could not find cuda
drivers`, `E0000 ... failed call to cuInit: CUDA error`, `cpu_feature_guard`, ...), and a SavedModel export logs
bookkeeping lines through Python's logging. `quiet_tensorflow()` drops exactly those: the import (whenever it
happens: commands import TensorFlow lazily, so that `--help` stays fast) runs with descriptor 2 captured, and every
captured line that is not a known notice is written back. TensorFlow's C++ log is off unless TF_CPP_MIN_LOG_LEVEL
is set (its errors still arrive as Python exceptions); TF_CPP_MIN_LOG_LEVEL=0 keeps every line, notices included.

Standard library only: importing this module imports no TensorFlow.
"""
import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

__all__ = ["IMPORT_NOTICES", "EXPORT_NOISE", "quiet_stderr", "quiet_tensorflow"]

# Lines TensorFlow writes to stderr while it loads, before its log level applies (CPU-only machines).
IMPORT_NOTICES = re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations are on|"
                            r"Could not find cuda drivers|cpu_feature_guard|To enable the following instructions|"
                            r"failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|"
                            r"computation placer already registered|TF-TRT Warning")
# TensorFlow's Python INFO lines of a SavedModel export that say nothing to a user (the signatures' resource
# inputs are renamed: a cosmetic rename of captured variables; sharding and fingerprint bookkeeping).
EXPORT_NOISE = re.compile(r"with unsupported characters which will be renamed|Sharding callback duration|"
                          r"Assets written to|Writing fingerprint to")


@contextlib.contextmanager
def quiet_stderr(noise=IMPORT_NOTICES):
    """Runs the block with file descriptor 2 captured, then writes back every line that `noise` does not match
    (also when the block raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


class _DropExportNoise(logging.Filter):
    def filter(self, record):
        return not EXPORT_NOISE.search(record.getMessage())


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run inside `quiet_stderr`, followed by the device probe (which prints the CUDA
    notices: no op has run yet)."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with quiet_stderr():
            self._loader.exec_module(module)
            module.config.list_physical_devices()
        module.__loader__ = module.__spec__.loader = self._loader  # the real loader from now on

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders and hands back its spec with a quiet loader (once)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietImport)]
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow():
    """Drops TensorFlow's loading notices (from its import, now or later) and the export bookkeeping log lines;
    turns its C++ log off unless TF_CPP_MIN_LOG_LEVEL is set. Call it first in a command's entry point: it imports
    nothing itself; a TensorFlow imported before it cannot be made quiet."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0":  # asked for every line
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl"):  # TensorFlow logs through both
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExportNoise) for f in logger.filters):
            logger.addFilter(_DropExportNoise())
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
