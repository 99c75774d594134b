"""Conjugate samples: the same clip with the actors removed (action/context factorization, supplement Sec. 1).

For an action sample, the pixels inside the boxes of the people performing the action are removed, filled with
alternative content and blended with the surrounding pixels:

1. `box_mask`: the union of the (clipped, non-empty) boxes of a frame;
2. fill: OpenCV Telea fast-marching inpainting (`fill="telea"`, the supplement's ref. [7]), Navier-Stokes
   (`fill="ns"`), or any callable `fill(frame, mask) -> frame` (e.g. a Keras image-completion model, the
   supplement's GLCIC);
3. blend: Poisson blending (`cv2.seamlessClone`, the supplement's ref. [5]) of the filled region into the frame over
   the mask dilated by `band` pixels; pixels farther than `band` from every box are left exactly as they were.

The image-level functions (`clip_boxes`, `box_mask`, `conjugate_frame`, `conjugate_clip`) work on numpy frames and
need no record; `conjugate_example` and `main` (the `kerasvid conjugates` command) work on kerasvid records
(`kerasvid.data.schema`) and write the conjugate records in shards that mirror the input shards record for record.

Boxes are `(ymin, xmin, ymax, xmax)`, normalised to [0, 1] like the records' `region/bbox/*` (or in pixels with
`units="pixels"`); a box file is CSV (`video_id,frame,ymin,xmin,ymax,xmax` header) or JSON
(`{"<video_id>": {"<frame>": [[ymin, xmin, ymax, xmax], ...]}}` or `{"<video_id>": [[box, ...] per frame]}`).

Example:
    kerasvid conjugates --records="records/train-*.tfrecord" --boxes=actors.csv --output_dir=conjugates/
"""
import argparse
import csv
import glob
import importlib
import json
import os
import sys

import numpy as np

FILLS = ("telea", "ns")
BLENDS = ("poisson", "none")
UNITS = ("normalized", "pixels")
MANIFEST = "conjugates.json"
# Context keys added to a conjugate record (readers that do not know them ignore them).
CONJUGATE_OF = "conjugate/of"
CONJUGATE_NUM_BOXES = "conjugate/num_boxes"


# ---------------------------------------------------------------------------------------------- image level
def clip_boxes(boxes, height, width, units="normalized"):
    """Converts boxes to integer pixel rectangles inside the frame; drops the empty ones.

    Args:
        boxes: array-like `[n, 4]` of `(ymin, xmin, ymax, xmax)`.
        height, width: the frame size.
        units: "normalized" ([0, 1] of the frame size) or "pixels".

    Returns:
        int array `[m, 4]` of `(y0, x0, y1, x1)` with `0 <= y0 < y1 <= height`, `0 <= x0 < x1 <= width`
        (half-open; a box covers every pixel it touches). Boxes with no area inside the frame are dropped.
    """
    if units not in UNITS:
        raise ValueError(f"`units` must be one of {UNITS}, got units={units!r}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"Boxes must be finite numbers, got {boxes.tolist()}")
    if units == "normalized":
        boxes = boxes * np.array([height, width, height, width], np.float64)
    y0 = np.clip(np.floor(boxes[:, 0]), 0, height)
    x0 = np.clip(np.floor(boxes[:, 1]), 0, width)
    y1 = np.clip(np.ceil(boxes[:, 2]), 0, height)
    x1 = np.clip(np.ceil(boxes[:, 3]), 0, width)
    out = np.stack([y0, x0, y1, x1], axis=-1).astype(np.int64)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]


def box_mask(height, width, boxes, units="normalized"):
    """Boolean `[height, width]` mask of the union of `boxes` (clipped to the frame, empty boxes ignored)."""
    mask = np.zeros((height, width), bool)
    for y0, x0, y1, x1 in clip_boxes(boxes, height, width, units):
        mask[y0:y1, x0:x1] = True
    return mask


def _cv2():
    """OpenCV (inpainting and Poisson blending), an optional dependency: `pip install kerasvid[conjugates]`."""
    try:
        import cv2
    except ImportError as err:
        raise ImportError("Conjugate samples need OpenCV for inpainting and Poisson blending: "
                          "pip install 'kerasvid[conjugates]' (opencv-python-headless)") from err
    return cv2


def _dilate(mask, radius):
    cv2 = _cv2()

    if radius <= 0:
        return mask.copy()
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _fill(frame, mask, fill, radius):
    cv2 = _cv2()

    if callable(fill):
        filled = np.asarray(fill(frame.copy(), mask.copy()))
        if filled.shape != frame.shape:
            raise ValueError(f"The fill callable must return a frame of shape {frame.shape}, got {filled.shape}")
        return np.clip(np.rint(filled), 0, 255).astype(np.uint8) if filled.dtype != np.uint8 else filled
    if fill not in FILLS:
        raise ValueError(f"`fill` must be one of {FILLS} or a callable, got fill={fill!r}")
    method = cv2.INPAINT_TELEA if fill == "telea" else cv2.INPAINT_NS
    return cv2.inpaint(frame, mask.astype(np.uint8) * 255, radius, method)


def poisson_blend(frame, filled, region):
    """Poisson-blends `filled` into `frame` over the boolean `region` (`cv2.seamlessClone`, NORMAL_CLONE).

    The frames are padded (reflection) so that a region touching the frame border still has a boundary, and every
    pixel outside `region` is returned unchanged. A region under 3 pixels on a side (which `cv2.seamlessClone`
    rejects, e.g. a 1-pixel box with `band=0`) is blended by solving the same equation directly.
    """
    cv2 = _cv2()

    if not region.any():
        return frame.copy()
    ys, xs = np.nonzero(region)
    if ys.max() - ys.min() < 2 or xs.max() - xs.min() < 2:
        # cv2.seamlessClone raises (cv2.error) when the region's bounding box is under 3 pixels on a side, e.g. a
        # 1-pixel box with band=0: solve the same Poisson equation directly.
        return _poisson_blend_thin(frame, filled, region)
    pad = 2
    padded_frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    padded_fill = cv2.copyMakeBorder(filled, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    padded_region = np.pad(region, pad).astype(np.uint8) * 255
    ys, xs = np.nonzero(padded_region)
    # seamlessClone places the mask's bounding box so that its centre lands on `center` (rounded up for even sizes).
    center = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    blended = cv2.seamlessClone(padded_fill, padded_frame, padded_region, center, cv2.NORMAL_CLONE)
    blended = blended[pad:-pad, pad:-pad]
    return np.where(region[..., None], blended, frame)


def _poisson_blend_thin(frame, filled, region, tolerance=1e-3, max_iterations=1000):
    """Poisson blending of a region whose bounding box is at most 2 pixels thick, by Jacobi iteration.

    The discrete Poisson equation of Perez et al. (SIGGRAPH 2003, Eq. 7) with the 4-neighbourhood: for every pixel
    `p` of the region, `4 f_p - sum_{q in N_p, q in region} f_q = sum_{q in N_p, q not in region} frame_q +
    sum_{q in N_p} (filled_p - filled_q)`; a neighbour outside the frame is its mirror image inside it (a zero
    normal derivative at the frame border). In a region at most 2 pixels thick every pixel is next to a fixed value,
    so each step shrinks the error by a factor bounded away from 1 (about 0.9 in the worst case, a 2-pixel strip
    along the frame border): it converges in at most a few hundred steps, whatever the region's length.
    """
    pad = ((1, 1), (1, 1), (0, 0))

    def neighbour_sum(a):
        a = np.pad(a, pad, mode="symmetric")
        return a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]

    g = filled.astype(np.float64)
    guidance = (4.0 * g - neighbour_sum(g))[region]
    f = frame.astype(np.float64)
    for _ in range(max_iterations):
        update = (neighbour_sum(f)[region] + guidance) / 4.0
        change = np.max(np.abs(update - f[region]))
        f[region] = update
        if change < tolerance:
            break
    blended = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return np.where(region[..., None], blended, frame)


def conjugate_frame(frame, boxes, fill="telea", blend="poisson", band=4, radius=5, units="normalized"):
    """Removes the boxes' pixels from one frame, fills them and blends the fill in.

    Args:
        frame: uint8 `[H, W, 3]`.
        boxes: `[n, 4]` boxes `(ymin, xmin, ymax, xmax)`; boxes outside the frame are clipped, empty ones skipped.
        fill: "telea", "ns" or a callable `fill(frame, mask) -> frame` (mask: bool `[H, W]`, True = to fill).
        blend: "poisson" (`cv2.seamlessClone` over the mask dilated by `band`) or "none" (paste the fill).
        band: width in pixels of the blending band around the boxes.
        radius: inpainting radius of the OpenCV fills.
        units: "normalized" or "pixels".

    Returns:
        `(conjugate, mask)`: the uint8 frame and the bool `[H, W]` box mask. Pixels farther than `band` from
        every box (and, with blend="none", every pixel outside the boxes) are unchanged.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"`frame` must be uint8 [H, W, 3], got dtype {frame.dtype} and shape {frame.shape}")
    if blend not in BLENDS:
        raise ValueError(f"`blend` must be one of {BLENDS}, got blend={blend!r}")
    if not isinstance(band, int) or band < 0:
        raise ValueError(f"`band` must be an integer >= 0, got band={band!r}")
    frame = np.ascontiguousarray(frame)
    mask = box_mask(frame.shape[0], frame.shape[1], boxes, units)
    if not mask.any():
        return frame.copy(), mask
    filled = _fill(frame, mask, fill, radius)
    filled = np.where(mask[..., None], filled, frame)  # the fill only replaces the removed pixels
    if blend == "none":
        return filled, mask
    return poisson_blend(frame, np.ascontiguousarray(filled), _dilate(mask, band)), mask


def conjugate_clip(frames, boxes_per_frame, **kwargs):
    """`conjugate_frame` on every frame of a clip.

    Args:
        frames: uint8 `[T, H, W, 3]`.
        boxes_per_frame: a sequence of T box arrays `[n_t, 4]` (n_t may be 0), or a dict frame index -> boxes
            (frames not in it are left unchanged).
        **kwargs: `conjugate_frame` arguments.

    Returns:
        `(conjugates, masks)`: uint8 `[T, H, W, 3]` and bool `[T, H, W]`.
    """
    frames = np.asarray(frames)
    if isinstance(boxes_per_frame, dict):
        boxes_per_frame = [boxes_per_frame.get(t, ()) for t in range(len(frames))]
    if len(boxes_per_frame) != len(frames):
        raise ValueError(f"Need one box list per frame ({len(frames)} frames), got {len(boxes_per_frame)}")
    pairs = [conjugate_frame(f, b, **kwargs) for f, b in zip(frames, boxes_per_frame)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# ---------------------------------------------------------------------------------------------- box files
def _box(values, where):
    try:
        box = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: a box must be 4 numbers (ymin, xmin, ymax, xmax), got {values!r}") from None
    if len(box) != 4 or not np.all(np.isfinite(box)):
        raise ValueError(f"{where}: a box must be 4 finite numbers (ymin, xmin, ymax, xmax), got {values!r}")
    return box


def load_boxes(path):
    """Reads a box file (CSV or JSON, by extension) into `{video_id: {frame: [[ymin, xmin, ymax, xmax], ...]}}`.

    Raises:
        ValueError: for a malformed file; the message names the file and the line (CSV) or the entry (JSON).
    """
    if not os.path.exists(path):
        raise ValueError(f"Box file {path!r} does not exist")
    boxes = {}
    if path.lower().endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object {{video_id: boxes}}, got {type(data).__name__}")
        for video_id, frames in data.items():
            if isinstance(frames, list):
                frames = dict(enumerate(frames))
            if not isinstance(frames, dict):
                raise ValueError(f"{path}: entry {video_id!r} must map frames to box lists, got {frames!r}")
            per_video = boxes.setdefault(str(video_id), {})
            for frame, frame_boxes in frames.items():
                where = f"{path}: entry {video_id!r}, frame {frame!r}"
                try:
                    frame = int(frame)
                except ValueError:
                    raise ValueError(f"{where}: the frame index must be an integer") from None
                if not isinstance(frame_boxes, list):
                    raise ValueError(f"{where}: expected a list of boxes, got {frame_boxes!r}")
                per_video.setdefault(frame, []).extend(_box(b, where) for b in frame_boxes)
        return boxes
    required = ("video_id", "frame", "ymin", "xmin", "ymax", "xmax")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: the CSV header must have the columns {list(required)}; missing {missing} "
                             f"(header: {reader.fieldnames})")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            try:
                frame = int(row["frame"])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: `frame` must be an integer, got {row['frame']!r}") from None
            box = _box([row[k] for k in required[2:]], where)
            boxes.setdefault(row["video_id"], {}).setdefault(frame, []).append(box)
    return boxes


# ---------------------------------------------------------------------------------------------- records
def _record_boxes(example):
    """Per-frame boxes stored in a record's `region/bbox/*` feature lists (normalised), or None."""
    from kerasvid.data import schema

    lists = example.feature_lists.feature_list
    if schema.BBOX_YMIN not in lists:
        return None
    coords = [[list(f.float_list.value) for f in lists[key].feature] for key in schema.BBOX_KEYS]
    return {t: np.stack([np.asarray(c[t]) for c in coords], axis=-1) for t in range(len(coords[0]))}


def _video_key(example):
    from kerasvid.data import schema

    ctx = example.context.feature
    for key in (schema.VIDEO_ID, schema.VIDEO_FILENAME):
        if key in ctx and ctx[key].bytes_list.value:
            return ctx[key].bytes_list.value[0].decode("utf-8")
    return None


def conjugate_example(example, boxes=None, jpeg_quality=90, **kwargs):
    """Makes the conjugate record of one kerasvid record.

    Args:
        example: a `tf.train.SequenceExample` (kerasvid schema).
        boxes: `{frame: boxes}` for this video (normalised unless `units="pixels"`); None: the record's own
            `region/bbox/*` boxes.
        jpeg_quality: JPEG quality of the re-encoded frames.
        **kwargs: `conjugate_frame` arguments.

    Returns:
        `(conjugate_example, num_boxes)`: a copy of the record with the conjugate frames, plus the context keys
        `conjugate/of` (the original's video id) and `conjugate/num_boxes` (boxes used after clipping; 0 means the
        conjugate equals the original, e.g. a negative clip).
    """
    import tensorflow as tf

    from kerasvid.data import schema, writer

    out = tf.train.SequenceExample()
    out.CopyFrom(example)
    if boxes is None:
        boxes = _record_boxes(example) or {}
    encoded = out.feature_lists.feature_list[schema.IMAGE_ENCODED].feature
    num_boxes = 0
    for t, feature in enumerate(encoded):
        frame_boxes = boxes.get(t, ())
        if len(frame_boxes) == 0:
            continue
        frame = tf.io.decode_jpeg(feature.bytes_list.value[0], channels=3).numpy()
        units = kwargs.get("units", "normalized")
        kept = clip_boxes(frame_boxes, frame.shape[0], frame.shape[1], units)
        if len(kept) == 0:
            continue
        num_boxes += len(kept)
        conjugate, _ = conjugate_frame(frame, frame_boxes, **kwargs)
        feature.bytes_list.value[0] = writer.encode_jpeg(conjugate, jpeg_quality)
    ctx = out.context.feature
    ctx[CONJUGATE_OF].bytes_list.value[:] = [(_video_key(example) or "").encode("utf-8")]
    ctx[CONJUGATE_NUM_BOXES].int64_list.value[:] = [num_boxes]
    return out, num_boxes


def _resolve_fill(spec):
    if spec in FILLS:
        return spec
    if ":" not in spec:
        raise ValueError(f"--fill must be one of {FILLS} or 'module:function', got {spec!r}")
    module, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--fill {spec!r}: cannot import it ({err})") from err
    if not callable(fn):
        raise ValueError(f"--fill {spec!r} is not callable")
    return fn


def make_conjugate_records(record_paths, output_dir, boxes=None, jpeg_quality=90, progress=True, **kwargs):
    """Writes the conjugate of every record; output shard i mirrors input file i record for record.

    Args:
        record_paths: input TFRecord files (kerasvid records).
        output_dir: output directory (the shards keep their input file names) plus `conjugates.json`.
        boxes: `{video_id: {frame: boxes}}` (e.g. from `load_boxes`); None: the records' own boxes.
        jpeg_quality: JPEG quality of re-encoded frames.
        progress: show a progress bar (terminal) or log lines.
        **kwargs: `conjugate_frame` arguments.

    Returns:
        The manifest dict (also written to `output_dir/conjugates.json`): one entry per shard with the original
        and conjugate paths, the record count and how many records got at least one box.
    """
    import tensorflow as tf

    from kerasvid.data import convert, writer

    record_paths = list(record_paths)
    if not record_paths:
        raise ValueError("No input records given (the --records pattern matched no file?)")
    names = [os.path.basename(p) for p in record_paths]
    if len(set(names)) != len(names):
        raise ValueError(f"Input record files must have distinct file names, got {names}")
    total = sum(1 for p in record_paths for _ in tf.data.TFRecordDataset(p))
    bar = convert.Progress(total, "conjugates", enabled=progress)
    missing = []
    manifest = {"settings": {k: (v if not callable(v) else getattr(v, "__name__", "callable"))
                             for k, v in kwargs.items()}, "pairs": []}
    for path in record_paths:
        out_path = os.path.join(output_dir, os.path.basename(path))
        stats = {"original": os.path.abspath(path), "conjugate": os.path.abspath(out_path), "records": 0,
                 "with_boxes": 0}

        def conjugates(path=path, stats=stats):
            for record in tf.data.TFRecordDataset(path):
                example = tf.train.SequenceExample.FromString(record.numpy())
                video_boxes = None
                if boxes is not None:
                    key = _video_key(example)
                    video_boxes = boxes.get(key) if key is not None else None
                    if video_boxes is None and key is not None and os.path.basename(key) in boxes:
                        video_boxes = boxes[os.path.basename(key)]
                    if video_boxes is None:
                        missing.append(key)
                        video_boxes = {}
                out, num_boxes = conjugate_example(example, video_boxes, jpeg_quality, **kwargs)
                stats["records"] += 1
                stats["with_boxes"] += int(num_boxes > 0)
                bar.update()
                yield out

        writer.write_shard(out_path, conjugates())
        manifest["pairs"].append(stats)
    manifest["videos_without_boxes"] = len(missing)
    tmp = os.path.join(output_dir, f".{MANIFEST}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(output_dir, MANIFEST))
    return manifest


def pair_dataset(file_pattern, conjugate_dir, num_frames, stride=1, image_size=(224, 224), batch_size=8,
                 num_classes=None, multi_label=False, normalization="imagenet", shuffle_buffer=64, seed=None,
                 deterministic=False, input_context=None, **decoder_kwargs):
    """Training batches of (action sample, conjugate) pairs, sampled and augmented identically.

    The conjugate shards (written by `make_conjugate_records`) mirror the original shards record for record;
    both records of a pair are decoded by the same `kerasvid.data.pipeline.make_decoder` function with the same
    per-pair seed, so the two clips share their frame indices, crop window, flip and colour jitter.

    Args:
        file_pattern: the original records (glob, list or directory, as `video_dataset`).
        conjugate_dir: the directory of the conjugate shards (same file names).
        num_frames, stride, image_size, num_classes, multi_label, normalization: as `video_dataset`.
        batch_size: pairs per batch (drop_remainder=True).
        shuffle_buffer, seed, deterministic, input_context: as `video_dataset`.
        **decoder_kwargs: further `make_decoder` arguments (crop, flip, mirror_labels, color_jitter, ...).

    Returns:
        An endless `tf.data.Dataset` of `({"image": [B, T, H, W, 3], "conjugate": [B, T, H, W, 3],
        "pair_weight": [B]}, labels)`; `pair_weight` is 1 where the conjugate had at least one box removed and
        0 otherwise (negative clips, videos without boxes: their conjugate equals the original).

    Raises:
        ValueError: when a conjugate shard is missing; at run time an InvalidArgumentError when a pair's
            `conjugate/of` differs from the original's `video/id` (shards out of step).
    """
    import tensorflow as tf

    from kerasvid.data import pipeline, schema

    files = pipeline.list_files(file_pattern)
    partners = [os.path.join(conjugate_dir, os.path.basename(f)) for f in files]
    missing = [p for p in partners if not tf.io.gfile.exists(p)]
    if missing:
        raise ValueError(f"Missing conjugate shards for {len(missing)} of {len(files)} record files, e.g. "
                         f"{missing[0]!r}; run `kerasvid conjugates --records=... --output_dir={conjugate_dir}`")
    decode = pipeline.make_decoder(num_frames, stride, image_size, True, num_classes, multi_label, False,
                                   normalization, **decoder_kwargs)
    context = {CONJUGATE_NUM_BOXES: tf.io.FixedLenFeature((), tf.int64, default_value=0),
               CONJUGATE_OF: tf.io.FixedLenFeature((), tf.string, default_value="")}
    id_spec = {schema.VIDEO_ID: tf.io.FixedLenFeature((), tf.string, default_value="")}

    def decode_pair(pair, pair_seed):
        original, conjugate = pair
        features, label = decode(original, pair_seed)
        conj_features, _ = decode(conjugate, pair_seed)
        conj_ctx, _ = tf.io.parse_single_sequence_example(conjugate, context_features=context)
        orig_ctx, _ = tf.io.parse_single_sequence_example(original, context_features=id_spec)
        check = tf.debugging.assert_equal(conj_ctx[CONJUGATE_OF], orig_ctx[schema.VIDEO_ID],
                                          message="conjugate shard out of step with its original shard")
        with tf.control_dependencies([check]):
            weight = tf.cast(conj_ctx[CONJUGATE_NUM_BOXES] > 0, tf.float32)
        return {"image": features["image"], "conjugate": conj_features["image"], "pair_weight": weight}, label

    pairs = tf.data.Dataset.from_tensor_slices((files, partners))
    pairs = pairs.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = pairs.interleave(lambda f, g: tf.data.Dataset.zip((tf.data.TFRecordDataset(f),
                                                                 tf.data.TFRecordDataset(g))),
                               cycle_length=min(len(files), 8), block_length=1,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if input_context is not None:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle_buffer and shuffle_buffer > 1:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    records = tf.data.Dataset.zip((records.repeat(), tf.data.Dataset.random(seed=seed)))
    ds = records.map(decode_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return ds.with_options(options)


def main(argv=None):
    """`kerasvid conjugates`: records + actor boxes -> conjugate records (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="kerasvid conjugates", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", required=True, help="glob pattern of the input records")
    parser.add_argument("--boxes", default=None, help="CSV or JSON box file (default: the records' region/bbox)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--box_units", choices=UNITS, default="normalized")
    parser.add_argument("--fill", default="telea", help="telea, ns or module:function (fill(frame, mask))")
    parser.add_argument("--blend", choices=BLENDS, default="poisson")
    parser.add_argument("--band", type=int, default=4, help="blending band around the boxes, in pixels")
    parser.add_argument("--radius", type=int, default=5, help="inpainting radius, in pixels")
    parser.add_argument("--jpeg_quality", type=int, default=90)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        paths = sorted(glob.glob(args.records))
        if not paths:
            raise ValueError(f"--records {args.records!r} matches no file")
        boxes = load_boxes(args.boxes) if args.boxes else None
        os.makedirs(args.output_dir, exist_ok=True)
        if any(os.path.abspath(os.path.join(args.output_dir, os.path.basename(p))) == os.path.abspath(p)
               for p in paths):
            raise ValueError("--output_dir must differ from the records' directory (output files keep the names)")
        manifest = make_conjugate_records(
            paths, args.output_dir, boxes, args.jpeg_quality, progress=not args.quiet, fill=_resolve_fill(args.fill),
            blend=args.blend, band=args.band, radius=args.radius, units=args.box_units)
    except ValueError as err:
        print(f"kerasvid conjugates: error: {err}", file=sys.stderr)
        return 2
    records = sum(p["records"] for p in manifest["pairs"])
    with_boxes = sum(p["with_boxes"] for p in manifest["pairs"])
    print(f"Wrote {records} conjugate records ({with_boxes} with boxes, {manifest['videos_without_boxes']} videos "
          f"not in the box file) to {args.output_dir}")
    return 0
