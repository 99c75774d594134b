"""What a training run finds out about its data before it starts: the class names (`labels.txt` beside the
records, or those recorded by an earlier run), the number of records (for epochs -> steps), the generated synthetic
data of each task (`synthetic_data`), and the run's `run_config.json`.

`kerasvid train` (train/main.py) calls these; each is usable on its own:

```python
train, heldout = synthetic_records("/tmp/run/data", num_classes=4)
names = label_names(patterns=(train,))          # labels.txt beside the shards
count_records(train)                            # 256
synthetic_data("/tmp/ego/data", "actor_observer")["task_kwargs"]   # frames_root, train_csv, eval_csv, ...
```
"""
import json
import os
import time

from absl import logging

RUN_CONFIG = "run_config.json"
LABELS_FILE = "labels.txt"


def read_labels(path):
    """The class names of a labels file (one per line, blank lines skipped), index order.

    Raises:
        ValueError: a name listed twice, or bytes that are not UTF-8, naming the file and line (a UTF-8 byte-order
            mark is accepted).
    """
    from kerasvid.data import sources

    lines = [(n, line.strip()) for n, line in enumerate(sources.read_text(path, "labels file").splitlines(), 1)]
    lines = [(n, name) for n, name in lines if name]
    sources.check_unique_names(path, [name for _, name in lines], [n for n, _ in lines])
    return tuple(name for _, name in lines)


def _find_labels_file(patterns):
    """`labels.txt` beside the first file of the first pattern (in order) that has one, or "" (empty patterns and
    patterns that match nothing are passed over).

    Raises:
        ValueError: the records of `patterns` lie in directories whose `labels.txt` files list other classes (or
            the same in another order): shards converted with two label maps would be read as one, with the
            classes mixed up.
    """
    import tensorflow as tf

    found = []
    for pattern in patterns:
        files = tf.io.gfile.glob(pattern) if pattern else []
        for folder in dict.fromkeys(os.path.dirname(f) for f in files):
            candidate = os.path.join(folder, LABELS_FILE)
            if tf.io.gfile.exists(candidate) and candidate not in found:
                found.append(candidate)
    if len(found) > 1:
        first = read_labels(found[0])
        for other in found[1:]:
            names = read_labels(other)
            if names != first:
                diff = next((i for i, (a, b) in enumerate(zip(first, names)) if a != b), min(len(first), len(names)))
                raise ValueError(f"The records come from two conversions with different label maps: {found[0]} "
                                 f"({len(first)} classes) and {other} ({len(names)} classes) differ at class index "
                                 f"{diff}; convert every split with one --label_map.")
    return found[0] if found else ""


def label_names(labels_file="", patterns=(), model_dir=""):
    """The class names of a run, index order, or `()` when nothing names them.

    Args:
        labels_file: a labels file; "" = `labels.txt` beside the records (beside the first file, in pattern order,
            that has one).
        patterns: record file patterns, in the order searched.
        model_dir: when no labels file is found, the names recorded in `<model_dir>/run_config.json` (an eval or
            export of a finished run without its data); "" = do not look there.

    Raises:
        ValueError: `labels_file` is given and does not exist; the records lie beside `labels.txt` files that
            differ; a labels file lists a class twice or is not UTF-8 (`read_labels`).
    """
    if labels_file and not os.path.exists(labels_file):
        raise ValueError(f"--labels_file={labels_file!r} does not exist.")
    beside = _find_labels_file(patterns)  # checked even with --labels_file: the records' indices must agree
    labels_file = labels_file or beside
    names = read_labels(labels_file) if labels_file else ()
    if not names and model_dir:
        names = tuple(read_run_config(model_dir).get("label_names", ()))
    return names


def count_records(pattern):
    """Number of records in the files matching `pattern` (reads them all)."""
    import tensorflow as tf

    files = tf.io.gfile.glob(pattern)
    return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))


# The synthetic data of each task: what `synthetic_data` writes and the settings the task reads it with.
SYNTHETIC_TASKS = ("classification", "actor_observer", "action_context")
# task_kwargs that locate a task's data: with --synthetic the generated data's replace a recipe's.
_SYNTHETIC_LOCATIONS = {"actor_observer": ("frames_root", "train_csv", "eval_csv", "charades_csv", "charades_root"),
                       "action_context": ("conjugate_dir",)}


def synthetic_data(data_dir, task="classification", *, num_classes=4, num_frames=16, size=64, train_videos=256,
                   eval_videos=64, seed=0, progress=True, recorded=None):
    """Writes (once: a `DONE` file records the settings of a complete set) the synthetic moving-digits data of a
    task under `data_dir` and returns where it is, as the task's settings.

    - "classification": training and held-out records (`kerasvid.data.synthetic.write_synthetic_dataset`).
    - "action_context": the same, plus the conjugate of every training record under `<data_dir>/conjugates` (the
      clip without its digit: `write_synthetic_dataset(conjugate_dir=)`).
    - "actor_observer": training and evaluation ego/exo pairs as Charades-Ego frame folders and CSVs
      (`write_synthetic_charades_ego`), with the triplet sampling scaled to the clips: an anchor every 2nd
      third-person frame, negatives more than `num_frames // 4` frames from the positive, 12 fps.

    Args:
        data_dir: where the data and `DONE` go.
        task: one of `SYNTHETIC_TASKS`.
        num_classes, num_frames, size: motion classes, frames per video, height = width.
        train_videos, eval_videos: videos (pairs for "actor_observer") of the two splits.
        seed: the training split's seed (the held-out split uses `seed + 1000`).
        progress: report the videos written (`kerasvid.progress.Progress`: a bar, or log lines).
        recorded: the settings an earlier run recorded (`run_config.json`'s "synthetic"): other settings are
            refused even when `data_dir` is gone (the run's checkpoints were trained on that set).

    Returns:
        dict with "train_pattern", "eval_pattern" (records; "" for "actor_observer"), "task_kwargs" (the task's data
        locations and sampling settings; `{}` for "classification") and "settings" (what `DONE` records).

    Raises:
        ValueError: an unknown task; fewer than 4 frames for "actor_observer"; `data_dir` holds a set written with other
            settings (it is never replaced: a resumed run trains on the data it started with).
    """
    from kerasvid import progress as progress_lib
    from kerasvid.data import synthetic

    if task not in SYNTHETIC_TASKS:
        raise ValueError(f"--synthetic makes data for the tasks {', '.join(SYNTHETIC_TASKS)}, got task={task!r}.")
    settings = {"task": task, "num_classes": int(num_classes), "num_frames": int(num_frames), "size": int(size),
                "train_videos": int(train_videos), "eval_videos": int(eval_videos), "seed": int(seed)}
    done = os.path.join(data_dir, "DONE")
    splits = (("train", train_videos, seed), ("heldout", eval_videos, seed + 1000))
    patterns = {key: os.path.join(data_dir, f"{split}-*-of-*.tfrecord")
                for key, split in (("train_pattern", "train"), ("eval_pattern", "heldout"))}
    if task == "actor_observer":
        if num_frames < 4:  # an anchor needs a negative more than num_frames // 4 frames from its positive
            raise ValueError(f"The actor_observer task's synthetic videos need at least 4 frames, got num_frames="
                             f"{num_frames} (--synthetic_frames).")
        patterns = {"train_pattern": "", "eval_pattern": ""}
        kwargs = {"frames_root": os.path.join(data_dir, "frames"), "train_csv": os.path.join(data_dir, "train.csv"),
                  "eval_csv": os.path.join(data_dir, "heldout.csv"),
                  "charades_csv": os.path.join(data_dir, "train_charades.csv"),
                  "charades_root": os.path.join(data_dir, "frames"), "fps": 12.0, "anchor_stride": 2,
                  "min_gap": max(1, num_frames // 4)}
    elif task == "action_context":
        kwargs = {"conjugate_dir": os.path.join(data_dir, "conjugates")}
    else:
        kwargs = {}
    found = synthetic_settings(data_dir)
    for earlier, where in ((found, f"{data_dir!r} holds synthetic data"),
                           (recorded, "the run_config.json beside it records a run on synthetic data")):
        if earlier and earlier != settings:
            diff = ", ".join(f"{k}={earlier.get(k)!r} (this command: {v!r})" for k, v in settings.items()
                             if earlier.get(k) != v)
            raise ValueError(f"{where} made with {diff}; rerun with the settings it was made with, or use another "
                             f"--model_dir.")
    if found is not None:
        return {**patterns, "task_kwargs": kwargs, "settings": settings}
    start = time.time()
    bar = progress_lib.Progress(train_videos + eval_videos, f"synthetic {task} data", unit="videos",
                                enabled=progress)
    for split, videos, split_seed in splits:
        geometry = dict(num_videos=videos, num_classes=num_classes, num_frames=num_frames, height=size, width=size,
                        seed=split_seed)
        if task == "actor_observer":
            synthetic.write_synthetic_charades_ego(data_dir, split, fps=kwargs["fps"], **geometry)
        else:
            conjugates = kwargs["conjugate_dir"] if task == "action_context" and split == "train" else ""
            synthetic.write_synthetic_dataset(data_dir, split, conjugate_dir=conjugates, **geometry)
        bar.update(videos, text=split)
    with open(done, "w") as f:
        json.dump(settings, f, sort_keys=True)
        f.write("\n")
    logging.info("Wrote synthetic %s data to %s in %.1fs", task, data_dir, time.time() - start)
    return {**patterns, "task_kwargs": kwargs, "settings": settings}


def synthetic_settings(data_dir):
    """The settings of the synthetic set in `data_dir` (what its `DONE` file records; `{}` for a set that records
    none), or None when `data_dir` holds no complete set."""
    path = os.path.join(data_dir, "DONE")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def synthetic_records(data_dir, *, num_classes=4, num_frames=16, size=64, train_videos=256, eval_videos=64,
                      seed=0):
    """The classification set of `synthetic_data`: its patterns `(train, heldout)`."""
    data = synthetic_data(data_dir, "classification", num_classes=num_classes, num_frames=num_frames, size=size,
                          train_videos=train_videos, eval_videos=eval_videos, seed=seed)
    return data["train_pattern"], data["eval_pattern"]


def with_synthetic_task_kwargs(task, task_kwargs, generated):
    """A task's `task_kwargs` with the synthetic data's: its data locations replace the given ones (a recipe's
    Charades-Ego folders or conjugate directory; the classification-mixed setup's Charades CSV only where the
    settings ask for that setup), its sampling settings fill in the ones not given.

    Returns:
        `(task_kwargs, replaced)`: the merged dict and the given keys whose values were replaced.
    """
    locations = _SYNTHETIC_LOCATIONS.get(task, ())
    merged, replaced = dict(task_kwargs), []
    for key, value in generated.items():
        if key in locations:
            if key in ("charades_csv", "charades_root") and not task_kwargs.get("charades_csv"):
                continue
            if key in task_kwargs and task_kwargs[key] != value:
                replaced.append(key)
            merged[key] = value
        else:
            merged.setdefault(key, value)
    return merged, replaced


def read_run_config(model_dir):
    """The `run_config.json` an earlier run wrote in `model_dir` (`write_run_config`), or `{}`."""
    path = os.path.join(model_dir, RUN_CONFIG)
    if "://" in path:  # a bucket: TensorFlow's file system
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            return {}
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write_run_config(model_dir, flag_settings, label_names, num_classes, model_settings=None, synthetic=None):
    """Writes `<model_dir>/run_config.json` atomically: `{"flags": flag_settings, "label_names": [...],
    "num_classes": n, "model_settings": {...}}` (what eval/export of the run without its data, a resumed run's
    compatibility check, and `kerasvid extract --checkpoint=<model_dir>`, read back), plus `"synthetic": {...}`
    (the settings of `synthetic_data`) for a run on generated data. Returns its path."""
    import tensorflow as tf

    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, RUN_CONFIG)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        record = {"flags": flag_settings, "label_names": list(label_names), "num_classes": num_classes,
                  "model_settings": model_settings or {}}
        if synthetic:
            record["synthetic"] = synthetic
        json.dump(record, f, indent=1, default=str)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return path
