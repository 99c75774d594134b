"""Training throughput of the custom loop: clips/s and steps/s, float32 graph vs `jit_compile=True`, and the share
of step time spent waiting for input (1 - clips/s on records / clips/s on one cached batch; noisy on a shared
machine, so the pipeline's own throughput is reported beside it).

    python benchmarks/train.py [--steps 12] [--models c2d_resnet18,c3d_resnet18]

Models run at the quickstart geometry (8 frames x 32x32, stem stride 2, batch 8) on synthetic moving-digit records
written to a temporary directory. Prints JSON and a markdown table (all ratios come from one run of this script)
and writes both to benchmarks/results/bench_train_step.{json,md}.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from kerasvid.data import write_synthetic_dataset  # noqa: E402
from kerasvid.tasks import TaskConfig  # noqa: E402
from kerasvid.tasks.classification import ClassificationTask  # noqa: E402
from kerasvid.training import TrainConfig, Trainer, get_strategy  # noqa: E402
from _report import save_report  # noqa: E402


class CachedBatchTask(ClassificationTask):
    """The same task, but training repeats one cached batch (no decoding: pure compute)."""

    name = "cached_batch_benchmark"

    def build_dataset(self, training, input_context=None):
        ds = super().build_dataset(training, input_context)
        return ds.take(1).cache().repeat() if training else ds


def measure(task_cls, config, steps, jit):
    trainer = Trainer(task_cls(config), get_strategy("default"), tempfile.mkdtemp(),
                      TrainConfig(train_steps=steps + 2, log_every=1, checkpoint_every=0, optimizer="adam",
                                  learning_rate=1e-3, jit_compile=jit))
    trainer.train()
    rates = [logs["clips_per_s"] for step, logs in trainer.history if step > 2]  # skip tracing / warm-up
    clips_per_s = len(rates) / sum(1.0 / r for r in rates)  # harmonic mean = total clips / total time
    return clips_per_s, clips_per_s / config.batch_size


def pipeline_clips_per_s(config, batches):
    """Clips/s the training input pipeline alone delivers (after one warm-up batch)."""
    it = iter(ClassificationTask(config).build_dataset(training=True))
    next(it)
    start = time.time()
    for _ in range(batches):
        next(it)
    return batches * config.batch_size / (time.time() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--models", default="c2d_resnet18,c3d_resnet18")
    args = parser.parse_args()
    data = tempfile.mkdtemp()
    start = time.time()
    pattern = write_synthetic_dataset(data, "train", num_videos=64, num_classes=4, num_frames=16, height=64,
                                      width=64, seed=0)
    rows = []
    for model in args.models.split(","):
        config = TaskConfig(model=model, model_kwargs={"stem_stride": 2}, num_classes=4, train_pattern=pattern,
                            eval_pattern=pattern, num_frames=8, stride=2, image_size=(32, 32), batch_size=8,
                            data_kwargs={"flip": False})
        real, real_steps = measure(ClassificationTask, config, args.steps, jit=False)
        cached, _ = measure(CachedBatchTask, config, args.steps, jit=False)
        jit, _ = measure(CachedBatchTask, config, args.steps, jit=True)
        pipeline = pipeline_clips_per_s(config, 3 * args.steps)
        rows.append({"model": model, "input": "8x32x32x3", "batch": 8,
                     "clips_per_s_records": round(real, 2), "steps_per_s_records": round(real_steps, 3),
                     "clips_per_s_cached": round(cached, 2), "clips_per_s_jit_cached": round(jit, 2),
                     "jit_speedup": round(jit / cached, 3), "clips_per_s_pipeline_only": round(pipeline, 1),
                     "pipeline_over_training": round(pipeline / cached, 2),
                     "input_wait_share": round(max(0.0, 1.0 - real / cached), 3)})
    result = {"device": "cpu", "cpus": os.cpu_count(), "tensorflow": tf.__version__, "steps": args.steps,
              "load_average": os.getloadavg()[0], "seconds": round(time.time() - start, 1), "rows": rows}
    lines = ["| model | input | clips/s (records) | clips/s (cached batch) | clips/s (jit, cached) | jit speed-up "
             "| input-wait share | pipeline alone (clips/s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} b{r['batch']} | {r['clips_per_s_records']} | "
                     f"{r['clips_per_s_cached']} | {r['clips_per_s_jit_cached']} | {r['jit_speedup']}x | "
                     f"{100 * r['input_wait_share']:.0f}% | {r['clips_per_s_pipeline_only']} "
                     f"({r['pipeline_over_training']}x training) |")
    table = "\n".join(lines)
    save_report("train", result, table)


if __name__ == "__main__":
    main()
