"""Tests of train/main.py: flag validation before any work, the recipes, and end-to-end runs in subprocesses
(train + eval + export + predictions; SIGKILL and resume == uninterrupted; mirrored over 2 logical CPUs;
multi_worker as two processes on 127.0.0.1 with identical weights and chief-only outputs)."""
import concurrent.futures
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from absl import app, flags
from absl.testing import flagsaver

from kerasvid import train_cli as main  # train/main.py's command (its absl flags are global)
from tests.helpers import doc_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, "train", "main.py")
FLAGS = flags.FLAGS
MY_RECIPES = ["c2d_resnet18_kinetics", "c3d_resnet18_kinetics", "cpnet_resnet18_kinetics", "nl_resnet18_kinetics",
              "cpnet_resnet101_kinetics", "cpnet_resnet34_jester", "cpnet_resnet34_ssv2", "tvnet_bn_inception_ucf101"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from kerasvid.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("records")
    kw = dict(num_classes=2, num_frames=8, height=32, width=32, num_shards=2)
    train = write_synthetic_dataset(str(root), "train", num_videos=24, seed=0, **kw)
    heldout = write_synthetic_dataset(str(root), "heldout", num_videos=8, seed=1, **kw)
    return train, heldout


def _parse(*args):
    FLAGS.unparse_flags()
    FLAGS(["main.py", *args])


@pytest.mark.parametrize("args, message", [
    (["--model=c2d_resnet19"], r"Unknown model name 'c2d_resnet19'\. Did you mean: c2d_resnet18"),
    (["--train_pattern=/nonexistent/train-*", "--train_steps=5"],
     r"--train_pattern='/nonexistent/train-\*' matches no file"),
    (["--train_steps=5", "--train_epochs=2"], "Set exactly one of --train_steps and --train_epochs"),
    (["--strategy=mirrored", "--jit_compile", "--train_steps=5"], "jit_compile=True with strategy='mirrored'"),
    (["--model_kwargs=k=", "--train_steps=5"], "--model_kwargs='k=' is not a list of key=value"),
    (["--strategy=multi_worker", "--train_steps=5"], "TF_CONFIG"),
    (["--learning_rate=-1", "--train_steps=5"], "base_lr"),
    (["--label_smoothing=1.5", "--train_steps=5"], "label_smoothing"),
])
def test_bad_flags_fail_before_any_work(records, tmp_path, args, message):
    train, heldout = records
    labels = os.path.join(os.path.dirname(train), "labels.txt")
    base = [f"--model_dir={tmp_path / 'run'}", f"--train_pattern={train}", f"--eval_pattern={heldout}",
            f"--labels_file={labels}"]
    with flagsaver.flagsaver():
        _parse(*base, *args)
        os.environ.pop("TF_CONFIG", None)
        with pytest.raises(app.UsageError, match=message):
            main.build_configs(["train_and_eval"])
    assert not os.path.exists(tmp_path / "run")  # nothing was written


def test_unknown_number_of_classes_is_an_error(records, tmp_path):
    import shutil

    shard = sorted(os.listdir(os.path.dirname(records[0])))[-1]
    shutil.copy(os.path.join(os.path.dirname(records[0]), shard), tmp_path / "train-00000-of-00001.tfrecord")
    with flagsaver.flagsaver():
        _parse(f"--model_dir={tmp_path / 'run'}", f"--train_pattern={tmp_path}/train-*", "--mode=train",
               "--train_steps=5")
        with pytest.raises(app.UsageError, match="number of classes is unknown"):
            main.build_configs(["train"])


def test_parse_kwargs():
    assert main.parse_kwargs("k=12, variant=released_code, scale=(0.5, 1.0), m={1: 2}", "x") == {
        "k": 12, "variant": "released_code", "scale": (0.5, 1.0), "m": {1: 2}}
    assert main.parse_kwargs("", "x") == {}
    with pytest.raises(app.UsageError, match="--x='12'"):
        main.parse_kwargs("12", "x")


@pytest.mark.parametrize("recipe", MY_RECIPES)
def test_recipes_are_valid_up_to_their_data(recipe, tmp_path):
    path = os.path.join(REPO, "zoo", f"{recipe}.flags")
    with open(path) as f:
        header = f.readline()
    assert header.startswith("# ") and "Data layout" in open(path).read()
    with flagsaver.flagsaver():
        _parse(f"--flagfile={path}", f"--model_dir={tmp_path}", "--num_classes=10")
        assert recipe.split("_")[0] in FLAGS.model  # self-describing names
        with pytest.raises(app.UsageError, match=r"--train_pattern='/data/.*' matches no file"):
            main.build_configs(list(FLAGS.mode))


# Every other recipe of zoo/ (the actor-observer and action-context ones): its flags parse, and the run stops only
# at its missing data (a renamed or removed flag in a recipe fails here).
OTHER_RECIPES = sorted({name[:-len(".flags")] for name in os.listdir(os.path.join(REPO, "zoo"))
                        if name.endswith(".flags")} - set(MY_RECIPES) - {"quickstart"})


def test_other_recipes_are_found():
    assert {"actor_observer_alignment_zeroshot", "actor_observer_third_to_first", "i3d_action_context"} <= set(
        OTHER_RECIPES)


@pytest.mark.parametrize("recipe", OTHER_RECIPES)
def test_other_recipes_are_valid_up_to_their_data(recipe, tmp_path):
    path = os.path.join(REPO, "zoo", f"{recipe}.flags")
    with open(path) as f:
        assert f.readline().startswith("# ")
    with flagsaver.flagsaver():
        _parse(f"--flagfile={path}", f"--model_dir={tmp_path}", "--num_classes=10")
        assert recipe.split("_")[0] in FLAGS.model
        with pytest.raises(app.UsageError, match=r"'data/.*' (does not exist|matches no file)"):
            main.build_configs(list(FLAGS.mode))


def test_quickstart_flagfile_is_valid():
    with flagsaver.flagsaver():
        _parse(f"--flagfile={os.path.join(REPO, 'zoo', 'quickstart.flags')}")
        assert FLAGS.synthetic and FLAGS.mode == ["train_and_eval", "export"] and FLAGS.predict_examples > 0
        from kerasvid import zoo

        assert zoo.model_info(FLAGS.model).name == FLAGS.model
        assert FLAGS.model_dir == "runs/quickstart"


# ----- end-to-end runs (subprocesses) -------------------------------------------------------------------------------
def _command(records, model_dir, *extra):
    train, heldout = records
    return [sys.executable, MAIN, "--model=c2d_resnet18", "--model_kwargs=stem_stride=2", f"--train_pattern={train}",
            f"--eval_pattern={heldout}", "--num_frames=2", "--stride=2", "--image_size=32,32", "--batch_size=4",
            "--eval_batch_size=4", "--train_steps=6", "--log_every=2", "--checkpoint_every=2", "--learning_rate=0.01",
            "--deterministic", "--data_kwargs=flip=False", f"--model_dir={model_dir}", *extra]


def _run(cmd, env=None, timeout=300):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _digest(stdout):
    found = re.findall(r"weights_sha256=([0-9a-f]{64}) step=(\d+)", stdout)
    assert found, stdout[-2000:]
    return found[-1]


def _sigkill_then_resume(cmd, model_dir):
    """SIGKILL once ckpt-2 is complete, then the same command: (the killed run's exit code, whether ckpt-6 was
    written before the kill, the resumed run)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.time() + 240
    state = model_dir / "checkpoint"  # written after the checkpoint files: ckpt-2 is then complete and restorable
    while not (state.exists() and "ckpt-2" in state.read_text()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = os.path.exists(model_dir / "ckpt-6.index")
    return proc.returncode, finished, (_run(cmd) if proc.returncode == -signal.SIGKILL else None)


@pytest.fixture(scope="module")
def runs(records, tmp_path_factory):
    """The module's independent train/main.py runs, started at once and run two at a time (each process uses about
    one core of the 2): {name: (model_dir, future of the result)}. A test waits only for its own."""
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("reference", "sigkill", "mirrored")}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield {
            "reference": (dirs["reference"], pool.submit(_run, _command(
                records, dirs["reference"], "--mode=train_and_eval,export", "--predict_examples=2", "--pictures"))),
            "sigkill": (dirs["sigkill"], pool.submit(_sigkill_then_resume, _command(
                records, dirs["sigkill"], "--mode=train"), dirs["sigkill"])),
            "mirrored": (dirs["mirrored"], pool.submit(_run, _command(
                records, dirs["mirrored"], "--strategy=mirrored", "--cpu_devices=2", "--mode=train_and_eval",
                "--bn_recalibration_batches=2"))),
        }


@pytest.fixture(scope="module")
def reference_run(runs):
    model_dir, result = runs["reference"]
    return model_dir, result.result()


@pytest.mark.large
def test_train_eval_export_and_predict(reference_run):
    model_dir, result = reference_run
    with open(model_dir / "eval_results.json") as f:
        results = json.load(f)
    assert results["step"] == 6 and results["num_examples"] == 8
    assert {"top1", "top5", "confusion_matrix"} <= set(results)
    assert os.path.exists(model_dir / "export" / "saved_model.pb")
    assert os.path.exists(model_dir / "export" / "labels.txt")
    assert result.stdout.count("predicted=") == 2 and "serve_examples" in result.stdout
    assert _digest(result.stdout)[1] == "6"
    assert os.listdir(model_dir / "train")  # TensorBoard events
    assert os.path.getsize(model_dir / "training_curve.png") > 0  # --pictures (no CP module: no correspondences)
    last = result.stdout.strip().splitlines()
    assert last[-3].startswith("The SavedModel is in") and "training_curve.png" in last[-2], last[-6:]
    assert f"kerasvid predict --saved_model {model_dir / 'export'}" in result.stdout
    best = json.load(open(model_dir / "best.json"))
    assert best["metric"] == "top1" and best["step"] == 6 and best["value"] == results["top1"]
    assert os.path.exists(best["checkpoint"] + ".index")


@pytest.mark.large
def test_sigkill_then_rerun_resumes_to_the_same_weights(runs, reference_run):
    code, finished, resumed = runs["sigkill"][1].result()
    assert code == -signal.SIGKILL, "the run finished before it could be killed"
    assert not finished
    assert "Restored" in resumed.stderr
    assert _digest(resumed.stdout) == _digest(reference_run[1].stdout)


@pytest.mark.large
def test_a_resumed_run_restores_its_checkpoint_once(records, tmp_path, monkeypatch):
    """Start-up reads the latest checkpoint's values once: the check that it fits the model (before run_config.json
    is written) reads only its names and shapes; the resume (train) or the eval restores it."""
    import tensorflow as tf

    args = [a for a in _command(records, tmp_path, "--train_steps=1", "--checkpoint_every=1")[2:]
            if a != "--deterministic"]  # op determinism would stay on for the rest of the session
    restored, real_restore = [], tf.train.Checkpoint.restore
    monkeypatch.setattr(tf.train.Checkpoint, "restore",
                        lambda self, path, *a, **k: restored.append(path) or real_restore(self, path, *a, **k))
    with flagsaver.flagsaver():
        for mode, before in (("train", []), ("train", ["ckpt-1"]), ("eval", ["ckpt-1"])):
            restored.clear()
            _parse(*args, f"--mode={mode}")
            main.run(FLAGS.mode)
            assert [os.path.basename(p) for p in restored] == before, mode
        assert json.load(open(tmp_path / "eval_results.json"))["step"] == 1
        # Without the run's record, a checkpoint of another model (C3D's kernels have a temporal axis) is still
        # refused before anything is written.
        os.remove(tmp_path / "run_config.json")
        restored.clear()
        _parse(*[a.replace("c2d_resnet18", "c3d_resnet18") for a in args], "--mode=train")
        with pytest.raises(app.UsageError, match=r"Cannot restore --model=c3d_resnet18 with these settings .*are of "
                                                 r"another model.*ckpt-1': its tensor of conv1_conv/kernel has shape "
                                                 r"\(7, 7, 3, 64\), the model's variable has shape \(3, 7, 7, 3, 64\)"):
            main.run(FLAGS.mode)
    assert restored == [] and not os.path.exists(tmp_path / "run_config.json")


@pytest.mark.large
def test_mirrored_over_two_logical_cpus(runs):
    model_dir, result = runs["mirrored"][0], runs["mirrored"][1].result()
    assert "replicas=2" in result.stderr and "Re-estimated the statistics of 20 BatchNorm layers" in result.stderr
    assert json.load(open(model_dir / "eval_results.json"))["step"] == 6


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.large
def test_multi_worker_two_processes_identical_weights_chief_only_outputs(records, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(_command(records, tmp_path, "--strategy=multi_worker", "--mode=train_and_eval,export"),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO))
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
    chief, other = (_digest(out) for out, _ in outputs)
    assert chief == other
    assert "replicas=2" in outputs[0][1]
    assert os.path.exists(tmp_path / "ckpt-6.index") and os.path.exists(tmp_path / "export" / "saved_model.pb")
    assert json.load(open(tmp_path / "eval_results.json"))["step"] == 6
    worker_dir = [d for d in os.listdir("/tmp/kerasvid_workers") if d.startswith(f"{tmp_path.name}_worker_1")] \
        if os.path.exists("/tmp/kerasvid_workers") else []
    assert all(not os.listdir(os.path.join("/tmp/kerasvid_workers", d)) for d in worker_dir)


def test_a_bad_flag_prints_one_error_line_without_tensorflow_notices(tmp_path):
    # Before: ~185 lines of flag help around the error, and TensorFlow's CUDA / oneDNN loading notices.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, MAIN, "--model=c2d_resnet19", f"--model_dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=240)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: Unknown model name 'c2d_resnet19'. Did you mean: c2d_resnet18")
    assert lines[0].endswith("(python train/main.py --helpfull lists the flags)")
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.large
def test_quiet_tensorflow_drops_export_bookkeeping_and_keeps_other_lines():
    script = ("from kerasvid._quiet import quiet_tensorflow; quiet_tensorflow(); "
              "from absl import logging; from tensorflow.python.platform import tf_logging; "
              "logging.set_verbosity(logging.INFO); logging.info('Sharding callback duration: 3 microseconds'); "
              "tf_logging.info('Function `f` contains input name(s) a with unsupported characters which will be "
              "renamed to b'); logging.info('a line that stays')")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.strip()] == ["INFO:absl:a line that stays"]


# ----- flags derived from the config dataclasses (kerasvid.config_flags) --------------------------------------------
def _fresh(config_cls, *args, **kw):
    from kerasvid import config_flags

    flag_values = flags.FlagValues()
    names = config_flags.define_flags(config_cls, flag_values, **kw)
    flag_values(["prog", *args])
    return flag_values, names


@pytest.mark.parametrize("config_name", ["TaskConfig", "TrainConfig"])
def test_every_config_field_is_a_flag_of_the_same_name_default_and_help(config_name):
    import dataclasses

    from kerasvid import config_flags
    from kerasvid.tasks import TaskConfig
    from kerasvid.training import TrainConfig

    config_cls = {"TaskConfig": TaskConfig, "TrainConfig": TrainConfig}[config_name]
    docs = config_flags.field_docs(config_cls)
    cli_defaults = {"train_steps": 0, "lr_decay_steps": 0, "checkpoint_every": 100}  # train_cli's overrides
    for field in dataclasses.fields(config_cls):
        if field.name == "label_names":  # read from labels.txt, no flag
            assert field.name not in FLAGS
            continue
        flag = FLAGS[field.name]
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        expected = cli_defaults.get(field.name, default)
        got = flag.default
        if isinstance(default, tuple):
            got = tuple(int(v) for v in got)
        elif isinstance(default, dict):
            got = main.parse_kwargs(got, field.name)
        assert got == expected, field.name
        assert docs[field.name] in flag.help, field.name
        assert FLAGS.find_module_defining_flag(field.name) == "kerasvid.train_cli"
        if "enum" in field.metadata:
            assert list(flag.parser.enum_values) == list(field.metadata["enum"])


def test_triplet_settings_are_flags_and_task_kwargs_once():
    """The ActorObserverConfig fields are flags of train/main.py; _task_kwargs merges them with --task_kwargs and refuses
    a triplet flag with another task, or a setting given both ways with two values."""
    with flagsaver.flagsaver():
        FLAGS.unparse_flags()
        FLAGS(["main.py", "--task=actor_observer", "--frames_root=/f", "--crop_scale=0.5,1", "--min_gap=120",
               "--task_kwargs=train_csv='t.csv',min_gap=120,crop_scale=[0.5, 1]"])
        assert main._task_kwargs() == {"train_csv": "t.csv", "frames_root": "/f", "crop_scale": (0.5, 1.0),
                                       "min_gap": 120}
        assert FLAGS.find_module_defining_flag("frames_root") == "kerasvid.train_cli"
        FLAGS.unparse_flags()
        FLAGS(["main.py", "--task=actor_observer", "--min_gap=120", "--task_kwargs=min_gap=240"])
        with pytest.raises(app.UsageError, match=r"^Settings given twice with different values: --min_gap=120 but "
                                                 r"task_kwargs min_gap=240\."):
            main._task_kwargs()
        FLAGS.unparse_flags()
        FLAGS(["main.py", "--frames_root=/f"])
        with pytest.raises(app.UsageError, match=r"--frames_root is a setting of --task=actor_observer, got "
                                                 r"--task=classification"):
            main._task_kwargs()


def test_from_flags_gives_every_train_config_field_its_flag_value():
    import dataclasses

    from kerasvid import config_flags
    from kerasvid.training import TrainConfig

    changed = {"train_steps": 7, "log_every": 3, "checkpoint_every": 5, "keep_checkpoints": 2, "eval_every": 4,
               "accumulation_steps": 2, "clip_norm": 1.5, "optimizer": "adamw", "learning_rate": 0.2,
               "momentum": 0.5, "weight_decay": 1e-4, "nesterov": True, "lr_schedule": "multistep",
               "warmup_steps": 2, "lr_decay_steps": 9, "lr_boundaries": (3, 6), "lr_decay_rate": 0.5,
               "min_lr": 1e-6, "mixed_precision": "bfloat16", "jit_compile": True, "image_summaries_every": 8,
               "bn_recalibration_batches": 2, "divergence_factor": 50.0, "max_weight": 300.0}
    assert set(changed) == {f.name for f in dataclasses.fields(TrainConfig)}
    args = [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in changed.items()]
    flag_values, _ = _fresh(TrainConfig, *args)
    assert config_flags.from_flags(TrainConfig, flag_values) == TrainConfig(**changed)
    assert config_flags.from_flags(TrainConfig, flag_values, train_steps=70).train_steps == 70  # override
    flag_values, _ = _fresh(TrainConfig)
    assert config_flags.from_flags(TrainConfig, flag_values) == TrainConfig()  # the dataclass defaults


def test_from_flags_task_config_types_and_errors():
    from kerasvid import config_flags
    from kerasvid.tasks import TaskConfig

    flag_values, names = _fresh(TaskConfig, "--image_size=96", "--model_kwargs=k=12,variant=released_code",
                                "--task_kwargs=scale=(0.5, 1.0)", "--multi_label", "--label_smoothing=0.1")
    assert "label_names" not in names and len(names) == 20
    config = config_flags.from_flags(TaskConfig, flag_values, label_names=("a", "b"))
    assert config.image_size == (96, 96) and config.label_names == ("a", "b")
    assert config.model_kwargs == {"k": 12, "variant": "released_code"} and config.task_kwargs == {"scale": (0.5, 1.0)}
    assert config.multi_label and config.label_smoothing == 0.1 and config.num_frames == 8
    flag_values(["prog", "--image_size=1,2,3"])
    with pytest.raises(ValueError, match=r"--image_size must be 2 integers, got '1,2,3'"):
        config_flags.from_flags(TaskConfig, flag_values)
    flag_values(["prog", "--image_size=a,b"])
    with pytest.raises(ValueError, match=r"--image_size must be integers, got 'a,b'"):
        config_flags.from_flags(TaskConfig, flag_values)


def test_a_field_without_docs_or_flag_type_is_refused():
    import dataclasses
    from typing import List

    from kerasvid import config_flags

    @dataclasses.dataclass
    class Undocumented:
        """Attributes:
            a: documented.
        """
        a: int = 1
        b: int = 2

    @dataclasses.dataclass
    class Untyped:
        """Attributes:
            a: a list.
        """
        a: List[str] = dataclasses.field(default_factory=list)

    with pytest.raises(ValueError, match="Undocumented.b has no entry in the Attributes section"):
        config_flags.define_flags(Undocumented, flags.FlagValues())
    with pytest.raises(TypeError, match="Untyped.a: no flag type"):
        config_flags.define_flags(Untyped, flags.FlagValues())


def test_recipe_flags_arrive_in_the_configs_with_their_meaning(records, tmp_path):
    """Two recipes on the 24-video fixture at batch 8 (3 steps per epoch): every flag of the recipe lands in the
    field of the same name; epochs become steps (80 x 3 = 240 steps, boundaries 30 x 3, 60 x 3; 100 x 3, 40 x 3)."""
    train, heldout = records
    labels = os.path.join(os.path.dirname(train), "labels.txt")
    data = [f"--train_pattern={train}", f"--eval_pattern={heldout}", f"--labels_file={labels}", "--batch_size=8",
            f"--model_dir={tmp_path}"]
    with flagsaver.flagsaver():
        _parse(f"--flagfile={os.path.join(REPO, 'zoo', 'tvnet_bn_inception_ucf101.flags')}", *data, "--num_classes=2")
        task, train_config = main.build_configs(["train_and_eval"])
    assert (train_config.train_steps, train_config.lr_schedule, train_config.lr_boundaries) == (240, "multistep",
                                                                                             (90, 180))
    assert (train_config.optimizer, train_config.learning_rate, train_config.momentum,
            train_config.weight_decay) == ("sgd", 0.005, 0.9, 0.0005)
    c = task.config
    assert (c.model, c.num_frames, c.stride, c.image_size, c.normalization, c.batch_size, c.eval_clips) == (
        "tvnet_bn_inception", 6, 1, (224, 224), "none", 8, 25)
    with flagsaver.flagsaver():
        _parse(f"--flagfile={os.path.join(REPO, 'zoo', 'c2d_resnet18_kinetics.flags')}", *data)
        task, train_config = main.build_configs(["train_and_eval"])
    assert (train_config.train_steps, train_config.lr_schedule, train_config.lr_decay_steps,
            train_config.lr_decay_rate, train_config.min_lr) == (300, "step", 120, 0.1, 0.00001)
    assert task.config.label_names == tuple(open(labels).read().split())
    assert (task.config.stride, task.config.eval_clips) == (8, 10)


def test_every_recipe_and_readme_flag_is_defined():
    names = {path: re.findall(r"^--(\w+)", open(os.path.join(REPO, "zoo", path)).read(), re.M)
             for path in os.listdir(os.path.join(REPO, "zoo"))}
    readme = doc_text()
    names["docs"] = [name for line in re.findall(r"(?:python train/main\.py|kerasvid train) (.*)", readme)
                          for name in re.findall(r"--(\w+)", line) if name != "flagfile"]
    assert len(names) == len(os.listdir(os.path.join(REPO, "zoo"))) + 1 >= 15 and all(names.values())
    assert {path: [n for n in found if n not in FLAGS] for path, found in names.items()} == {
        path: [] for path in names}


# ----- data discovery (kerasvid.data.discovery) ---------------------------------------------------------------------
def test_discovery_labels_counts_and_run_config(records, tmp_path):
    from kerasvid.data import discovery

    train, heldout = records
    expected = tuple(open(os.path.join(os.path.dirname(train), "labels.txt")).read().split())
    assert len(expected) == 2
    assert discovery.label_names(patterns=("", str(tmp_path / "none-*"), train)) == expected
    assert discovery.label_names(patterns=(str(tmp_path / "none-*"),)) == ()
    with pytest.raises(ValueError, match="--labels_file='/nonexistent/labels.txt' does not exist"):
        discovery.label_names("/nonexistent/labels.txt")
    assert (discovery.count_records(train), discovery.count_records(heldout)) == (24, 8)
    path = discovery.write_run_config(str(tmp_path / "run"), {"model": "c2d_resnet18"}, ("x", "y", "z"), 3,
                                      {"model": "c2d_resnet18", "num_frames": 8})
    assert json.load(open(path)) == {"flags": {"model": "c2d_resnet18"}, "label_names": ["x", "y", "z"],
                                     "num_classes": 3, "model_settings": {"model": "c2d_resnet18", "num_frames": 8}}
    assert not os.path.exists(path + ".tmp")
    assert discovery.label_names(patterns=(), model_dir=str(tmp_path / "run")) == ("x", "y", "z")
    assert discovery.read_run_config(str(tmp_path)) == {}


def test_discovery_synthetic_records_are_written_once(tmp_path):
    from kerasvid.data import discovery

    patterns = discovery.synthetic_records(str(tmp_path), num_classes=2, num_frames=2, size=16, train_videos=4,
                                           eval_videos=2)
    assert [discovery.count_records(p) for p in patterns] == [4, 2]
    assert discovery.label_names(patterns=patterns) and os.path.exists(tmp_path / "DONE")
    stamp = {name: os.path.getmtime(tmp_path / name) for name in os.listdir(tmp_path)}
    assert discovery.synthetic_records(str(tmp_path), num_classes=2, num_frames=2, size=16, train_videos=4,
                                       eval_videos=2) == patterns
    assert {name: os.path.getmtime(tmp_path / name) for name in os.listdir(tmp_path)} == stamp


def test_kerasvid_train_is_train_main(tmp_path, capsys):
    from kerasvid import cli

    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as exit_:
            cli.main(["train", "--model=c2d_resnet19", f"--model_dir={tmp_path / 'run'}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: Unknown model name 'c2d_resnet19'") and err.endswith(
        "(kerasvid train --helpfull lists the flags)")
    assert main._PROG == "python train/main.py"
    assert cli.main(["train", "--help"]) == 0
    assert "--lr_schedule: <constant|step|multistep|cosine>: learning-rate schedule" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("mode", ["eval", "export"])
def test_a_recipe_with_an_epoch_schedule_evaluates_and_exports(records, tmp_path, mode):
    """Eval and export never use the schedule: a recipe's epoch boundaries (TVNet's multistep at epochs 30, 60)
    must not stop them (before: "`boundaries` must be a non-empty increasing list for multistep")."""
    train, heldout = records
    labels = os.path.join(os.path.dirname(train), "labels.txt")
    with flagsaver.flagsaver():
        _parse(f"--flagfile={os.path.join(REPO, 'zoo', 'tvnet_bn_inception_ucf101.flags')}",
               f"--train_pattern={train}", f"--eval_pattern={heldout}", f"--labels_file={labels}",
               f"--model_dir={tmp_path}", f"--mode={mode}")
        task, train_config = main.build_configs([mode])
    assert train_config.lr_schedule == "constant" and task.config.model == "tvnet_bn_inception"


@pytest.mark.parametrize("mode", ["eval", "export"])
def test_eval_and_export_take_no_training_setting(records, tmp_path, mode):
    """A command that trains nothing gets the loop's defaults with the flags' mixed precision: a warm-up longer than
    the unset --train_steps stops it no more than an epoch schedule does (before: "`warmup_steps`=20 must be
    smaller than `train_steps`=1", a placeholder's), and the optimizer it never uses is an SGD without momentum."""
    from kerasvid.training import TrainConfig

    train, heldout = records
    with flagsaver.flagsaver():
        _parse(f"--eval_pattern={heldout}", f"--labels_file={os.path.join(os.path.dirname(train), 'labels.txt')}",
               f"--model_dir={tmp_path}", "--num_frames=2", "--image_size=32,32", "--warmup_steps=20",
               "--optimizer=adam", "--learning_rate=0.5", "--lr_schedule=cosine", "--mixed_precision=bfloat16",
               f"--mode={mode}")
        _, train_config = main.build_configs([mode])
    defaults = dataclasses.asdict(TrainConfig())
    got = dataclasses.asdict(train_config)
    assert {k: v for k, v in got.items() if v != defaults[k]} == {"mixed_precision": "bfloat16", "momentum": 0.0}
