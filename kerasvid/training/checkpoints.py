"""Checkpoints: keep-N plus best-by-metric, restore-on-start, chief-only final copies.

No checkpoint with a non-finite float value (weights, optimizer slots, loss state) is ever written: `save`
checks first and raises `NonFiniteStateError`, so every checkpoint in a run directory is finite. A
failed write (read-only or full disk) raises `CheckpointWriteError` and leaves the previous checkpoints as they
were (TensorFlow writes into a temporary name and renames; the `checkpoint` index is updated last).
"""
import collections
import json
import os
import re
import shutil
import time

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import trackable_object_graph_pb2

from kerasvid.training import strategy as strategy_lib

# The tensor of a TF2 checkpoint that holds its object graph (the trackables' names and their tensors' keys).
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


class NonFiniteStateError(RuntimeError):
    """Raised instead of writing (or using) a state with NaN or infinite float values."""


class CheckpointWriteError(OSError):
    """Raised when a checkpoint cannot be written (read-only or full `model_dir`); earlier ones are intact."""


class CheckpointMismatchError(ValueError):
    """Raised when a checkpoint does not hold a value for every variable of the model restored from it."""


class UntrackedVariableError(RuntimeError):
    """Raised when a model has variables that `tf.train.Checkpoint` cannot reach (they would never be saved)."""


def untracked_variables(model):
    """Paths of `model.weights` that `tf.train.Checkpoint(model=model)` does not reach, hence never saves.

    A layer that keeps sublayers or variables where TensorFlow's object graph does not look (a plain Python list
    under Keras 3) loses them in every checkpoint; `layers._blocks.sublayer_list` is the remedy.
    """
    root = tf.train.Checkpoint(model=model)
    reached = {id(obj) for obj in tf.train.TrackableView(root).descendants()}
    return [_variable_name(w) for w in model.weights if id(w) not in reached]


def _require_reachable(model, what):
    """Raises `UntrackedVariableError` when `model` has variables no `tf.train.Checkpoint` can hold."""
    hidden = untracked_variables(model)
    if hidden:
        raise UntrackedVariableError(
            f"{len(hidden)} of {len(model.weights)} variables of {what} are invisible to tf.train.Checkpoint "
            f"(first: {hidden[0]}): a layer keeps them where TensorFlow's object graph does not look, so they "
            f"would never be saved.")


def _unrestored(status, model):
    """Paths of `model.weights` that the restore `status` gave no value (absent from the checkpoint)."""
    matched = {id(obj) for obj in status._checkpoint.object_by_proto_id.values()}  # pylint: disable=protected-access
    return [_variable_name(w) for w in model.weights if id(w) not in matched]


def _one_line(error):
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    message = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]", "", message)  # TensorFlow's op decorations
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def restore_model(model, path, what="the model"):
    """Restores every variable of `model` from the checkpoint `path` (other objects in it, e.g. the optimizer,
    are ignored); returns `path`.

    Raises:
        CheckpointMismatchError: `path` is not a readable TensorFlow checkpoint, a tensor does not fit (shape),
            or some model variable has no value in it (one line naming the first and the count). Nothing is
            half-restored silently: a model restored without error holds the checkpoint's values everywhere.
        UntrackedVariableError: the model has variables no checkpoint can hold (a layer bug).
    """
    _require_reachable(model, what)
    try:
        if not tf.io.gfile.exists(path + ".index"):
            raise ValueError(f"{path + '.index'!r} does not exist")
        status = tf.train.Checkpoint(model=model).restore(path)
        status.expect_partial()
    except (ValueError, tf.errors.OpError) as e:
        raise CheckpointMismatchError(f"Cannot restore {what} from {path!r}: {_one_line(e)}.") from None
    _refuse_missing(path, what, _unrestored(status, model), model)
    return path


def _refuse_missing(path, what, missing, model):
    """Raises `CheckpointMismatchError` naming the first of the `missing` model variables and their count."""
    if missing:
        raise CheckpointMismatchError(
            f"{path!r} is not a checkpoint of {what}: {len(missing)} of {len(model.weights)} model variables have no "
            f"value in it (first: {missing[0]}). Pass the checkpoint of a run of this model (same --model and "
            f"model settings).")


def _matched_nodes(graph, root):
    """`{id(trackable): node id}` of the objects under `root` that the checkpoint's object graph `graph` holds,
    matched as a restore matches them: by their path of attribute names from the root."""
    found, queue = {id(root): 0}, collections.deque([(0, root)])
    while queue:
        node_id, obj = queue.popleft()
        children = tf.train.TrackableView.children(obj)
        for ref in graph.nodes[node_id].children:
            child = children.get(ref.local_name)
            if child is not None and id(child) not in found:
                found[id(child)] = ref.node_id
                queue.append((ref.node_id, child))
    return found


def check_restorable(model, path, what="the model"):
    """Refuses what `restore_model(model, path, what)` would refuse, reading only the checkpoint's object graph and
    its tensors' shapes: no value is read or assigned (a check before the one restore that follows); returns `path`.

    A model variable is matched to the checkpoint's tensor as a restore matches it (by its path of attribute names
    from the checkpoint's root; an object shared by two paths, e.g. a weight the optimizer also tracks, is matched
    once); its shape must be the tensor's.

    Raises:
        CheckpointMismatchError: `path` is not a readable TensorFlow checkpoint, a tensor has another shape than its
            variable, or some model variable has no value in it (the messages of `restore_model`).
        UntrackedVariableError: the model has variables no checkpoint can hold (a layer bug).
    """
    _require_reachable(model, what)
    try:
        if not tf.io.gfile.exists(path + ".index"):
            raise ValueError(f"{path + '.index'!r} does not exist")
        reader = tf.train.load_checkpoint(path)
        graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(reader.get_tensor(OBJECT_GRAPH_KEY))
    except (ValueError, tf.errors.OpError) as e:
        raise CheckpointMismatchError(f"Cannot restore {what} from {path!r}: {_one_line(e)}.") from None
    nodes = _matched_nodes(graph, tf.train.Checkpoint(model=model))
    shapes = reader.get_variable_to_shape_map()
    missing = []
    for w in model.weights:
        keys = [a.checkpoint_key for a in graph.nodes[nodes[id(w)]].attributes
                if a.name == "VARIABLE_VALUE"] if id(w) in nodes else []
        if not keys or keys[0] not in shapes:
            missing.append(_variable_name(w))
        elif tuple(shapes[keys[0]]) != tuple(w.shape):
            raise CheckpointMismatchError(
                f"Cannot restore {what} from {path!r}: its tensor of {_variable_name(w)} has shape "
                f"{tuple(shapes[keys[0]])}, the model's variable has shape {tuple(w.shape)}.")
    _refuse_missing(path, what, missing, model)
    return path


def _variable_name(v):
    return getattr(v, "path", None) or v.name


def _is_float(v):
    return tf.as_dtype(v.dtype).is_floating


def nonfinite_variables(variables):
    """Names of the float variables among `variables` that hold a NaN or an infinite value."""
    bad = []
    for v in variables:
        if _is_float(v) and not np.isfinite(np.asarray(v.numpy())).all():
            bad.append(_variable_name(v))
    return bad


def nonfinite_in_checkpoint(path):
    """Keys of the float tensors of the checkpoint `path` that hold a NaN or an infinite value."""
    reader = tf.train.load_checkpoint(path)
    dtypes = reader.get_variable_to_dtype_map()
    return sorted(k for k, d in dtypes.items() if d.is_floating and not np.isfinite(reader.get_tensor(k)).all())


def _trackable_variables(objects):
    """The variables of the checkpointed objects (models, optimizers, variables, dicts of variables)."""
    found = []
    for obj in objects.values():
        if isinstance(obj, dict):
            found += _trackable_variables(obj)
        elif isinstance(obj, tf.Variable):
            found.append(obj)
        elif hasattr(obj, "variables") and not isinstance(obj, tf.data.Iterator):
            found += list(obj.variables)
    return found


class Checkpointer:
    """A `tf.train.CheckpointManager` over the training state, with restore-on-start and a best checkpoint.

    Every worker saves (saving may need collectives); the chief saves into `<model_dir>/ckpt-N`, other workers into
    a temporary directory that is deleted after each save. All workers restore from the chief's directory.

    Args:
        model_dir: the run's directory.
        strategy: the `tf.distribute.Strategy`.
        max_to_keep: number of recent checkpoints kept.
        **objects: the trackables to save (model, optimizer, step, metric state, data iterator, ...).
    """

    def __init__(self, model_dir, strategy, max_to_keep=3, **objects):
        if max_to_keep < 1:
            raise ValueError(f"`max_to_keep` must be >= 1, got {max_to_keep}.")
        self.model_dir = model_dir
        self.chief = strategy_lib.is_chief(strategy)
        self.save_dir = strategy_lib.worker_dir(model_dir, strategy)
        model = objects.get("model")
        if model is not None:
            _require_reachable(model, "the model")
        self._model = model
        self.checkpoint = tf.train.Checkpoint(**objects)
        self._variables = _trackable_variables(objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.save_dir, max_to_keep=max_to_keep)
        self._best_dir = os.path.join(self.save_dir, "best")
        self._best_manager = tf.train.CheckpointManager(self.checkpoint, self._best_dir, max_to_keep=1,
                                                        checkpoint_name="best")

    @property
    def latest(self):
        """Path of the chief's latest checkpoint, or None."""
        return tf.train.latest_checkpoint(self.model_dir)

    def restore(self, path=None):
        """Restores `path` (default: the chief's latest checkpoint); returns the path restored, or None."""
        path = path or self.latest
        if path:
            try:
                status = self.checkpoint.restore(path)
                status.assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                raise CheckpointMismatchError(
                    f"Cannot resume from {path!r}: {_one_line(e)}. It was written by another model or program; "
                    f"use another --model_dir (or remove this one's checkpoints to start over).") from None
            missing = _unrestored(status, self._model) if self._model is not None else []
            if missing:
                raise CheckpointMismatchError(
                    f"Cannot resume from {path!r}: {len(missing)} of {len(self._model.weights)} model variables "
                    f"have no value in it (first: {missing[0]}).")
            logging.info("Restored %s", path)
        return path

    def restore_model_only(self, model, path=None):
        """Restores only the model's weights (for eval/export of a training checkpoint)."""
        path = path or self.latest
        if not path:
            raise FileNotFoundError(f"No checkpoint in {self.model_dir!r}: train first (--mode=train) or pass "
                                    "--checkpoint.")
        return restore_model(model, path)

    def latest_finite(self):
        """The newest of the chief's checkpoints whose float values are all finite, or None.

        Checkpoints written by this class always are; older ones (or files copied in) are read and checked.
        """
        state = tf.train.get_checkpoint_state(self.model_dir)
        for path in reversed(list(state.all_model_checkpoint_paths) if state else []):
            try:
                if not nonfinite_in_checkpoint(path):
                    return path
            except (tf.errors.OpError, ValueError):  # deleted or unreadable: look further back
                continue
        return None

    def check_finite(self, what):
        """Raises `NonFiniteStateError` (naming `what`, the count and the first variables) if a tracked float
        variable is NaN or infinite."""
        bad = nonfinite_variables(self._variables)
        if bad:
            total = sum(_is_float(v) for v in self._variables)
            raise NonFiniteStateError(
                f"{what}: {len(bad)} of {total} float variables are NaN or infinite (first: {', '.join(bad[:3])}); "
                f"it was not saved. The last finite checkpoint is {self.latest_finite() or 'none (no checkpoint)'}.")

    def _write(self, manager, step):
        start = time.time()
        temporaries = os.path.join(manager.directory, "*_temp*")
        before = set(tf.io.gfile.glob(temporaries))
        try:
            path = manager.save(checkpoint_number=int(step))
        except (tf.errors.OpError, OSError) as e:
            for leftover in set(tf.io.gfile.glob(temporaries)) - before:  # a full disk must not stay full
                try:
                    (tf.io.gfile.rmtree if tf.io.gfile.isdir(leftover) else tf.io.gfile.remove)(leftover)
                except (tf.errors.OpError, OSError):
                    pass
            raise CheckpointWriteError(
                f"Cannot write the checkpoint of step {int(step)} to {manager.directory!r}: {_one_line(e)}. "
                f"The earlier checkpoints are intact (latest: {self.latest or 'none'}).") from None
        seconds = time.time() - start
        if seconds > 5:  # large models on slow disks: say where the time goes
            logging.info("Wrote %s in %.1fs", path, seconds)
        return path

    def save(self, step):
        """Saves at `step` after checking that every tracked float value is finite; returns the chief's path
        (None on other workers).

        Raises:
            NonFiniteStateError: a weight or optimizer value is NaN/inf (nothing is written).
            CheckpointWriteError: the directory cannot be written (earlier checkpoints are intact).
        """
        self.check_finite(f"The training state at step {int(step)}")
        path = self._write(self.manager, step)
        self._cleanup()
        return path if self.chief else None

    def save_best(self, step, value, name, mode):
        """Saves into `best/` when `value` beats the recorded best (`mode` "max" or "min"); returns True if so."""
        record_path = os.path.join(self.model_dir, "best.json")
        best = None
        if tf.io.gfile.exists(record_path):
            with tf.io.gfile.GFile(record_path) as f:
                best = json.load(f)
        better = best is None or (value > best["value"] if mode == "max" else value < best["value"])
        if better:
            self.check_finite(f"The best checkpoint at step {int(step)}")
            self._write(self._best_manager, step)
            if self.chief:
                with tf.io.gfile.GFile(record_path + ".tmp", "w") as f:
                    json.dump({"metric": name, "mode": mode, "value": float(value), "step": int(step),
                               "checkpoint": self._best_manager.latest_checkpoint}, f)
                tf.io.gfile.rename(record_path + ".tmp", record_path, overwrite=True)
            self._cleanup()
        return better

    def _cleanup(self):
        if not self.chief:
            shutil.rmtree(self.save_dir, ignore_errors=True)
