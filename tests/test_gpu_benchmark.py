"""benchmarks/gpu.py --smoke: the GPU suite runs end to end on the CPU at tiny sizes and reports every figure."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.large
def test_gpu_suite_smoke(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu.py"), "--smoke", "--out_dir",
                    str(tmp_path)], check=True, env=env, capture_output=True, text=True, timeout=600)
    report = json.load(open(tmp_path / "gpu_smoke.json"))
    rows = report["rows"]
    assert report["smoke"] and report["device"] == "CPU:0"
    figures = [r["figure"] for r in rows]
    assert figures.count("cpnet_resnet34 inference") == 1 and figures.count("training step") == 3
    assert figures.count("input pipeline") == 1
    assert {r["model"] for r in rows if r["figure"] == "training step"} == {"c2d_resnet18", "cpnet_resnet18",
                                                                            "nl_resnet18"}
    for r in rows[:-1]:  # all but the cp_knn agreement row carry a speed
        values = [v for k, v in r.items() if k.endswith(("_per_s", "step_s")) and v is not None]
        assert values and all(v > 0 for v in values), r
    assert [r["time_vs_c2d"] for r in rows if r.get("model") == "c2d_resnet18"] == [1.0]
    folding = {r["variant"]: r for r in rows if r["figure"] == "frame folding"}
    assert set(folding) == {"conv3d", "folded"}  # XLA only in the full run
    assert all(r["inference_s"] > 0 and r["max_logit_difference"] < 1e-3 for r in folding.values())
    knn = [r for r in rows if r["figure"].startswith("cp_knn")][0]
    assert 0.0 <= knn["same_neighbour_sets"] <= 1.0
    assert "| training step |" in open(tmp_path / "gpu_smoke.md").read()


def test_tf32_round_keeps_10_mantissa_bits():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from gpu import tf32_round

    x = np.array([1.0, 1.0 + 2.0 ** -10, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -12, -3.0 - 2.0 ** -9],
                 np.float32)
    # halfway cases go to the even mantissa: 1 + 2^-11 -> 1, 1 + 3 * 2^-11 -> 1 + 2^-9
    np.testing.assert_array_equal(tf32_round(x), [1.0, 1.0 + 2.0 ** -10, 1.0, 1.0 + 2.0 ** -9, 1.0, -3.0 - 2.0 ** -9])
