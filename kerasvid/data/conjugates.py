"""Conjugate samples: the same clip with the actors removed (action/context factorization, supplement Sec. 1).

For an action sample, the pixels inside the boxes of the people performing the action are removed, filled with
alternative content and blended with the surrounding pixels: the image-level steps (`clip_boxes`, `box_mask`,
`conjugate_frame`, `conjugate_clip`: box mask, inpainting, Poisson blending on numpy frames) live in
`kerasvid.data.inpaint`. This module is the offline tool: `conjugate_example`,
`make_conjugate_records` and `main` (the `kerasvid conjugates` command) work on kerasvid records
(`kerasvid.data.schema`) and write the conjugate records in shards that mirror the input shards record for record.
The training pairs are read by `kerasvid.data.conjugate_pairs.pair_dataset`.

Boxes are `(ymin, xmin, ymax, xmax)`, normalised to [0, 1] like the records' `region/bbox/*` (or in pixels with
`units="pixels"`); a box file is CSV (`video_id,frame,ymin,xmin,ymax,xmax` header) or JSON
(`{"<video_id>": {"<frame>": [[ymin, xmin, ymax, xmax], ...]}}` or `{"<video_id>": [[box, ...] per frame]}`).

Example:
    kerasvid conjugates --records="records/train-*.tfrecord" --boxes=actors.csv --output_dir=conjugates/
"""
import csv
import glob
import importlib
import json
import os
import sys

import numpy as np

from kerasvid.data.inpaint import BLENDS, FILLS, UNITS, clip_boxes, conjugate_frame

MANIFEST = "conjugates.json"
# Context keys added to a conjugate record (readers that do not know them ignore them).
CONJUGATE_OF = "conjugate/of"
CONJUGATE_NUM_BOXES = "conjugate/num_boxes"


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


def main(argv=None):
    """`kerasvid conjugates`: records + actor boxes -> conjugate records (see the module docstring)."""
    from absl import flags

    from kerasvid import command_flags

    command = command_flags.Command("kerasvid conjugates", __doc__.split("\n\n")[0])
    fv = command.flag_values
    flags.DEFINE_string("records", None, "glob pattern of the input records", flag_values=fv)
    flags.DEFINE_string("boxes", None, "CSV or JSON box file (default: the records' region/bbox)", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "where the conjugate records and manifest.json go", flag_values=fv)
    flags.DEFINE_enum("box_units", "normalized", list(UNITS), "units of the box coordinates", flag_values=fv)
    flags.DEFINE_string("fill", "telea", "telea, ns or module:function (fill(frame, mask))", flag_values=fv)
    flags.DEFINE_enum("blend", "poisson", list(BLENDS), "how the filled boxes are blended in", flag_values=fv)
    flags.DEFINE_integer("band", 4, "blending band around the boxes, in pixels", flag_values=fv)
    flags.DEFINE_integer("radius", 5, "inpainting radius, in pixels", flag_values=fv)
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the frames", flag_values=fv)
    flags.DEFINE_bool("quiet", False, "no progress output", flag_values=fv)
    args = command.parse(sys.argv[1:] if argv is None else argv, required=("records", "output_dir"))
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
