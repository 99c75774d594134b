"""Video files read with PyAV: opening with clear errors, counting frames, and two ways of decoding chosen frames.

Used by `kerasvid predict` (a few clips per video: `read_frames` seeks to the key frame before each needed frame)
and `kerasvid extract` (clips that may cover the whole video: `stream_clips` decodes it in one forward pass). Both
count the frames the same way (`count_frames`: the video packets counted by demuxing, which decodes nothing, checked
against the container's declared count) and, when that count turns out to be wrong, sample again on the frames
actually decoded (`count_decoded_frames`, `WrongFrameCount`). `check_frames` is the one validation that `kerasvid
convert` (`kerasvid.data.sources.decode_video`), `predict` and `extract` share: no frames, one frame, or fewer than
the container declares (a truncated download) is refused; `open_video` also refuses a still image renamed `.mp4`
and a FIFO or other non-regular file. Frames are returned upright (`to_rgb` applies the display matrix: rotation and mirror).

Frame `i` is the `i`-th frame in presentation order; seeking maps it to the timestamp `start + i / frame_rate`
(constant frame rate, what `kerasvid convert` writes and cameras record; streams without timestamps are decoded
forward from the start, still dropping the frames not needed).

PyAV is imported inside the functions: `kerasvid predict --help` and `kerasvid extract --help` must not need it.
"""
import os
from fractions import Fraction

# Decode forward (rather than seek) when the next needed frame is at most this many frames ahead.
SEEK_AHEAD = 32


# Container formats that hold one still image, not a video (a JPEG or PNG renamed `.mp4` opens as one of these).
IMAGE_FORMATS = ("image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe")
# Fewest frames a video must decode to: what `kerasvid convert` stores, `predict` and `extract` classify.
MIN_FRAMES = 2


def not_a_regular_file(path):
    """None for a regular file; else what `path` is ("a directory", "a FIFO (named pipe)", ...). Reading a FIFO,
    a socket or a device would block or stream forever, so the video tools skip them."""
    import stat

    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "not a regular file")


def open_video(path):
    """Opens a video file with PyAV: the container (a context manager), holding at least one video stream.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: `path` is a directory, a FIFO or other non-regular file, a still image (a JPEG renamed `.mp4`),
            not a file PyAV/FFmpeg reads, or has no video stream.
    """
    import av

    if not os.path.exists(path):
        raise FileNotFoundError(f"No video file at {path!r}.")
    kind = not_a_regular_file(path)
    if kind:
        raise ValueError(f"{path!r} is {kind}, not a video file.")
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise ValueError(f"{path!r} is not a readable video file ({e}).") from e
    if container.format.name in IMAGE_FORMATS:
        container.close()
        raise ValueError(f"{path!r} is {image_reason(container.format.name)}.")
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path!r} has no video frames (it has no video stream).")
    return container


def image_reason(format_name):
    """Why a file that FFmpeg opens as `format_name` (an image format) is refused."""
    return f"a still image ({format_name}), not a video"


def declared_frames(stream):
    """The number of frames a video stream's container declares: its frame count (mp4, mov, avi), else its duration
    times its frame rate (Matroska / WebM declare a duration in their header); 0 when it states neither."""
    if stream.frames:
        return int(stream.frames)
    import av

    rate = stream.average_rate or stream.guessed_rate
    container = stream.container
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.format.name.startswith("matroska") and container.duration:
        seconds = container.duration / av.time_base
    else:
        return 0
    return int(round(seconds * float(rate))) if rate else 0


def check_frames(path, found, declared=0, how="decode"):
    """The one validation of a video's frame count, shared by `kerasvid convert`, `predict` and `extract`.

    Args:
        path: the file (named in the error).
        found: frames found (decoded, or video packets demuxed: `how="demux"`).
        declared: frames the container declares (`declared_frames`; 0 = unknown).

    Returns:
        `found`.

    Raises:
        BadVideo: no frames, a single frame (fewer than `MIN_FRAMES`: no clip), or fewer frames than the container
            declares (a truncated or partly downloaded file: a faststart mp4 cut short keeps the index of every
            frame but the data of only the first ones).
    """
    if found < 1:
        raise BadVideo(path, "no video frames (0 frames in its video stream)" if how == "demux" else
                       "no decodable video frames")
    if found < MIN_FRAMES:
        raise BadVideo(path, "one-frame video")
    if declared and found < declared - max(2, declared // 100):  # slack: edit lists and decoder delay drop a few
        raise BadVideo(path, f"truncated or damaged video: its container declares {declared} frames but only "
                             f"{found} {'are present' if how == 'demux' else 'decode'} (a partly downloaded or "
                             f"cut file?)")
    return found


class BadVideo(ValueError):
    """A video file kerasvid refuses (`check_frames`): `str()` names the file, `reason` is the reason alone (the
    converter's skip reason)."""

    def __init__(self, path, reason):
        super().__init__(f"{path!r}: {reason}.")
        self.path, self.reason = path, reason


def count_frames(path):
    """Number of video frames: the container's frame count, or where it states none the video packets counted by
    demuxing (no decoding). The packets are counted either way and checked against what the container declares
    (`check_frames`: a truncated file, a single frame or none is refused).

    The count may still be wrong for a damaged file; the readers below then find out (`read_frames` returns fewer
    frames, `stream_clips` raises `WrongFrameCount`) and the caller samples again on `count_decoded_frames`.
    """
    with open_video(path) as container:
        stream = container.streams.video[0]
        declared = declared_frames(stream)
        present = sum(1 for packet in container.demux(stream) if packet.size)
    check_frames(path, present, declared, how="demux")
    return int(stream.frames) or present


def count_decoded_frames(path):
    """Number of frames the first video stream decodes to (decodes the whole file; for when `count_frames` lied)."""
    with open_video(path) as container:
        return sum(1 for _ in container.decode(video=0))


def check_frame_count(path, n, decoded=False):
    """`n`, or ValueError naming `path` when it has fewer than `MIN_FRAMES` frames (`decoded`: counted by decoding;
    `check_frames` does the checking)."""
    return check_frames(path, n, how="decode" if decoded else "demux")


def _display_transform(frame):
    """The display matrix of a decoded PyAV frame (a phone video's orientation) as a signed permutation
    `(transpose, flip_rows, flip_columns)` of its `[H, W]` pixels, or None when it has none (or one that is not a
    quarter turn and / or mirror).

    FFmpeg's matrix `[[a, b, u], [c, d, v], [x, y, w]]` (16.16 fixed point) maps a stored pixel `(p, q)` (column,
    row) to the displayed `(a p + c q, b p + d q)`, up to a shift. A quarter turn has `a = d = 0` (the axes swap);
    a mirror flips the sign of one of them (`frame.rotation` alone would miss it).
    """
    import numpy as np

    for side_data in getattr(frame, "side_data", ()):
        if str(getattr(side_data, "type", "")).endswith("DISPLAYMATRIX"):
            m = np.frombuffer(bytes(side_data), np.int32)[:9].astype(np.float64) / 65536.0
            a, b, c, d = m[0], m[1], m[3], m[4]
            if max(abs(abs(v) - round(abs(v))) for v in (a, b, c, d)) > 1e-3:
                return None  # not a quarter turn: shown as stored
            if round(a) == round(d) == 0 and abs(round(b)) == abs(round(c)) == 1:
                return True, b < 0, c < 0  # displayed row = b * stored column, displayed column = c * stored row
            if round(b) == round(c) == 0 and abs(round(a)) == abs(round(d)) == 1:
                return (False, d < 0, a < 0) if (a < 0 or d < 0) else None
    return None


def to_rgb(frame):
    """A decoded PyAV video frame as uint8 `[H, W, 3]` RGB, upright: its display matrix (a phone video's rotation,
    a mirror) is applied as players apply it (`_display_transform`)."""
    image = frame.to_ndarray(format="rgb24")
    transform = _display_transform(frame)
    if transform is None:
        return image
    transpose, flip_rows, flip_columns = transform
    if transpose:
        image = image.transpose(1, 0, 2)
    return image[::-1 if flip_rows else 1, ::-1 if flip_columns else 1].copy()


class _SeekingReader:
    """Frames of one video by index, seeking to key frames and decoding forward (one frame held at a time)."""

    def __init__(self, container, by_timestamp=True):
        self.container = container
        self.stream = container.streams.video[0]
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.rate = Fraction(rate) if rate else None
        self.time_base = Fraction(self.stream.time_base) if self.stream.time_base else None
        self.start = self.stream.start_time or 0
        self.frames = None  # the decoding generator
        self.position = -1  # index of the last decoded frame
        self.timed = by_timestamp and self.rate is not None and self.time_base is not None

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
                return to_rgb(frame)
        return None


def read_frames(path, indices, by_timestamp=True):
    """Decodes the frames `indices` (any order, repeats allowed) of a video file, seeking before each needed frame
    that is more than `SEEK_AHEAD` frames ahead (memory: one decoded frame plus the frames returned);
    `by_timestamp=False` decodes forward from the start, counting frames (for timestamps that restart mid-stream).

    Returns:
        `{index: uint8 [H, W, 3]}` for the indices found (all of them unless the container over-counts its frames).
    """
    with open_video(path) as container:
        reader = _SeekingReader(container, by_timestamp)
        out = {}
        for index in sorted(set(int(i) for i in indices)):
            frame = reader.read(index)
            if frame is None:
                break
            out[index] = frame
        return out


def check_same_size(path, frames):
    """`frames` (`{frame index: uint8 [H, W, 3]}`), or BadVideo naming `path` and the first frame whose size differs
    from the first one's (a stream whose resolution changes mid-way: one clip cannot hold both sizes)."""
    order = sorted(frames)
    for i in order[1:]:
        if frames[i].shape != frames[order[0]].shape:
            (h0, w0), (h1, w1) = frames[order[0]].shape[:2], frames[i].shape[:2]
            raise BadVideo(path, f"the frame size changes mid-stream ({w0}x{h0} to {w1}x{h1} at frame {i}); "
                                 f"re-encode it at one size")
    return frames


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
        BadVideo: the frame size changes mid-stream.
    """
    import numpy as np

    rows = [list(map(int, r)) for r in idx]
    needed = set(i for r in rows for i in r)
    last_needed = max(needed)
    # Looped short videos (indices wrap around) and overlapping views need frames again later: keep by row order.
    cache, batch, next_row, seen, first = {}, [], 0, 0, None
    stats = stats if stats is not None else {}
    stats.setdefault("max_frames_held", 0)
    with open_video(path) as container:
        for count, frame in enumerate(container.decode(video=0)):
            seen = count + 1
            if count in needed:
                cache[count] = to_rgb(frame)
                first = first or {count: cache[count]}  # one frame kept to compare sizes with
                check_same_size(path, {**first, count: cache[count]})
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
