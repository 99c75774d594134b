"""kerasvid's compiled CPU kernels: built from `kerasvid/ops/_native/*.cc` on first use, cached, optional.

The CP module's training step (`benchmarks/cp_module.py`, docs/speed.md):
- `_native/cp_ops.cc`: `KerasvidFramePairTopK`, the selection step of `cp_knn` (the k largest of each query's scores
  in the frame-pair score rows), which reads each score once per side and ranks only the scores that reach a
  per-query threshold, instead of the dozen TF ops of the stock selection; the same indices, ties included. And
  `KerasvidScatterAddRows`, the gradient of the neighbour gather (the sums TF's ScatterNd forms, in one pass).
- `_native/cp_mlp.cc`: the module's two-layer MLP and max over the k proposals, forward and backward, without
  forming the `[B, N, k, U]` rows (`kerasvid.ops.cp_mlp`; the same numbers up to float32 rounding).

The kernels are compiled into one library with the C++ compiler and flags TensorFlow documents for custom ops
(`tf.sysconfig.get_compile_flags()` / `get_link_flags()`, `-O3 -march=native`) the first time a CPNet trains, into
`$KERASVID_CACHE_DIR` (default `~/.cache/kerasvid`)`/native/<key>/`, the key hashing the sources, the TensorFlow
build and this CPU's model and flags, so that a cache shared between machines never hands one CPU another's build.
A build takes about 15 s once (15.2 s here with other jobs on the 2 cores); later processes load the cached
library (one that does not load is rebuilt). No compiler, a failed build or `KERASVID_NATIVE=0` leave the TF ops in
place (the same numbers up to float32 rounding, slower), with one logged line saying why; `disabled()` does the same
for the graphs traced inside it.

Graphs that use the kernels need this library loaded to run, so only the training path uses it (`CPModule` with
`training=True`): inference, every export (SavedModel, TF Serving, LiteRT) and XLA-compiled functions keep stock TF
ops.
"""
import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time

import tensorflow as tf
from absl import logging

__all__ = ["disabled", "frame_pair_top_k", "library", "native_status", "scatter_add_rows", "usable"]

_SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native")
_LOCK = threading.Lock()
_LOCAL = threading.local()  # disabled()
_STATE = {}  # "library": the loaded module or None; "status": why (one line)


def _cpu_signature():
    """This CPU's model name and feature flags (Linux), or what `platform` knows: `-march=native` builds for it."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


_FLAGS = ["-shared", "-fPIC", "-O3", "-march=native"]


def _cache_dir(source):
    key = hashlib.sha256()
    for part in (source, " ".join(_FLAGS), tf.__version__, tf.sysconfig.get_lib(),
                 " ".join(tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()), platform.machine(),
                 _cpu_signature()):
        key.update(part.encode() if isinstance(part, str) else part)
    root = os.environ.get("KERASVID_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kerasvid")
    return os.path.join(root, "native", key.hexdigest()[:20])


def _compiler():
    """The first C++ compiler found: `$CXX`, then c++, g++, clang++ on the PATH; None if there is none."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def _sources():
    """The kernel sources, `_native/*.cc` in name order: (paths, their contents joined for the cache key)."""
    paths = sorted(os.path.join(_SOURCE_DIR, name) for name in os.listdir(_SOURCE_DIR) if name.endswith(".cc"))
    contents = []
    for path in paths:
        with open(path, "rb") as f:
            contents.append(os.path.basename(path).encode() + b"\0" + f.read())
    return paths, b"\0".join(contents)


def _build(source_paths, target):
    """Compiles `source_paths` into the shared library `target`: a complete, synced temporary file renamed into place
    (readable by every user of a shared cache), so that no process ever loads a partial build."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, temporary = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(target))
    os.close(fd)
    command = ([compiler] + _FLAGS + ["-o", temporary] + list(source_paths) + tf.sysconfig.get_compile_flags()
               + tf.sysconfig.get_link_flags())
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"{os.path.basename(compiler)} failed (exit {done.returncode}): {tail}")
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o755 & ~umask)  # mkstemp makes it 0600
        os.replace(temporary, target)  # concurrent builders each rename a complete file
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@tf.autograph.experimental.do_not_convert
def _load():
    """The loaded kernel library, building it if needed; None (and `native_status()` says why) when unavailable.

    A cached library that does not load (truncated, copied from another machine) is rebuilt once."""
    with _LOCK:
        if "library" in _STATE:
            return _STATE["library"]
        library, status = None, None
        if os.environ.get("KERASVID_NATIVE", "1") == "0":
            status = "disabled by KERASVID_NATIVE=0"
        else:
            try:
                source_paths, source = _sources()
                target = os.path.join(_cache_dir(source), "cp_ops.so")
                if os.path.exists(target):
                    try:
                        library = tf.load_op_library(target)
                    except Exception as error:
                        logging.warning("kerasvid: rebuilding %s, which does not load (%s)", target, error)
                if library is None:
                    logging.info("kerasvid: compiling the CP module's CPU kernels into %s (once, about 15 s)", target)
                    started = time.monotonic()
                    _build(source_paths, target)
                    library = tf.load_op_library(target)
                    logging.info("kerasvid: compiled in %.1f s", time.monotonic() - started)
                status = f"loaded from {target}"
            except Exception as error:  # any failure leaves the stock TF-ops path in place
                library, status = None, f"unavailable ({type(error).__name__}: {error})"
                logging.warning("kerasvid: the CP module's compiled kernels are %s; using TF ops (the same numbers "
                                "up to float32 rounding, slower training)", status)
        _STATE.update(library=library, status=status)
        return library


def native_status():
    """One line: whether the compiled kernels are loaded (and from where), disabled, or why they are unavailable."""
    _load()
    return _STATE["status"]


def _in_xla_context():
    from tensorflow.python.ops import control_flow_util  # no public API says whether a graph is XLA-compiled

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


@contextlib.contextmanager
def disabled():
    """Within this context, graphs traced in this thread use TF ops instead of the compiled kernels (e.g. to export a
    training-mode graph that must run without kerasvid, or to time the two paths in one process)."""
    previous = getattr(_LOCAL, "disabled", False)
    _LOCAL.disabled = True
    try:
        yield
    finally:
        _LOCAL.disabled = previous


@tf.autograph.experimental.do_not_convert
def library():
    """The loaded kernel library (its ops as functions) where its kernels can run in the graph being built: None if
    disabled or not loaded, an accelerator is visible (the data would cross to the host: the kernels are CPU-only)
    or the graph is XLA-compiled (XLA has no kernels for them)."""
    if getattr(_LOCAL, "disabled", False) or _in_xla_context():
        return None
    if any(device.device_type != "CPU" for device in tf.config.list_logical_devices()):
        return None
    return _load()


@tf.autograph.experimental.do_not_convert
def usable():
    """Whether the compiled kernels can run in the graph being built (`library`)."""
    return library() is not None


def frame_pair_top_k(rows, num_frames, k):
    """The compiled selection of `cp_knn`: the T - 1 float32 score rows `[batch, S, (T - 1 - a) * S]` of frames
    a < T - 1 against the later frames (see `_native/cp_ops.cc`) -> int32 `[batch, T * S, k]`, or None where the
    kernels cannot run (`library`)."""
    kernels = library()
    return None if kernels is None else kernels.kerasvid_frame_pair_top_k(rows, num_frames=num_frames, k=k)


def scatter_add_rows(updates, indices, num_rows):
    """`summed[b, j] = sum of updates[b, i, m] over indices[b, i, m] == j`: float32 `[batch, N, k, U]` and int32
    `[batch, N, k]` -> `[batch, num_rows, U]`, or None where it cannot run (`library`). Updates `[batch, N, 1, U]`
    count row i once for each of its k indices."""
    kernels = library()
    return None if kernels is None else kernels.kerasvid_scatter_add_rows(updates, indices, num_rows=num_rows)
