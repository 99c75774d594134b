"""SavedModel (TF Serving) and LiteRT export: the generic writer and the video-classification endpoints.

Each task builds its own serving model and signatures (`kerasvid.tasks.Task.export`); this module holds what they
share, and depends only on `kerasvid.data` (tasks call it; it never imports a task or the training loop):

- `write_archive`: a `keras.export.ExportArchive` SavedModel with the given endpoints, written atomically, with
  `labels.txt` (one name per line) and `preprocessing.json` (the settings and the signature names) beside it;
- `classification_endpoints`: the three classifier endpoints below, around any `predict(clips) -> dict` function;
- `export_saved_model`: a `[B, T, H, W, 3] -> [B, C]` Keras classifier written with those endpoints;
- `export_tflite` / `flow_tflite_function` / `classifier_tflite_function`: LiteRT (`.tflite`) files.

Classification endpoints (each returns `{"logits": float32 [B, C], "probs": float32 [B, C]}` plus the model's extra
outputs, e.g. the attention maps of `i3d_action_context`; `probs` is the softmax, or the sigmoid for multi-label
models):

- `serving_default`: uint8 frames `[B, T, H, W, 3]` (any H, W; T fixed), input name `frames`;
- `serve_jpeg`: JPEG-encoded frames, string `[B, T]`, input name `jpeg_frames`, decoded and resized in the graph;
- `serve_examples`: serialized `tf.train.SequenceExample` records (`kerasvid.data.schema`), string `[B]`, input
  name `examples`, decoded by `kerasvid.data.pipeline.decode_examples`, the evaluation pipeline's own decoder
  (the centred clip of `T` frames x `stride`; short videos loop), so serving cannot drift from evaluation.

Requests of the wrong rank, frame count or channel count, and empty batches, fail with an error naming the expected
layout and the shape received (signatures do not enforce their declared shapes, so the checks are in the graph).
All endpoints apply the evaluation preprocessing of `kerasvid.data` (short side resized to `short_side`, centre
crop `image_size`, `normalization`), so the SavedModel matches the Keras model on the evaluation pipeline's input.
"""
import json
import os
import sys
import tempfile
import uuid

import keras
import tensorflow as tf

from kerasvid.data import pipeline, preprocess
from kerasvid.data.config import VideoDataConfig

PREPROCESSING_FILE = "preprocessing.json"
LABELS_FILE = "labels.txt"
TFLITE_FILE = "model.tflite"
FLOW_TFLITE_FILE = "flow.tflite"
TFLITE_SIGNATURE = "serving_default"  # the one signature of a LiteRT file (as a SavedModel's default)
# Written into every export: an existing directory is replaced only if it holds this file and nothing but what an
# export writes (a kerasvid export never deletes a folder it did not write).
EXPORT_MARKER = "kerasvid_export"
_EXPORT_ENTRIES = {"saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra", LABELS_FILE,
                   PREPROCESSING_FILE, EXPORT_MARKER}
_EXPORT_SUFFIXES = (".tflite", ".tflite.json", ".tflite.tmp", ".tflite.json.tmp")  # LiteRT files, even half-written


class ExportDirError(ValueError):
    """Raised when an export would replace a directory that is not a previous kerasvid export."""


def check_export_dir(export_dir):
    """Raises `ExportDirError` unless `export_dir` may be written: absent, empty, or a previous kerasvid export
    (it holds `EXPORT_MARKER` and only what an export writes: the SavedModel, `labels.txt`, `preprocessing.json`,
    `*.tflite` and their `.json`). A user's folder, a model_dir, the working directory (or a folder above it) and a
    symbolic link are never replaced."""
    local = "://" not in export_dir
    if local and os.path.islink(export_dir.rstrip("/")):
        raise ExportDirError(f"The export directory {export_dir!r} is a symbolic link; pass the folder it points to "
                             f"({os.path.realpath(export_dir)!r}) or a new one.")
    if local:
        here, target = os.path.realpath(os.getcwd()), os.path.realpath(export_dir)
        if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
            raise ExportDirError(f"Refusing to export into {export_dir!r}: it is the working directory or a folder "
                                 f"above it. Pass a new or empty directory, or a previous export of kerasvid.")
    try:
        if not tf.io.gfile.exists(export_dir):
            return
        if not tf.io.gfile.isdir(export_dir):
            raise ExportDirError(f"The export directory {export_dir!r} is a file; pass a new or empty directory, or "
                                 f"a previous export of kerasvid.")
        entries = sorted(e.rstrip("/") for e in tf.io.gfile.listdir(export_dir))
    except tf.errors.OpError as e:
        raise ExportDirError(f"Cannot read the export directory {export_dir!r}: {e.message}") from None
    if not entries:
        return
    foreign = [e for e in entries if e not in _EXPORT_ENTRIES and not e.endswith(_EXPORT_SUFFIXES)]
    if EXPORT_MARKER not in entries or foreign:
        what = f"it holds {foreign[0]!r}" if foreign else "it is not a kerasvid export (no marker file)"
        raise ExportDirError(f"Refusing to replace {export_dir!r}: {what}, and an export replaces its whole "
                             f"directory. Pass a new or empty directory, or a previous export of kerasvid.")


def _recover_dead_exports(parent, base, export_dir):
    """Cleans up after an export process that died mid-write (kill -9, OOM): its temporary copy goes, and if it died
    between moving the previous export away and moving the new one in, the previous export is put back."""
    from kerasvid import _locks

    for path in sorted(tf.io.gfile.glob(os.path.join(parent, f".{base}.*-*-*"))):
        kind, pid = os.path.basename(path)[len(base) + 2:].split("-")[:2]
        if kind not in ("tmp", "old") or not pid.isdigit() or _locks.pid_alive(int(pid)):
            continue
        if kind == "old" and not tf.io.gfile.exists(export_dir):
            tf.io.gfile.rename(path, export_dir)
        else:
            tf.io.gfile.rmtree(path)


def _check_args(num_frames, image_size, label_names, num_classes):
    if num_frames < 1:
        raise ValueError(f"`num_frames` must be >= 1, got num_frames={num_frames}.")
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"`image_size` must be (height, width), got image_size={image_size!r}.")
    if label_names and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names for a model with {num_classes} classes.")


def check_video_classifier(model, who="export"):
    """Raises ValueError unless `model` maps one clip input `[B, T, H, W, 3]` to `[B, C]` logits (or a dict with
    `"logits"`); returns `C`."""
    shapes = [tuple(t.shape) for t in model.inputs]
    if len(shapes) != 1 or len(shapes[0]) != 5 or shapes[0][-1] != 3:
        raise ValueError(f"{who}: the classification export needs a model with one RGB clip input [B, T, H, W, 3]; "
                         f"{model.name!r} takes {shapes}.")
    output = model.output["logits"] if isinstance(model.output, dict) and "logits" in model.output else model.output
    if isinstance(output, (dict, list, tuple)) or len(output.shape) != 2:
        raise ValueError(f"{who}: the classification export needs [B, C] logits; {model.name!r} returns "
                         f"{tf.nest.map_structure(lambda t: tuple(t.shape), model.output)} (build it with "
                         f"include_top=True).")
    return int(output.shape[-1])


def checked(name, tensor, shape, layout, num_frames=None):
    """Checks a request in the graph (loaded signatures do not enforce TensorSpec shapes): rank, the frame count
    (axis 1, when `num_frames`), 3 channels (rank-5 and rank-4 frames) and a non-empty batch, each failure with one
    message that names the expected layout and the shape received; then sets the static shape."""
    actual = tf.shape(tensor)
    padded = tf.concat([actual, tf.zeros([len(shape)], tf.int32)], 0)  # indexable whatever the rank
    ok = tf.equal(tf.size(actual), len(shape))
    if num_frames is not None:
        ok = tf.logical_and(ok, tf.equal(padded[1], num_frames))
    if len(shape) >= 4:
        ok = tf.logical_and(ok, tf.equal(padded[len(shape) - 1], 3))
    check = tf.debugging.Assert(ok, [f"{name}: expected {layout}; got a tensor of shape", actual], summarize=8)
    with tf.control_dependencies([check]):
        nonempty = tf.debugging.Assert(padded[0] > 0, [f"{name}: the batch is empty (B = 0); send at least one "
                                                       f"item, {layout}; got a tensor of shape", actual], summarize=8)
    with tf.control_dependencies([nonempty]):
        return tf.ensure_shape(tf.identity(tensor), shape)


def classification_endpoints(predict, num_frames, image_size, normalization="imagenet", stride=1, short_side=None,
                             multi_label=False):
    """The `serving_default`, `serve_jpeg` and `serve_examples` endpoints around a classifier function.

    Args:
        predict: `fn(clips) -> dict` with at least `"logits"` `[B, C]`; `clips` are normalised float32
            `[B, T, H, W, 3]` crops, as the evaluation pipeline feeds the Keras model. Other entries (e.g. attention
            maps) are returned as they are (float32).
        num_frames, image_size, normalization, stride, short_side, multi_label: see `export_saved_model`.

    Returns:
        `{name: (fn, [tf.TensorSpec])}` for `write_archive`.
    """
    image_size = (int(image_size[0]), int(image_size[1]))
    short_side = int(short_side or preprocess.default_short_side(image_size))
    # Traced once and called by the three endpoints (one copy of the model's graph in the SavedModel).
    predict_once = tf.function(predict, input_signature=[tf.TensorSpec([None, num_frames, *image_size, 3],
                                                                       tf.float32)])

    def classify(clips):
        outputs = {k: tf.cast(v, tf.float32) for k, v in predict_once(clips).items()}
        logits = outputs["logits"]
        outputs["probs"] = tf.sigmoid(logits) if multi_label else tf.nn.softmax(logits)
        return outputs

    def decode_clip(jpegs):
        """string `[T]` -> float `[T, H, W, 3]` (each frame resized on its own: frames may differ in size)."""
        ok = tf.reduce_all(tf.map_fn(tf.io.is_jpeg, jpegs, fn_output_signature=tf.bool))
        with tf.control_dependencies([tf.debugging.Assert(ok, ["serve_jpeg: a frame is not a JPEG image (only "
                                                                "JPEG-encoded frames are accepted)"])]):
            return tf.map_fn(
                lambda j: preprocess.resize_and_center_crop(tf.io.decode_jpeg(j, channels=3)[None], image_size,
                                                            short_side)[0],
                jpegs, fn_output_signature=tf.TensorSpec([*image_size, 3], tf.float32))

    def serving_default(frames):
        frames = checked("serving_default", frames, [None, num_frames, None, None, 3],
                         f"uint8 frames [B, {num_frames}, H, W, 3] (exactly {num_frames} frames)", num_frames)
        crops = preprocess.resize_and_center_crop(frames, image_size, short_side)
        return classify(preprocess.normalize(crops, normalization))

    def serve_jpeg(jpeg_frames):
        jpeg_frames = checked("serve_jpeg", jpeg_frames, [None, num_frames],
                              f"JPEG strings [B, {num_frames}] (exactly {num_frames} frames)", num_frames)
        clips = tf.map_fn(decode_clip, jpeg_frames, fn_output_signature=tf.TensorSpec(
            [num_frames, *image_size, 3], tf.float32))
        return classify(preprocess.normalize(clips, normalization))

    def serve_examples(examples):
        examples = checked("serve_examples", examples, [None], "serialized SequenceExamples [B]")
        # A serialized SequenceExample starts with its context (field 1) or feature_lists (field 2) tag; anything
        # else gets this message instead of the parser's "Invalid protocol message input".
        first = tf.strings.substr(examples, 0, 1)
        is_proto = tf.reduce_all(tf.logical_or(tf.equal(first, b"\n"), tf.equal(first, b"\x12")))
        check = tf.debugging.Assert(is_proto, ["serve_examples: a request item is not a serialized "
                                               "tf.train.SequenceExample; its first bytes are",
                                               tf.strings.substr(examples, 0, 8)], summarize=4)
        with tf.control_dependencies([check]):
            examples = tf.identity(examples)
        return classify(pipeline.decode_examples(examples, VideoDataConfig(
            num_frames=num_frames, stride=stride, image_size=image_size, training=False, normalization=normalization,
            eval_short_side=short_side)))

    return {
        "serving_default": (serving_default, [tf.TensorSpec(None, tf.uint8, name="frames")]),
        "serve_jpeg": (serve_jpeg, [tf.TensorSpec(None, tf.string, name="jpeg_frames")]),
        "serve_examples": (serve_examples, [tf.TensorSpec(None, tf.string, name="examples")]),
    }


def frame_pair_endpoint(name, fn, image_size, normalization="imagenet", short_side=None, resize=True):
    """An endpoint over two uint8 frame batches `frame1`, `frame2` `[B, H, W, 3]`: each checked, resized (short side)
    and centre-cropped to `image_size` (when `resize`) and normalised, then `fn(frame1, frame2) -> dict`.

    Returns:
        `(endpoint fn, [tf.TensorSpec, tf.TensorSpec])` for `write_archive`.
    """
    image_size = (int(image_size[0]), int(image_size[1]))
    short_side = int(short_side or preprocess.default_short_side(image_size))
    layout = "uint8 frames [B, H, W, 3]" if resize else f"uint8 frames [B, {image_size[0]}, {image_size[1]}, 3]"

    def prepare(key, frames):
        shape = [None, None, None, 3] if resize else [None, *image_size, 3]
        frames = checked(f"{name}/{key}", frames, shape, layout)
        if resize:
            frames = preprocess.resize_and_center_crop(frames, image_size, short_side)
        return preprocess.normalize(frames, normalization)

    def endpoint(frame1, frame2):
        return fn(prepare("frame1", frame1), prepare("frame2", frame2))

    return endpoint, [tf.TensorSpec(None, tf.uint8, name="frame1"), tf.TensorSpec(None, tf.uint8, name="frame2")]


def write_archive(export_dir, trackable, endpoints, settings, label_names=None):
    """Writes a SavedModel with `endpoints` (`{name: (fn, input specs)}`), then `labels.txt` (when `label_names` is
    not None) and `preprocessing.json` (`settings` + `"signatures"`) beside it; atomically (`<export_dir>.tmp`, then
    renamed).

    Args:
        export_dir: output directory (replaced if it exists).
        trackable: the Keras model (or layer) whose variables the endpoints use.
        endpoints: `{signature name: (fn, [tf.TensorSpec])}`; must contain `serving_default`.
        settings: JSON-serialisable dict for `preprocessing.json`.
        label_names: class names, index order, or None (no `labels.txt`).

    Returns:
        `export_dir`.
    """
    if "serving_default" not in endpoints:
        raise ValueError(f"write_archive: the endpoints must include 'serving_default', got {sorted(endpoints)}.")
    export_dir = export_dir.rstrip("/")
    check_export_dir(export_dir)
    archive = keras.export.ExportArchive()
    archive.track(trackable)
    for name, (fn, specs) in endpoints.items():
        archive.add_endpoint(name, fn, specs)
    if "://" in export_dir:
        parent, base = export_dir.rsplit("/", 1)
    else:
        export_dir = os.path.abspath(export_dir)
        parent, base = os.path.split(export_dir)
    tf.io.gfile.makedirs(parent)
    _recover_dead_exports(parent, base, export_dir)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = (os.path.join(parent, f".{base}.{kind}-{token}") for kind in ("tmp", "old"))
    swapped = False
    try:
        archive.write_out(tmp, verbose=False)
        if label_names is not None:
            with tf.io.gfile.GFile(os.path.join(tmp, LABELS_FILE), "w") as f:
                f.write("".join(f"{name}\n" for name in label_names))
        with tf.io.gfile.GFile(os.path.join(tmp, PREPROCESSING_FILE), "w") as f:
            json.dump({**settings, "signatures": list(endpoints)}, f, indent=2)
        with tf.io.gfile.GFile(os.path.join(tmp, EXPORT_MARKER), "w") as f:
            f.write("A kerasvid export: `train/main.py --mode=export` may replace this directory.\n")
        check_export_dir(export_dir)  # again: the directory may have changed while the model was written
        if tf.io.gfile.exists(export_dir):
            tf.io.gfile.rename(export_dir, old)
        try:
            tf.io.gfile.rename(tmp, export_dir)
            swapped = True
        except Exception:
            if tf.io.gfile.exists(old) and not tf.io.gfile.exists(export_dir):
                try:  # put the previous export back
                    tf.io.gfile.rename(old, export_dir)
                except (tf.errors.OpError, OSError) as e:
                    raise ExportDirError(f"The new export could not be moved into {export_dir!r}, nor the previous "
                                         f"one back ({e}); the previous export is intact in {old!r}.") from None
            raise
    finally:  # a failed write (full disk, a bad endpoint) leaves no temporary copy; the previous export stays
        for leftover in (tmp, old) if swapped else (tmp,):
            try:
                if tf.io.gfile.exists(leftover):
                    tf.io.gfile.rmtree(leftover)
            except (tf.errors.OpError, OSError) as e:  # the new export is in place: say what is left, go on
                print(f"kerasvid export: warning: could not remove {leftover!r} ({e})", file=sys.stderr)
    return export_dir


def classification_settings(num_frames, image_size, normalization, stride, short_side, multi_label, num_classes):
    """The `preprocessing.json` entries of a classification export (what a client needs to build requests)."""
    return {"kind": "classification", "num_frames": int(num_frames), "image_size": [int(s) for s in image_size],
            "short_side": int(short_side or preprocess.default_short_side(image_size)),
            "normalization": normalization, "stride": int(stride), "multi_label": bool(multi_label),
            "num_classes": int(num_classes), "input_dtype": "uint8"}


def export_saved_model(model, export_dir, num_frames, image_size, label_names=(), normalization="imagenet",
                       stride=1, short_side=None, multi_label=False, extra_settings=None, predict=None,
                       extra_endpoints=None):
    """Writes a video classifier as a SavedModel with the `serving_default`, `serve_jpeg` and `serve_examples`
    endpoints (see the module docstring).

    Args:
        model: a Keras video classifier `[B, T, H, W, 3] -> [B, C]` logits (or a dict with `"logits"`).
        export_dir: output directory (written to `<export_dir>.tmp` first, then renamed).
        num_frames: `T` of every request.
        image_size: `(H, W)` the model takes.
        label_names: class names (index order), written to `labels.txt` (default "0", "1", ...).
        normalization: `kerasvid.data.preprocess.normalize` preset the model was trained with.
        stride: temporal stride of `serve_examples` clips.
        short_side: resize target of the short side before the centre crop (default `max(image_size) / 0.875`).
        multi_label: `probs` = sigmoid instead of softmax.
        extra_settings: more entries for `preprocessing.json` (e.g. the model name, the training step).
        predict: `fn(clips) -> dict` with `"logits"` (default: the model's logits alone).
        extra_endpoints: more `{name: (fn, specs)}` endpoints (e.g. `serve_flow`).

    Returns:
        `export_dir`.

    Example:
    >>> model = kerasvid.zoo.c2d_resnet18(num_classes=4, input_shape=(8, 32, 32, 3))
    >>> kerasvid.export.export_saved_model(model, "/tmp/export", 8, (32, 32), ["a", "b", "c", "d"])
    """
    num_classes = check_video_classifier(model)
    _check_args(num_frames, image_size, label_names, num_classes)
    preprocess.check_normalization(normalization)
    if predict is None:
        def predict(clips):
            out = model(clips, training=False)
            return {"logits": out["logits"] if isinstance(out, dict) else out}
    endpoints = classification_endpoints(predict, num_frames, image_size, normalization, stride, short_side,
                                         multi_label)
    endpoints.update(extra_endpoints or {})
    settings = classification_settings(num_frames, image_size, normalization, stride, short_side, multi_label,
                                       num_classes)
    return write_archive(export_dir, model, endpoints, {**settings, **(extra_settings or {})},
                         list(label_names) or [str(i) for i in range(num_classes)])


def load_settings(export_dir):
    """Returns `(settings dict, label names)` written beside an exported SavedModel (labels: [] when none)."""
    with tf.io.gfile.GFile(os.path.join(export_dir, PREPROCESSING_FILE)) as f:
        settings = json.load(f)
    labels = []
    if tf.io.gfile.exists(os.path.join(export_dir, LABELS_FILE)):
        with tf.io.gfile.GFile(os.path.join(export_dir, LABELS_FILE)) as f:
            labels = [line.rstrip("\n") for line in f]
    return settings, labels


# ----- LiteRT ------------------------------------------------------------------------------------------------------

def classifier_tflite_function(model, num_frames, image_size, normalization="imagenet", multi_label=False):
    """`tf.function` for LiteRT: uint8 crops `[1, T, H, W, 3]` (already resized and cropped to `image_size`) ->
    `{"logits", "probs"}` (normalisation inside, as `serving_default`)."""
    check_video_classifier(model, "LiteRT export")

    @tf.function(input_signature=[tf.TensorSpec([1, num_frames, *image_size, 3], tf.uint8, name="frames")])
    def classify(frames):
        out = model(preprocess.normalize(frames, normalization), training=False)
        logits = tf.cast(out["logits"] if isinstance(out, dict) else out, tf.float32)
        return {"logits": logits, "probs": tf.sigmoid(logits) if multi_label else tf.nn.softmax(logits)}

    return classify


def flow_tflite_function(tvnet, image_size, normalization="none"):
    """`tf.function` for LiteRT: two uint8 frames `[1, H, W, 3]` -> `{"flow": [1, H, W, 2]}` through a TVNet layer
    (normalised as the model's input, which for `tvnet_bn_inception` is "none": 0..255)."""
    @tf.function(input_signature=[tf.TensorSpec([1, *image_size, 3], tf.uint8, name=name)
                                  for name in ("frame1", "frame2")])
    def flow(frame1, frame2):
        return {"flow": tvnet(preprocess.normalize(frame1, normalization),
                              preprocess.normalize(frame2, normalization))}

    return flow


def _separable_pool(original, pool2d):
    """`tf.nn.max_pool` / `tf.nn.avg_pool` on 5-D `NDHWC` inputs as two 2-D pools (LiteRT has MAX_POOL_2D and
    AVERAGE_POOL_2D builtins, no 3-D pools): over H, W per frame, then over T (a `[kt, 1]` pool on
    `[B, T, H' * W', C]`). The same numbers: a max over a box is the max over time of the spatial maxima, and an
    average over a box's valid (unpadded) positions is the temporal mean of the spatial means, since the valid
    positions form a product set for both "VALID" and "SAME" padding."""

    def pool(input, ksize, strides, padding, data_format=None, name=None):  # noqa: A002 (tf's argument name)
        ksize_, strides_ = (list(v) if isinstance(v, (list, tuple)) else [v] * 3 for v in (ksize, strides))
        if input.shape.rank != 5 or data_format not in (None, "NDHWC") or len(ksize_) != 3 or len(strides_) != 3:
            return original(input, ksize, strides, padding, data_format, name)
        shape = tf.shape(input)
        channels = input.shape[-1]
        x = tf.reshape(input, tf.concat([[-1], shape[2:]], 0))  # [B * T, H, W, C]
        if ksize_[1:] != [1, 1] or strides_[1:] != [1, 1]:
            x = pool2d(x, ksize_[1:], strides_[1:], padding)
        size = tf.shape(x)[1:3]
        x = tf.reshape(x, tf.stack([shape[0], shape[1], size[0] * size[1], channels]))  # [B, T, H' * W', C]
        if ksize_[0] != 1 or strides_[0] != 1:
            x = pool2d(x, [ksize_[0], 1], [strides_[0], 1], padding)
        return tf.reshape(x, tf.stack([shape[0], tf.shape(x)[1], size[0], size[1], channels]))

    return pool


def export_tflite(function, path, trackable):
    """Converts a `tf.function` with an input signature to a LiteRT flatbuffer at `path` (builtin ops only, so that
    the file runs on the plain LiteRT interpreter), with `<path>.json` beside it naming the inputs and the outputs;
    returns `path`. The flatbuffer has one signature, `serving_default`, with the function's input names (its
    TensorSpec names) and output names (its output dict's keys), as the SavedModel's: a LiteRT tool reads them with
    `Interpreter.get_signature_list()` / `get_signature_runner()` (what `run_tflite` uses).

    The weights are frozen into constants first: left as resource variables, TVNet's kernels (read inside its
    `tf.while_loop`) become READ_VARIABLE ops that the interpreter reads uninitialised (NaN flow). Its
    `tf.custom_gradient` converts as it is (the forward pass only). 3-D max and average pools, which are not LiteRT
    builtins, are traced as two 2-D pools with the same numbers (`_separable_pool`).

    Raises:
        ValueError naming the model and the converter's first error line when an op does not convert, or when the
        file would have no `serving_default` signature.
    """
    from unittest import mock

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    with mock.patch.object(tf.nn, "max_pool", _separable_pool(tf.nn.max_pool, tf.nn.max_pool2d)), \
            mock.patch.object(tf.nn, "avg_pool", _separable_pool(tf.nn.avg_pool, tf.nn.avg_pool2d)):
        concrete = function.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)  # its outputs are a flat list: named again below
    names = sorted(concrete.structured_outputs)  # the flattening order of the output dict

    @tf.function(input_signature=function.input_signature)
    def serving_default(*inputs):
        return dict(zip(names, frozen(*inputs)))

    # Through a SavedModel, whose signature the converter keeps with its names (`from_concrete_functions` with a
    # trackable object does the same, but its save refuses TVNet's custom gradient: saved here without it).
    with tempfile.TemporaryDirectory(prefix="kerasvid_tflite_") as saved:
        tf.saved_model.save(tf.Module(), saved, signatures={TFLITE_SIGNATURE: serving_default.get_concrete_function()},
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except Exception as e:  # the converter raises ConverterError (and others) with the MLIR diagnostics
            lines = str(e).splitlines()
            first = next((line.split("error: ", 1)[-1] for line in lines if "error: " in line), str(e)[:300])
            raise ValueError(f"LiteRT conversion of {getattr(trackable, 'name', trackable)!r} failed: {first}") from e
    signature = _interpreter(model_content=flatbuffer).get_signature_list().get(TFLITE_SIGNATURE)
    if signature is None or sorted(signature["outputs"]) != names:
        raise ValueError(f"LiteRT conversion of {getattr(trackable, 'name', trackable)!r} lost its signature "
                         f"{TFLITE_SIGNATURE!r} (outputs {names}); got {signature}.")
    spec = {"inputs": [t.name for t in function.input_signature], "outputs": names}
    for target, data, mode in ((path, flatbuffer, "wb"), (path + ".json", json.dumps(spec, indent=1), "w")):
        with tf.io.gfile.GFile(target + ".tmp", mode) as f:
            f.write(data)
        tf.io.gfile.rename(target + ".tmp", target, overwrite=True)
    return path


def _interpreter(**kwargs):
    """The LiteRT interpreter (`ai_edge_litert`'s where installed, else the one bundled with TensorFlow)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter(**kwargs)


def run_tflite(path, **inputs):
    """Runs a `.tflite` written by `export_tflite` with the LiteRT interpreter, through its `serving_default`
    signature: inputs and outputs by name.

    Returns:
        `{output name: numpy array}`.
    """
    import numpy as np

    interpreter = _interpreter(model_path=path)
    signature = interpreter.get_signature_list().get(TFLITE_SIGNATURE)
    if signature is None:
        raise ValueError(f"run_tflite({path!r}): no {TFLITE_SIGNATURE!r} signature (it has "
                         f"{sorted(interpreter.get_signature_list())}); write the file with export_tflite.")
    missing = sorted(set(signature["inputs"]) - set(inputs))
    if missing:
        raise ValueError(f"run_tflite({path!r}): missing inputs {missing}; it takes {signature['inputs']}.")
    runner = interpreter.get_signature_runner(TFLITE_SIGNATURE)
    details = runner.get_input_details()
    return runner(**{name: np.asarray(inputs[name], details[name]["dtype"]) for name in signature["inputs"]})
