"""What a training run finds out about its data before it starts: the class names (`labels.txt` beside the
records, or those recorded by an earlier run), the number of records (for epochs -> steps), generated synthetic
records, and the run's `run_config.json`.

`kerasvid train` (train/main.py) calls these; each is usable on its own:

```python
train, heldout = synthetic_records("/tmp/run/data", num_classes=4)
names = label_names(patterns=(train,))          # labels.txt beside the shards
count_records(train)                            # 256
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


def find_labels_file(patterns):
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
        labels_file: a labels file; "" = `labels.txt` beside the records (`find_labels_file(patterns)`).
        patterns: record file patterns, in the order searched.
        model_dir: when no labels file is found, the names recorded in `<model_dir>/run_config.json` (an eval or
            export of a finished run without its data); "" = do not look there.

    Raises:
        ValueError: `labels_file` is given and does not exist; the records lie beside `labels.txt` files that
            differ; a labels file lists a class twice or is not UTF-8 (`read_labels`).
    """
    if labels_file and not os.path.exists(labels_file):
        raise ValueError(f"--labels_file={labels_file!r} does not exist.")
    beside = find_labels_file(patterns)  # checked even with --labels_file: the records' indices must agree
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


def synthetic_records(data_dir, *, num_classes=4, num_frames=16, size=64, train_videos=256, eval_videos=64,
                      seed=0):
    """Writes (once: a `DONE` file marks a complete set) moving-digits training and held-out records under
    `data_dir` and returns their patterns `(train, heldout)`.

    Args:
        data_dir: where the shards, `labels.txt` and `DONE` go.
        num_classes, num_frames, size: motion classes, frames per video, height = width (`write_synthetic_dataset`).
        train_videos, eval_videos: videos of the two splits.
        seed: the training split's seed (the held-out split uses `seed + 1000`).
    """
    from kerasvid.data import synthetic

    done = os.path.join(data_dir, "DONE")
    kwargs = dict(num_classes=num_classes, num_frames=num_frames, height=size, width=size)
    if not os.path.exists(done):
        start = time.time()
        synthetic.write_synthetic_dataset(data_dir, "train", num_videos=train_videos, seed=seed, **kwargs)
        synthetic.write_synthetic_dataset(data_dir, "heldout", num_videos=eval_videos, seed=seed + 1000, **kwargs)
        with open(done, "w") as f:
            f.write("ok\n")
        logging.info("Wrote synthetic records to %s in %.1fs", data_dir, time.time() - start)
    return (os.path.join(data_dir, "train-*-of-*.tfrecord"), os.path.join(data_dir, "heldout-*-of-*.tfrecord"))


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


def write_run_config(model_dir, flag_settings, label_names, num_classes, model_settings=None):
    """Writes `<model_dir>/run_config.json` atomically: `{"flags": flag_settings, "label_names": [...],
    "num_classes": n, "model_settings": {...}}` (what eval/export of the run without its data, a resumed run's
    compatibility check, and `kerasvid extract --checkpoint=<model_dir>`, read back). Returns its path."""
    import tensorflow as tf

    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, RUN_CONFIG)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump({"flags": flag_settings, "label_names": list(label_names), "num_classes": num_classes,
                   "model_settings": model_settings or {}}, f, indent=1, default=str)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return path
