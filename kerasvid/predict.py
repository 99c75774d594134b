"""`kerasvid predict`: classify video files with an exported SavedModel, at constant memory.

    kerasvid predict --saved_model=runs/quickstart/export [--num_clips=3] [--top_k=5] [--json] a.mp4 b.mp4 ...

The SavedModel is loaded once for all the videos. For each video only the frames of its clips are decoded: the
frame count comes from one demux pass over the packets (which decodes nothing), checked against the count the
container declares (a truncated download is refused, as `kerasvid convert` refuses it), the clip indices
from `kerasvid.data.samplers` exactly as the evaluation pipeline samples its views (1 clip: the centred one; several:
evenly spaced, Model Garden's linspace), and PyAV seeks to the key frame before each needed frame and decodes
forward to it, dropping the frames in between. Peak memory therefore does not grow with the video's length
(`benchmarks/predict_memory.py`). The class probabilities of the clips (`serving_default`, `probs`) are averaged as
in multi-view evaluation. One line per video, or one JSON object per line with `--json`.

Frame `i` is the `i`-th frame in presentation order; seeking maps it to the timestamp
`start + i / frame_rate` (`kerasvid.data.video_files`, which opens, counts and seeks for predict and extract).
"""
import json
import os
import sys

from absl import flags

from kerasvid import command_flags


def decode_clips(path, num_frames, stride=1, num_clips=1, sampler="dense"):
    """Decodes the `num_clips` evaluation clips of a video, only their frames.

    Returns:
        uint8 `[num_clips, num_frames, H, W, 3]` RGB.

    Raises:
        FileNotFoundError: no file at `path`. ValueError: not a video, or no video frames.
    """
    import numpy as np

    from kerasvid.data import samplers, video_files

    n = video_files.count_frames(path)  # refuses what `kerasvid convert` refuses (`video_files.check_frames`)
    idx = samplers.video_clip_indices(n, num_frames, stride, num_clips, sampler)
    frames = video_files.read_frames(path, idx.ravel())
    if len(frames) < len(set(idx.ravel().tolist())):  # the container over-counted: count by decoding, once
        n = video_files.check_frame_count(path, video_files.count_decoded_frames(path), decoded=True)
        idx = samplers.video_clip_indices(n, num_frames, stride, num_clips, sampler)
        frames = video_files.read_frames(path, idx.ravel())
    if set(idx.ravel().tolist()) - set(frames):  # timestamps that restart mid-stream: count frames from the start
        frames = video_files.read_frames(path, idx.ravel(), by_timestamp=False)
    missing = sorted(set(idx.ravel().tolist()) - set(frames))
    if missing:
        raise video_files.BadVideo(path, f"frame {missing[0]} of its {n} frames cannot be decoded")
    video_files.check_same_size(path, frames)
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
    (0; 1 when a video could not be read, reported on stderr with a count; 2 for a bad --saved_model or flag).

    Each video gets one line, `path<TAB>label p<TAB>...` (a path with a tab, line break or backslash is escaped:
    `escape_path`), or one JSON object with `--json`. A file kerasvid convert refuses is refused here too
    (`kerasvid.data.video_files.check_frames`), as are FIFOs and other non-regular files (they would block)."""
    command = command_flags.Command(
        "kerasvid predict", "Top-k labels of video files through an exported classification SavedModel; only the "
        "frames of the clips are decoded (constant memory).", positional="videos", min_positional=1)
    fv = command.flag_values
    flags.DEFINE_string("saved_model", None, "directory written by train/main.py --mode=export", flag_values=fv)
    flags.DEFINE_integer("num_clips", 1, "clips per video, probabilities averaged (evenly spaced, as multi-view "
                         "evaluation); default 1 (the centred clip)", flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "labels printed per video", flag_values=fv)
    flags.DEFINE_bool("json", False, "one JSON object per line instead of text", flag_values=fv)
    args = command.parse(sys.argv[1:] if argv is None else argv, required=("saved_model",))
    for flag in ("num_clips", "top_k"):
        if getattr(args, flag) < 1:
            command.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    try:
        predictor = Predictor(args.saved_model)
    except ValueError as e:
        print(f"kerasvid predict: error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for video in args.videos:
        try:
            top = predictor.top_k(video, args.num_clips, args.top_k)
        except (OSError, ValueError) as e:
            print(f"kerasvid predict: error: {e}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"video": video, "num_clips": args.num_clips,
                              "top_k": [{"label": label, "probability": p} for label, p in top]}), flush=True)
        else:
            print(f"{escape_path(video)}\t" + "\t".join(f"{escape_path(label)} {p:.4f}" for label, p in top),
                  flush=True)
    if failed:
        print(f"kerasvid predict: {failed} of {len(args.videos)} videos could not be classified (errors above)",
              file=sys.stderr)
    return 1 if failed else 0


def escape_path(text):
    """`text` for one field of predict's tab-separated lines: a backslash, tab, line break or other control
    character is written as its Python escape (`\\n`, `\\t`, `\\x1b`), so that a file name holding a newline
    cannot break the output into lines that look like other videos' (text without these is unchanged); so is a byte
    of a file name that is not UTF-8 (Python's surrogate escape, `\\udcff`), which could not be printed."""
    return "".join(c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   if c == "\\" or ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


if __name__ == "__main__":
    sys.exit(main())
