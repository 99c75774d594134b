"""SavedModel export for TF Serving (`keras.export.ExportArchive`) and prediction with an exported model.

Endpoints (each returns `{"logits": float32 [B, C], "probs": float32 [B, C]}`; `probs` is the softmax, or the
sigmoid for multi-label models):

- `serving_default`: uint8 frames `[B, T, H, W, 3]` (any H, W; T fixed), input name `frames`;
- `serve_jpeg`: JPEG-encoded frames, string `[B, T]`, input name `jpeg_frames`, decoded and resized in the graph;
- `serve_examples`: serialized `tf.train.SequenceExample` records (`kerasvid.data.schema`), string `[B]`, input
  name `examples`; the centred clip of `T` frames x `stride` is sampled (short videos loop) and decoded.

Requests of the wrong rank, frame count or channel count fail with an error naming the expected layout and the
shape received (signatures do not enforce their declared shapes, so the checks are in the graph).
All three apply the evaluation preprocessing of `kerasvid.data` (short side resized to `short_side`, centre crop
`image_size`, `normalization`), so the SavedModel matches the Keras model on the evaluation pipeline's input.
Beside `saved_model.pb`, `labels.txt` (one name per line) and `preprocessing.json` (the settings) are written.
"""
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from kerasvid.data import preprocess, samplers, schema

PREPROCESSING_FILE = "preprocessing.json"
LABELS_FILE = "labels.txt"


def _check_args(num_frames, image_size, label_names, num_classes):
    if num_frames < 1:
        raise ValueError(f"`num_frames` must be >= 1, got num_frames={num_frames}.")
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"`image_size` must be (height, width), got image_size={image_size!r}.")
    if label_names and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names for a model with {num_classes} classes.")


def export_saved_model(model, export_dir, num_frames, image_size, label_names=(), normalization="imagenet",
                       stride=1, short_side=None, multi_label=False, extra_settings=None):
    """Writes `model` as a SavedModel with the `serving_default`, `serve_jpeg` and `serve_examples` endpoints.

    Args:
        model: a Keras video classifier `[B, T, H, W, 3] -> [B, C]` logits.
        export_dir: output directory (written to `<export_dir>.tmp` first, then renamed).
        num_frames: `T` of every request.
        image_size: `(H, W)` the model takes.
        label_names: class names (index order), written to `labels.txt`.
        normalization: `kerasvid.data.preprocess.normalize` preset the model was trained with.
        stride: temporal stride of `serve_examples` clips.
        short_side: resize target of the short side before the centre crop (default `max(image_size) / 0.875`).
        multi_label: `probs` = sigmoid instead of softmax.
        extra_settings: more entries for `preprocessing.json` (e.g. the model name, the training step).

    Returns:
        `export_dir`.

    Example:
    >>> model = kerasvid.zoo.c2d_resnet18(num_classes=4, input_shape=(8, 32, 32, 3))
    >>> kerasvid.export.export_saved_model(model, "/tmp/export", 8, (32, 32), ["a", "b", "c", "d"])
    """
    num_classes = int(model.outputs[0].shape[-1])
    _check_args(num_frames, image_size, label_names, num_classes)
    preprocess.check_normalization(normalization)
    image_size = (int(image_size[0]), int(image_size[1]))
    short_side = int(short_side or preprocess.default_short_side(image_size))

    def classify(crops):
        """float 0..255 `[B, T, H, W, 3]` (already resized and cropped) -> outputs dict."""
        x = preprocess.normalize(crops, normalization)
        logits = tf.cast(model(x, training=False), tf.float32)
        probs = tf.sigmoid(logits) if multi_label else tf.nn.softmax(logits)
        return {"logits": logits, "probs": probs}

    def decode_clip(jpegs):
        """string `[T]` -> float `[T, H, W, 3]` (each frame resized on its own: frames may differ in size)."""
        ok = tf.reduce_all(tf.map_fn(tf.io.is_jpeg, jpegs, fn_output_signature=tf.bool))
        with tf.control_dependencies([tf.debugging.Assert(ok, ["serve_jpeg/serve_examples: a frame is not a JPEG "
                                                                "image (only JPEG-encoded frames are accepted)"])]):
            return tf.map_fn(
                lambda j: preprocess.resize_and_center_crop(tf.io.decode_jpeg(j, channels=3)[None], image_size,
                                                            short_side)[0],
                jpegs, fn_output_signature=tf.TensorSpec([*image_size, 3], tf.float32))

    def checked(name, tensor, shape, layout):
        """Checks rank, frame count and channels in the graph (loaded signatures do not enforce TensorSpec shapes),
        with one message that names the expected layout and the shape received; then sets the static shape."""
        actual = tf.shape(tensor)
        padded = tf.concat([actual, tf.zeros([len(shape)], tf.int32)], 0)  # indexable whatever the rank
        ok = tf.equal(tf.size(actual), len(shape))
        if len(shape) > 1:
            ok = tf.logical_and(ok, tf.equal(padded[1], num_frames))
        if len(shape) == 5:
            ok = tf.logical_and(ok, tf.equal(padded[4], 3))
        check = tf.debugging.Assert(ok, [f"{name}: expected {layout}; got a tensor of shape", actual], summarize=8)
        with tf.control_dependencies([check]):
            return tf.ensure_shape(tf.identity(tensor), shape)

    def serving_default(frames):
        frames = checked("serving_default", frames, [None, num_frames, None, None, 3],
                         f"uint8 frames [B, {num_frames}, H, W, 3] (exactly {num_frames} frames)")
        return classify(preprocess.resize_and_center_crop(frames, image_size, short_side))

    def serve_jpeg(jpeg_frames):
        jpeg_frames = checked("serve_jpeg", jpeg_frames, [None, num_frames], f"JPEG strings [B, {num_frames}] (exactly {num_frames} frames)")
        clips = tf.map_fn(decode_clip, jpeg_frames, fn_output_signature=tf.TensorSpec(
            [num_frames, *image_size, 3], tf.float32))
        return classify(clips)

    def serve_examples(examples):
        examples = checked("serve_examples", examples, [None], "serialized SequenceExamples [B]")

        def one(serialized):
            frames = schema.parse_sequence_example(serialized)["frames"]
            n = tf.shape(frames)[0]
            with tf.control_dependencies([tf.debugging.assert_positive(
                    n, message="serve_examples: a record has no frames under image/encoded")]):
                idx = samplers.dense_clip_indices(n, num_frames, stride, training=False)[0]
            return decode_clip(tf.gather(frames, idx))

        clips = tf.map_fn(one, examples, fn_output_signature=tf.TensorSpec([num_frames, *image_size, 3], tf.float32))
        return classify(clips)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serving_default,
                         [tf.TensorSpec(None, tf.uint8, name="frames")])
    archive.add_endpoint("serve_jpeg", serve_jpeg, [tf.TensorSpec(None, tf.string, name="jpeg_frames")])
    archive.add_endpoint("serve_examples", serve_examples, [tf.TensorSpec(None, tf.string, name="examples")])

    tmp = export_dir.rstrip("/") + ".tmp"
    if tf.io.gfile.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    archive.write_out(tmp, verbose=False)
    with tf.io.gfile.GFile(os.path.join(tmp, LABELS_FILE), "w") as f:
        f.write("".join(f"{name}\n" for name in (label_names or [str(i) for i in range(num_classes)])))
    settings = {"num_frames": int(num_frames), "image_size": list(image_size), "short_side": short_side,
                "normalization": normalization, "stride": int(stride), "multi_label": bool(multi_label),
                "num_classes": num_classes, "input_dtype": "uint8",
                "signatures": ["serving_default", "serve_jpeg", "serve_examples"], **(extra_settings or {})}
    with tf.io.gfile.GFile(os.path.join(tmp, PREPROCESSING_FILE), "w") as f:
        json.dump(settings, f, indent=2)
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rmtree(export_dir)
    tf.io.gfile.rename(tmp, export_dir)
    return export_dir


def load_settings(export_dir):
    """Returns `(settings dict, label names)` written beside an exported SavedModel."""
    with tf.io.gfile.GFile(os.path.join(export_dir, PREPROCESSING_FILE)) as f:
        settings = json.load(f)
    with tf.io.gfile.GFile(os.path.join(export_dir, LABELS_FILE)) as f:
        labels = [line.rstrip("\n") for line in f]
    return settings, labels


def decode_video_frames(path, num_frames, stride=1):
    """Decodes the centred clip of `num_frames` x `stride` frames of a video file with PyAV (loops short videos).

    Returns:
        uint8 `[num_frames, H, W, 3]` RGB.
    """
    import av  # imported here: only prediction from video files needs it

    if not os.path.exists(path):
        raise FileNotFoundError(f"No video file at {path!r}.")
    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path!r} has no decodable video frames.")
    idx = samplers.dense_clip_indices(tf.constant(len(frames)), num_frames, stride, training=False)[0].numpy()
    return np.stack([frames[i] for i in idx])


def predict_video(export_dir, video_path, top_k=5):
    """Classifies a video file with an exported SavedModel (`serving_default`).

    Returns:
        A list of `(label, probability)` pairs, best first.
    """
    settings, labels = load_settings(export_dir)
    clip = decode_video_frames(video_path, settings["num_frames"], settings.get("stride", 1))
    loaded = tf.saved_model.load(export_dir)
    probs = loaded.signatures["serving_default"](frames=tf.constant(clip[None]))["probs"].numpy()[0]
    order = np.argsort(-probs, kind="stable")[:top_k]
    return [(labels[i], float(probs[i])) for i in order]


def predict_main(argv=None):
    """`kerasvid predict --saved_model DIR video.mp4 [--top_k 5]`: prints the top-k labels of each video."""
    import argparse

    parser = argparse.ArgumentParser(prog="kerasvid predict", description=predict_main.__doc__)
    parser.add_argument("--saved_model", required=True, help="directory written by --mode=export")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("videos", nargs="+")
    args = parser.parse_args(argv)
    for video in args.videos:
        print(video)
        for label, p in predict_video(args.saved_model, video, args.top_k):
            print(f"  {p:7.4f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(predict_main())
