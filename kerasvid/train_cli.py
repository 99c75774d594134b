r"""kerasvid training, evaluation and export: `kerasvid train --flagfile=zoo/<recipe>.flags` (or
`python train/main.py --flagfile=zoo/<recipe>.flags`, the same command).

Modes (`--mode`, comma-separated to chain them): `train`, `eval`, `train_and_eval` (evaluates every `--eval_every`
steps and at the end, keeps the best checkpoint by top-1 / mAP), `export` (SavedModel into `--export_dir`, default
`<model_dir>/export`), `align` (`--task=actor_observer`: the median alignment error of the eval pairs, with
its unsmoothed and random-matrix baselines, into `<model_dir>/alignment_results.json`). Rerunning the same command
after a crash resumes from the last checkpoint in `--model_dir`. Training augmentation: `--randaugment`,
`--random_erasing`, `--mixup`, `--cutmix` (clip-consistent, `kerasvid.data.augment`).

With `--synthetic`, the task's data are generated under `<model_dir>/data` first (moving digits: records for
classification, plus conjugates for action_context, Charades-Ego ego/exo frame folders for actor_observer) and
replace the data a recipe names (the quickstart: `python train/main.py --flagfile=zoo/quickstart.flags`).

The flags of the settings of `kerasvid.tasks.TaskConfig` and `kerasvid.training.TrainConfig` are derived from
those dataclasses (`kerasvid.config_flags`: the fields' names, types, defaults and docstring entries); the others
(mode, paths, strategy, synthetic data, augmentation, epochs) are defined here. Every flag is checked (unknown
model, missing data, contradictory settings) before any work starts; data discovery (labels.txt, record counts,
synthetic records, run_config.json) is `kerasvid.data.discovery`.

Exit status: 0 done; 2 bad flag or input (one line `error: ...`); 3 training diverged or the weights are not
finite (nothing non-finite is saved; the message names the last finite checkpoint); 4 `--model_dir` cannot be
written (earlier checkpoints are intact); 5 another worker of a multi-worker run died (restart all
workers: they resume from the last checkpoint); 143 stopped by SIGTERM after saving a checkpoint (TensorFlow's
restartable exit code: rerun the same command to resume).

TensorFlow's C++ log is off unless TF_CPP_MIN_LOG_LEVEL is set (its errors still arrive as Python exceptions):
the notices it prints on a machine without a GPU, and grappler's "remapper failed" (an optimisation TensorFlow
skips for the Conv3D gradient; the step is unaffected), are not for a user of this script (`kerasvid._quiet`,
shared by every command).
"""
import dataclasses
import inspect
import json
import math
import os
import sys
import tempfile
import time

from absl import app, flags, logging

from kerasvid import _locks, config_flags, run_report
from kerasvid._quiet import quiet_tensorflow
from kerasvid.tasks.base import TaskConfig
from kerasvid.tasks.actor_observer_config import ActorObserverConfig
from kerasvid.training.config import STRATEGIES, TrainConfig

MODES = ("train", "eval", "train_and_eval", "export", "align")
FLAGS = flags.FLAGS
_PROG = "python train/main.py"  # how the usage errors name this command
EXIT_USAGE, EXIT_DIVERGED, EXIT_UNWRITABLE, EXIT_WORKER_LOST, EXIT_PREEMPTED = 2, 3, 4, 5, 143
# The settings of TaskConfig and TrainConfig: one flag per field, named, typed and documented by the dataclass.
# Flag defaults that differ from the field's: 0 = "not set" (train_steps: set it or --train_epochs; lr_decay_steps:
# or --lr_decay_epochs); a command-line run checkpoints every 100 steps.
config_flags.define_flags(TaskConfig)
config_flags.define_flags(TrainConfig, defaults={"train_steps": 0, "lr_decay_steps": 0, "checkpoint_every": 100})
# The actor_observer task's settings, also --task_kwargs keys (`_task_kwargs` merges both).
ACTOR_OBSERVER_FLAGS = tuple(config_flags.define_flags(ActorObserverConfig))
# Task and data discovery.
flags.DEFINE_string("task", "classification", "Registered task (kerasvid.tasks.list_tasks()).")
flags.DEFINE_string("labels_file", "", "Class names, one per line (default: labels.txt beside the records).")
flags.DEFINE_list("randaugment", [], "Clip-consistent RandAugment `num_ops,magnitude` (e.g. 2,0.5; empty = off).")
flags.DEFINE_float("random_erasing", 0.0, "Probability of erasing one box per training clip (same box every frame).")
flags.DEFINE_float("mixup", 0.0, "MixUp Beta alpha (0 = off); labels become soft.")
flags.DEFINE_float("cutmix", 0.0, "CutMix Beta alpha (0 = off; one box per clip); labels become soft.")
flags.DEFINE_bool("synthetic", False, "Train on moving-digits data generated for the task under <model_dir>/data "
                  "(replaces the data the flags name).")
flags.DEFINE_integer("synthetic_train_videos", 256, "Synthetic training videos.")
flags.DEFINE_integer("synthetic_eval_videos", 64, "Synthetic held-out videos.")
flags.DEFINE_integer("synthetic_classes", 4, "Synthetic motion classes.")
flags.DEFINE_integer("synthetic_frames", 16, "Frames per synthetic video.")
flags.DEFINE_integer("synthetic_size", 64, "Height and width of the synthetic videos.")
# Schedule lengths in epochs (converted to --train_steps, --lr_decay_steps, --lr_boundaries).
flags.DEFINE_float("train_epochs", 0.0, "Epochs over the training records (converted to steps).")
flags.DEFINE_float("lr_decay_epochs", 0.0, "Period of the step schedule, in epochs.")
flags.DEFINE_list("lr_boundaries_epochs", [], "Multistep boundaries in epochs.")
# Runtime.
flags.DEFINE_list("mode", ["train_and_eval"], f"One or more of {MODES}, comma-separated, run in order.")
flags.DEFINE_string("model_dir", "", "Checkpoints, summaries, eval_results.json, export.")
flags.DEFINE_string("export_dir", "", "SavedModel directory (default <model_dir>/export).")
flags.DEFINE_bool("export_tflite", False, "With --mode=export, also write LiteRT files into --export_dir "
                  "(model.tflite; flow.tflite for models with an input TVNet).")
flags.DEFINE_string("checkpoint", "", "Checkpoint for eval/export (default: the latest in --model_dir).")
flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                  "tf.distribute strategy (multi_worker reads TF_CONFIG).")
flags.DEFINE_integer("num_devices", 0, "Devices for mirrored (0 = all).")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (tests of mirrored on CPU).")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_integer("collective_timeout_s", 600, "multi_worker: abort (exit 5) when an all-reduce waits longer than "
                     "this for another worker (0 = forever); a killed worker is noticed within seconds anyway.")
flags.DEFINE_bool("pictures", False, "At the end, write training_curve.png and (for a CPNet) correspondences.png of a "
                  "held-out clip into --model_dir, and an example held-out video for `kerasvid predict`.")
flags.DEFINE_integer("predict_examples", 0, "After export, print the predictions of the exported serve_examples "
                     "signature for this many held-out videos.")


def _usage(fn, *args, **kwargs):
    """`fn(*args, **kwargs)`, its ValueError raised as `app.UsageError` (a bad flag: exit 2, one line)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        raise app.UsageError(str(e))


def parse_kwargs(text, flag):
    """`"a=1,b='x',c=(1, 2)"` -> dict; values are Python literals (bare words are strings); UsageError if not."""
    return _usage(config_flags.parse_kwargs, text, flag)


def _data_kwargs():
    """--data_kwargs plus the augmentation flags (kerasvid.data.augment) under "augment"."""
    kwargs = parse_kwargs(FLAGS.data_kwargs, "data_kwargs")
    augment = dict(kwargs.pop("augment", None) or {})
    try:
        if FLAGS.randaugment:
            augment["randaugment"] = (int(FLAGS.randaugment[0]), float(FLAGS.randaugment[1]))
    except (ValueError, IndexError):
        raise app.UsageError(f"--randaugment must be num_ops,magnitude, got {','.join(FLAGS.randaugment)!r}.")
    augment.update({k: getattr(FLAGS, k) for k in ("random_erasing", "mixup", "cutmix") if getattr(FLAGS, k)})
    if augment:
        if FLAGS.task != "classification":
            raise app.UsageError(f"Augmentation flags are for --task=classification, got --task={FLAGS.task}.")
        from kerasvid.data import augment as augment_lib

        try:
            augment_lib.VideoAugment(**augment)  # checked here, built by the pipeline
        except (TypeError, ValueError) as e:
            raise app.UsageError(f"augmentation settings {augment}: {e}")
        kwargs["augment"] = augment
    return kwargs


def check_output_dir(path, flag):
    """Raises UsageError when `--flag=path` is a file, or cannot be written (tested by creating a temporary file
    in it, or in its nearest existing parent; nothing is left behind)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise app.UsageError(f"--{flag}={path!r} is a file, not a directory.")
    probe_dir = os.path.abspath(path)
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir):
        raise app.UsageError(f"--{flag}={path!r} cannot be created: {probe_dir!r} is a file.")
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".kerasvid_write_test"):
            pass
    except OSError as e:
        raise app.UsageError(f"--{flag}={path!r} is not writable ({e.strerror} in {probe_dir!r}).")


def check_model_kwargs(builder, kwargs):
    """Raises UsageError for a --model_kwargs key the model builder does not take (before any data is made)."""
    params = inspect.signature(builder).parameters
    set_elsewhere = {"num_classes": "--num_classes or labels.txt", "input_shape": "--num_frames and --image_size"}
    for key in kwargs:
        if key in set_elsewhere:
            raise app.UsageError(f"--model_kwargs key {key!r} is set by {set_elsewhere[key]}; remove it from "
                                 f"--model_kwargs={FLAGS.model_kwargs!r}.")
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        known = [k for k in params if k not in set_elsewhere]
        raise app.UsageError(f"--model_kwargs={FLAGS.model_kwargs!r}: {FLAGS.model} takes no argument "
                             f"{', '.join(map(repr, unknown))}; it takes {', '.join(known)}.")


def _check_runtime_flags():
    """The flags that are not settings of a config: output directories, --model, --task, the strategy."""
    from kerasvid import tasks, zoo
    from kerasvid.training import strategy as strategy_lib

    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required.")
    check_output_dir(FLAGS.model_dir, "model_dir")
    if FLAGS.export_dir:
        check_output_dir(FLAGS.export_dir, "export_dir")
    info = _usage(zoo.model_info, FLAGS.model)
    model_kwargs = parse_kwargs(FLAGS.model_kwargs, "model_kwargs")
    check_model_kwargs(info.builder, model_kwargs)
    if FLAGS.task not in tasks.list_tasks():
        raise app.UsageError(f"Unknown --task={FLAGS.task!r}; registered tasks: {', '.join(tasks.list_tasks())}.")
    image_size = _usage(config_flags.flag_value, TaskConfig, "image_size")
    _check_input_size(image_size)
    _check_model_inputs(info.builder, model_kwargs)
    if FLAGS.cpu_devices and FLAGS.strategy not in ("mirrored", "default", "one_device"):
        raise app.UsageError(f"--cpu_devices is for --strategy=mirrored on one machine, got {FLAGS.strategy}.")
    _usage(strategy_lib.validate_strategy_args, FLAGS.strategy, FLAGS.num_devices, FLAGS.tpu)
    return model_kwargs, image_size


# The largest crop side a run may ask for: the zoo's recipes use 112-352; a larger one only ends in an out-of-memory
# error after start-up (data and model built).
MAX_IMAGE_SIDE = 1024


def _check_input_size(image_size):
    """UsageError for a crop size beyond `MAX_IMAGE_SIDE` (e.g. --image_size=100000,100000)."""
    if max(image_size) > MAX_IMAGE_SIDE:
        raise app.UsageError(f"--image_size={','.join(map(str, image_size))} is larger than {MAX_IMAGE_SIDE} pixels "
                             f"per side, the limit of kerasvid train (the zoo's recipes train at 112-352); pass a "
                             f"smaller --image_size.")


def _check_model_inputs(builder, model_kwargs):
    """UsageError for a two-input model the classification records cannot feed: a flow stream that takes
    precomputed flow (`flow_source="input"`, i3d_action_context's default) needs an input no record holds."""
    if FLAGS.task != "classification":
        return
    params = inspect.signature(builder).parameters
    if "flow_source" not in params or "streams" not in params:
        return
    streams = model_kwargs.get("streams", params["streams"].default)
    streams = (streams,) if isinstance(streams, str) else tuple(streams or ())
    if model_kwargs.get("flow_source", params["flow_source"].default) == "input" and "flow" in streams:
        raise app.UsageError(f"--model={FLAGS.model} with flow_source='input' takes precomputed optical flow as a "
                             f"second input, which --task=classification's records do not hold; pass "
                             f"--model_kwargs=flow_source=tvnet (flow computed from the frames) or "
                             f"--model_kwargs=\"streams=('rgb',)\" (the RGB stream alone).")


def _check_schedule_flags(training):
    """The step / epoch flags of the schedule: exactly one length, one form of each decay; the step boundaries."""
    from kerasvid import command_flags

    for message in command_flags.nonfinite_float_flags(FLAGS)[:1]:
        raise app.UsageError(f"{message}.")
    for name in ("train_steps", "train_epochs", "lr_decay_steps", "lr_decay_epochs"):
        if getattr(FLAGS, name) < 0:
            raise app.UsageError(f"--{name} must be positive (or 0: not set), got {name}={getattr(FLAGS, name)}.")
    if training and bool(FLAGS.train_steps) == bool(FLAGS.train_epochs):
        raise app.UsageError(f"Set exactly one of --train_steps and --train_epochs, got train_steps="
                             f"{FLAGS.train_steps}, train_epochs={FLAGS.train_epochs}.")
    if FLAGS.lr_decay_steps and FLAGS.lr_decay_epochs:
        raise app.UsageError("Set --lr_decay_steps or --lr_decay_epochs, not both.")
    if FLAGS.lr_boundaries and FLAGS.lr_boundaries_epochs:
        raise app.UsageError("Set --lr_boundaries or --lr_boundaries_epochs, not both.")
    return _usage(config_flags.flag_value, TrainConfig, "lr_boundaries")


def _train_config(train_steps, lr_decay_steps, lr_boundaries):
    """The validated `TrainConfig` of the flags, with the lengths in steps given (UsageError for bad values)."""
    train_config = _usage(config_flags.from_flags, TrainConfig, FLAGS, train_steps=max(train_steps, 1),
                          lr_decay_steps=lr_decay_steps, lr_boundaries=tuple(lr_boundaries))
    _usage(train_config.validate, FLAGS.strategy)
    return train_config


def _inference_config():
    """The `TrainConfig` of a command that trains nothing (eval, export, align): the `Trainer` takes from it only
    the flags' mixed precision (the dtype the restored model computes in). Its loop and schedule settings are the
    dataclass's defaults, not the flags' (a recipe's training settings, e.g. an epoch schedule or a warm-up longer
    than the unset --train_steps, never stop an eval or export), and its optimizer is a plain SGD (momentum 0: the
    optimizer the Trainer builds, never used here, holds no variable per weight)."""
    return TrainConfig(mixed_precision=FLAGS.mixed_precision, optimizer="sgd", momentum=0.0)


def _recorded_run():
    """The run_config.json of --model_dir (`{}` when there is none); UsageError when it is not valid JSON."""
    from kerasvid.data import discovery

    try:
        return discovery.read_run_config(FLAGS.model_dir)
    except ValueError as e:
        raise app.UsageError(f"{os.path.join(FLAGS.model_dir, discovery.RUN_CONFIG)!r} is not valid JSON ({e}): "
                             f"restore it, or use another --model_dir.")


def _task_kwargs():
    """--task_kwargs plus the actor_observer task's flags given on the command line (or in a flagfile); UsageError for
    one of those flags with another --task, or a setting given both ways with two values."""
    kwargs = parse_kwargs(FLAGS.task_kwargs, "task_kwargs")
    flagged = {name: _usage(config_flags.flag_value, ActorObserverConfig, name) for name in ACTOR_OBSERVER_FLAGS
               if FLAGS[name].present}
    if flagged and FLAGS.task != "actor_observer":
        raise app.UsageError(f"--{sorted(flagged)[0]} is a setting of --task=actor_observer, got --task={FLAGS.task}.")

    def differs(given, flag):  # a flag's pair is a tuple; the same pair in --task_kwargs may be a list
        return (tuple(given) if isinstance(given, list) else given) != flag

    twice = [f"--{k}={v!r} but task_kwargs {k}={kwargs[k]!r}" for k, v in sorted(flagged.items())
             if k in kwargs and differs(kwargs[k], v)]
    if twice:
        raise app.UsageError(f"Settings given twice with different values: {'; '.join(twice)}. Set each once.")
    return {**kwargs, **flagged}


def _discover_data():
    """`(train_pattern, eval_pattern, label_names, task_kwargs)`: with --synthetic the task's data written first
    (`discovery.synthetic_data`; its locations replace a recipe's, with a warning), the class names from
    --labels_file, labels.txt beside the records or the run_config.json of an earlier run in --model_dir."""
    from kerasvid.data import discovery

    train_pattern, eval_pattern = FLAGS.train_pattern, FLAGS.eval_pattern
    task_kwargs = given = _task_kwargs()
    if FLAGS.synthetic:
        data = _usage(discovery.synthetic_data, os.path.join(FLAGS.model_dir, "data"), FLAGS.task,
                      num_classes=FLAGS.synthetic_classes, num_frames=FLAGS.synthetic_frames,
                      size=FLAGS.synthetic_size, train_videos=FLAGS.synthetic_train_videos,
                      eval_videos=FLAGS.synthetic_eval_videos, seed=FLAGS.seed,
                      recorded=_recorded_run().get("synthetic"))
        replaced = [f"--{k}={getattr(FLAGS, k)!r}" for k in ("train_pattern", "eval_pattern") if getattr(FLAGS, k)]
        task_kwargs, keys = discovery.with_synthetic_task_kwargs(FLAGS.task, given, data["task_kwargs"])
        replaced += [f"{k}={given[k]!r}" for k in keys]
        if replaced:
            logging.warning("--synthetic: training on the generated data under %s, not on %s",
                            os.path.join(FLAGS.model_dir, "data"), ", ".join(replaced))
        train_pattern, eval_pattern = data["train_pattern"], data["eval_pattern"]
    label_names = _usage(discovery.label_names, FLAGS.labels_file, (train_pattern, eval_pattern),
                         model_dir="" if FLAGS.num_classes else FLAGS.model_dir)
    return train_pattern, eval_pattern, label_names, task_kwargs


def build_configs(modes):
    """Turns the flags into `(task, TrainConfig)`; raises app.UsageError before any work for bad flags."""
    from kerasvid import tasks
    from kerasvid.data import discovery

    model_kwargs, image_size = _check_runtime_flags()
    training = any(mode in ("train", "train_and_eval") for mode in modes)
    boundaries = _check_schedule_flags(training)
    by_epochs = training and (FLAGS.train_epochs or FLAGS.lr_decay_epochs or FLAGS.lr_boundaries_epochs)
    if not training:
        early_config = _inference_config()
    else:
        early_config = None if by_epochs else _train_config(FLAGS.train_steps, FLAGS.lr_decay_steps or 1, boundaries)

    # The settings are checked (a setting given twice) before discovery writes any data, then the discovered ones
    # completed (`replace` checks again, with the class names).
    config = _usage(config_flags.from_flags, TaskConfig, FLAGS, model_kwargs=model_kwargs, image_size=image_size,
                    data_kwargs=_data_kwargs(), task_kwargs={})
    train_pattern, eval_pattern, label_names, task_kwargs = _discover_data()
    config = _usage(dataclasses.replace, config, label_names=label_names, train_pattern=train_pattern,
                    eval_pattern=eval_pattern, task_kwargs=task_kwargs)
    task = tasks.get_task(FLAGS.task, config)
    task_modes = set()
    for mode in modes:
        task_modes |= {"train_and_eval": {"train", "eval"}, "align": {"eval"}}.get(mode, {mode})
    if "align" in modes and not hasattr(task, "alignment_report"):
        raise app.UsageError(f"--mode=align is the actor-observer alignment evaluation: it needs "
                             f"--task=actor_observer, got --task={FLAGS.task}.")
    _usage(task.validate, task_modes)

    if early_config is not None:
        return task, early_config
    # Lengths in epochs (by_epochs, so training): converted to steps with the number of training records.
    num_examples = discovery.count_records(train_pattern)
    steps_per_epoch = num_examples / float(FLAGS.batch_size * FLAGS.accumulation_steps)
    logging.info("%d training videos: %.1f steps per epoch", num_examples, steps_per_epoch)
    train_steps = FLAGS.train_steps or int(math.ceil(FLAGS.train_epochs * steps_per_epoch))
    decay_steps = FLAGS.lr_decay_steps or (int(round(FLAGS.lr_decay_epochs * steps_per_epoch))
                                           if FLAGS.lr_decay_epochs else 1)
    boundaries = boundaries or [int(round(float(b) * steps_per_epoch)) for b in FLAGS.lr_boundaries_epochs]
    return task, _train_config(train_steps, decay_steps, boundaries)


def weights_digest(model):
    """SHA-256 of all model weights (order of `model.weights`): identical runs print identical digests."""
    import hashlib

    digest = hashlib.sha256()
    for w in model.weights:
        digest.update(w.numpy().tobytes())
    return digest.hexdigest()


def _align(task, trainer, restore):
    """--mode=align: the task's alignment report (median alignment error, seconds) -> alignment_results.json."""
    import tensorflow as tf

    if restore:
        trainer.restore_for_inference(FLAGS.checkpoint or None)
    results = {"step": int(trainer.step.numpy()),
               **task.alignment_report(trainer.model, batch_size=FLAGS.eval_batch_size)}
    path = os.path.join(FLAGS.model_dir, "alignment_results.json")
    if trainer.chief:
        with tf.io.gfile.GFile(path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"Alignment at step {results['step']} on {results['num_videos']} paired videos: median alignment "
              f"error {results['median_alignment_error_s']:.3f} s (unsmoothed "
              f"{results['median_alignment_error_unsmoothed_s']:.3f} s, random-matrix baseline "
              f"{results['random_matrix_error_s']:.3f} s) ({path})")
    return results


def model_settings(task):
    """The settings that decide a run's variables and labels: a run resumes, evaluates or exports only with these."""
    c = task.config
    return {"task": FLAGS.task, "model": c.model, "model_kwargs": dict(c.model_kwargs),
            "num_frames": int(c.num_frames), "image_size": [int(v) for v in c.image_size],
            "num_classes": int(task.num_classes if hasattr(task, "num_classes") else c.num_classes),
            "label_names": list(c.label_names)}


def _check_resumable(task, trainer, modes):
    """Before anything is written into an existing run: its recorded settings and its latest checkpoint must fit
    this command's model (one line naming the first difference); then `run_config.json` is (re)written by training
    runs and by the first command in a model_dir, never by an eval/export of an existing run."""
    import tensorflow as tf

    from kerasvid.data import discovery
    from kerasvid.training import checkpoints

    old = _recorded_run()
    new = model_settings(task)
    recorded = old.get("model_settings") or ({"model": old["flags"]["model"]} if "model" in old.get("flags", {})
                                             else {})
    for key, value in recorded.items():
        if key in new and json.loads(json.dumps(value, default=str)) != json.loads(json.dumps(new[key], default=str)):
            shown = (lambda v: f"{len(v)} names ({', '.join(map(repr, v[:3]))}{', ...' if len(v) > 3 else ''})"
                     if key == "label_names" else repr(v))
            raise app.UsageError(f"--model_dir={FLAGS.model_dir!r} holds a run with {key}={shown(value)}, this command "
                                 f"has {key}={shown(new[key])}; use the run's settings or another --model_dir.")
    latest = tf.train.latest_checkpoint(FLAGS.model_dir)
    if latest and not (FLAGS.checkpoint and not any(m in ("train", "train_and_eval") for m in modes)):
        # Names and shapes only: the restore is the trainer's (resume) or the eval / export's, once.
        _usage(checkpoints.check_restorable, trainer.model, latest,
               f"--model={FLAGS.model} with these settings (the checkpoints of --model_dir={FLAGS.model_dir!r} are "
               f"of another model)")
    # An eval or export records nothing in a folder that has a record, nor in one with no checkpoint to use (its
    # settings could be a typo that a later training run would then be held to).
    if not any(m in ("train", "train_and_eval") for m in modes) and (old or not (latest or FLAGS.checkpoint)):
        return
    settings = {k: v.value for k, v in FLAGS.__flags.items() if v.present or k in ("model", "task")}
    synthetic = discovery.synthetic_settings(os.path.join(FLAGS.model_dir, "data")) if FLAGS.synthetic else None
    discovery.write_run_config(FLAGS.model_dir, settings, task.config.label_names, new["num_classes"],
                               model_settings=new, synthetic=synthetic)


def run(modes):
    """Runs the modes in order, holding the model_dir's lock; returns a dict of what was produced."""
    from kerasvid.training import get_strategy, split_cpu_into_logical_devices
    from kerasvid.training import strategy as strategy_lib

    for mode in modes:
        if mode not in MODES:
            raise app.UsageError(f"--mode must be one or more of {MODES}, got {mode!r}.")
    if FLAGS.cpu_devices:
        split_cpu_into_logical_devices(FLAGS.cpu_devices)
    # The strategy comes first: MultiWorkerMirroredStrategy must configure collectives before any TF op runs.
    try:
        strategy = get_strategy(FLAGS.strategy, FLAGS.num_devices, FLAGS.tpu, FLAGS.collective_timeout_s)
    except ValueError as e:
        raise app.UsageError(str(e))
    task, train_config = build_configs(modes)
    export_dir = FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export")
    if "export" in modes:  # before any work: an export never replaces a folder it did not write
        from kerasvid import export as export_lib

        _usage(export_lib.check_export_dir, export_dir)
    lock = _locks.DirectoryLock(FLAGS.model_dir, f"{_PROG} --mode={','.join(modes)}")
    if strategy_lib.is_chief(strategy):  # one run per model_dir at a time (the chief's; workers share its folder)
        _usage(lock.acquire)
    try:
        return _run_modes(modes, strategy, task, train_config, export_dir)
    finally:
        lock.release()


def _run_modes(modes, strategy, task, train_config, export_dir):
    """`run`'s work once the model_dir is locked: builds the trainer, checks the run can resume, runs each mode."""
    import keras
    import tensorflow as tf

    from kerasvid.training import Trainer

    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        trainer = Trainer(task, strategy, FLAGS.model_dir, train_config)
    except ValueError as e:  # the model cannot be built with these settings (e.g. an input size it cannot take)
        raise app.UsageError(f"--model={FLAGS.model} with these flags: {e}")
    logging.info("strategy=%s replicas=%d chief=%s", FLAGS.strategy, strategy.num_replicas_in_sync, trainer.chief)
    c = task.config
    if trainer.chief:
        _check_resumable(task, trainer, modes)
    produced = {}
    for mode in modes:
        if mode in ("train", "train_and_eval"):
            callback = trainer.evaluate if mode == "train_and_eval" else None
            start = time.time()
            produced["train"] = trainer.train(eval_callback=callback)
            logging.info("Training finished in %.1fs", time.time() - start)
            print(f"weights_sha256={weights_digest(trainer.model)} step={int(trainer.step.numpy())} (SHA-256 of the "
                  "trained weights: a rerun with --deterministic, or a resumed run, prints the same)")
            if callback is not None:
                produced["eval"] = trainer.last_eval or trainer.evaluate()
        elif mode == "eval":
            if "train" not in produced:
                trainer.restore_for_inference(FLAGS.checkpoint or None)
            produced["eval"] = trainer.evaluate()
        elif mode == "export":
            if "train" not in produced:
                trainer.restore_for_inference(FLAGS.checkpoint or None)
            if not trainer.chief:
                continue
            try:  # each task builds its own serving signatures (and refuses clearly when it cannot serve)
                task.export(trainer.model, export_dir, extra_settings={"step": int(trainer.step.numpy())})
                if FLAGS.export_tflite:
                    produced["tflite"] = task.export_tflite(trainer.model, export_dir)
            except ValueError as e:
                raise app.UsageError(str(e))
            logging.info("Exported the SavedModel to %s", export_dir)
            produced["export"] = export_dir
            if FLAGS.predict_examples and c.eval_pattern and hasattr(task, "serving_predict"):
                run_report.print_exported_predictions(export_dir, c.eval_pattern, FLAGS.predict_examples)
        elif mode == "align":
            produced["align"] = _align(task, trainer, restore="train" not in produced)
    if "eval" in produced and trainer.chief:
        r = produced["eval"]
        shown = ("top1", "top5", "map", "triplet_accuracy", "weighted_triplet_accuracy")
        summary = ", ".join(f"{k}={r[k]:.4f}" for k in shown if k in r)
        if r.get("num_nonfinite"):
            summary += f", {r['num_nonfinite']} NaN/inf predictions (counted as misses)"
        print(f"Evaluation at step {r['step']} on {r['num_examples']} videos: {summary} "
              f"({os.path.join(FLAGS.model_dir, 'eval_results.json')})")
    if trainer.chief:
        synthetic = ({"train_videos": FLAGS.synthetic_train_videos, "classes": FLAGS.synthetic_classes}
                     if FLAGS.synthetic else None)
        run_report.print_summary(produced, trainer, task, FLAGS.model_dir, synthetic, FLAGS.pictures)
    return produced


def _fail(message, code):
    """One `error:` line on stderr (no traceback, no flag listing) and the exit status."""
    sys.stderr.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv):
    """Runs `--mode` with the parsed flags (`app.run(main)`); exits with the status of the module docstring."""
    quiet_tensorflow()
    from kerasvid.training import CheckpointWriteError, DivergenceError, NonFiniteStateError, Preempted, WorkerLostError
    from kerasvid.training.checkpoints import CheckpointMismatchError, UntrackedVariableError

    try:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        run(FLAGS.mode)
    except app.UsageError as e:
        _fail(f"{e} ({_PROG} --helpfull lists the flags)", EXIT_USAGE)
    # a checkpoint that does not fit, or eval / export with no checkpoint: the message says what to do
    except (CheckpointMismatchError, UntrackedVariableError, FileNotFoundError) as e:
        _fail(str(e), EXIT_USAGE)
    except (DivergenceError, NonFiniteStateError) as e:
        _fail(str(e), EXIT_DIVERGED)
    except CheckpointWriteError as e:
        _fail(str(e), EXIT_UNWRITABLE)
    except WorkerLostError as e:
        _fail(str(e), EXIT_WORKER_LOST)
    except Preempted as e:
        logging.warning("%s", e)
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except Exception as e:  # a bad record or shard met while training or evaluating: its one line, not a traceback
        from kerasvid.data.pipeline import bad_data_message

        message = bad_data_message(e)
        if message is None:
            raise
        _fail(f"{message} (--data_kwargs=on_error=skip skips and counts such records)", EXIT_USAGE)


def command(argv):
    """`kerasvid train [flags]`: the same as `python train/main.py [flags]`; exits with its status."""
    global _PROG
    if any(arg in ("-h", "-help", "--help", "--helpshort", "-?") for arg in argv):
        print(f"{__doc__}\nflags (--helpfull also lists absl's own):\n\n{FLAGS.module_help(__name__)}")
        return 0
    previous, _PROG = _PROG, "kerasvid train"
    try:
        app.run(main, argv=[_PROG, *argv])
    finally:
        _PROG = previous
