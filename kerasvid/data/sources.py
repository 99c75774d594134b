"""Inputs of the converters: label files (Kinetics CSV, Something-Something JSON, Jester CSV, Charades CSV, plain
`path label` lists), label maps, and frame sources (video files decoded with PyAV, folders of frames).
"""
import csv
import dataclasses
import io
import json
import os
import re
import numpy as np

LABEL_FORMATS = ("kinetics", "ssv2", "jester", "charades", "list")
_VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclasses.dataclass(frozen=True)
class Item:
    """One input video: its source (a video file or a folder of frames), class names and id."""

    source: str
    labels: tuple
    video_id: str
    exists: bool = True


# ---------------------------------------------------------------------------------------------------- text files


def read_text(path, what="file"):
    """The text of a UTF-8 file (list file, label file, label map, labels.txt); a byte-order mark (as Windows
    editors write) is accepted and dropped.

    Raises:
        ValueError: bytes that are not UTF-8 (e.g. a Latin-1 file), naming the file, the line and the byte.
    """
    if "://" in str(path):  # gs:// and other TensorFlow file systems
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: the {what} is not UTF-8 (byte {data[e.start:e.start + 1]!r} at offset "
                         f"{e.start}; a Latin-1 or Windows-1252 file?): save it as UTF-8.") from None


def check_unique_names(path, names, line_numbers):
    """ValueError naming `path` and the line of the first class name listed twice (a class's records would be
    split between two indices)."""
    first = {}
    for name, n in zip(names, line_numbers):
        if name in first:
            raise ValueError(f"{path}:{n}: class {name!r} is listed twice (first on line {first[name]}); list each "
                             f"class once.")
        first[name] = n


# ---------------------------------------------------------------------------------------------------- label maps


def load_label_map(path):
    """Loads class names in index order from a text file (one name per line, or Charades' "c000 description"
    lines, whose code is the name), a JSON list, or a JSON dict {name: index} (Something-Something)."""
    text = read_text(path, "label map")
    if path.endswith(".json"):
        data = json.loads(text)
        if isinstance(data, dict):
            by_index = sorted((int(v), k) for k, v in data.items())
            if [i for i, _ in by_index] != list(range(len(by_index))):
                raise ValueError(f"Label map {path} must have indices 0..{len(by_index) - 1}, got "
                                 f"{[i for i, _ in by_index][:10]}...")
            return [k for _, k in by_index]
        return [str(x) for x in data]
    names, numbers = [], []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = re.match(r"^(c\d{3})\s", line)
        names.append(m.group(1) if m else line)
        numbers.append(n)
    check_unique_names(path, names, numbers)
    return names


def label_indices(items, label_names, label_map_path="the label map"):
    """Maps each item's class names to indices; a name missing from the map is an error naming the file."""
    index = {name: i for i, name in enumerate(label_names)}
    out = []
    for item in items:
        idx = []
        for label in item.labels:
            if label not in index:
                raise ValueError(f"Label {label!r} of {item.source!r} is not in {label_map_path} "
                                 f"({len(label_names)} classes).")
            idx.append(index[label])
        out.append(idx)
    return out


# ---------------------------------------------------------------------------------------------------- label files


def _find_source(input_dir, stems, files_by_stem):
    for stem in stems:
        folder = os.path.join(input_dir, stem)
        if os.path.isdir(folder):
            return folder, True
        if stem in files_by_stem:
            return files_by_stem[stem], True
    return os.path.join(input_dir, stems[0]), False


def _index_videos(input_dir):
    """{stem: path} of the video files anywhere under `input_dir` (sorted walk; first one wins)."""
    found = {}
    for root, dirs, files in os.walk(input_dir):
        dirs.sort()
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in _VIDEO_EXTENSIONS:
                found.setdefault(stem, os.path.join(root, f))
    return found


LIST_FORMAT = """\
List files (--format=list): one video per line, either
  PATH LABEL                     the label is the last whitespace-separated field, the path is everything
                                 before it (it may contain spaces and '#'), or
  PATH<TAB>LABEL[<TAB>LABEL...]  tab-separated fields: any characters but tabs in the path and the labels
                                 (labels with spaces; several labels = multi-label).
PATH is relative to --input_dir (or absolute). LABEL is a class name, or an index into --label_map. Blank lines
and lines whose first non-blank character is '#' are skipped; elsewhere '#' is part of the name (write a path that
starts with '#' as ./#name.mp4)."""


def _parse_list_line(line, label_file, n):
    """(path, labels) of one list-file line (see `LIST_FORMAT`), or (None, None) for blank / comment lines."""
    line = line.rstrip("\r\n")
    if not line.strip() or line.lstrip().startswith("#"):
        return None, None
    if "\t" in line:
        fields = [x.strip() for x in line.split("\t")]
        rel, labels = fields[0], [x for x in fields[1:] if x]
    else:
        m = re.match(r"^\s*(.*?)\s+(\S+)\s*$", line)
        rel, labels = (m.group(1), [m.group(2)]) if m else (line.strip(), [])
    if not rel or not labels:
        raise ValueError(f"{label_file}:{n}: expected `path label` or `path<TAB>label[<TAB>label ...]`, got "
                         f"{line.strip()!r}.")
    return rel, labels


def _check_not_a_split_path(rel, input_dir, label_file, n):
    """`a.mp4 x y` meant `path label label` before the list format took the label as the last field: refuse it
    (naming the line) instead of reading a missing path `a.mp4 x`."""
    parts = rel.split()
    for k in range(1, len(parts)):
        prefix = " ".join(parts[:k])
        if os.path.isfile(prefix if os.path.isabs(prefix) else os.path.join(input_dir, prefix)):
            raise ValueError(f"{label_file}:{n}: the path {rel!r} does not exist but {prefix!r} does: in a list file "
                             f"the label is the last field; separate the path and several labels with tabs "
                             f"({prefix}<TAB>{'<TAB>'.join(parts[k:])}<TAB>...).")


def parse_label_file(fmt, label_file, input_dir, split=None):
    """Reads a label file into a list of `Item`s, sorted by video id.

    Args:
        fmt: "kinetics" (CSV `label,youtube_id,time_start,time_end,split`; files named
            `<youtube_id>_<start:06d>_<end:06d>.<ext>` or `<youtube_id>.<ext>` anywhere under `input_dir`),
            "ssv2" (Something-Something JSON list of {"id", "template"}; class = template without brackets),
            "jester" (CSV `id;label`, frame folders `<input_dir>/<id>/`),
            "charades" (CSV with `id` and `actions` = "c092 11.90 21.20;..."; multi-label), or
            "list" (see `LIST_FORMAT`: `path label` with the label the last field, or tab-separated
            `path<TAB>label[<TAB>label ...]`; paths relative to `input_dir`).
        label_file: path of the label file.
        input_dir: root of the videos / frame folders.
        split: Kinetics only: keep rows whose `split` column equals it.

    Returns:
        list of `Item`; items whose source is missing have `exists=False` (the converter records them as skipped).
    """
    if fmt not in LABEL_FORMATS:
        raise ValueError(f"`format` must be one of {LABEL_FORMATS}, got {fmt!r}.")
    if not os.path.isdir(input_dir):
        raise ValueError(f"The input directory {input_dir!r} does not exist (or is not a directory).")
    if not os.path.isfile(label_file):
        raise ValueError(f"The label file {label_file!r} does not exist (or is not a file).")
    files = _index_videos(input_dir) if fmt != "jester" else {}
    items = []

    def add(video_id, labels, stems=None, path=None):
        if path is None:
            path, exists = _find_source(input_dir, stems or [video_id], files)
        else:
            exists = os.path.exists(path)
        items.append(Item(path, tuple(labels), str(video_id), exists))

    with io.StringIO(read_text(label_file, "label file"), newline="") as f:
        if fmt == "kinetics":
            for row in csv.DictReader(f):
                if split and row.get("split") and row["split"] != split:
                    continue
                yid = row["youtube_id"]
                stems = [f"{yid}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}", yid]
                label = row.get("label")
                add(stems[0], [label] if label else [], stems)
        elif fmt == "ssv2":
            for entry in json.load(f):
                template = entry.get("template")
                label = template.replace("[", "").replace("]", "") if template else entry.get("label")
                add(str(entry["id"]), [label] if label else [])
        elif fmt == "jester":
            for line in f:
                if line.strip():
                    vid, _, label = line.strip().partition(";")
                    add(vid, [label] if label else [], path=os.path.join(input_dir, vid))
        elif fmt == "charades":
            for row in csv.DictReader(f):
                actions = [a.split()[0] for a in (row.get("actions") or "").split(";") if a.strip()]
                add(row["id"], sorted(set(actions)))
        else:
            for n, line in enumerate(f, 1):
                rel, labels = _parse_list_line(line, label_file, n)
                if rel is None:
                    continue
                path = rel if os.path.isabs(rel) else os.path.join(input_dir, rel)
                if not os.path.exists(path):
                    _check_not_a_split_path(rel, input_dir, label_file, n)
                vid = os.path.splitext(rel)[0].replace(os.sep, "/")
                add(vid, labels, path=path)
    if not items:
        raise ValueError(f"The label file {label_file!r} lists no videos ({fmt} format"
                         f"{f', split {split!r}' if split else ''}).")
    ids = [i.video_id for i in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{label_file} lists some videos more than once: {dup}.")
    return sorted(items, key=lambda i: i.video_id)


def resolve_list_labels(items, label_names):
    """In `list` files labels may be written as indices: turn all-digit labels into the map's names."""
    out = []
    for item in items:
        labels = []
        for label in item.labels:
            if label.isdigit() and label not in label_names:
                k = int(label)
                if not 0 <= k < len(label_names):
                    raise ValueError(f"Label index {k} of {item.source!r} is out of range for the label map "
                                     f"({len(label_names)} classes).")
                label = label_names[k]
            labels.append(label)
        out.append(dataclasses.replace(item, labels=tuple(labels)))
    return out


# ---------------------------------------------------------------------------------------------------- frames


class SkipInput(Exception):
    """An input that cannot be converted (the reason goes into the manifest)."""


def resample_times(times, fps, end_time):
    """Chooses, for each output time k / fps < end_time, the last source frame shown at that time.

    Args:
        times: sorted presentation times (s) of the decoded frames, starting at 0.
        fps: target rate.
        end_time: the video's duration (s): last frame time + one source frame period.

    Returns:
        list of source frame indices (repeats when upsampling, gaps when downsampling).
    """
    times = np.asarray(times, np.float64)
    count = int(np.ceil(end_time * fps - 1e-9))
    targets = np.arange(count) / fps
    idx = np.searchsorted(times, targets + 1e-9, side="right") - 1
    return np.clip(idx, 0, len(times) - 1).tolist()


def decode_video(path, fps=None):
    """Decodes a video with PyAV into uint8 RGB frames, optionally resampled to `fps`.

    Returns:
        (frames `[T, H, W, 3]` uint8, the fps of the returned frames).

    Raises:
        SkipInput: not a regular file, unreadable, a still image, no video stream, a frame size that changes,
            fewer than 2 frames, or fewer than the container declares (`video_files.check_frames`).
    """
    import av

    from kerasvid.data import video_files

    kind = video_files.not_a_regular_file(path)
    if kind:  # a FIFO would block the converter forever
        raise SkipInput(f"{kind}, not a video file")
    if os.path.getsize(path) == 0:
        raise SkipInput("empty video (0 bytes)")
    try:
        with av.open(path) as container:
            if container.format.name in video_files.IMAGE_FORMATS:
                raise SkipInput(video_files.image_reason(container.format.name))
            if not container.streams.video:
                kinds = sorted({st.type for st in container.streams})
                raise SkipInput(f"no video stream (the file holds only {', '.join(kinds)} streams)" if kinds else
                                "no video frames (the container holds no stream with any frame: a 0-frame video)")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            declared = video_files.declared_frames(stream)
            frames, times = [], []
            for frame in container.decode(stream):
                frames.append(video_files.to_rgb(frame))
                video_files.check_same_size(path, {0: frames[0], len(frames) - 1: frames[-1]})
                times.append(float(frame.time) if frame.time is not None else len(times) / float(stream.average_rate))
            rate = float(stream.average_rate) if stream.average_rate else None
            if len(frames) == 0:
                raise SkipInput("empty video (0 frames)")
            video_files.check_frames(path, len(frames), declared)  # the validation predict and extract share
    except SkipInput:
        raise
    except video_files.BadVideo as e:
        raise SkipInput(e.reason) from e
    except Exception as e:  # PyAV raises several error types for broken files
        raise SkipInput(f"unreadable video ({type(e).__name__}: {e})") from e
    times = np.asarray(times) - times[0]
    if rate is None:
        rate = (len(times) - 1) / max(times[-1], 1e-6)
    if fps is None:
        return np.stack(frames), rate
    idx = resample_times(times, fps, times[-1] + 1.0 / rate)
    return np.stack([frames[i] for i in idx]), float(fps)


def _list_frame_files(folder):
    """Sorted image files of a frame folder (natural order: frame2 before frame10)."""
    names = [n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in _IMAGE_EXTENSIONS]

    def key(n):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]

    return [os.path.join(folder, n) for n in sorted(names, key=key)]


def _read_frame_folder(folder, source_fps=None, fps=None):
    """Reads a folder of frames (Jester / Charades RGB layout) into uint8 RGB frames.

    Resampling to `fps` needs the folder's `source_fps`.

    Returns:
        (frames `[T, H, W, 3]` uint8, fps or None).
    """
    import tensorflow as tf

    files = _list_frame_files(folder)
    if len(files) == 0:
        raise SkipInput("empty frame folder (0 frames)")
    if len(files) == 1:
        raise SkipInput("one-frame folder")
    if fps is not None:
        if not source_fps:
            raise ValueError(f"Resampling the frame folder {folder!r} to fps={fps} needs `source_fps`.")
        times = np.arange(len(files)) / source_fps
        files = [files[i] for i in resample_times(times, fps, len(files) / source_fps)]
    frames = []
    try:
        for f in files:
            with open(f, "rb") as fh:
                frames.append(tf.io.decode_image(fh.read(), channels=3, expand_animations=False).numpy())
    except tf.errors.InvalidArgumentError as e:
        raise SkipInput(f"unreadable frame {os.path.basename(f)} ({e.message.splitlines()[0]})") from e
    shapes = {fr.shape for fr in frames}
    if len(shapes) != 1:
        raise SkipInput(f"frames of different sizes {sorted(shapes)[:3]}")
    return np.stack(frames), (fps if fps is not None else source_fps)


def read_source(item, fps=None, source_fps=None):
    """Frames of an `Item` (video file or frame folder); raises SkipInput for missing / unusable inputs."""
    if not item.exists or not os.path.exists(item.source):
        raise SkipInput("missing input")
    if os.path.isdir(item.source):
        return _read_frame_folder(item.source, source_fps, fps)
    return decode_video(item.source, fps)


def resize_short_side_antialiased(frames, short_side):
    """Resizes decoded uint8 frames `[T, H, W, 3]` before `kerasvid convert` stores them: min(H, W) == short_side,
    antialiased bilinear, rounded back to uint8 numpy; the frames themselves when `short_side` is None or already
    min(H, W).

    `preprocess.resize_short_side(..., antialias=True)` does the resizing (the same sizes). It differs from what the
    input pipelines call, `preprocess.resize_short_side(frames, s)`, on purpose: conversion shrinks large videos
    once, so it filters (antialias) where the pipelines' plain bilinear would alias; its frames go to JPEG (uint8)
    and stay byte-identical when no resize is asked. When enlarging the two agree (up to the uint8 rounding).
    """
    if not short_side or min(frames.shape[1:3]) == short_side:
        return frames
    from kerasvid.data import preprocess

    out = preprocess.resize_short_side(frames, short_side, antialias=True)
    return np.clip(np.round(out.numpy()), 0, 255).astype(np.uint8)


resize_short_side = resize_short_side_antialiased  # the former name, kept working
