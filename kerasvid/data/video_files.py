"""Video files read with PyAV: opening with clear errors, counting frames, and two ways of decoding chosen frames.

Used by `kerasvid predict` (a few clips per video: `read_frames` seeks to the key frame before each needed frame)
and `kerasvid extract` (clips that may cover the whole video: `stream_clips` decodes it in one forward pass). Both
count the frames the same way (`count_frames`: the container's header, or the video packets counted by demuxing,
which decodes nothing) and, when that count turns out to be wrong, sample again on the frames actually decoded
(`count_decoded_frames`, `WrongFrameCount`).

Frame `i` is the `i`-th frame in presentation order; seeking maps it to the timestamp `start + i / frame_rate`
(constant frame rate, what `kerasvid convert` writes and cameras record; streams without timestamps are decoded
forward from the start, still dropping the frames not needed).

PyAV is imported inside the functions: `kerasvid predict --help` and `kerasvid extract --help` must not need it.
"""
import os
from fractions import Fraction

# Decode forward (rather than seek) when the next needed frame is at most this many frames ahead.
SEEK_AHEAD = 32


def open_video(path):
    """Opens a video file with PyAV: the container (a context manager), holding at least one video stream.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: `path` is a directory, not a file PyAV/FFmpeg reads, or has no video stream.
    """
    import av

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
    """Number of video frames: the container's count, or the video packets counted by demuxing (no decoding).

    Either may be wrong for a damaged file; the readers below then find out (`read_frames` returns fewer frames,
    `stream_clips` raises `WrongFrameCount`) and the caller samples again on `count_decoded_frames`.
    """
    with open_video(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


def count_decoded_frames(path):
    """Number of frames the first video stream decodes to (decodes the whole file; for when `count_frames` lied)."""
    with open_video(path) as container:
        return sum(1 for _ in container.decode(video=0))


def check_frame_count(path, n, decoded=False):
    """`n`, or ValueError naming `path` when it has no frames (`decoded`: counted by decoding)."""
    if n < 1:
        raise ValueError(f"{path!r} has no decodable video frames." if decoded else
                         f"{path!r} has no video frames (0 frames in its video stream).")
    return n


class _SeekingReader:
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
    """Decodes the frames `indices` (any order, repeats allowed) of a video file, seeking before each needed frame
    that is more than `SEEK_AHEAD` frames ahead (memory: one decoded frame plus the frames returned).

    Returns:
        `{index: uint8 [H, W, 3]}` for the indices found (all of them unless the container over-counts its frames).
    """
    with open_video(path) as container:
        reader = _SeekingReader(container)
        out = {}
        for index in sorted(set(int(i) for i in indices)):
            frame = reader.read(index)
            if frame is None:
                break
            out[index] = frame
        return out


class WrongFrameCount(Exception):
    """The video decodes to fewer frames than the clip indices need (its frame count was wrong): `seen` frames."""

    def __init__(self, seen):
        super().__init__(f"{seen} frames decoded")
        self.seen = seen


def stream_clips(path, idx, batch_clips, stats=None):
    """Yields uint8 `[b, T, H, W, 3]` batches (b <= `batch_clips`) of the clips `idx` (`[N, T]` frame indices, rows
    in order) in one decoding pass, holding only the frames of clips not yet yielded (so memory does not grow with
    the video's length). `stats["max_frames_held"]` records the most frames held at once.

    Raises:
        WrongFrameCount: the video ends before the last needed frame (after the batches already yielded).
    """
    import numpy as np

    rows = [list(map(int, r)) for r in idx]
    needed = set(i for r in rows for i in r)
    last_needed = max(needed)
    # Looped short videos (indices wrap around) and overlapping views need frames again later: keep by row order.
    cache, batch, next_row, seen = {}, [], 0, 0
    stats = stats if stats is not None else {}
    stats.setdefault("max_frames_held", 0)
    with open_video(path) as container:
        for count, frame in enumerate(container.decode(video=0)):
            seen = count + 1
            if count in needed:
                cache[count] = frame.to_ndarray(format="rgb24")
                stats["max_frames_held"] = max(stats["max_frames_held"], len(cache))
            while next_row < len(rows) and max(rows[next_row]) <= count:
                batch.append(np.stack([cache[i] for i in rows[next_row]]))
                next_row += 1
                keep = set(i for r in rows[next_row:] for i in r)
                cache = {i: f for i, f in cache.items() if i in keep}
                if len(batch) == batch_clips:
                    yield np.stack(batch)
                    batch = []
            if count >= last_needed and next_row == len(rows):
                break
    if next_row < len(rows):
        raise WrongFrameCount(seen)
    if batch:
        yield np.stack(batch)
