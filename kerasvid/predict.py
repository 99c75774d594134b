"""`kerasvid predict`: classify video files with an exported SavedModel, at constant memory.

    kerasvid predict --saved_model=runs/quickstart/export [--num_clips=3] [--top_k=5] [--json] a.mp4 b.mp4 ...

The SavedModel is loaded once for all the videos. For each video only the frames of its clips are decoded: the
frame count comes from the container (or one demux pass over the packets, which decodes nothing), the clip indices
from `kerasvid.data.samplers` exactly as the evaluation pipeline samples its views (1 clip: the centred one; several:
evenly spaced, Model Garden's linspace), and PyAV seeks to the key frame before each needed frame and decodes
forward to it, dropping the frames in between. Peak memory therefore does not grow with the video's length
(`benchmarks/predict_memory.py`). The class probabilities of the clips (`serving_default`, `probs`) are averaged as
in multi-view evaluation. One line per video, or one JSON object per line with `--json`.

Frame `i` is the `i`-th frame in presentation order; seeking maps it to the timestamp
`start + i / frame_rate` (constant frame rate, what `kerasvid convert` writes and cameras record; streams without
timestamps are decoded forward from the start, still dropping the frames not needed).
"""
import argparse
import json
import os
import sys
from fractions import Fraction

# Decode forward (rather than seek) when the next needed frame is at most this many frames ahead.
SEEK_AHEAD = 32


def _open(path):
    import av  # imported here: `kerasvid predict --help` must not need it

    if not os.path.exists(path):
        raise FileNotFoundError(f"No video file at {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a video file.")
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise ValueError(f"{path!r} is not a readable video file ({e}).") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path!r} has no video frames (it has no video stream).")
    return container


def count_frames(path):
    """Number of video frames: the container's count, or the video packets counted by demuxing (no decoding)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


class _Reader:
    """Frames of one video by index, seeking to key frames and decoding forward (one frame held at a time)."""

    def __init__(self, container):
        self.container = container
        self.stream = container.streams.video[0]
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.rate = Fraction(rate) if rate else None
        self.time_base = Fraction(self.stream.time_base) if self.stream.time_base else None
        self.start = self.stream.start_time or 0
        self.frames = None  # the decoding generator
        self.position = -1  # index of the last decoded frame
        self.timed = self.rate is not None and self.time_base is not None

    def _index(self, frame):
        if not self.timed or frame.pts is None:
            return self.position + 1
        return int(round((frame.pts - self.start) * self.time_base * self.rate))

    def _restart(self, target):
        """Seeks to the key frame at or before frame `target` (or back to the start) and restarts decoding."""
        if self.timed and target > 0:
            pts = self.start + int((Fraction(target) / self.rate) / self.time_base)
            self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
            self.position = None  # known from the first decoded frame's timestamp
        else:
            if self.frames is not None:
                self.container.seek(self.start, stream=self.stream, backward=True, any_frame=False)
            self.position = -1
        self.frames = self.container.decode(self.stream)

    def read(self, target):
        """The frame `target` as uint8 `[H, W, 3]` RGB, or None past the end of the stream."""
        if self.frames is None or (self.position is not None and (
                target <= self.position or (self.timed and target - self.position > SEEK_AHEAD))):
            self._restart(target)
        for frame in self.frames:
            if self.timed and frame.pts is None:  # no timestamps after all: count frames from the start
                self.timed = False
                self._restart(0)
                return self.read(target)
            index = self._index(frame)
            if self.position is None and index > target:  # the seek landed after the frame: from the start
                self._restart(0)
                return self.read(target)
            self.position = index
            if index >= target:
                return frame.to_ndarray(format="rgb24")
        return None


def read_frames(path, indices):
    """Decodes the frames `indices` (any order, repeats allowed) of a video file.

    Returns:
        `{index: uint8 [H, W, 3]}` for the indices found (all of them unless the container over-counts its frames).
    """
    with _open(path) as container:
        reader = _Reader(container)
        out = {}
        for index in sorted(set(int(i) for i in indices)):
            frame = reader.read(index)
            if frame is None:
                break
            out[index] = frame
        return out


def decode_clips(path, num_frames, stride=1, num_clips=1, sampler="dense"):
    """Decodes the `num_clips` evaluation clips of a video, only their frames.

    Returns:
        uint8 `[num_clips, num_frames, H, W, 3]` RGB.

    Raises:
        FileNotFoundError: no file at `path`. ValueError: not a video, or no video frames.
    """
    import numpy as np

    from kerasvid.data import samplers

    n = count_frames(path)
    if n < 1:
        raise ValueError(f"{path!r} has no video frames (0 frames in its video stream).")
    idx = samplers.video_clip_indices(n, num_frames, stride, num_clips, sampler)
    frames = read_frames(path, idx.ravel())
    if len(frames) < len(set(idx.ravel().tolist())):  # the container over-counted: count by decoding, once
        with _open(path) as container:
            n = sum(1 for _ in container.decode(video=0))
        if n < 1:
            raise ValueError(f"{path!r} has no decodable video frames.")
        idx = samplers.video_clip_indices(n, num_frames, stride, num_clips, sampler)
        frames = read_frames(path, idx.ravel())
    return np.stack([np.stack([frames[int(i)] for i in clip]) for clip in idx])


class Predictor:
    """A classification SavedModel (`kerasvid.export`), loaded once, that classifies video files.

    Args:
        export_dir: a directory written by `--mode=export` (a classification task's export).

    Raises:
        ValueError: `export_dir` is not such an export.
    """

    def __init__(self, export_dir):
        import tensorflow as tf

        from kerasvid import export

        if not os.path.isdir(export_dir):
            raise ValueError(f"--saved_model={export_dir!r} is not a directory.")
        missing = [name for name in ("saved_model.pb", export.PREPROCESSING_FILE)
                   if not os.path.exists(os.path.join(export_dir, name))]
        if missing:
            raise ValueError(f"--saved_model={export_dir!r} is not a kerasvid export (no {' or '.join(missing)}; "
                             f"write one with train/main.py --mode=export).")
        self.settings, self.labels = export.load_settings(export_dir)
        kind = self.settings.get("kind", "classification")
        if kind != "classification":
            raise ValueError(f"--saved_model={export_dir!r} is a {kind!r} export; kerasvid predict needs a "
                             f"classification export (logits/probs from clips).")
        self.signature = tf.saved_model.load(export_dir).signatures["serving_default"]

    def probabilities(self, path, num_clips=1):
        """Class probabilities of a video file, averaged over `num_clips` evaluation clips: float `[C]`."""
        import tensorflow as tf

        s = self.settings
        clips = decode_clips(path, s["num_frames"], s.get("stride", 1), num_clips, s.get("sampler", "dense"))
        probs = [self.signature(frames=tf.constant(clip[None]))["probs"].numpy()[0] for clip in clips]
        return sum(probs) / len(probs)

    def top_k(self, path, num_clips=1, k=5):
        """`[(label, probability), ...]`, best first."""
        import numpy as np

        probs = self.probabilities(path, num_clips)
        order = np.argsort(-probs, kind="stable")[:k]
        return [(self.labels[i] if i < len(self.labels) else str(i), float(probs[i])) for i in order]


def main(argv=None):
    """`kerasvid predict --saved_model DIR [--num_clips N] [--top_k K] [--json] video ...`; returns the exit status
    (0; 1 when a video could not be read, reported on stderr; 2 for a bad --saved_model or flag)."""
    parser = argparse.ArgumentParser(
        prog="kerasvid predict", description="Top-k labels of video files through an exported classification "
        "SavedModel; only the frames of the clips are decoded (constant memory).")
    parser.add_argument("--saved_model", required=True, help="directory written by train/main.py --mode=export")
    parser.add_argument("--num_clips", type=int, default=1, help="clips per video, probabilities averaged "
                        "(evenly spaced, as multi-view evaluation); default 1 (the centred clip)")
    parser.add_argument("--top_k", type=int, default=5, help="labels printed per video")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    parser.add_argument("videos", nargs="+", help="video files (anything FFmpeg/PyAV reads)")
    args = parser.parse_args(argv)
    for flag in ("num_clips", "top_k"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    try:
        predictor = Predictor(args.saved_model)
    except ValueError as e:
        print(f"kerasvid predict: error: {e}", file=sys.stderr)
        return 2
    status = 0
    for video in args.videos:
        try:
            top = predictor.top_k(video, args.num_clips, args.top_k)
        except (OSError, ValueError) as e:
            print(f"kerasvid predict: error: {e}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps({"video": video, "num_clips": args.num_clips,
                              "top_k": [{"label": label, "probability": p} for label, p in top]}), flush=True)
        else:
            print(f"{video}\t" + "\t".join(f"{label} {p:.4f}" for label, p in top), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
