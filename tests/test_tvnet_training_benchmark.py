"""benchmarks/tvnet_training.py: its ground truth is right, and --smoke runs end to end and reports every method."""
import inspect
import json
import os
import sys

import numpy as np
import pytest
import scipy.ndimage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import tvnet_training  # noqa: E402


def test_synthetic_pairs_are_warps_by_their_flow():
    (first, second, flow, name), = tvnet_training.synthetic_pairs(["camera"], 1, 34, 4, 3.0, seed=5)
    assert name == "camera" and first.shape == second.shape == (34, 34) and flow.shape == (34, 34, 2)
    assert 0.3 < np.abs(flow).max() <= 3.0
    # frame1(x) = frame2(x + flow), by scipy's bilinear interpolation, where x + flow stays inside the crop
    inner = np.s_[5:29, 5:29]
    yy, xx = np.mgrid[5:29, 5:29].astype(np.float64)
    expected = scipy.ndimage.map_coordinates(second.astype(np.float64), [yy + flow[inner][..., 1],
                                                                        xx + flow[inner][..., 0]], order=1)
    np.testing.assert_allclose(first[inner], expected, atol=1e-3)
    assert np.abs(first[inner] - second[inner]).mean() > 1.0  # the frames do differ


def test_epe_ignores_unknown_flow():
    truth = np.zeros((1, 2, 2, 2), np.float32)
    truth[0, 0, 0] = np.nan
    flow = np.zeros_like(truth)
    flow[0, 0, 0] = 100.0  # unknown there: not counted
    flow[0, 1, 1] = (3.0, 4.0)
    np.testing.assert_allclose(tvnet_training.epe(flow, truth), [5.0 / 3.0])


@pytest.mark.large
def test_smoke_run_reports_every_method(tmp_path):
    rows = tvnet_training.main(["--smoke", "--out_dir", str(tmp_path), "--opencv_python", ""])
    report = json.load(open(tmp_path / "tvnet_training_smoke.json"))
    assert report["config"]["smoke"] and report["config"]["train_pairs"] == 1
    assert report["config"]["held_out_pairs"] == 1
    methods = [r["method"] for r in report["rows"]]
    assert methods == ["TVNet 1/1/3 untrained (= TV-L1)", "TVNet 1/1/3 trained, unsupervised tvl1_energy",
                       "TVNet 1/1/3 trained, supervised EndpointError", "scikit-image optical_flow_tvl1 (defaults)"]
    for r in rows:
        assert np.isfinite(r["held_out_epe"]) and np.isfinite(r["train_epe"]) and r["held_out_epe"] > 0
    trained = [r for r in rows if "trained," in r["method"]]
    assert all(np.isfinite(r["first_loss"]) and np.isfinite(r["last_loss"]) for r in trained)
    assert "| scikit-image optical_flow_tvl1 (defaults) |" in open(tmp_path / "tvnet_training_smoke.md").read()


@pytest.mark.large
def test_tvnet_options_reach_the_layer_and_name_the_rows(tmp_path, monkeypatch):
    from kerasvid.layers import tvnet  # main imports TVNet from here when it runs

    built = []

    class Spy(tvnet.TVNet):
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__(**kwargs)

    Spy.__init__.__signature__ = inspect.signature(tvnet.TVNet.__init__)  # the script reads the defaults from it
    monkeypatch.setattr(tvnet, "TVNet", Spy)
    rows = tvnet_training.main(["--smoke", "--out_dir", str(tmp_path), "--peers", "false", "--pyramid", "cascade",
                                "--presmoothing", "false", "--warp_interpolation", "bicubic", "--warp_padding",
                                "zeros"])
    options = {"pyramid": "cascade", "presmoothing": False, "warp_interpolation": "bicubic", "warp_padding": "zeros"}
    assert built and all(kwargs.items() >= options.items() for kwargs in built)
    label = ("TVNet 1/1/3, pyramid='cascade', presmoothing=False, warp_interpolation='bicubic', "
             "warp_padding='zeros'")
    assert [r["method"] for r in rows] == [f"{label} untrained (= TV-L1)", f"{label} trained, unsupervised "
                                           "tvl1_energy", f"{label} trained, supervised EndpointError"]
    assert json.load(open(tmp_path / "tvnet_training_smoke.json"))["config"]["tvnet_options"]["pyramid"] == "cascade"
