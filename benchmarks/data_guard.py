"""Cost of the guarded decoding (bad records named / skipped with graph ops) against a plain parallel map.

Both read the same records (64 videos of 32 random-texture 128x170 JPEG frames, 4 shards; clips of 8 frames,
stride 2, 112x112, batch 8) in one process, alternating, best of `--repeats`: "guarded" is
`video_dataset(on_error=...)` as shipped; "plain_map" is the pre-issue-13 pipeline shape (`records.map(decode)`
with the same per-record decoder, no naming of bad records, no skipping).

Run: `python benchmarks/data_guard.py [--repeats 5 --batches 30]`; prints JSON and a markdown table.
"""
import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from _report import save_report
from kerasvid.data import pipeline, schema, writer
from kerasvid.data.config import VideoDataConfig


def _records(d):
    rng = np.random.default_rng(0)
    frames = [writer.encode_jpeg(f, 90) for f in rng.integers(0, 256, (32, 128, 170, 3)).astype(np.uint8)]
    writer.write_records([schema.make_sequence_example(frames, [i % 4]) for i in range(64)], d, "b", 4)
    return writer.file_pattern(d, "b")


def _plain(pattern, training, **kw):
    decode = pipeline.make_decoder(VideoDataConfig(num_frames=8, stride=2, image_size=(112, 112), training=training,
                                                   num_classes=4))
    files = tf.data.Dataset.from_tensor_slices(pipeline.list_files(pattern))
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE)
    records = tf.data.Dataset.zip((records.repeat(), tf.data.Dataset.random(seed=0)))
    return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(8).prefetch(tf.data.AUTOTUNE)


def _rate(ds, batches):
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * 8 / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    pattern = _records(tempfile.mkdtemp())
    rows = {}
    clips = VideoDataConfig(num_frames=8, stride=2, image_size=(112, 112), batch_size=8, num_classes=4)
    for training in (True, False):
        contenders = {
            "plain_map": lambda: _plain(pattern, training),
            "guarded_raise": lambda: pipeline.video_dataset(pattern, clips.replace(training=training,
                                                                                   repeat=None if training else 1000)),
            "guarded_skip": lambda: pipeline.video_dataset(pattern, clips.replace(
                training=training, repeat=None if training else 1000, on_error="skip")),
        }
        best = {k: 0.0 for k in contenders}
        for _ in range(args.repeats):
            for name, make in contenders.items():
                best[name] = max(best[name], _rate(make(), args.batches))
        rows["train" if training else "eval"] = {k: round(v, 1) for k, v in best.items()}
    data = {"clips_per_s_best_of": args.repeats, "cpus": os.cpu_count(), "results": rows}
    table = "| mode | plain map | guarded (raise) | guarded (skip) | raise / plain |\n|---|---|---|---|---|\n"
    for mode, r in rows.items():
        table += (f"| {mode} | {r['plain_map']} | {r['guarded_raise']} | {r['guarded_skip']} | "
                  f"{r['guarded_raise'] / r['plain_map']:.2f} |\n")
    save_report("bench_data_guard", data, table.rstrip())


if __name__ == "__main__":
    main()
