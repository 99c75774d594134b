"""A CPNet and a TVNet model trained by `train/main.py` survive their own checkpoints (subprocess runs).

For each: the finished run, rerun with the same command (which restores and only re-evaluates and re-exports),
prints the same `weights_sha256` and the same evaluation, and its export (made from the checkpoint) serves the
same numbers as the export made from the model in memory; a run stopped by SIGTERM and resumed ends with the same
weights as the uninterrupted run. Then what must never happen to the user's files: an export into a folder that is
not a kerasvid export, a second trainer on the same model_dir, a resume with another model or label map, and a
`--checkpoint` of another program are refused with one line, and nothing is deleted or rewritten.
"""
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.large  # train/main.py runs in subprocesses: minutes on 2 cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, "train", "main.py")
ENV = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
# At 32x32 BN-Inception's last maps are 1x1: at batch 2 its BatchNorms average 2 values and the gradients explode
# (the trainer warns and --max_weight stops such a run), so the TVNet model trains at a small learning rate; its
# TVNet kernels still move, which is what the checkpoint must keep.
MODELS = {
    "cpnet_resnet18": ["--model_kwargs=stem_stride=2,k=2", "--num_frames=4", "--stride=2", "--learning_rate=0.001"],
    "tvnet_bn_inception": ["--model_kwargs=tvnet_iterations=3,dropout_rate=0.0", "--num_frames=3", "--stride=1",
                           "--normalization=none", "--learning_rate=0.00001"],
}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from kerasvid.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("records")
    kw = dict(num_classes=2, num_frames=8, height=32, width=32, num_shards=1)
    return (write_synthetic_dataset(str(root), "train", num_videos=16, seed=0, **kw),
            write_synthetic_dataset(str(root), "heldout", num_videos=4, seed=1, **kw))


def _command(records, model, model_dir, *extra):
    train, heldout = records
    return [sys.executable, MAIN, f"--model={model}", *MODELS[model], f"--train_pattern={train}",
            f"--eval_pattern={heldout}", "--image_size=32,32", "--batch_size=2", "--eval_batch_size=2",
            "--train_steps=6", "--log_every=2", "--checkpoint_every=2", "--deterministic",
            "--data_kwargs=flip=False", f"--model_dir={model_dir}", *extra]


def _run(cmd, code=0):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=ENV, cwd=REPO)
    assert result.returncode == code, result.stderr[-4000:]
    return result


def _digest(stdout):
    found = re.findall(r"weights_sha256=([0-9a-f]{64}) step=(\d+)", stdout)
    assert found, stdout[-2000:]
    return found[-1]


def _serve(export_dir, frames):
    import tensorflow as tf

    out = tf.saved_model.load(export_dir).signatures["serving_default"](frames=tf.constant(frames))
    return {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def first_runs(records, tmp_path_factory):
    """`first_runs(model)`: the finished run of `model` (train + eval + export, 6 steps), made once per module:
    (its model_dir, its output, its eval_results.json, a copy of the export it made from the model in memory)."""
    done = {}

    def first_run(model):
        if model not in done:
            root = tmp_path_factory.mktemp(f"first_{model}")
            result = _run(_command(records, model, root / "run", "--mode=train_and_eval,export"))
            shutil.copytree(root / "run" / "export", root / "export_in_memory")
            done[model] = (root / "run", result, json.load(open(root / "run" / "eval_results.json")),
                           root / "export_in_memory")
        return done[model]
    return first_run


def _sigterm_then_resume(cmd, model_dir):
    """SIGTERM after the first checkpoint, then the same command: (the stopped run's exit code and stderr, the
    resumed run)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    state, deadline = model_dir / "checkpoint", time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (state.exists() and "ckpt-" in state.read_text()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err, (_run(cmd) if proc.returncode == 143 else None)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_trained_model_survives_its_checkpoint(records, first_runs, model, tmp_path):
    # The interrupted run (SIGTERM, resume) runs beside the uninterrupted one and its rerun: each process uses about
    # one core, and the two chains share nothing but the records.
    stopped = tmp_path / "stopped"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        interrupted = pool.submit(_sigterm_then_resume, _command(records, model, stopped, "--mode=train"), stopped)
        run, first, first_eval, export_in_memory = first_runs(model)
        # The finished run, rerun: restores the checkpoint, re-evaluates, re-exports.
        again = _run(_command(records, model, run, "--mode=train_and_eval,export"))
        code, err, resumed = interrupted.result()
    assert _digest(again.stdout) == _digest(first.stdout)
    again_eval = json.load(open(run / "eval_results.json"))
    assert again_eval == first_eval and again_eval["step"] == 6
    frames = np.random.default_rng(0).integers(0, 256, (2, int(MODELS[model][1].split("=")[1]), 32, 32, 3), np.uint8)
    served, expected = _serve(str(run / "export"), frames), _serve(str(export_in_memory), frames)
    for key in expected:
        np.testing.assert_array_equal(served[key], expected[key], err_msg=key)
    assert not [n for n in os.listdir(run) if n.startswith(".export.")]  # the replaced export is gone

    # SIGTERM after the first checkpoint, then the same command: the weights of the uninterrupted run.
    assert code == 143, ("the run was not stopped by SIGTERM", code, err[-2000:])
    assert "Restored" in resumed.stderr
    assert _digest(resumed.stdout) == _digest(first.stdout)


def _tree(directory):
    """Every file under `directory` with its bytes."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            if name == ".kerasvid.lock":  # names its last holder: rewritten by every command, by design
                continue
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = open(path, "rb").read()
    return found


@pytest.fixture(scope="module")
def finished_run(first_runs):
    """A finished CPNet run (train + eval + export) whose files the refusal tests check are left alone."""
    return first_runs("cpnet_resnet18")[0]


def _refused(cmd, message, *untouched):
    before = [_tree(d) for d in untouched]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for d, tree in zip(untouched, before):
        assert _tree(d) == tree, f"{d} changed"


def test_export_never_replaces_a_folder_it_did_not_write(records, finished_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes\n")
    base = _command(records, "cpnet_resnet18", finished_run, "--mode=export", "--train_steps=2")
    _refused(base + [f"--export_dir={mine}"], r"Refusing to replace .*mine.*: it holds 'notes.txt'", mine,
             finished_run)
    _refused(base + [f"--export_dir={finished_run}"], r"Refusing to replace .*it holds", finished_run)


def test_a_resume_with_other_settings_is_refused_and_changes_nothing(records, finished_run):
    c2d = _command(records, "cpnet_resnet18", finished_run, "--mode=train", "--train_steps=4")
    c2d[c2d.index("--model=cpnet_resnet18")] = "--model=c2d_resnet18"
    c2d.remove("--model_kwargs=stem_stride=2,k=2")
    _refused(c2d, r"holds a run with model='cpnet_resnet18', this command has model='c2d_resnet18'", finished_run)


def test_a_foreign_checkpoint_is_refused(records, finished_run, tmp_path):
    import tensorflow as tf

    foreign = tf.train.Checkpoint(counter=tf.Variable(1.0)).write(str(tmp_path / "foreign" / "ckpt"))
    export_dir = tmp_path / "out"
    base = _command(records, "cpnet_resnet18", finished_run, "--mode=export", "--train_steps=2",
                    f"--export_dir={export_dir}")
    _refused(base + [f"--checkpoint={foreign}"], r"is not a checkpoint of the model: \d+ of \d+ model variables",
             finished_run)
    assert not export_dir.exists()


def test_a_second_trainer_on_one_model_dir_is_refused(records, tmp_path):
    run = tmp_path / "run"
    cmd = _command(records, "cpnet_resnet18", run, "--mode=train", "--train_steps=400", "--checkpoint_every=400")
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=ENV, cwd=REPO)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (run / "run_config.json").exists():
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
        assert second.returncode == 2, second.stderr[-2000:]
        assert re.search(r"error: .*run' is in use by .*pid %d" % proc.pid, second.stderr), second.stderr[-2000:]
    finally:
        proc.kill()
        proc.wait()
        log.close()
    from kerasvid import _locks

    _locks.DirectoryLock(str(run), "test").acquire().release()  # the lock died with its process (kill -9)
