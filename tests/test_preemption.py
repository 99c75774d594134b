"""Faults at scale, on the toy task through a real `train/main.py` process (tests/training_toy.py):
SIGTERM saves a checkpoint and exits 143, and the rerun resumes bit-identically; an unwritable `--model_dir` fails
with a clear error and leaves the last checkpoint intact."""
import os
import re
import signal
import subprocess
import time

import pytest

from tests.training_toy import toy_main_argv

pytestmark = pytest.mark.large  # train/main.py runs in subprocesses: minutes on 2 cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO)


def _digest(text):
    found = re.findall(r"weights_sha256=([0-9a-f]{64}) step=(\d+)", text)
    assert found, text[-3000:]
    return found[-1]


def _wait_for_checkpoint(model_dir, proc, timeout=240):
    state = os.path.join(model_dir, "checkpoint")
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(state) and "ckpt-" in open(state).read():
            return
        time.sleep(0.02)


def test_sigterm_saves_exits_143_and_the_rerun_resumes_bit_identically(tmp_path):
    args = ["--train_steps=600", "--checkpoint_every=50", "--log_every=50"]
    reference = subprocess.Popen(toy_main_argv(tmp_path / "reference", *args), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    cmd = toy_main_argv(tmp_path / "run", *args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    _wait_for_checkpoint(tmp_path / "run", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, (proc.returncode, err[-3000:])
    found = re.search(r"preempted: Stopped by SIGTERM after step (\d+); saved (\S+)\.", err)
    assert found, err[-3000:]
    step, path = int(found.group(1)), found.group(2)
    assert 50 <= step < 600 and path.endswith(f"ckpt-{step}") and os.path.exists(path + ".index")
    assert "Traceback" not in err and "weights_sha256" not in out
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored {path}" in resumed.stderr
    ref_out, ref_err = reference.communicate(timeout=240)
    assert reference.returncode == 0, ref_err[-3000:]
    assert _digest(resumed.stdout) == _digest(ref_out)  # bit-identical weights at step 600


def _files(directory):
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, name))}


def test_a_checkpoint_that_cannot_be_written_fails_clearly_and_keeps_the_last_one(tmp_path):
    # A regular file where TensorFlow writes its temporary shard directory: the save fails the way a full or
    # read-only disk makes it fail, also for root (whom chmod does not stop).
    import keras

    from kerasvid.training import CheckpointWriteError, TrainConfig, Trainer, get_strategy
    from tests.training_toy import ToyTask, toy_config

    def trainer(steps):
        keras.utils.set_random_seed(0)
        return Trainer(ToyTask(toy_config()), get_strategy("default"), str(tmp_path),
                       TrainConfig(train_steps=steps, checkpoint_every=2, log_every=2))

    trainer(2).train()
    (tmp_path / "ckpt-4_temp").write_text("")
    before = _files(tmp_path)
    with pytest.raises(CheckpointWriteError, match=r"Cannot write the checkpoint of step 4 to .*Not a directory\. "
                                                   r"The earlier checkpoints are intact \(latest: .*ckpt-2\)"):
        trainer(4).train()
    after = _files(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # ckpt-2 and the index untouched
    assert not [name for name in after if name.startswith("ckpt-4.")]


def test_read_only_model_dir_is_refused_before_any_work(tmp_path):
    from absl import app, flags
    from absl.testing import flagsaver

    from kerasvid import train_cli as main
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "ckpt-2.index").write_bytes(b"kept")
    os.chmod(model_dir, 0o555)
    try:
        try:
            (model_dir / "probe").write_text("")
            os.remove(model_dir / "probe")
            pytest.skip("chmod 555 does not stop this user (root) from writing; "
                        "test_a_checkpoint_that_cannot_be_written_* covers the failing write")
        except PermissionError:
            pass
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["main.py", f"--model_dir={model_dir}", "--train_steps=5", "--num_classes=2",
                         "--mode=export"])
            with pytest.raises(app.UsageError, match=r"--model_dir='.*run' is not writable \(Permission denied"):
                main.build_configs(["export"])
        assert sorted(os.listdir(model_dir)) == ["ckpt-2.index"]
        assert (model_dir / "ckpt-2.index").read_bytes() == b"kept"
    finally:
        os.chmod(model_dir, 0o755)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_workers(model_dir, *args):
    import json

    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    procs = []
    for index in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(toy_main_argv(model_dir, "--strategy=multi_worker", *args),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO))
    return procs


def test_multi_worker_sigkill_survivor_exits_clearly_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    args = ["--train_steps=400", "--checkpoint_every=50", "--log_every=50"]
    run_dir = tmp_path / "run"
    chief, worker = _start_workers(run_dir, *args)
    _wait_for_checkpoint(run_dir, chief)
    worker.send_signal(signal.SIGKILL)
    killed_at = time.time()
    out, err = chief.communicate(timeout=120)
    worker.communicate()
    waited = time.time() - killed_at
    assert chief.returncode == 5, (chief.returncode, err[-3000:])
    last_line = err.strip().splitlines()[-1]
    assert re.match(r"error: Another worker of this multi-worker run failed or stopped answering at step \d+ .*"
                    r"Restart every worker with the same command to resume from the last checkpoint "
                    r"\(.*ckpt-\d+\)\.$", last_line), last_line
    print(f"the survivor exited {waited:.1f}s after the SIGKILL")
    assert waited < 60
    # Rerun both (and, at the same time, an uninterrupted pair): the resumed weights equal the uninterrupted ones.
    rerun = _start_workers(run_dir, *args)
    reference = _start_workers(tmp_path / "reference", *args)
    results = [p.communicate(timeout=400) for p in rerun + reference]
    for p, (_, err) in zip(rerun + reference, results):
        assert p.returncode == 0, err[-3000:]
    assert "Restored" in results[0][1] and "Restored" in results[1][1]
    digests = [_digest(out) for out, _ in results]
    assert digests[0] == digests[1] == digests[2] == digests[3]
    assert digests[0][1] == "400"
    # Only the chief writes into the model directory: the other worker's checkpoints went to a temporary directory.
    assert {name for name in os.listdir(run_dir) if name.startswith("ckpt-")} <= {
        f"ckpt-{s}.{ext}" for s in range(0, 401, 50) for ext in ("index", "data-00000-of-00001")}
