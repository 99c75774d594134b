"""Synthetic moving-digit videos (scikit-learn's bundled 8x8 handwritten digits), written as ordinary records.

The class of a clip is the direction its digit moves in: class k moves at angle 2*pi*k / num_classes (0 = right,
then clockwise in image coordinates: for 4 classes right, down, left, up). With an even number of classes, class k
and class k + num_classes / 2 are time-reversals of each other, so a model that ignores frame order cannot separate
them. The digit's identity and position are random (nuisance), the background is textured noise, or a texture tied
to the class ("class") or drawn at random from the class textures ("shuffled") to test context bias.

Every record carries the digit's box in each frame (`region/bbox/*`); `write_synthetic_dataset(conjugate_dir=)`
also writes each clip's conjugate (the same clip without its digit: the background the digit was drawn over, what
`kerasvid conjugates` estimates by inpainting) for the action_context task. `write_synthetic_ego_exo` writes two
renderings of the same clips ("exo": the scene; "ego": a moving, zoomed, recoloured view in which the digit is
hidden for a stretch of frames) with per-frame visibility (`frame/visible`) as records, and
`write_synthetic_charades_ego` the same pairs as Charades-Ego frame folders and CSVs for the actor_observer task.
"""
import csv
import json
import os

import numpy as np

from kerasvid.data import schema, writer

BACKGROUNDS = ("noise", "class", "shuffled")
_COMPASS = ("right", "down_right", "down", "down_left", "left", "up_left", "up", "up_right")


def class_names(num_classes):
    """Names of the motion classes: "move_right", "move_down", ... (angles in degrees beyond 8 classes)."""
    if num_classes == 8 or num_classes == 4:
        step = 8 // num_classes
        return [f"move_{_COMPASS[k * step]}" for k in range(num_classes)]
    return [f"move_{round(360.0 * k / num_classes):03d}deg" for k in range(num_classes)]


def mirror_pairs(num_classes):
    """Classes that swap under a horizontal flip (angle a -> 180 - a), as {a: b} for `video_dataset(mirror_labels=)`.

    Exact only when num_classes is even; classes mapped to themselves (e.g. "down") are left out.
    """
    if num_classes % 2:
        raise ValueError(f"Mirror pairs need an even number of classes, got num_classes={num_classes}.")
    pairs = {}
    for k in range(num_classes):
        m = (num_classes // 2 - k) % num_classes
        if m != k:
            pairs[k] = m
    return pairs


def time_reversal_pairs(num_classes):
    """Pairs (k, k + num_classes / 2) whose clips are time-reversals of each other."""
    return [(k, k + num_classes // 2) for k in range(num_classes // 2)] if num_classes % 2 == 0 else []


def _load_digits():
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target


def _resize(img, out_h, out_w):
    """Bilinear (half-pixel centres) resize of a 2-D array, numpy only."""
    h, w = img.shape
    ys = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bot = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bot * wy


def _noise_background(rng, h, w):
    coarse = rng.uniform(0, 1, (max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    smooth = np.stack([_resize(coarse[..., c], h, w) for c in range(3)], -1)
    tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    return 40 + 90 * smooth * tint + rng.normal(0, 8, (h, w, 3)).astype(np.float32)


def _texture_background(rng, texture, num_textures, h, w):
    """Oriented grating with a texture-specific angle, frequency and colour, plus noise."""
    angle = np.pi * texture / num_textures
    freq = 2 * np.pi / (6 + 3 * (texture % 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    hue = np.array([np.cos(2 * np.pi * texture / num_textures + s) for s in (0, 2.1, 4.2)], np.float32)
    colour = 0.6 + 0.4 * hue
    return 30 + 90 * wave[..., None] * colour + rng.normal(0, 8, (h, w, 3)).astype(np.float32)


def _trajectory(rng, label, num_classes, num_frames, h, w, size):
    angle = 2 * np.pi * label / num_classes
    direction = np.array([np.sin(angle), np.cos(angle)])  # (dy, dx); image y points down
    room = np.array([h - size, w - size], np.float64)
    # Travel 80% of the room along the direction's dominant axis; centre the path at a random feasible point.
    travel = 0.8 * np.min(room / np.maximum(np.abs(direction), 1e-6))
    step = direction * travel / max(num_frames - 1, 1)
    span = np.abs(step) * (num_frames - 1)
    lo = span / 2
    hi = room - span / 2
    middle = rng.uniform(lo, np.maximum(hi, lo))
    t = np.arange(num_frames) - (num_frames - 1) / 2
    return middle[None, :] + t[:, None] * step[None, :]  # [T, 2] top-left corners


def render_moving_digits(num_videos=32, num_classes=4, num_frames=16, height=64, width=64, seed=0,
                         background="noise", digit_scale=0.4):
    """Renders moving-digit clips in memory.

    Args:
        num_videos, num_classes, num_frames, height, width: dataset geometry (labels cycle through the classes).
        seed: random seed (same seed -> identical clips).
        background: "noise", "class" (texture index = label) or "shuffled" (random texture index).
        digit_scale: digit size as a fraction of min(height, width).

    Returns:
        dict with "frames" uint8 `[N, T, H, W, 3]`, "labels" int `[N]`, "boxes" float32 `[N, T, 4]` (normalised
        ymin, xmin, ymax, xmax of the digit's ink), "digits" int `[N]`, "textures" int `[N]` (-1 for noise),
        "alpha" float32 `[N, T, H, W]` (the digit's opacity: 0 outside the digit), "background" uint8
        `[N, H, W, 3]` (the scene without the digit: every frame equals it where alpha is 0).
    """
    if not 2 <= num_classes <= 64:
        raise ValueError(f"`num_classes` must be in [2, 64], got {num_classes}.")
    if num_frames < 2:
        raise ValueError(f"`num_frames` must be >= 2 (motion needs two frames), got {num_frames}.")
    if min(height, width) < 16:
        raise ValueError(f"`height` and `width` must be >= 16, got {height}x{width}.")
    if background not in BACKGROUNDS:
        raise ValueError(f"`background` must be one of {BACKGROUNDS}, got {background!r}.")
    images, targets = _load_digits()
    rng = np.random.default_rng(seed)
    size = max(8, int(round(digit_scale * min(height, width))))
    frames = np.zeros((num_videos, num_frames, height, width, 3), np.uint8)
    alphas = np.zeros((num_videos, num_frames, height, width), np.float32)
    boxes = np.zeros((num_videos, num_frames, 4), np.float32)
    labels = np.arange(num_videos) % num_classes
    rng.shuffle(labels)
    digits = np.zeros(num_videos, np.int64)
    textures = np.full(num_videos, -1, np.int64)
    backgrounds = np.zeros((num_videos, height, width, 3), np.uint8)
    for i in range(num_videos):
        label = int(labels[i])
        j = int(rng.integers(len(images)))
        digits[i] = targets[j]
        glyph = np.clip(_resize(images[j], size, size), 0, 1)
        if background == "noise":
            bg = _noise_background(rng, height, width)
        else:
            textures[i] = label if background == "class" else int(rng.integers(num_classes))
            bg = _texture_background(rng, int(textures[i]), num_classes, height, width)
        backgrounds[i] = np.clip(np.round(bg), 0, 255).astype(np.uint8)
        colour = np.array([255, 255, 255], np.float32) * rng.uniform(0.85, 1.0, 3).astype(np.float32)
        corners = np.round(_trajectory(rng, label, num_classes, num_frames, height, width, size)).astype(int)
        ink = np.argwhere(glyph > 0.25)
        (gy0, gx0), (gy1, gx1) = ink.min(0), ink.max(0) + 1
        for t, (y, x) in enumerate(corners):
            a = np.zeros((height, width), np.float32)
            a[y:y + size, x:x + size] = glyph
            frame = bg * (1 - a[..., None]) + colour * a[..., None]
            frames[i, t] = np.clip(np.round(frame), 0, 255).astype(np.uint8)
            alphas[i, t] = a
            boxes[i, t] = [(y + gy0) / height, (x + gx0) / width, (y + gy1) / height, (x + gx1) / width]
    return {"frames": frames, "labels": labels, "boxes": boxes, "digits": digits, "textures": textures,
            "alpha": alphas, "background": backgrounds}


def _write_labels(output_dir, names):
    path = os.path.join(output_dir, "labels.txt")
    with open(path, "w") as f:
        f.write("\n".join(names) + "\n")
    return path


def _examples(clips, names, prefix, quality, fps, frames_key="frames", boxes=True, visible=None, suffix=""):
    n, t, h, w, _ = clips[frames_key].shape
    for i in range(n):
        label = int(clips["labels"][i])
        yield schema.make_sequence_example(
            [writer.encode_jpeg(f, quality) for f in clips[frames_key][i]], [label], label_text=names[label],
            video_id=f"{prefix}{i:05d}{suffix}", filename=f"synthetic/{prefix}{i:05d}{suffix}", fps=fps,
            height=h, width=w, boxes=clips["boxes"][i] if boxes else None,
            visible=None if visible is None else visible[i])


def write_synthetic_dataset(output_dir, name="train", num_videos=32, num_classes=4, num_frames=16, height=64,
                            width=64, seed=0, num_shards=2, background="noise", jpeg_quality=90, fps=12.0,
                            conjugate_dir=""):
    """Writes a moving-digits dataset as records and returns its file pattern.

    Also writes `labels.txt` (one class name per line) and `synthetic.json` (settings, time-reversal pairs, and the
    `mirror_labels` to pass to `video_dataset` when flipping) beside the shards. Use different `seed`s (and names)
    for the training and held-out splits.

    Args:
        output_dir: where to write.
        name: split name (shard prefix).
        num_videos, num_classes, num_frames, height, width, seed, background: see `render_moving_digits`.
        num_shards: number of shards.
        jpeg_quality: JPEG quality of the frames.
        fps: nominal frame rate stored in `video/fps`.
        conjugate_dir: if set, also writes there the conjugate of every record, in shards of the same names that
            mirror the originals record for record (`kerasvid.data.conjugate_pairs.pair_dataset` reads them): the
            clip without its digit (every frame is the clip's background; the same label, id and boxes), with
            `conjugate/of` = the original's `video/id` and `conjugate/num_boxes` = one box per frame.

    Returns:
        The glob pattern of the shards, e.g. "/tmp/synth/train-*-of-*.tfrecord".

    Example:
    >>> train = write_synthetic_dataset("/tmp/synth", "train", num_videos=64, seed=0)
    >>> test = write_synthetic_dataset("/tmp/synth", "test", num_videos=32, seed=1)
    """
    clips = render_moving_digits(num_videos, num_classes, num_frames, height, width, seed, background)
    names = class_names(num_classes)
    os.makedirs(output_dir, exist_ok=True)
    writer.write_records(_examples(clips, names, name, jpeg_quality, fps), output_dir, name, num_shards)
    if conjugate_dir:
        os.makedirs(conjugate_dir, exist_ok=True)
        writer.write_records(_conjugate_examples(clips, names, name, jpeg_quality, fps), conjugate_dir, name,
                             num_shards)
    _write_labels(output_dir, names)
    meta = {"num_classes": num_classes, "num_frames": num_frames, "height": height, "width": width,
            "background": background, "class_names": names, "time_reversal_pairs": time_reversal_pairs(num_classes),
            "mirror_labels": mirror_pairs(num_classes) if num_classes % 2 == 0 else None}
    with open(os.path.join(output_dir, "synthetic.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    return writer.file_pattern(output_dir, name)


def _conjugate_examples(clips, names, prefix, quality, fps):
    """The conjugate records of `_examples(clips, ...)`, in the same order: background frames, the context keys
    of `kerasvid.data.conjugates` added."""
    from kerasvid.data.conjugates import CONJUGATE_NUM_BOXES, CONJUGATE_OF

    t = clips["frames"].shape[1]
    empty = dict(clips, conjugate=np.broadcast_to(clips["background"][:, None], clips["frames"].shape))
    for i, example in enumerate(_examples(empty, names, prefix, quality, fps, "conjugate")):
        context = example.context.feature
        context[CONJUGATE_OF].bytes_list.value[:] = [f"{prefix}{i:05d}".encode("utf-8")]
        context[CONJUGATE_NUM_BOXES].int64_list.value[:] = [t]
        yield example


def render_ego_exo(clips, seed=0, hidden_fraction=0.25, zoom=0.7):
    """Makes a second ("ego") rendering of clips from `render_moving_digits` (the "exo" view).

    The ego view is a crop of `zoom` x the frame that drifts over time, resized back to full size, with its own
    background noise and a recoloured digit. In each clip one view (chosen at random) hides the digit for a
    contiguous `hidden_fraction` of the frames. A frame is visible in a view when the digit is drawn and (ego) its
    box centre lies inside the crop.

    Returns:
        dict with "ego" uint8 frames `[N, T, H, W, 3]`, "visible_ego", "visible_exo" int `[N, T]`, "exo"
        frames (the input frames with the digit removed where the exo view hides it), "crop_corners" int
        `[N, T, 2]` (top-left `(y, x)` of the crop in the scene: ego frame k is `scene[y:y + ch, x:x + cw]` at
        time k, resized to `(H, W)`) and "crop_size" `(ch, cw)`.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed + 1_000_003)
    frames, alpha, boxes = clips["frames"], clips["alpha"], clips["boxes"]
    n, t, h, w, _ = frames.shape
    ego = np.zeros_like(frames)
    exo = frames.copy()
    vis_ego = np.ones((n, t), np.int64)
    vis_exo = np.ones((n, t), np.int64)
    corners = np.zeros((n, t, 2), np.int64)
    ch, cw = int(round(zoom * h)), int(round(zoom * w))
    for i in range(n):
        hide_len = max(1, int(round(hidden_fraction * t)))
        start = int(rng.integers(0, t - hide_len + 1))
        hidden = np.zeros(t, bool)
        hidden[start:start + hide_len] = True
        hide_in_ego = bool(rng.integers(2))
        bg = _noise_background(rng, h, w)[..., ::-1]  # different texture and colour balance
        colour = np.array([255, 220, 60], np.float32) * rng.uniform(0.9, 1.0)
        y0, x0 = rng.uniform(0, h - ch), rng.uniform(0, w - cw)
        y1, x1 = rng.uniform(0, h - ch), rng.uniform(0, w - cw)
        for k in range(t):
            a = alpha[i, k]
            if hidden[k] and not hide_in_ego:
                exo[i, k] = np.clip(np.round(_noise_free_fill(frames[i, k], a)), 0, 255).astype(np.uint8)
                vis_exo[i, k] = 0
            draw = not (hidden[k] and hide_in_ego)
            scene = bg * (1 - a[..., None]) + colour * a[..., None] if draw else bg
            f = k / max(t - 1, 1)
            cy, cx = int(round(y0 + (y1 - y0) * f)), int(round(x0 + (x1 - x0) * f))
            corners[i, k] = cy, cx
            crop = scene[cy:cy + ch, cx:cx + cw]
            ego[i, k] = np.clip(np.round(tf.image.resize(crop, (h, w)).numpy()), 0, 255).astype(np.uint8)
            by, bx = (boxes[i, k, 0] + boxes[i, k, 2]) / 2 * h, (boxes[i, k, 1] + boxes[i, k, 3]) / 2 * w
            inside = cy <= by < cy + ch and cx <= bx < cx + cw
            vis_ego[i, k] = int(draw and inside)
    return {"ego": ego, "exo": exo, "visible_ego": vis_ego, "visible_exo": vis_exo, "crop_corners": corners,
            "crop_size": (ch, cw)}


def _noise_free_fill(frame, a):
    """Removes the digit from an exo frame: replaces digit pixels by the mean of the surrounding background."""
    mask = a > 0.05
    out = frame.astype(np.float32)
    if mask.any():
        out[mask] = out[~mask].mean(0)
    return out


def _ego_exo_clips(num_videos, num_classes, num_frames, height, width, seed, hidden_fraction):
    """The clips and their two views (`render_moving_digits` over noise, then `render_ego_exo`)."""
    clips = render_moving_digits(num_videos, num_classes, num_frames, height, width, seed, "noise")
    views = render_ego_exo(clips, seed, hidden_fraction)
    return dict(clips, **views)


def write_synthetic_ego_exo(output_dir, name="train", num_videos=32, num_classes=4, num_frames=16, height=64,
                            width=64, seed=0, num_shards=2, hidden_fraction=0.25, jpeg_quality=90, fps=12.0):
    """Writes paired "exo" (third-person) and "ego" (first-person) renderings of the same moving-digit clips.

    Shards `<name>_exo-*` and `<name>_ego-*` hold one record per clip with the same label; ego ids are the exo id
    plus "EGO" (the Charades-Ego convention), and `frame/visible` flags each frame. A `<name>_pairs.csv`
    (`exo_id,ego_id,label`) lists the pairs.

    Returns:
        dict {"exo": pattern, "ego": pattern, "pairs": csv path}.
    """
    clips = _ego_exo_clips(num_videos, num_classes, num_frames, height, width, seed, hidden_fraction)
    names = class_names(num_classes)
    os.makedirs(output_dir, exist_ok=True)
    exo_name, ego_name = f"{name}_exo", f"{name}_ego"
    writer.write_records(_examples(clips, names, name, jpeg_quality, fps, "exo", visible=clips["visible_exo"]),
                         output_dir, exo_name, num_shards)
    writer.write_records(_examples(clips, names, name, jpeg_quality, fps, "ego", boxes=False,
                                   visible=clips["visible_ego"], suffix="EGO"), output_dir, ego_name, num_shards)
    pairs = os.path.join(output_dir, f"{name}_pairs.csv")
    with open(pairs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["exo_id", "ego_id", "label"])
        for i in range(num_videos):
            w.writerow([f"{name}{i:05d}", f"{name}{i:05d}EGO", int(clips["labels"][i])])
    _write_labels(output_dir, names)
    return {"exo": writer.file_pattern(output_dir, exo_name), "ego": writer.file_pattern(output_dir, ego_name),
            "pairs": pairs}


# The columns of a Charades / Charades-Ego label CSV (`kerasvid.data.actor_observer.read_charades_csv` needs `id`).
_CHARADES_COLUMNS = ("id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
                    "descriptions", "actions", "length")


def write_synthetic_charades_ego(output_dir, name="train", num_videos=8, num_classes=4, num_frames=32, height=64,
                                 width=64, seed=0, hidden_fraction=0.25, jpeg_quality=90, fps=12.0):
    """Writes the ego/exo pairs of `write_synthetic_ego_exo` in the Charades-Ego layout of the actor_observer task.

    Frames go to `<output_dir>/frames/<vid>/<vid>-000001.jpg, ...` (exo, the third-person view) and
    `<output_dir>/frames/<vid>EGO/...` (ego, the first-person view), `vid` = `<name>00000`, ...; both views have
    `num_frames` frames, so the time-mapped positive of third-person frame i is first-person frame i. Beside them:
    `<name>.csv` (Charades-Ego CSV: both videos of each pair, one action `c<label>` over the whole video),
    `<name>_charades.csv` (the third-person rows alone: the classification frames of the mixed setup) and
    `<name>_views.json` (per pair: label, the ego crop corners and size, per-frame visibility in each view; see
    `render_ego_exo`).

    Args:
        output_dir: where to write.
        name: split name (video id prefix and file names).
        num_videos, num_classes, num_frames, height, width, seed: see `render_moving_digits` (background "noise").
        hidden_fraction: see `render_ego_exo`.
        jpeg_quality: JPEG quality of the frames.
        fps: the frame rate the CSV's action times and lengths use (seconds = frames / fps).

    Returns:
        dict {"frames_root": dir, "csv": path, "charades_csv": path, "views": path}.

    Example:
    >>> train = write_synthetic_charades_ego("/tmp/ego", "train", num_videos=8, seed=0)
    >>> test = write_synthetic_charades_ego("/tmp/ego", "eval", num_videos=4, seed=1)
    >>> # --task=actor_observer --task_kwargs=frames_root='/tmp/ego/frames',train_csv='/tmp/ego/train.csv',...
    """
    import tensorflow as tf

    from kerasvid.data import actor_observer as triplets

    clips = _ego_exo_clips(num_videos, num_classes, num_frames, height, width, seed, hidden_fraction)
    root = os.path.join(output_dir, "frames")
    length = num_frames / float(fps)
    rows, views = [], {}
    for i in range(num_videos):
        vid, label = f"{name}{i:05d}", int(clips["labels"][i])
        for video_id, key in ((vid, "exo"), (vid + triplets.EGO_SUFFIX, "ego")):
            os.makedirs(os.path.join(root, video_id), exist_ok=True)
            for k, frame in enumerate(clips[key][i]):
                tf.io.write_file(triplets.frame_path(root, video_id, k), writer.encode_jpeg(frame, jpeg_quality))
            rows.append([video_id, "synthetic", "", "", "", "", "", "", "", f"c{label:03d} 0.00 {length:.2f}",
                         f"{length:.2f}"])
        views[vid] = {"label": label, "crop_corners": clips["crop_corners"][i].tolist(),
                      "visible_exo": clips["visible_exo"][i].tolist(), "visible_ego": clips["visible_ego"][i].tolist()}
    paths = {"frames_root": root, "csv": os.path.join(output_dir, f"{name}.csv"),
             "charades_csv": os.path.join(output_dir, f"{name}_charades.csv"),
             "views": os.path.join(output_dir, f"{name}_views.json")}
    for key, chosen in (("csv", rows), ("charades_csv", rows[::2])):
        with open(paths[key], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(_CHARADES_COLUMNS)
            w.writerows(chosen)
    with open(paths["views"], "w") as f:
        json.dump({"crop_size": list(clips["crop_size"]), "fps": fps, "class_names": class_names(num_classes),
                   "videos": views}, f, indent=1)
    return paths
