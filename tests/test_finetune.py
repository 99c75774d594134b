"""docs/own_videos.md "Fine-tune a pretrained model": its block, parsed from the page and run as it is, on the records of the
"Your own videos" block (its setup and conversion lines), starting from a locally written stand-in for
pretrainedmodels' BN-Inception file (`reference_weights.py`'s weights, as `.safetensors` content under the published
file name) in `$KERAS_HOME/models/`."""
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from kerasvid.weights import torch_files
from tests.test_bn_inception_torch import _reference_weights
from tests.helpers import doc_block
from tests.test_own_videos import REPO, readme_commands

pytestmark = pytest.mark.large  # the README block's training runs: minutes on 2 cores


def _block(name):
    block = doc_block(name)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]


def test_readme_finetune_block_runs(tmp_path, monkeypatch):
    setup = readme_commands()[:5]  # copy the mp4s, write the lists, convert both splits
    assert [c.split()[:2] for c in setup[3:]] == [["kerasvid", "convert"]] * 2
    commands = _block("finetune")
    assert all(c.startswith("python train/main.py --flagfile=zoo/bn_inception_finetune.flags") for c in commands)
    for link in ("train", "zoo"):
        os.symlink(os.path.join(REPO, link), tmp_path / link)
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "keras" / "models"
    models.mkdir(parents=True)
    ref = _reference_weights()
    keys = ref.read_keys(os.path.join(REPO, "tests", "fixtures", "torch_reference", "keys_bninception.txt"))
    torch_files.write_safetensors(models / "bn_inception-52deb4733.pth", ref.make_state_dict(keys))
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras"),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for command in setup + commands:
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{command}\n{(proc.stdout + proc.stderr)[-3000:]}"
    assert tf.train.latest_checkpoint("runs/finetuned").endswith("-2")  # 1 epoch of 3 videos in batches of 2
    assert json.loads((tmp_path / "runs" / "finetuned" / "eval_results.json").read_text())["num_examples"] == 2
    settings = json.loads((tmp_path / "runs" / "finetuned" / "export" / "preprocessing.json").read_text())
    assert (settings["model"], settings["normalization"], settings["num_classes"]) == ("bn_inception", "bn_inception", 3)
