"""Tests of kerasvid.export: the three serving endpoints against the Keras model and the eval data pipeline,
clear errors for bad requests, the files beside the SavedModel, and `saved_model_cli run` (TF Serving's path)."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import export
from kerasvid import tasks
from kerasvid.data import pipeline, preprocess, schema, video_dataset, write_records

T, SIZE, CLASSES = 4, (16, 16), 3
LABELS = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((T, *SIZE, 3), name="image")
    x = keras.layers.Conv3D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling3D()(x)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(x))
    path = str(tmp_path_factory.mktemp("export") / "saved")
    calls = []
    with pytest.MonkeyPatch.context() as patch:  # serve_examples must decode with the eval pipeline's decoder
        real = pipeline.decode_examples
        patch.setattr(pipeline, "decode_examples", lambda *a, **k: calls.append(k) or real(*a, **k))
        export.export_saved_model(model, path, T, SIZE, LABELS, "imagenet", stride=2, extra_settings={"step": 7})
    assert calls, "serve_examples did not decode with kerasvid.data.pipeline.decode_examples"
    return model, path, tf.saved_model.load(path)


def _frames(batch=2, h=24, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, T, h, w, 3), dtype=np.uint8)


def _keras_probs(model, frames):
    x = preprocess.normalize(preprocess.resize_and_center_crop(tf.constant(frames), SIZE), "imagenet")
    return tf.nn.softmax(model(x, training=False)).numpy()


def test_files_beside_the_saved_model(exported):
    _, path, loaded = exported
    settings, labels = export.load_settings(path)
    assert labels == LABELS
    assert settings["num_frames"] == T and settings["image_size"] == list(SIZE) and settings["step"] == 7
    assert settings["short_side"] == round(16 / 0.875) and settings["normalization"] == "imagenet"
    assert set(loaded.signatures) == {"serving_default", "serve_jpeg", "serve_examples"}
    assert not os.path.exists(path + ".tmp")


def test_serving_default_matches_keras(exported):
    model, _, loaded = exported
    frames = _frames()
    out = loaded.signatures["serving_default"](frames=tf.constant(frames))
    np.testing.assert_allclose(out["probs"].numpy(), _keras_probs(model, frames), atol=1e-5)
    np.testing.assert_allclose(tf.nn.softmax(out["logits"]).numpy(), out["probs"].numpy(), atol=1e-6)


def test_serve_jpeg_matches_keras_on_decoded_frames(exported):
    model, _, loaded = exported
    frames = _frames(seed=1)
    jpegs = np.array([[tf.io.encode_jpeg(f).numpy() for f in clip] for clip in frames], dtype=object)
    decoded = np.stack([[tf.io.decode_jpeg(j).numpy() for j in clip] for clip in jpegs])
    out = loaded.signatures["serve_jpeg"](jpeg_frames=tf.constant(jpegs))
    np.testing.assert_allclose(out["probs"].numpy(), _keras_probs(model, decoded), atol=1e-5)


def test_serve_examples_matches_the_eval_pipeline(exported, tmp_path):
    model, _, loaded = exported
    rng = np.random.default_rng(2)
    examples, serialized = [], []
    for i in range(3):
        clip = rng.integers(0, 256, (11, 30, 26, 3), dtype=np.uint8)  # 11 frames: the centred clip is sampled
        ex = schema.make_sequence_example([tf.io.encode_jpeg(f).numpy() for f in clip], [i % CLASSES])
        examples.append(ex)
        serialized.append(ex.SerializeToString())
    write_records(examples, str(tmp_path), "eval", 1)
    ds = video_dataset(str(tmp_path / "eval-*"), num_frames=T, stride=2, image_size=SIZE, training=False, batch_size=3,
                       num_classes=CLASSES)
    images, _ = next(iter(ds))
    expected = tf.nn.softmax(model(images["image"], training=False)).numpy()
    out = loaded.signatures["serve_examples"](examples=tf.constant(serialized))
    np.testing.assert_allclose(out["probs"].numpy(), expected, atol=1e-5)


def test_bad_requests_get_clear_errors(exported):
    _, _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a JPEG"):
        loaded.signatures["serve_jpeg"](jpeg_frames=tf.constant([[b"not an image"] * T]))
    layout = rf"expected uint8 frames \[B, {T}, H, W, 3\] \(exactly {T} frames\); got a tensor of shape\] \[%s\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=layout % f"2 {T - 1} 24 20 3"):
        loaded.signatures["serving_default"](frames=tf.constant(_frames()[:, :T - 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=layout % f"{T} 24 20 3"):  # one video, no batch axis
        loaded.signatures["serving_default"](frames=tf.constant(_frames()[0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=layout % f"2 {T} 24 20 1"):
        loaded.signatures["serving_default"](frames=tf.constant(_frames()[..., :1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"JPEG strings \[B, {T}\].*shape\] \[1 {T + 1}\]"):
        loaded.signatures["serve_jpeg"](jpeg_frames=tf.constant([[b"x"] * (T + 1)]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"serving_default: the batch is empty \(B = 0\)"):
        loaded.signatures["serving_default"](frames=tf.constant(_frames(batch=0)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="serve_examples: a request item is not a serialized "
                                                             "tf.train.SequenceExample"):
        loaded.signatures["serve_examples"](examples=tf.constant([b"\x00garbage bytes\xff"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="no frames"):
        empty = tf.train.SequenceExample()
        empty.context.feature[schema.LABEL_INDEX].int64_list.value.append(0)
        empty.feature_lists.feature_list[schema.IMAGE_ENCODED].SetInParent()
        loaded.signatures["serve_examples"](examples=tf.constant([empty.SerializeToString()]))


def test_export_rejects_bad_arguments(exported):
    model = exported[0]
    with pytest.raises(ValueError, match="label names"):
        export.export_saved_model(model, "/tmp/never", T, SIZE, ["a"])
    with pytest.raises(ValueError, match="num_frames"):
        export.export_saved_model(model, "/tmp/never", 0, SIZE)


@pytest.mark.large
def test_saved_model_cli_run_matches_keras(exported, tmp_path):
    model, path, _ = exported
    frames = _frames(seed=3)
    probs = saved_model_cli(path, "serving_default", {"frames": frames}, tmp_path)["probs"]
    assert np.abs(probs - _keras_probs(model, frames)).max() < 1e-5


# ----- every family exports and serves (Task.export) ---------------------------------------------------------------

_SESSIONS = {}


def cli_run(path, signature, inputs):
    """What `saved_model_cli run` does (the SignatureDef path TF Serving uses): the SavedModel's MetaGraph loaded
    into a TF1 Session (`loader.load`, once per export here), fed and fetched by the SignatureDef's tensor names.
    The real `saved_model_cli` binary is run once per family too (`saved_model_cli`, below)."""
    if path not in _SESSIONS:
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph)
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        _SESSIONS[path] = (session, meta_graph)
    session, meta_graph = _SESSIONS[path]
    signature_def = meta_graph.signature_def[signature]
    feed = {signature_def.inputs[k].name: v for k, v in inputs.items()}
    return session.run({k: t.name for k, t in signature_def.outputs.items()}, feed)


def saved_model_cli(path, signature, inputs, tmp_path):
    """The real `saved_model_cli run` binary (what TF Serving users run to check an export) on one signature: the
    inputs as .npy files, the outputs read back from its --outdir."""
    args = []
    for key, value in inputs.items():
        np.save(tmp_path / f"cli_in_{key}.npy", value)
        args.append(f"{key}={tmp_path / f'cli_in_{key}.npy'}")
    outdir = tmp_path / f"cli_out_{signature}"
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([sys.executable, cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                             signature, "--inputs", ";".join(args), "--outdir", str(outdir), "--overwrite"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return {name[:-len(".npy")]: np.load(outdir / name) for name in os.listdir(outdir)}


def _check_signature(path, loaded, signature, inputs, expected, atol=1e-5, cli_tmp_path=None):
    """The signature through tf.saved_model.load and through the SignatureDef (`cli_run`) matches `expected`."""
    got = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    via_cli = cli_run(path, signature, inputs)
    for key, value in expected.items():
        value = np.asarray(value)
        assert got[key].shape == value.shape, key
        assert np.abs(got[key].numpy() - value).max() < atol, key
        assert np.abs(via_cli[key] - value).max() < atol, key
    if cli_tmp_path is not None:  # once per family: the binary itself, not only its code path
        via_binary = saved_model_cli(path, signature, inputs, cli_tmp_path)
        for key, value in expected.items():
            assert np.abs(via_binary[key] - np.asarray(value)).max() < atol, key


def _crops(frames, size, normalization):
    return preprocess.normalize(preprocess.resize_and_center_crop(tf.constant(frames), size), normalization)


@pytest.fixture(scope="module")
def tvnet_export(tmp_path_factory):
    keras.utils.set_random_seed(2)
    config = tasks.TaskConfig(model="tvnet_bn_inception", num_classes=3, num_frames=3, image_size=(32, 32),
                              normalization="none", model_kwargs={"tvnet_iterations": 2}, label_names=LABELS)
    task = tasks.get_task("classification", config)
    model = task.build_model()
    path = str(tmp_path_factory.mktemp("tvnet") / "export")
    task.export(model, path, extra_settings={"step": 3})
    return model, path, tf.saved_model.load(path)


@pytest.mark.large
def test_tvnet_bn_inception_serves_logits_and_flow(tvnet_export, tmp_path):
    model, path, loaded = tvnet_export
    settings, labels = export.load_settings(path)
    assert labels == LABELS and settings["task"] == "classification" and settings["normalization"] == "none"
    assert set(loaded.signatures) == {"serving_default", "serve_jpeg", "serve_examples", "serve_flow"}
    frames = np.random.default_rng(4).integers(0, 256, (2, 3, 40, 36, 3), dtype=np.uint8)
    logits = model(_crops(frames, (32, 32), "none"), training=False).numpy()
    _check_signature(path, loaded, "serving_default", {"frames": frames},
                     {"logits": logits, "probs": tf.nn.softmax(logits)})
    # serve_flow: two frames in, the model's own TVNet layer on the resized crops out.
    pair = {"frame1": frames[:, 0], "frame2": frames[:, 1]}
    flow = model.get_layer("tvnet")(_crops(pair["frame1"], (32, 32), "none"), _crops(pair["frame2"], (32, 32), "none"))
    assert flow.shape == (2, 32, 32, 2) and np.abs(flow).max() > 1e-3  # a real flow, not zeros
    _check_signature(path, loaded, "serve_flow", pair, {"flow": flow}, cli_tmp_path=tmp_path)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"serve_flow/frame2: expected uint8 frames"):
        loaded.signatures["serve_flow"](frame1=tf.constant(pair["frame1"]), frame2=tf.constant(frames))


def _tiny_action_context(num_classes=3):
    """`i3d_action_context`'s head structure on two tiny 'streams' (a Conv3D each instead of I3D, whose export takes
    minutes on this CPU): `ActionContextAttention` per stream, combined by the builder's own `_factorized_outputs`
    (scores averaged, maps concatenated). Returns the outputs="logits" and the outputs="all" model (shared layers)."""
    from kerasvid.layers import ActionContextAttention
    from kerasvid.models.action_context import _factorized_outputs

    inputs = keras.Input((T, *SIZE, 3))
    heads = [ActionContextAttention(num_classes, name=f"stream{s}_action_context")(
        keras.layers.Conv3D(6, 3, strides=(1, 4, 4), padding="same", name=f"stream{s}_conv")(inputs))
        for s in range(2)]
    everything = keras.Model(inputs, _factorized_outputs(heads, "all", None), name="tiny_action_context")
    rng = np.random.default_rng(num_classes)  # the heads start with uniform maps: random weights make them vary
    everything.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in everything.get_weights()])
    return keras.Model(inputs, everything.output["logits"], name="tiny_action_context_logits"), everything


@pytest.mark.large
@pytest.mark.parametrize("task_name", ["classification", "action_context"])
def test_action_context_models_serve_logits_and_attention_maps(task_name, tmp_path):
    """classification: an outputs="logits" model (the maps come from its heads); factorization: outputs="all"."""
    keras.utils.set_random_seed(5)
    logits_model, everything = _tiny_action_context()
    config = tasks.TaskConfig(model="i3d_action_context", num_classes=3, num_frames=T, image_size=SIZE,
                              normalization="minus_one_one")
    path = str(tmp_path / "export")
    tasks.get_task(task_name, config).export(logits_model if task_name == "classification" else everything, path)
    loaded = tf.saved_model.load(path)
    frames = _frames(seed=6)
    expected = {k: v.numpy() for k, v in everything(_crops(frames, SIZE, "minus_one_one"), training=False).items()}
    assert expected["action_map"].shape == (2, T, 4, 4, 2)  # two streams' maps, concatenated
    assert np.ptp(expected["action_map"]) > 1e-3  # not a constant map
    expected["probs"] = tf.nn.softmax(expected["logits"]).numpy()
    _check_signature(path, loaded, "serving_default", {"frames": frames}, expected,
                     cli_tmp_path=tmp_path if task_name == "action_context" else None)


def _tiny_actor_observer(num_classes=3):
    from kerasvid.models.actor_observer import actor_observer_network

    frames = keras.Input((1, *SIZE, 3))
    x = keras.layers.Conv3D(8, (1, 3, 3), strides=(1, 2, 2), activation="relu")(frames)
    trunk = keras.Model(frames, keras.layers.GlobalAveragePooling3D()(x), name="trunk")
    return actor_observer_network(num_classes=num_classes, input_shape=(1, *SIZE, 3), trunk=trunk,
                                  variant="noshare")


@pytest.mark.large
def test_actor_observer_serves_embedding_selectors_and_pair_distance(tmp_path):
    keras.utils.set_random_seed(7)
    model = _tiny_actor_observer()
    config = tasks.TaskConfig(model="actor_observer_resnet152", num_classes=3, num_frames=1, image_size=SIZE,
                              label_names=LABELS)
    path = str(tmp_path / "export")
    tasks.get_task("actor_observer", config).export(model, path)
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "serve_pair_distance"}
    assert export.load_settings(path)[1] == LABELS
    rng = np.random.default_rng(8)
    x, y, z = (rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8) for _ in range(3))
    crops = [_crops(v, SIZE, "imagenet")[:, None] for v in (x, y, z)]
    out = {k: v.numpy() for k, v in model(crops, training=False).items()}
    assert not np.allclose(out["selector_x"], out["selector_y"])  # noshare: the two selectors differ
    trunk = model.get_layer("trunk")
    # x as the first-person stream, y as the third-person one: their selectors, y's classifier.
    _check_signature(path, loaded, "serving_default", {"frames": x},
                     {"embedding": trunk(crops[0]), "selector_first_person": out["selector_x"]})
    _check_signature(path, loaded, "serving_default", {"frames": y},
                     {"selector_third_person": out["selector_y"], "logits": out["logits"],
                      "probs": tf.nn.softmax(out["logits"])})
    _check_signature(path, loaded, "serve_pair_distance", {"frame1": x, "frame2": y}, {"distance": out["d_pos"]},
                     cli_tmp_path=tmp_path)
    _check_signature(path, loaded, "serve_pair_distance", {"frame1": y, "frame2": z}, {"distance": out["d_neg"]})


def test_tasks_that_cannot_serve_refuse_clearly(tmp_path):
    class NoServing(tasks.Task):
        name = "no_serving"

    with pytest.raises(ValueError, match=r"The 'no_serving' task cannot export a serving model"):
        NoServing(tasks.TaskConfig()).export(None, str(tmp_path / "x"))
    with pytest.raises(ValueError, match=r"'no_serving' task has no LiteRT export"):
        NoServing(tasks.TaskConfig()).export_tflite(None, str(tmp_path / "x"))
    inputs = keras.Input((T, *SIZE, 3))
    pooled = keras.layers.Reshape((1, 3))(keras.layers.GlobalAveragePooling3D()(inputs))
    features = keras.Model(inputs, pooled, name="features_only")  # include_top=False style: [B, 1, 3], no logits
    config = tasks.TaskConfig(model="c2d_resnet18", num_classes=3, num_frames=T, image_size=SIZE)
    with pytest.raises(ValueError, match=r"needs \[B, C\] logits; 'features_only' returns \(None, 1, 3\)"):
        tasks.get_task("classification", config).export(features, str(tmp_path / "x"))
    with pytest.raises(ValueError, match=r"triplet export needs an actor-observer network"):
        tasks.get_task("actor_observer", tasks.TaskConfig(num_frames=1, image_size=SIZE)).export(features, str(tmp_path))
    assert not os.path.exists(tmp_path / "x")
