"""Quiet commands (`kerasvid._quiet`): TensorFlow's loading notices (oneDNN, CUDA probing on a machine without a GPU)
are dropped by every command, and every other line, each `error: ...` line above all, still arrives."""
import os
import re
import subprocess
import sys

import pytest

from kerasvid import _quiet
from tests.helpers import write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTICE = re.compile(r"cuInit|I0000|E0000|oneDNN|absl::InitializeLog|cpu_feature_guard|cuda drivers")


def _run(args, cwd, level=None):
    """`python args` as a user runs it: TF_CPP_MIN_LOG_LEVEL unset (`level=None`) or set to `level`."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _notices(stderr):
    return [line for line in stderr.splitlines() if NOTICE.search(line)]


def test_quiet_stderr_drops_the_notices_and_writes_back_every_other_line(capfd):
    lines = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
             b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see slightly different\n",
             b"a real warning\n",
             b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
             b"error: a real error\n"]
    with _quiet.quiet_stderr():
        for line in lines:
            os.write(2, line)
    assert capfd.readouterr().err == "a real warning\nerror: a real error\n"
    with pytest.raises(ZeroDivisionError):  # what the block wrote before it raised still arrives
        with _quiet.quiet_stderr():
            os.write(2, lines[1] + lines[2])
            1 / 0
    assert capfd.readouterr().err == "a real warning\n"


def test_predict_prints_its_error_without_tensorflow_notices(tmp_path):
    """`kerasvid predict` on a folder that is not an export: TensorFlow is loaded, then the one error line."""
    video = write_video(tmp_path / "a.mp4", 4)
    result = _run(["-m", "kerasvid.cli", "predict", "--saved_model", str(tmp_path), video], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert _notices(result.stderr) == [], result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"kerasvid predict: error: --saved_model={str(tmp_path)!r} is not a kerasvid export (no saved_model.pb "
        "or preprocessing.json; write one with train/main.py --mode=export)."]


@pytest.mark.large
def test_zoo_table_and_convert_print_no_tensorflow_notices(tmp_path):
    table = _run(["-m", "kerasvid.zoo"], tmp_path)
    assert table.returncode == 0 and table.stdout.startswith("model "), table.stderr[-3000:]
    assert "`cpnet_resnet18`" in table.stdout and table.stderr == ""
    write_video(tmp_path / "a.mp4", 6)
    (tmp_path / "list.txt").write_text("a.mp4 grey\n")
    args = ["-m", "kerasvid.cli", "convert", "--format", "list", "--labels", "list.txt", "--input_dir", ".",
            "--num_shards", "1", "--no_progress", "--output_dir"]
    converted = _run([*args, "out"], tmp_path, level="2")  # as CI sets it (.ci/run): dropped there too
    assert converted.returncode == 0 and '"num_videos": 1' in converted.stdout, converted.stderr[-3000:]
    assert converted.stderr == ""
    assert os.path.exists(tmp_path / "out" / "manifest.json")
    refused = _run([*args, "out", "--fps", "3"], tmp_path)  # a rerun with other settings: TensorFlow is loaded
    assert refused.returncode == 2 and _notices(refused.stderr) == [], refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("kerasvid convert: error: ") and "other settings" in errors[0]
