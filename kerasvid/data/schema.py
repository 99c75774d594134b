"""The video record schema: one `tf.train.SequenceExample` per video (TF Model Garden / DMVR compatible).

Layout (zoo_anchors.md §D1):

| where         | key                                  | value                                   | written by      |
|---------------|--------------------------------------|-----------------------------------------|-----------------|
| feature_lists | `image/encoded`                      | one JPEG (bytes) per frame              | MG, DMVR, here  |
| context       | `clip/label/index`                   | int64 list (several = multi-label)      | MG, DMVR, here  |
| context       | `clip/label/text`                    | bytes list                              | DMVR, here      |
| context       | `video/filename`                     | bytes                                   | DMVR, here      |
| context       | `video/id`, `video/fps`, `video/num_frames`, `image/height`, `image/width` | scalars | here |
| feature_lists | `region/bbox/{ymin,xmin,ymax,xmax}`  | floats per frame (0..n boxes, in [0,1]) | here (boxes)    |
| feature_lists | `frame/visible`                      | int64 per frame (1 = actor visible)     | here (ego/exo)  |

Only `image/encoded` and `clip/label/index` are required to read a record, so records written by Model Garden's
tools read as well; every other key is optional on reading.
"""
import numpy as np
import tensorflow as tf

# Keys shared with Model Garden / DMVR.
IMAGE_ENCODED = "image/encoded"
LABEL_INDEX = "clip/label/index"
LABEL_TEXT = "clip/label/text"
VIDEO_FILENAME = "video/filename"
# kerasvid's own context keys.
VIDEO_ID = "video/id"
VIDEO_FPS = "video/fps"
VIDEO_NUM_FRAMES = "video/num_frames"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
# kerasvid's optional per-frame keys.
BBOX_YMIN = "region/bbox/ymin"
BBOX_XMIN = "region/bbox/xmin"
BBOX_YMAX = "region/bbox/ymax"
BBOX_XMAX = "region/bbox/xmax"
BBOX_KEYS = (BBOX_YMIN, BBOX_XMIN, BBOX_YMAX, BBOX_XMAX)
FRAME_VISIBLE = "frame/visible"


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _to_bytes(value):
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def make_sequence_example(frames_jpeg, label_index, label_text=None, video_id=None, filename=None, fps=None,
                          height=None, width=None, boxes=None, visible=None):
    """Builds the `tf.train.SequenceExample` of one video.

    Args:
        frames_jpeg: list of JPEG-encoded frames (bytes), in time order; at least one.
        label_index: int or list of ints (several = multi-label); may be empty for unlabeled test videos.
        label_text: str or list of str, the class name(s) (`clip/label/text`).
        video_id: str, a stable identifier (`video/id`).
        filename: str, the source file (`video/filename`).
        fps: float, frame rate of the stored frames (`video/fps`); gives `stride` its meaning in seconds.
        height, width: int, frame size in pixels (`image/height`, `image/width`).
        boxes: optional per-frame boxes: a sequence of length `len(frames_jpeg)` whose items are sequences of
            `(ymin, xmin, ymax, xmax)` in [0, 1] (zero or more boxes per frame), or an array `[T, 4]` (one box per
            frame). Stored as the `region/bbox/*` feature lists.
        visible: optional per-frame 0/1 flags (`frame/visible`).

    Returns:
        A `tf.train.SequenceExample`; `video/num_frames` is set to `len(frames_jpeg)`.

    Example:
    >>> ex = make_sequence_example([jpeg0, jpeg1], [3], label_text="jump", video_id="v0")
    >>> record = ex.SerializeToString()
    """
    frames_jpeg = list(frames_jpeg)
    if not frames_jpeg:
        raise ValueError("`frames_jpeg` must hold at least one frame, got 0 frames.")
    if not all(isinstance(f, bytes) for f in frames_jpeg):
        raise TypeError(f"`frames_jpeg` must be a list of bytes, got items of type "
                        f"{sorted({type(f).__name__ for f in frames_jpeg})}.")
    labels = [label_index] if np.isscalar(label_index) else list(label_index)
    if any(int(v) < 0 for v in labels):
        raise ValueError(f"`label_index` values must be >= 0, got {labels}.")
    num_frames = len(frames_jpeg)
    context = {LABEL_INDEX: _ints(labels), VIDEO_NUM_FRAMES: _ints([num_frames])}
    if label_text is not None:
        texts = [label_text] if isinstance(label_text, (str, bytes)) else list(label_text)
        context[LABEL_TEXT] = _bytes(_to_bytes(t) for t in texts)
    if video_id is not None:
        context[VIDEO_ID] = _bytes([_to_bytes(video_id)])
    if filename is not None:
        context[VIDEO_FILENAME] = _bytes([_to_bytes(filename)])
    if fps is not None:
        context[VIDEO_FPS] = _floats([fps])
    if height is not None:
        context[IMAGE_HEIGHT] = _ints([height])
    if width is not None:
        context[IMAGE_WIDTH] = _ints([width])

    feature_lists = {IMAGE_ENCODED: tf.train.FeatureList(feature=[_bytes([f]) for f in frames_jpeg])}
    if boxes is not None:
        per_frame = _normalize_boxes(boxes, num_frames)
        for j, key in enumerate(BBOX_KEYS):
            feature_lists[key] = tf.train.FeatureList(feature=[_floats(b[:, j]) for b in per_frame])
    if visible is not None:
        visible = list(visible)
        if len(visible) != num_frames:
            raise ValueError(f"`visible` must have one flag per frame ({num_frames}), got {len(visible)}.")
        feature_lists[FRAME_VISIBLE] = tf.train.FeatureList(feature=[_ints([v]) for v in visible])
    return tf.train.SequenceExample(context=tf.train.Features(feature=context),
                                    feature_lists=tf.train.FeatureLists(feature_list=feature_lists))


def _normalize_boxes(boxes, num_frames):
    """Returns a list (one per frame) of float arrays [n_t, 4]."""
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2:
        boxes = [b[None] for b in boxes]
    if len(boxes) != num_frames:
        raise ValueError(f"`boxes` must have one entry per frame ({num_frames}), got {len(boxes)}.")
    out = []
    for t, b in enumerate(boxes):
        b = np.asarray(b, np.float32).reshape(-1, 4) if len(b) else np.zeros((0, 4), np.float32)
        if b.size and (b.min() < 0 or b.max() > 1 or np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1])):
            raise ValueError(f"`boxes` must be (ymin, xmin, ymax, xmax) in [0, 1] with min <= max, got {b.tolist()} "
                             f"at frame {t}.")
        out.append(b)
    return out


def context_features(extra=()):
    """Parse spec of the context: the label list always, plus the optional kerasvid keys named in `extra`."""
    spec = {LABEL_INDEX: tf.io.VarLenFeature(tf.int64)}
    optional = {LABEL_TEXT: tf.io.VarLenFeature(tf.string),
                VIDEO_ID: tf.io.FixedLenFeature((), tf.string, default_value=""),
                VIDEO_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
                VIDEO_FPS: tf.io.FixedLenFeature((), tf.float32, default_value=0.0),
                VIDEO_NUM_FRAMES: tf.io.FixedLenFeature((), tf.int64, default_value=0),
                IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, default_value=0),
                IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, default_value=0)}
    for key in extra:
        if key not in optional:
            raise ValueError(f"Unknown context key {key!r}; known: {sorted(optional)}.")
        spec[key] = optional[key]
    return spec


def sequence_features(boxes=False, visible=False):
    """Parse spec of the feature lists (`image/encoded`, optionally boxes and visibility)."""
    spec = {IMAGE_ENCODED: tf.io.FixedLenSequenceFeature((), tf.string)}
    if boxes:
        spec.update({k: tf.io.VarLenFeature(tf.float32) for k in BBOX_KEYS})
    if visible:
        spec[FRAME_VISIBLE] = tf.io.FixedLenSequenceFeature((), tf.int64, allow_missing=True)
    return spec


def parse_sequence_example(serialized, extra_context=(), boxes=False, visible=False):
    """Parses one serialized record (graph-safe).

    Args:
        serialized: scalar string tensor.
        extra_context: optional context keys to parse besides `clip/label/index` (e.g. `(VIDEO_ID,)`).
        boxes: also parse `region/bbox/*` (returned as a RaggedTensor `[T, None, 4]` under "boxes").
        visible: also parse `frame/visible` (`[T]` int64 under "visible"; empty when the record has none).

    Returns:
        A dict: `"frames"` string `[T]` (encoded JPEGs), `"labels"` int64 `[num_labels]`, every key of
        `extra_context` under its own name (`clip/label/text` dense `[n]`), and "boxes"/"visible" if asked.
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=context_features(extra_context),
        sequence_features=sequence_features(boxes, visible))
    out = {"frames": sequence[IMAGE_ENCODED], "labels": tf.sparse.to_dense(context[LABEL_INDEX])}
    for key in extra_context:
        value = context[key]
        out[key] = tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value
    if boxes:
        coords = [tf.RaggedTensor.from_sparse(sequence[k]) for k in BBOX_KEYS]
        out["boxes"] = tf.stack(coords, axis=-1)
    if visible:
        out["visible"] = sequence[FRAME_VISIBLE]
    return out


def read_examples(path):
    """Yields the `tf.train.SequenceExample`s of one record file, in order (eager, for tools and tests)."""
    for record in tf.data.TFRecordDataset(path):
        yield tf.train.SequenceExample.FromString(record.numpy())
