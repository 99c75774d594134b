"""GPU suite: the speed and memory figures of the papers' systems on one accelerator, in one run (< 8 min).

    python benchmarks/gpu.py            # on a machine with a GPU
    python benchmarks/gpu.py --smoke    # tiny sizes on the CPU (< 30 s; run by tests/test_gpu_benchmark.py)

Figures (each a row of the JSON and of the markdown table):

1. `cpnet_resnet34` inference, videos/s at 8 and 32 frames, 112 px, batch 1 (CPNet supplement Fig. 4: 10.1 and
   3.9 videos/s on a GTX 1080 Ti);
2. training step (forward, cross-entropy, backward, SGD) of C2D / CPNet / NL ResNet-18 at 8 and 32 frames, 112 px,
   batch 1, with the `mixed_float16` policy (float32 in `--smoke`): seconds and peak device memory, with the ratios
   to C2D of the same run;
3. frame folding: `c2d_resnet18` training step and inference at the first frame count, as kerasvid builds it
   (2D convs on the frames folded into the batch) against its Conv3D form (0.1's layout,
   `kerasvid.layers.conv3d_form`) and, except in `--smoke`, XLA-compiled; with the ratios to the Conv3D form;
4. TVNet flow frames/s at 224 px (TVNet-50, the default configuration, XLA, 8 pairs per call);
5. input pipeline (`kerasvid.data.video_dataset` on synthetic records, 16-frame clips, 112 px) frames/s on TF's
   default inter-op pool (one thread per CPU core; a private pool of that size hung in --smoke here);
6. `cp_knn` neighbour agreement with TF32 matmuls on vs off (the share of queries whose k neighbours are the same
   set; res3 of CPNet-R18 at 8 frames: N = 8 x 28 x 28, C = 128, k = 8). Without a GPU TF32 never runs, so
   `--smoke` instead rounds the points to TF32's 10 mantissa bits (the rounding a TF32 matmul applies to its inputs)
   and compares with the float32 points: the agreement a plain TF32 matmul ranking would reach.

Timings: warm-up first (tracing, XLA compilation, cuDNN autotuning), then the minimum over `--repeats` calls.
Peak memory: `tf.config.experimental.get_memory_info(device)["peak"]` above what was allocated before the step.
Prints JSON and a markdown table and writes them to benchmarks/results/gpu.{json,md}.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

from _report import folding_variants, save_report, sgd_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FULL = dict(size=112, frames=(8, 32), tvnet_size=224, tvnet_pairs=8, tvnet_iterations=50, pipeline_videos=32,
            pipeline_frames=16, pipeline_size=112, knn=(8, 28, 128, 8), repeats=5, policy="mixed_float16",
            folding_xla=True)
SMOKE = dict(size=48, frames=(3,), tvnet_size=32, tvnet_pairs=2, tvnet_iterations=5, pipeline_videos=4,
             pipeline_frames=4, pipeline_size=48, knn=(2, 6, 16, 4), repeats=1, policy="float32",
             folding_xla=False)
PAPER_VIDEOS_PER_S = {8: 10.1, 32: 3.9}  # CPNet supp. Fig. 4, cpnet_resnet34 on a GTX 1080 Ti


def _best_seconds(fn, repeats):
    fn()  # warm-up: tracing, compilation, autotuning
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _device():
    import tensorflow as tf

    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def cpnet_inference(cfg):
    import tensorflow as tf

    from kerasvid import zoo

    rows = []
    for frames in cfg["frames"]:
        model = zoo.cpnet_resnet34(num_classes=174, input_shape=(frames, cfg["size"], cfg["size"], 3))
        x = tf.random.uniform((1, frames, cfg["size"], cfg["size"], 3), seed=0)
        forward = tf.function(lambda x, model=model: model(x, training=False))
        seconds = _best_seconds(lambda: forward(x).numpy(), cfg["repeats"])
        rows.append({"figure": "cpnet_resnet34 inference", "frames": frames, "size": cfg["size"],
                     "videos_per_s": round(1.0 / seconds, 2), "paper_1080ti_videos_per_s":
                     PAPER_VIDEOS_PER_S.get(frames) if cfg is FULL else None})
    return rows


def _training_step(name, frames, size):
    import tensorflow as tf

    from kerasvid import zoo

    model = zoo.get_model(name, num_classes=174, input_shape=(frames, size, size, 3))
    x = tf.random.uniform((1, frames, size, size, 3), seed=1)
    return sgd_train_step(model, x, tf.constant([3]), 0.01)


def _reset_memory_stats(device):
    """Resets the device's peak-memory counter; False where TF keeps none (CPU devices on some builds)."""
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats(device)
        return True
    except ValueError as error:
        print(f"peak memory not measured on {device}: {error}", file=sys.stderr)
        return False


def training_steps(cfg):
    import keras
    import tensorflow as tf

    device = _device()
    rows = []
    keras.mixed_precision.set_global_policy(cfg["policy"])
    try:
        for frames in cfg["frames"]:
            results = {}
            for name in ("c2d_resnet18", "cpnet_resnet18", "nl_resnet18"):
                step = _training_step(name, frames, cfg["size"])
                step().numpy()
                tracked = _reset_memory_stats(device)
                base = tf.config.experimental.get_memory_info(device)["current"] if tracked else 0
                seconds = _best_seconds(lambda: step().numpy(), cfg["repeats"])
                peak = tf.config.experimental.get_memory_info(device)["peak"] - base if tracked else None
                results[name] = (seconds, peak)
            c2d_seconds, c2d_peak = results["c2d_resnet18"]
            for name, (seconds, peak) in results.items():
                rows.append({"figure": "training step", "model": name, "frames": frames, "size": cfg["size"],
                             "policy": cfg["policy"], "step_s": round(seconds, 4),
                             "peak_MiB": None if peak is None else round(peak / 2**20, 1),
                             "time_vs_c2d": round(seconds / c2d_seconds, 2),
                             "memory_vs_c2d": round(peak / c2d_peak, 2) if peak is not None and c2d_peak else None})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return rows


def frame_folding(cfg):
    import keras

    frames = cfg["frames"][0]
    keras.mixed_precision.set_global_policy(cfg["policy"])
    try:
        variants, _, difference = folding_variants("c2d_resnet18", frames, cfg["size"], xla=cfg["folding_xla"])
        seconds = {variant: [_best_seconds(fn, cfg["repeats"]) for fn in fns] for variant, fns in variants.items()}
    finally:
        keras.mixed_precision.set_global_policy("float32")
    base_train, base_infer = seconds["conv3d"]
    return [{"figure": "frame folding", "network": "c2d_resnet18", "variant": variant, "frames": frames,
             "size": cfg["size"], "policy": cfg["policy"], "step_s": round(train, 4), "inference_s": round(infer, 4),
             "speedup_vs_conv3d": f"{base_train / train:.2f}x train, {base_infer / infer:.2f}x inference",
             "max_logit_difference": float(f"{difference:.2g}")}
            for variant, (train, infer) in seconds.items()]


def tvnet_flow(cfg):
    import tensorflow as tf

    from kerasvid.layers import TVNet

    size, pairs = cfg["tvnet_size"], cfg["tvnet_pairs"]
    layer = TVNet(iterations=cfg["tvnet_iterations"])
    frames = tf.random.uniform((2, pairs, size, size, 3), 0, 255, seed=2)
    seconds = _best_seconds(lambda: layer(frames[0], frames[1]).numpy(), cfg["repeats"])
    return [{"figure": "TVNet flow", "size": size, "iterations": cfg["tvnet_iterations"], "pairs_per_call": pairs,
             "xla": bool(layer._use_xla()), "frames_per_s": round(pairs / seconds, 1)}]


def input_pipeline(cfg):
    from kerasvid.data import pipeline, write_synthetic_dataset

    frames, size, batch = cfg["pipeline_frames"], cfg["pipeline_size"], 4
    with tempfile.TemporaryDirectory() as workdir:
        pattern = write_synthetic_dataset(workdir, "bench", num_videos=cfg["pipeline_videos"], num_frames=2 * frames,
                                          height=2 * size, width=2 * size, num_shards=2)
        dataset = pipeline.video_dataset(pattern, num_frames=frames, image_size=(size, size), training=True,
                                         batch_size=batch, seed=0, shuffle_buffer=4)
        batches = max(2, cfg["pipeline_videos"] // batch)
        iterator = iter(dataset)
        next(iterator)  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
        # Dropped before the records are deleted: a live iterator over deleted shards hung the interpreter at exit.
        del iterator, dataset
    return [{"figure": "input pipeline", "size": size, "frames_per_clip": frames, "threads": os.cpu_count(),
             "frames_per_s": round(batches * batch * frames / seconds, 1)}]


def tf32_round(x):
    """Rounds float32 values to TF32 (10 explicit mantissa bits, round to nearest even), as a TF32 matmul's inputs."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


def _same_sets(a, b):
    return float(np.mean(np.all(np.sort(a, axis=-1) == np.sort(b, axis=-1), axis=-1)))


def knn_tf32_agreement(cfg):
    import tensorflow as tf

    from kerasvid.ops import cp_knn

    frames, side, channels, k = cfg["knn"]
    rng = np.random.default_rng(3)
    points = np.maximum(rng.normal(0.5, 1.0, (1, frames * side * side, channels)), 0).astype(np.float32)  # ReLU-fed
    enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        tf.config.experimental.enable_tensor_float_32_execution(False)
        exact = cp_knn(tf.constant(points), frames, k).numpy()
        if _device().startswith("GPU"):
            tf.config.experimental.enable_tensor_float_32_execution(True)
            other, mode = cp_knn(tf.constant(points), frames, k).numpy(), "TF32 matmuls on the GPU"
        else:
            other, mode = cp_knn(tf.constant(tf32_round(points)), frames, k).numpy(), "TF32 input rounding, simulated"
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(enabled)
    return [{"figure": "cp_knn TF32 vs float32", "mode": mode, "points": frames * side * side,
             "channels": channels, "k": k, "same_neighbour_sets": round(_same_sets(exact, other), 4)}]


def markdown(rows, device):
    lines = [f"Device: {device}.", "", "| figure | setting | result |", "|---|---|---|"]
    for r in rows:
        results = ("_per_s", "_s", "_MiB", "_vs_c2d", "_sets", "_vs_conv3d", "_difference")
        setting = ", ".join(f"{k}={v}" for k, v in r.items() if k != "figure" and not k.endswith(results))
        result = ", ".join(f"{k}={v}" for k, v in r.items() if k.endswith(results) and v is not None)
        lines.append(f"| {r['figure']} | {setting} | {result} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (for the test suite)")
    parser.add_argument("--out_dir", default=None, help="where to write gpu.json / gpu.md (default: results/)")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import tensorflow as tf

    cfg = SMOKE if args.smoke else FULL
    device = _device()
    if not args.smoke and not device.startswith("GPU"):
        print("benchmarks/gpu.py: no GPU visible; run with --smoke for the CPU check", file=sys.stderr)
    name = "gpu_smoke" if args.smoke else "gpu"
    with tf.device(device):
        rows = []
        for part in (cpnet_inference, training_steps, frame_folding, tvnet_flow, input_pipeline,
                     knn_tf32_agreement):
            start = time.perf_counter()
            rows += part(cfg)
            print(f"{part.__name__}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    save_report(name, {"device": device, "smoke": args.smoke, "rows": rows}, markdown(rows, device), args.out_dir)
    return rows


if __name__ == "__main__":
    main()
