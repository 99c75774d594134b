"""Tests of kerasvid.export: the three serving endpoints against the Keras model and the eval data pipeline,
clear errors for bad requests, the files beside the SavedModel, and `saved_model_cli run` (TF Serving's path)."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import export
from kerasvid.data import preprocess, schema, video_dataset, write_records

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
    export.export_saved_model(model, path, T, SIZE, LABELS, "imagenet", stride=2, extra_settings={"step": 7})
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
    ds = video_dataset(str(tmp_path / "eval-*"), T, stride=2, image_size=SIZE, training=False, batch_size=3,
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


def test_saved_model_cli_run_matches_keras(exported, tmp_path):
    model, path, _ = exported
    frames = _frames(seed=3)
    np.save(tmp_path / "frames.npy", frames)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    # Through this interpreter, so the console script's shebang does not matter (e.g. a relocated venv).
    result = subprocess.run([sys.executable, cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
                             "--inputs", f"frames={tmp_path / 'frames.npy'}", "--outdir", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    probs = np.load(tmp_path / "out" / "probs.npy")
    assert np.abs(probs - _keras_probs(model, frames)).max() < 1e-5


def test_predict_video_decodes_a_real_video_with_pyav(exported, tmp_path):
    import av

    _, path, loaded = exported
    video = str(tmp_path / "clip.mp4")
    with av.open(video, "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(9):
            frame = np.full((32, 32, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clip = export.decode_video_frames(video, T, stride=2)
    assert clip.shape == (T, 32, 32, 3)
    top = export.predict_video(path, video, top_k=2)
    probs = loaded.signatures["serving_default"](frames=tf.constant(clip[None]))["probs"].numpy()[0]
    assert [name for name, _ in top] == [LABELS[i] for i in np.argsort(-probs)[:2]]
    assert top[0][1] == pytest.approx(float(probs.max()))
    with pytest.raises(FileNotFoundError, match="No video"):
        export.decode_video_frames(str(tmp_path / "missing.mp4"), T)
