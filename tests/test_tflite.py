"""LiteRT (.tflite) export: the interpreter's outputs match Keras (max abs difference < 1e-4) for a C2D, a CPNet
(`tf.math.top_k` in the kNN) and TVNet (`tf.while_loop` + `tf.custom_gradient`), written by the tasks'
`export_tflite` (what `train/main.py --mode=export --export_tflite` calls)."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import export, tasks, zoo
from kerasvid.data import preprocess
from kerasvid.layers import TVNet
from kerasvid.layers.two_stream import StackFlows

T, SIZE = 4, (32, 32)


def _frames(seed, shape=(1, T, *SIZE, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _keras_logits(model, frames, normalization="imagenet"):
    return model(preprocess.normalize(tf.constant(frames), normalization), training=False).numpy()


def _export(model, tmp_path, normalization="imagenet", name="c2d_resnet18"):
    config = tasks.TaskConfig(model=name, num_classes=int(model.output.shape[-1]), num_frames=T, image_size=SIZE,
                              normalization=normalization)
    return tasks.get_task("classification", config).export_tflite(model, str(tmp_path))


@pytest.mark.large
@pytest.mark.parametrize("name", ["c2d_resnet18", "cpnet_resnet18"])
def test_classifier_tflite_matches_keras(name, tmp_path):
    keras.utils.set_random_seed(0)
    kwargs = {"k": 3} if name.startswith("cpnet") else {}
    model = zoo.get_model(name, num_classes=5, input_shape=(T, *SIZE, 3), **kwargs)
    paths = _export(model, tmp_path, name=name)
    assert paths == [str(tmp_path / export.TFLITE_FILE)]
    with open(paths[0] + ".json") as f:
        assert json.load(f) == {"inputs": ["frames"], "outputs": ["logits", "probs"]}
    frames = _frames(1)
    out = export.run_tflite(paths[0], frames=frames)
    logits = _keras_logits(model, frames)
    assert np.abs(out["logits"] - logits).max() < 1e-4
    assert np.abs(out["probs"] - tf.nn.softmax(logits).numpy()).max() < 1e-4
    if name.startswith("cpnet"):  # the kNN's top_k is in the flatbuffer as a builtin
        ops = {op["op_name"] for op in tf.lite.Interpreter(model_path=paths[0])._get_ops_details()}
        assert "TOPK_V2" in ops and "MAX_POOL_2D" in ops, sorted(ops)


@pytest.mark.large
@pytest.mark.parametrize("unroll", [False])  # the default while_loop form (unroll=True converts too)
def test_tvnet_classifier_and_flow_tflite_match_keras(unroll, tmp_path):
    """A classifier whose TVNet reads the input frames (as tvnet_bn_inception, smaller): model.tflite and
    flow.tflite; the while_loop form (default) and the unrolled one."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((T, *SIZE, 3))
    flows = TVNet(iterations=6, unroll=unroll, name="tvnet")(inputs)
    x = keras.layers.Conv3D(4, (1, 3, 3), strides=(1, 2, 2))(StackFlows()(flows))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling3D()(x)))
    paths = _export(model, tmp_path, normalization="none", name="tvnet_bn_inception")
    assert paths == [str(tmp_path / export.TFLITE_FILE), str(tmp_path / export.FLOW_TFLITE_FILE)]
    frames = _frames(2)
    frames[0, 1:] = np.roll(frames[0, :1], 2, axis=2)  # frames 2.. are frame 1 moved by 2 pixels: a real flow
    out = export.run_tflite(paths[0], frames=frames)
    assert np.abs(out["logits"] - _keras_logits(model, frames, "none")).max() < 1e-4
    assert tf.lite.Interpreter(model_path=paths[1]).get_signature_list() == {
        export.TFLITE_SIGNATURE: {"inputs": ["frame1", "frame2"], "outputs": ["flow"]}}
    flow = export.run_tflite(paths[1], frame1=frames[:, 0], frame2=frames[:, 1])["flow"]
    expected = model.get_layer("tvnet")(tf.constant(frames[:, 0], tf.float32),
                                        tf.constant(frames[:, 1], tf.float32)).numpy()
    assert np.abs(expected).max() > 0.1 and np.isfinite(flow).all()
    assert np.abs(flow - expected).max() < 1e-4
    ops = {op["op_name"] for op in tf.lite.Interpreter(model_path=paths[1])._get_ops_details()}
    assert ("WHILE" in ops) != unroll, sorted(ops)  # the solver's loop is a LiteRT WHILE, not unrolled copies


def test_tflite_signature_names_its_inputs_and_outputs_as_the_saved_model(tmp_path):
    """One `serving_default` signature, named as the SavedModel's (`frames` -> `logits`, `probs`), that a LiteRT
    tool runs with `get_signature_runner()` alone (before: no signature, outputs `Identity` / `Identity_1`)."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((T, *SIZE, 3))
    x = keras.layers.Conv3D(4, 3, strides=2, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling3D()(x)))
    path = export.export_tflite(export.classifier_tflite_function(model, T, SIZE), str(tmp_path / "m.tflite"), model)
    interpreter = tf.lite.Interpreter(model_path=path)
    assert interpreter.get_signature_list() == {
        export.TFLITE_SIGNATURE: {"inputs": ["frames"], "outputs": ["logits", "probs"]}}
    frames = _frames(5)
    out = interpreter.get_signature_runner("serving_default")(frames=frames)
    logits = _keras_logits(model, frames)
    assert np.abs(out["logits"] - logits).max() < 1e-4 and np.abs(logits).max() > 1e-3
    assert np.abs(out["probs"] - tf.nn.softmax(logits).numpy()).max() < 1e-4
    assert not [d["name"] for d in interpreter.get_output_details() if d["name"].startswith("Identity")]
    ran = export.run_tflite(path, frames=frames)
    assert sorted(ran) == ["logits", "probs"] and np.array_equal(ran["logits"], out["logits"])
    with pytest.raises(ValueError, match=r"missing inputs \['frames'\]; it takes \['frames'\]"):
        export.run_tflite(path, frame=frames)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_3d_pools_as_two_2d_pools_equal_tf_3d_pools(kind):
    """The exporter's LiteRT form of MaxPool3D / AvgPool3D (I3D, BN-Inception) against TF's own 3-D pools."""
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 5, 7, 9, 3)).astype("float32"))
    original = tf.nn.max_pool if kind == "max" else tf.nn.avg_pool
    separable = export._separable_pool(original, tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d)
    reference = tf.nn.max_pool3d if kind == "max" else tf.nn.avg_pool3d
    for ksize, strides in (((3, 3, 3), (2, 2, 2)), ((1, 3, 3), (1, 2, 2)), ((2, 1, 1), (2, 1, 1)),
                           ((2, 7, 7), (1, 1, 1))):
        for padding in ("SAME", "VALID"):
            want = reference(x, ksize, strides, padding)
            got = separable(x, list(ksize), list(strides), padding, "NDHWC")
            assert got.shape == want.shape, (ksize, strides, padding)
            assert np.abs(got.numpy() - want.numpy()).max() < 1e-6, (ksize, strides, padding)


def test_tflite_export_refuses_clearly(tmp_path):
    inputs = keras.Input((T, *SIZE, 3))
    features = keras.Model(inputs, keras.layers.Reshape((1, 3))(keras.layers.GlobalAveragePooling3D()(inputs)),
                           name="features_only")
    with pytest.raises(ValueError, match=r"LiteRT export: the classification export needs \[B, C\] logits"):
        _export(features, tmp_path)
    assert not os.path.exists(tmp_path / export.TFLITE_FILE)


def test_the_end_of_run_summary_lists_what_was_exported(tmp_path):
    """`train/main.py`'s last lines name the signatures the export wrote (its preprocessing.json; a TVNet model's
    `serve_flow` too, which the summary used to leave out) and the LiteRT files."""
    from kerasvid import run_report

    export_dir = tmp_path / "export"
    export_dir.mkdir()
    signatures = ["serving_default", "serve_jpeg", "serve_examples", "serve_flow"]
    (export_dir / "preprocessing.json").write_text(json.dumps({"num_frames": 3, "signatures": signatures}))
    assert run_report.export_contents({"export": str(export_dir)}) == (
        "signatures serving_default, serve_jpeg, serve_examples, serve_flow; preprocessing.json beside")
    (export_dir / "labels.txt").write_text("a\nb\n")
    tflite = [str(export_dir / export.TFLITE_FILE), str(export_dir / export.FLOW_TFLITE_FILE)]
    assert run_report.export_contents({"export": str(export_dir), "tflite": tflite}) == (
        "signatures serving_default, serve_jpeg, serve_examples, serve_flow; labels.txt and preprocessing.json "
        "beside; LiteRT: model.tflite, flow.tflite")
