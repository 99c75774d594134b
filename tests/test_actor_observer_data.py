"""Tests for kerasvid.data.actor_observer: Charades CSV parsing and the actor-observer triplet sampling."""
import fractions
import io
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasvid.data import actor_observer as tr

CSV = """id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length
AB12,S1,Kitchen,6,7,Yes,"A person opens a door, then eats.",door;food,"One, two.",c092 11.90 21.20;c147 0.00 12.60,30.5
AB12EGO,S1,Kitchen,6,7,Yes,same,door,,c092 1.00 2.00,29.0
CD34,S2,Bedroom,5,5,Yes,x,bed,,,12.0
"""


def test_parse_actions_and_csv():
    assert tr.parse_actions("c092 11.90 21.20;c147 0.00 12.60") == [
        tr.Action(92, 11.9, 21.2), tr.Action(147, 0.0, 12.6)]
    assert tr.parse_actions("") == [] and tr.parse_actions(None) == []
    with pytest.raises(ValueError, match="'x092 1 2'"):
        tr.parse_actions("x092 1 2")
    rows = tr.read_charades_csv(io.StringIO(CSV))
    assert [r["id"] for r in rows] == ["AB12", "AB12EGO", "CD34"]
    assert rows[0]["script"] == "A person opens a door, then eats."
    assert rows[0]["actions"][1] == tr.Action(147, 0.0, 12.6)
    assert rows[2]["actions"] == [] and rows[0]["length"] == 30.5
    assert tr.paired_videos(rows) == [("AB12", "AB12EGO")]
    with pytest.raises(ValueError, match="'id' column"):
        tr.read_charades_csv(io.StringIO("a,b\n1,2\n"))


def _brute_force_valid(pos, m, gap):
    return [j for j in range(m) if abs(j - pos) > gap]  # the reference: strictly more than `gap` frames away


def _python2_round(numerator, denominator):
    """Python 2's `round` of a non-negative ratio, on the exact fraction: halves go away from zero."""
    return math.floor(fractions.Fraction(numerator, denominator) + fractions.Fraction(1, 2))


def test_triplet_frames_follow_the_sampling_rule():
    n, m, gap = 100, 50, 10
    got = tr.sample_triplet_frames(n, m, np.random.default_rng(0), anchor_stride=4, min_gap=gap)
    np.testing.assert_array_equal(got[:, 0], np.arange(0, 100, 4))  # every anchor has a negative here
    np.testing.assert_array_equal(got[:, 1], [_python2_round(i * 49, 99) for i in range(0, 100, 4)])
    for third, pos, neg in got:
        assert neg in _brute_force_valid(pos, m, gap)
    # Anchors whose positive has no frame > gap away are skipped: m = 12, gap = 7 leaves only ends of the video
    # (positive 4 would have had frame 11, exactly 7 away, before the strict rule).
    got = tr.sample_triplet_frames(12, 12, np.random.default_rng(0), anchor_stride=1, min_gap=7)
    kept = [i for i in range(12) if _brute_force_valid(i, 12, 7)]
    np.testing.assert_array_equal(got[:, 0], kept)
    assert kept == [0, 1, 2, 3, 8, 9, 10, 11]
    # 8 s paired videos at 24 fps have no negative 10 s away: no triplet at all.
    assert tr.sample_triplet_frames(192, 192, np.random.default_rng(0), min_gap=240).shape == (0, 3)


def test_negatives_are_uniform_over_the_valid_frames():
    rng = np.random.default_rng(1)
    draws = np.concatenate([tr.sample_triplet_frames(2, 30, rng, anchor_stride=2, min_gap=8)[:, 2]
                            for _ in range(3000)])  # anchor 0 -> positive 0: valid frames 9..29
    counts = np.bincount(draws, minlength=30)
    assert counts[:9].sum() == 0
    expected = 3000 / 21
    assert np.all(np.abs(counts[9:] - expected) < 5 * np.sqrt(expected))
    # Both sides of a positive in the middle are used.
    draws = np.concatenate([tr.sample_triplet_frames(3, 31, rng, anchor_stride=1, min_gap=10)[1:2, 2]
                            for _ in range(400)])  # anchor 1 -> positive 15: valid 0..4 and 26..30
    assert set(draws) == set(range(0, 5)) | set(range(26, 31))


def test_negative_more_than_240_frames_away():
    """The reference takes negatives MORE than 240 frames (10 s at 24 fps) from the positive: frame 240 is too
    close to positive 0, frame 241 is the only negative of a 242-frame video, and a 241-frame video has none."""
    rng = np.random.default_rng(0)
    got = tr.sample_triplet_frames(1, 242, rng, anchor_stride=1, min_gap=240)
    np.testing.assert_array_equal(got, [[0, 0, 241]])
    assert tr.sample_triplet_frames(1, 241, rng, anchor_stride=1, min_gap=240).shape == (0, 3)
    # 5 third-person frames over 482 first-person frames: positives i * 481 / 4 = 0, 120.25, 240.5, 360.75, 481
    # -> 0, 120, 241, 361, 481. The middle one's only negative is frame 0 (241 away; frame 481 is 240 away); had
    # 240.5 been rounded to even (240), it would have been frame 481.
    for _ in range(20):
        got = tr.sample_triplet_frames(5, 482, rng, anchor_stride=1, min_gap=240)
        np.testing.assert_array_equal(got[:, 1], [0, 120, 241, 361, 481])
        assert got[2, 2] == 0
        assert got[0, 2] >= 241 and got[1, 2] >= 361 and got[3, 2] <= 120 and got[4, 2] <= 240


def test_positive_rounds_halves_up_as_python2():
    """Python 2's `round` (the reference) sends halves away from zero; Python 3 rounds them to even."""
    # n = 5, m = 3: i * 2 / 4 = 0, 0.5, 1, 1.5, 2 -> 0, 1, 1, 2, 2 (Python 3: 0, 0, 1, 2, 2).
    got = tr.sample_triplet_frames(5, 3, np.random.default_rng(0), anchor_stride=1, min_gap=0)
    np.testing.assert_array_equal(got[:, 1], [0, 1, 1, 2, 2])
    assert [round(i / 2) for i in range(5)] == [0, 0, 1, 2, 2]  # what Python 3 would give
    np.testing.assert_array_equal(tr.time_mapped_positives(np.arange(5), 5, 3), [0, 1, 1, 2, 2])
    # Against the exact fraction on Charades-like lengths (24 fps, 30 s third-person, 25-35 s first-person),
    # where halves occur: brute force over every frame.
    n, differ = 721, 0
    for m in range(600, 841, 7):
        want = [_python2_round(i * (m - 1), n - 1) for i in range(n)]
        np.testing.assert_array_equal(tr.time_mapped_positives(np.arange(n), n, m), want)
        differ += sum(w != round(i * (m - 1) / (n - 1)) for i, w in enumerate(want))
    assert differ > 0  # the sweep does contain halves where Python 3 rounds differently
    assert tr.time_mapped_positives(np.arange(3), 1, 10).tolist() == [0, 0, 0]  # one third-person frame


def test_build_samples_from_frame_folders(tmp_path):
    root = str(tmp_path)
    for vid, count in (("AB12", 40), ("AB12EGO", 20), ("CD34", 48)):
        os.makedirs(os.path.join(root, vid))
        for i in range(count):
            open(tr.frame_path(root, vid, i), "wb").close()
    assert tr.frame_path(root, "AB12", 0).endswith(os.path.join("AB12", "AB12-000001.jpg"))
    counts = {vid: tr.count_frames(root, vid) for vid in ("AB12", "AB12EGO", "CD34", "missing")}
    assert counts == {"AB12": 40, "AB12EGO": 20, "CD34": 48, "missing": 0}
    pairs = [("missing", "missingEGO"), ("AB12", "AB12EGO")]
    triplets = tr.build_triplets(pairs, root, counts, seed=0, anchor_stride=4, min_gap=5)
    assert len(triplets) == 10 and {s.video_index for s in triplets} == {1}
    assert all(s.is_triplet and os.path.exists(s.first_person_negative) for s in triplets)
    assert triplets[1].third_person.endswith("AB12-000005.jpg")  # anchor frame 4
    assert triplets[1].first_person.endswith("AB12EGO-000003.jpg")  # round(4 * 19 / 39) = 2
    # Deterministic for a seed.
    assert tr.build_triplets(pairs, root, counts, seed=0, min_gap=5) == tr.build_triplets(
        pairs, root, counts, seed=0, min_gap=5)

    records = tr.read_charades_csv(io.StringIO(CSV.replace("c092 11.90 21.20;", "c003 1.00 2.00;")))
    cls = tr.build_classification_samples(records, root, counts, num_videos=2, fps=24.0)
    # Every 4th frame of the video (0, 4, ..., 36 < 39) whose time is strictly inside the interval: AB12 (40
    # frames) c003 1.00-2.00 s -> frames 28, 32, 36 (24 = 1.00 s is on the edge); c147 0.00-12.60 s -> 4..36;
    # AB12EGO (20 frames) c092 1.00-2.00 s -> none (its last grid frame, 16, is at 0.67 s).
    got = [(s.label, int(s.third_person[-10:-4]) - 1) for s in cls]
    assert got == [(3, 28), (3, 32), (3, 36)] + [(147, f) for f in range(4, 37, 4)]
    # Every frame (stride 1, frames 0..38): c003 -> 25..38 (14 frames), c147 -> 1..38 (38), c092 -> none.
    assert len(tr.build_classification_samples(records, root, counts, num_videos=2, frame_stride=1)) == 14 + 38
    with pytest.raises(ValueError, match="frame_stride=0"):
        tr.build_classification_samples(records, root, counts, num_videos=2, frame_stride=0)
    assert all(s.video_index == 2 and not s.is_triplet and s.first_person == s.third_person for s in cls)
    mixed = tr.mix_samples(triplets, cls, triplet_repeats=6, seed=0)
    assert len(mixed) == len(cls) + 6 * len(triplets)
    assert sum(s.is_triplet for s in mixed) == 60
    with pytest.raises(ValueError, match="min_gap=-1"):
        tr.sample_triplet_frames(10, 10, np.random.default_rng(0), min_gap=-1)


def _write_jpeg(path, image):
    tf.io.write_file(path, tf.io.encode_jpeg(tf.constant(image, tf.uint8), quality=100))


def _one_batch(samples, **kwargs):
    ds = tr.triplet_dataset(samples, training=True, batch_size=len(samples), image_size=(16, 16),
                            normalization="zero_one", seed=3, deterministic=True, **kwargs)
    inputs, labels = next(iter(ds))
    return {k: v.numpy() for k, v in inputs.items()}, labels.numpy()


def test_classification_frames_get_the_charades_crop_area(tmp_path):
    """The reference crops the Charades classification frames to an area in (0.08, 1), the Charades-Ego triplet
    frames to (0.8, 1). Measured on a frame whose red channel is its column and green its row: a crop of w x h
    pixels resized to 16 px spans about (15/16) w in red and (15/16) h in green."""
    ramp = np.arange(256, dtype=np.uint8)
    image = np.stack([np.broadcast_to(ramp[None], (256, 256)), np.broadcast_to(ramp[:, None], (256, 256)),
                      np.full((256, 256), 128, np.uint8)], axis=-1)
    path = str(tmp_path / "ramp.jpg")
    _write_jpeg(path, image)
    samples = [tr.Sample(path, path, path, 0) for _ in range(24)] + [tr.Sample(path, path, path, 1, 5)] * 24
    inputs, labels = _one_batch(samples, classification_crop_scale=(0.08, 1.0))
    frames = np.concatenate([inputs[k] for k in tr.INPUT_KEYS], axis=1)  # [B, 3, 16, 16, 3]
    span = lambda c: frames[..., c].max(axis=(-1, -2)) - frames[..., c].min(axis=(-1, -2))  # noqa: E731
    area = span(0) * span(1) / (15 / 16) ** 2  # [B, 3], fraction of the frame
    triplet, classification = area[labels < 0], area[labels >= 0]
    assert triplet.min() > 0.72 and triplet.max() < 1.03, triplet
    assert classification.min() > 0.06 and (classification < 0.5).mean() > 0.2, classification
    # Without `classification_crop_scale` every sample uses `crop_scale`.
    inputs, labels = _one_batch(samples)
    frames = np.concatenate([inputs[k] for k in tr.INPUT_KEYS], axis=1)
    assert (span(0) * span(1) / (15 / 16) ** 2).min() > 0.72


def test_classification_frames_get_the_charades_colour_jitter(tmp_path):
    """ColorJitter(0.4, 0.4, 0.4) on the classification frames only. On a uniform grey frame of value v contrast and
    saturation change nothing and brightness multiplies by b ~ U[0.6, 1.4]: the output is the uniform v * b."""
    from kerasvid.tasks.actor_observer import DEFAULTS

    assert DEFAULTS["charades_crop_scale"] == (0.08, 1.0) and DEFAULTS["charades_color_jitter"] == 0.4
    assert DEFAULTS["crop_scale"] == (0.8, 1.0)
    v = 100
    path = str(tmp_path / "grey.jpg")
    _write_jpeg(path, np.full((32, 32, 3), v, np.uint8))
    samples = [tr.Sample(path, path, path, 0) for _ in range(16)] + [tr.Sample(path, path, path, 1, 5)] * 16
    inputs, labels = _one_batch(samples, classification_crop_scale=(0.08, 1.0), classification_color_jitter=0.4)
    frames = np.stack([inputs[k] for k in tr.INPUT_KEYS], axis=1) * 255.0  # [B, 3, 1, 16, 16, 3]
    np.testing.assert_allclose(frames[labels < 0], v, atol=0.5)  # triplets: no jitter
    jittered = frames[labels >= 0].reshape(16 * 3, -1)
    assert np.ptp(jittered, axis=1).max() < 0.5  # still uniform grey
    factors = jittered[:, 0] / v
    assert factors.min() >= 0.6 - 1e-3 and factors.max() <= 1.4 + 1e-3, factors
    assert factors.std() > 0.15 and np.abs(factors - 1).max() > 0.25  # U[0.6, 1.4] has std 0.23
