"""Every registered model keeps its whole state through every way of saving it.

Each model is built at a small input, every variable (trainable weights, BatchNorm statistics, TVNet kernels,
VideoSoftmax state, ...) is moved to new random values as training would, and the state is saved and restored into
a freshly built model (other initial values) through `tf.train.Checkpoint` (what the trainer writes, hence resume,
eval, export and `extract --checkpoint`), `save_weights`/`load_weights` and `.keras`. Every variable must come back
bit-equal. A checkpoint that does not hold every variable of the model must be refused with one line naming the
first missing variable, never restored partially.
"""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import zoo
from kerasvid.layers import _blocks
from kerasvid.training import checkpoints

from tests.conftest import large_models
from tests.test_initial_weights import small_input

MODELS = zoo.list_models()


def _build(name, seed):
    keras.utils.set_random_seed(seed)
    return zoo.get_model(name, num_classes=5, input_shape=small_input(name))


def _move_every_variable(model, seed):
    """New values for every variable: floats uniform (positive where a variance), integers shifted."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape, dtype = tuple(w.shape), np.dtype(tf.as_dtype(w.dtype).as_numpy_dtype)
        if np.issubdtype(dtype, np.floating):
            low = 0.5 if "variance" in w.path else -1.0
            w.assign(rng.uniform(low, 1.5, shape).astype(dtype))
        else:
            w.assign(np.asarray(w) + rng.integers(1, 5, shape).astype(dtype))


def _assert_same_state(a, b, how):
    assert len(a.weights) == len(b.weights), how
    differ = [x.path for x, y in zip(a.weights, b.weights) if not np.array_equal(np.asarray(x), np.asarray(y))]
    assert not differ, f"{how}: {len(differ)} of {len(a.weights)} variables differ after the round trip " \
                       f"(first: {differ[:3]})"


@pytest.fixture(scope="module", params=large_models(MODELS))
def trained(request):
    """A registered model with every variable moved away from its initial value."""
    model = _build(request.param, 0)
    _move_every_variable(model, 1)
    return request.param, model


def test_checkpoint_reaches_every_variable(trained):
    """The guard against a future layer that keeps state where tf.train.Checkpoint cannot see it."""
    name, model = trained
    assert checkpoints.untracked_variables(model) == []
    path = tf.train.Checkpoint(model=model).write(os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                               f"kv_reach_{os.getpid()}_{name}", "ckpt"))
    keys = [k for k, _ in tf.train.list_variables(path) if k.endswith("/.ATTRIBUTES/VARIABLE_VALUE")]
    assert len(keys) == len(model.weights), f"{name}: the checkpoint holds {len(keys)} of {len(model.weights)}"


@pytest.fixture(scope="module")
def untrained(trained):
    """The model of `trained` built again under another seed, and its initial values: what the checkpoint and
    weights_h5 paths restore into (set back to those values first, so each restores into a newly built model's
    state; one build per model instead of one per path)."""
    model = _build(trained[0], 7)
    return model, model.get_weights()


@pytest.mark.parametrize("how", ["checkpoint", "weights_h5", "keras"])
def test_every_variable_survives(trained, untrained, how, tmp_path):
    name, model = trained
    if how in ("checkpoint", "weights_h5"):
        fresh, initial = untrained
        fresh.set_weights(initial)
        equal = [x.path for x, y in zip(model.weights, fresh.weights) if np.array_equal(np.asarray(x), np.asarray(y))]
        assert not equal, f"{name}: {equal[:3]} hold the trained values before the restore"
    if how == "checkpoint":
        path = tf.train.Checkpoint(model=model, step=tf.Variable(3)).write(str(tmp_path / "ckpt"))
        assert checkpoints.restore_model(fresh, path) == path
    elif how == "weights_h5":
        model.save_weights(str(tmp_path / "m.weights.h5"))
        fresh.load_weights(str(tmp_path / "m.weights.h5"))
    else:
        model.save(str(tmp_path / "m.keras"))
        fresh = keras.saving.load_model(str(tmp_path / "m.keras"), safe_mode=True)
        assert json.loads(json.dumps(fresh.get_config())) == json.loads(json.dumps(model.get_config())), name
    _assert_same_state(model, fresh, f"{name} through {how}")


def _dense_model(names):
    inputs = keras.Input((4,))
    x = inputs
    for n in names:
        x = keras.layers.Dense(4, name=n)(x)
    return keras.Model(inputs, x)


# `check_restorable` refuses what `restore_model` refuses, with its messages, reading no value.
REFUSERS = [checkpoints.restore_model, checkpoints.check_restorable]


@pytest.mark.parametrize("refuse", REFUSERS)
def test_restore_refuses_a_checkpoint_missing_model_variables(tmp_path, refuse):
    path = tf.train.Checkpoint(model=_dense_model(["a"])).write(str(tmp_path / "small"))
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=r"not a checkpoint of the model: 2 of 4 model variables have no value in it "
                             r"\(first: b/kernel\)"):
        refuse(_dense_model(["a", "b"]), path)


@pytest.mark.parametrize("refuse", REFUSERS)
def test_restore_refuses_another_programs_checkpoint_and_a_text_file(tmp_path, refuse):
    other = tf.train.Checkpoint(counter=tf.Variable(1.0)).write(str(tmp_path / "other"))
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"4 of 4 model variables .*first: a/kernel"):
        refuse(_dense_model(["a", "b"]), other)
    text = tmp_path / "notes"
    (tmp_path / "notes.index").write_text("not a checkpoint\n")
    text.write_text("hello\n")
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"Cannot restore the model from .*notes"):
        refuse(_dense_model(["a"]), str(text))
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"does not exist"):
        refuse(_dense_model(["a"]), str(tmp_path / "nothing"))


@pytest.mark.parametrize("refuse", REFUSERS)
def test_restore_refuses_a_shape_that_does_not_fit(tmp_path, refuse):
    inputs = keras.Input((4,))
    wide = keras.Model(inputs, keras.layers.Dense(6, name="a")(inputs))
    path = tf.train.Checkpoint(model=wide).write(str(tmp_path / "wide"))
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"Cannot restore the model .*shape"):
        refuse(_dense_model(["a"]), path)


def test_check_restorable_reads_no_value_and_accepts_a_training_checkpoint(tmp_path, monkeypatch):
    """A training checkpoint (model, optimizer slots that reference the model's variables, a step) of the same
    model passes, the model keeps its own values, and no tensor value but the object graph is read."""
    model = _dense_model(["a", "b"])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer, step=tf.Variable(3)).write(str(tmp_path / "run"))
    fresh = _dense_model(["a", "b"])
    before = [w.numpy().copy() for w in fresh.weights]
    read = []
    real_load = tf.train.load_checkpoint

    def load_checkpoint(p):
        reader = real_load(p)
        get_tensor = reader.get_tensor

        class Spy:
            def __getattr__(self, name):
                return getattr(reader, name)

            def get_tensor(self, key):
                read.append(key)
                return get_tensor(key)
        return Spy()

    monkeypatch.setattr(tf.train, "load_checkpoint", load_checkpoint)
    monkeypatch.setattr(tf.train.Checkpoint, "restore", lambda *a, **k: pytest.fail("restored"))
    assert checkpoints.check_restorable(fresh, path) == path
    assert read == [checkpoints.OBJECT_GRAPH_KEY]
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(fresh.weights, before))


class _ListLayer(keras.layers.Layer):
    """Keeps its sublayers in a plain list (invisible to tf.train.Checkpoint) unless `visible`."""

    def __init__(self, visible, **kwargs):
        super().__init__(**kwargs)
        self.visible = visible

    def build(self, input_shape):
        dense = [keras.layers.Dense(3, name=f"d{i}") for i in range(2)]
        for d in dense:
            d.build(input_shape)
        self.dense = _blocks.sublayer_list(self, "dense", dense) if self.visible else dense

    def call(self, x):
        return self.dense[1](self.dense[0](x)[..., :x.shape[-1]])


@pytest.mark.parametrize("visible", [False, True])
def test_a_layer_hiding_sublayers_is_caught(visible, tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, _ListLayer(visible)(inputs))
    if not visible:
        assert len(checkpoints.untracked_variables(model)) == 4
        with pytest.raises(checkpoints.UntrackedVariableError, match=r"4 of 4 .*first: .*d0/kernel"):
            checkpoints.restore_model(model, "unused")
        return
    assert checkpoints.untracked_variables(model) == []
    _move_every_variable(model, 3)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    fresh = keras.Model(inputs2 := keras.Input((3,)), _ListLayer(True)(inputs2))
    checkpoints.restore_model(fresh, path)
    _assert_same_state(model, fresh, "sublayer_list")


@pytest.mark.large
def test_keras_files_load_after_a_plain_import_kerasvid(tmp_path):
    """`keras.saving.load_model` finds kerasvid's classes with only `import kerasvid` (nothing else imported)."""
    paths, expected = [], []
    for name in ("cpnet_resnet18", "tvnet_bn_inception"):
        model = _build(name, 0)
        paths.append(str(tmp_path / f"{name}.keras"))
        model.save(paths[-1])
        expected += [name, str(len(model.weights))]
    script = ("import sys, kerasvid, keras\n"
              "assert 'kerasvid.layers' not in sys.modules\n"
              f"for p in {paths!r}:\n"
              "    m = keras.saving.load_model(p, safe_mode=True)\n"
              "    print(m.name, len(m.weights))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == expected


def test_a_failed_checkpoint_write_leaves_no_temporary_folder(tmp_path, monkeypatch):
    model = _dense_model(["a"])
    ckpt = checkpoints.Checkpointer(str(tmp_path), tf.distribute.get_strategy(), model=model)
    ckpt.save(1)
    before = sorted(os.listdir(tmp_path))

    def full_disk(checkpoint_number):  # what a full disk does: a partial temporary folder, then an error
        os.makedirs(tmp_path / f"ckpt-{checkpoint_number}_temp" / "part-00000-of-00001")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.manager, "save", full_disk)
    with pytest.raises(checkpoints.CheckpointWriteError, match=r"step 2 .*No space left on device.*intact"):
        ckpt.save(2)
    assert sorted(os.listdir(tmp_path)) == before


def test_a_failed_export_leaves_the_previous_export_and_nothing_else(tmp_path, monkeypatch):
    from kerasvid import export

    model = _dense_model(["a"])
    endpoint = {"serving_default": (lambda x: {"y": model(x)}, [tf.TensorSpec([None, 4], tf.float32, name="x")])}
    target = str(tmp_path / "export")
    export.write_archive(target, model, endpoint, {"kind": "test"})
    first = sorted(os.listdir(target))
    assert export.EXPORT_MARKER in first
    real = tf.io.gfile.rename

    def failing(src, dst, overwrite=False):
        if os.path.basename(src).startswith(".export.tmp-"):
            raise OSError(28, "No space left on device")
        return real(src, dst, overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", failing)
    with pytest.raises(OSError, match="No space"):
        export.write_archive(target, model, endpoint, {"kind": "test"})
    assert sorted(os.listdir(tmp_path)) == ["export"] and sorted(os.listdir(target)) == first
    monkeypatch.setattr(tf.io.gfile, "rename", real)
    (tmp_path / "export" / "mine.txt").write_text("mine\n")
    with pytest.raises(export.ExportDirError, match=r"it holds 'mine.txt'"):
        export.write_archive(target, model, endpoint, {"kind": "test"})
    with pytest.raises(export.ExportDirError, match=r"not a kerasvid export \(no marker file\)"):
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "saved_model.pb").write_text("")
        export.write_archive(str(mine), model, endpoint, {"kind": "test"})


def test_two_conversions_into_one_directory_do_not_run_at_once(tmp_path):
    from kerasvid import _locks
    from kerasvid.data import convert

    with _locks.DirectoryLock(str(tmp_path / "records"), "kerasvid convert (split 'train')"):
        with pytest.raises(ValueError, match=r"records' is in use by kerasvid convert \(split 'train'\) \(pid %d"
                                             % os.getpid()):
            convert.convert([], str(tmp_path / "records"), "val")
    with pytest.raises(ValueError, match="No inputs to convert"):  # the lock went with its holder
        convert.convert([], str(tmp_path / "records"), "val")


# One model per family of special layers (CPModule, TVNet, NonLocalBlock, action/context attention and two-stream
# fusion); the trained CPNet and TVNet exports are also checked end to end in test_persistence_cli.py. (The whole
# zoo takes minutes: actor_observer_resnet152 alone traces three ResNet-152 streams for 60 s.)
SERVED = ("cpnet_resnet18", "tvnet_bn_inception", "nl_resnet18", "i3d_action_context")


@pytest.mark.large
@pytest.mark.parametrize("name", SERVED)
def test_the_saved_model_serves_the_moved_variables(name, tmp_path):
    """The SavedModel path (what TF Serving loads): the exported model computes what the Keras model computes."""
    from kerasvid import export

    model = _build(name, 0)
    _move_every_variable(model, 1)
    specs = [tf.TensorSpec(i.shape, i.dtype, name=f"input_{n}") for n, i in enumerate(model.inputs)]
    endpoint = {"serving_default": (lambda *x: tf.nest.flatten(model(list(x) if len(x) > 1 else x[0],
                                                                     training=False)), specs)}
    export.write_archive(str(tmp_path / "saved"), model, endpoint, {"model": name})
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 1, (1, *s.shape[1:])).astype(np.float32) for s in specs]
    expected = tf.nest.flatten(model(inputs if len(inputs) > 1 else inputs[0], training=False))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    served = loaded.serving_default(*[tf.constant(x) for x in inputs])
    assert len(served) == len(expected)
    for a, b in zip(served, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4 * float(np.abs(b).max() + 1))


def _one_endpoint(model):
    return {"serving_default": (lambda x: {"y": model(x)}, [tf.TensorSpec([None, 4], tf.float32, name="x")])}


def test_an_export_never_replaces_the_working_directory_or_a_link(tmp_path, monkeypatch):
    from kerasvid import export

    model = _dense_model(["a"])
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for target in (".", str(empty), str(tmp_path)):
        with pytest.raises(export.ExportDirError, match=r"working directory or a folder above it"):
            export.write_archive(target, model, _one_endpoint(model), {"kind": "test"})
    (tmp_path / "v3").mkdir()
    (tmp_path / "v3" / "mine.txt").write_text("mine\n")
    os.symlink(tmp_path / "v3", tmp_path / "current")
    with pytest.raises(export.ExportDirError, match=r"is a symbolic link"):
        export.write_archive(str(tmp_path / "current"), model, _one_endpoint(model), {"kind": "test"})
    assert os.listdir(tmp_path / "v3") == ["mine.txt"] and os.listdir(empty) == []


def test_an_export_killed_mid_swap_is_recovered_by_the_next(tmp_path):
    """A process killed after moving the previous export away (kill -9, OOM): the next export puts it back before
    replacing it, and removes the dead process's temporary copy."""
    from kerasvid import export

    model = _dense_model(["a"])
    target = tmp_path / "export"
    export.write_archive(str(target), model, _one_endpoint(model), {"kind": "test"})
    dead = 2 ** 22 + 12345  # above the usual pid range: no such process
    os.rename(target, tmp_path / f".export.old-{dead}-abcd")
    (tmp_path / f".export.tmp-{dead}-abcd").mkdir()
    (tmp_path / f".export.tmp-{os.getpid()}-live").mkdir()  # a live process's copy is left alone
    export.write_archive(str(target), model, _one_endpoint(model), {"kind": "test"})
    assert sorted(os.listdir(tmp_path)) == [f".export.tmp-{os.getpid()}-live", "export"]
    assert export.EXPORT_MARKER in os.listdir(target)
