"""kerasvid's compiled CPU kernels: built from `kerasvid/ops/_native/*.cc` on first use, cached, optional.

Two kernels of the CP module (`_native/cp_ops.cc`): `KerasvidFramePairTopK`, the selection step of `cp_knn` (the k
largest of each query's scores in the frame-pair score blocks) in two passes over the blocks instead of the dozen TF
ops of the stock selection, which made the kNN the largest part of a CPNet training step on CPU
(`benchmarks/cp_module.py`, docs/speed.md), with the same indices, ties included; and `KerasvidScatterAddRows`, the
gradient of the neighbour gather (the sums TF's ScatterNd forms, in one pass over the updates).

The kernel is compiled with the C++ compiler and flags TensorFlow documents for custom ops
(`tf.sysconfig.get_compile_flags()` / `get_link_flags()`, `-O3 -march=native`) the first time a CPNet trains, into
`$KERASVID_CACHE_DIR` (default `~/.cache/kerasvid`)`/native/<key>/`, the key hashing the source, the TensorFlow
build and this CPU's model and flags, so that a cache shared between machines never hands one CPU another's build.
A build takes 10-20 s once; later processes load the cached library. No compiler, a failed build or
`KERASVID_NATIVE=0` leave the TF-ops selection in place (the same numbers, slower), with one logged line saying why.

Graphs that use the kernel need this library loaded to run, so only the training path uses it (`CPModule` with
`training=True`): inference, every export (SavedModel, TF Serving, LiteRT) and XLA-compiled functions keep stock TF
ops.
"""
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading

import tensorflow as tf
from absl import logging

__all__ = ["frame_pair_top_k", "native_status", "scatter_add_rows", "usable"]

_SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native")
_LOCK = threading.Lock()
_STATE = {}  # "library": the loaded module or None; "status": why (one line)


def _cpu_signature():
    """This CPU's model name and feature flags (Linux), or what `platform` knows: `-march=native` builds for it."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _cache_dir(source):
    key = hashlib.sha256()
    for part in (source, tf.__version__, tf.sysconfig.get_lib(), " ".join(tf.sysconfig.get_compile_flags()),
                 platform.machine(), _cpu_signature()):
        key.update(part.encode() if isinstance(part, str) else part)
    root = os.environ.get("KERASVID_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kerasvid")
    return os.path.join(root, "native", key.hexdigest()[:20])


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(source_path, target):
    """Compiles `source_path` into the shared library `target` (atomically: a temporary file renamed)."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, temporary = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(target))
    os.close(fd)
    command = ([compiler, "-shared", "-fPIC", "-O3", "-march=native", "-o", temporary, source_path]
               + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"{os.path.basename(compiler)} failed (exit {done.returncode}): {tail}")
        os.replace(temporary, target)  # concurrent builders each rename a complete file
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _load():
    """The loaded kernel library, building it if needed; None (and `native_status()` says why) when unavailable."""
    with _LOCK:
        if "library" in _STATE:
            return _STATE["library"]
        library, status = None, None
        if os.environ.get("KERASVID_NATIVE", "1") == "0":
            status = "disabled by KERASVID_NATIVE=0"
        else:
            source_path = os.path.join(_SOURCE_DIR, "cp_ops.cc")
            try:
                with open(source_path, "rb") as f:
                    target = os.path.join(_cache_dir(f.read()), "cp_ops.so")
                if not os.path.exists(target):
                    logging.info("kerasvid: compiling the CP module's CPU kernels into %s (once, 10-20 s)", target)
                    _build(source_path, target)
                library = tf.load_op_library(target)
                status = f"loaded from {target}"
            except Exception as error:  # any failure leaves the stock TF-ops path in place
                status = f"unavailable ({type(error).__name__}: {error})"
                logging.warning("kerasvid: the CP module's compiled kernels are %s; using TF ops (same numbers, "
                             "slower training)", status)
        _STATE.update(library=library, status=status)
        return library


def native_status():
    """One line: whether the compiled kernels are loaded (and from where), disabled, or why they are unavailable."""
    _load()
    return _STATE["status"]


def _in_xla_context():
    from tensorflow.python.ops import control_flow_util  # no public API says whether a graph is XLA-compiled

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _library():
    """The loaded library where its kernels can run here: None if not loaded, a GPU is visible (the data would cross
    to the host) or the graph is XLA-compiled (XLA has no kernels for them)."""
    if tf.config.list_logical_devices("GPU") or _in_xla_context():
        return None
    return _load()


def usable():
    """Whether the compiled kernels can run in the graph being built (`_library`)."""
    return _library() is not None


def frame_pair_top_k(rows, num_frames, k):
    """The compiled selection of `cp_knn`: the T - 1 float32 score rows `[batch, S, (T - 1 - a) * S]` of frames
    a < T - 1 against the later frames (see `_native/cp_ops.cc`) -> int32 `[batch, T * S, k]`, or None where the
    kernels cannot run (`_library`)."""
    library = _library()
    return None if library is None else library.kerasvid_frame_pair_top_k(rows, num_frames=num_frames, k=k)


def scatter_add_rows(updates, indices, num_rows):
    """`summed[b, j] = sum of updates[b, i, m] over indices[b, i, m] == j`: float32 `[batch, N, k, U]` and int32
    `[batch, N, k]` -> `[batch, num_rows, U]`, or None where it cannot run (`_library`)."""
    library = _library()
    return None if library is None else library.kerasvid_scatter_add_rows(updates, indices, num_rows=num_rows)
