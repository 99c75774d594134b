"""kerasvid's compiled CPU kernels: built from `kerasvid/ops/_native/*.cc` on first use, cached, optional.

One kernel today, `KerasvidFramePairTopK`: the selection step of `cp_knn` (the k largest of each query's scores in
the frame-pair score blocks), fused into two passes over the blocks instead of the dozen TF ops of the stock
selection, which made the CP modules' kNN the largest part of a CPNet training step on CPU
(`benchmarks/cp_module.py`, docs/speed.md). Its output equals the stock selection's on the same blocks, ties included.

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

__all__ = ["frame_pair_top_k", "native_status"]

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
            source_path = os.path.join(_SOURCE_DIR, "frame_pair_topk.cc")
            try:
                with open(source_path, "rb") as f:
                    target = os.path.join(_cache_dir(f.read()), "frame_pair_topk.so")
                if not os.path.exists(target):
                    logging.info("kerasvid: compiling the kNN selection kernel into %s (once, 10-20 s)", target)
                    _build(source_path, target)
                library = tf.load_op_library(target)
                status = f"loaded from {target}"
            except Exception as error:  # any failure leaves the stock TF-ops path in place
                status = f"unavailable ({type(error).__name__}: {error})"
                logging.warning("kerasvid: CPNet's compiled kNN selection is %s; using TF ops (same numbers, slower "
                             "training)", status)
        _STATE.update(library=library, status=status)
        return library


def native_status():
    """One line: whether the compiled kernels are loaded (and from where), disabled, or why they are unavailable."""
    _load()
    return _STATE["status"]


def _in_xla_context():
    from tensorflow.python.ops import control_flow_util  # no public API says whether a graph is XLA-compiled

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def frame_pair_top_k(blocks, num_frames, k):
    """The compiled selection of `cp_knn` on `[batch, T(T-1)/2, S, S]` float32 score blocks -> int32
    `[batch, T * S, k]`, or None where it cannot run: not loaded, a GPU visible (the blocks would cross to the host),
    or inside an XLA-compiled function (XLA has no kernel for it)."""
    if tf.config.list_logical_devices("GPU") or _in_xla_context():
        return None
    library = _load()
    if library is None:
        return None
    return library.kerasvid_frame_pair_top_k(blocks, num_frames=num_frames, k=k)
