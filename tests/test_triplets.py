"""Tests for kerasvid.data.triplets: Charades CSV parsing and the actor-observer triplet sampling."""
import io
import os

import numpy as np
import pytest

from kerasvid.data import triplets as tr

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
    return [j for j in range(m) if abs(j - pos) >= gap]


def test_triplet_frames_follow_the_sampling_rule():
    n, m, gap = 100, 50, 10
    got = tr.sample_triplet_frames(n, m, np.random.default_rng(0), anchor_stride=4, min_gap=gap)
    np.testing.assert_array_equal(got[:, 0], np.arange(0, 100, 4))  # every anchor has a negative here
    np.testing.assert_array_equal(got[:, 1], [round(i * 49 / 99) for i in range(0, 100, 4)])
    for third, pos, neg in got:
        assert neg in _brute_force_valid(pos, m, gap)
    # Anchors whose positive has no frame >= gap away are skipped: m = 12, gap = 7 leaves only ends of the video.
    got = tr.sample_triplet_frames(12, 12, np.random.default_rng(0), anchor_stride=1, min_gap=7)
    kept = [i for i in range(12) if _brute_force_valid(i, 12, 7)]
    np.testing.assert_array_equal(got[:, 0], kept)
    assert kept == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    # 8 s paired videos at 24 fps have no negative 10 s away: no triplet at all.
    assert tr.sample_triplet_frames(192, 192, np.random.default_rng(0), min_gap=240).shape == (0, 3)


def test_negatives_are_uniform_over_the_valid_frames():
    rng = np.random.default_rng(1)
    draws = np.concatenate([tr.sample_triplet_frames(2, 30, rng, anchor_stride=2, min_gap=8)[:, 2]
                            for _ in range(3000)])  # anchor 0 -> positive 0: valid frames 8..29
    counts = np.bincount(draws, minlength=30)
    assert counts[:8].sum() == 0
    expected = 3000 / 22
    assert np.all(np.abs(counts[8:] - expected) < 5 * np.sqrt(expected))
    # Both sides of a positive in the middle are used.
    draws = np.concatenate([tr.sample_triplet_frames(3, 31, rng, anchor_stride=1, min_gap=10)[1:2, 2]
                            for _ in range(400)])  # anchor 1 -> positive 15: valid 0..5 and 25..30
    assert set(draws) == set(range(0, 6)) | set(range(25, 31))


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
    with pytest.raises(ValueError, match="min_gap=0"):
        tr.sample_triplet_frames(10, 10, np.random.default_rng(0), min_gap=0)
