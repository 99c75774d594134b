"""Does training make TVNet better than TV-L1? Held-out end-point error before and after training TVNet's kernels.

The claim of Fan et al. (CVPR 2018, "End-to-End Learning of Motion Representation for Video Understanding"): the
unrolled TV-L1 solver, once its kernels are trained, gives better flow than the TV-L1 it starts as. This benchmark
tests it on pairs with known flow:

- synthetic pairs: grey crops of scikit-image's bundled photographs; the second frame is the crop, the first frame is
  the crop warped by a random smooth flow (`kerasvid.ops.bilinear_warp`, so `frame2(x + flow) = frame1(x)` exactly
  under bilinear interpolation). The flow is a `--grid` x `--grid` field of Gaussian displacements (std
  `--max_flow / 2` px, clipped to `--max_flow`), upsampled bicubically; warping happens on a larger crop, of which
  the centre is kept, so no border is replicated into the pair.
- the motorcycle stereo pair (scikit-image `stereo_motorcycle`) at quarter size, cut into crops, ground truth from
  its disparity (u = -disparity, v = 0; unknown disparity masked): real frames, only in the held-out set.

Training images: camera, astronaut, coffee, rocket; held out: chelsea and the motorcycle crops. TVNet (a few
scales, warps and iterations, so that training runs in minutes on a 2-core CPU; its options, e.g. OpenCV's cascade
pyramid and bicubic warps, are flags) is trained with Adam on the training pairs twice from the same start: with the
unsupervised TV-L1 energy (`kerasvid.losses.tvl1_energy`, no ground truth) and with the supervised
`kerasvid.losses.EndpointError`. Reported: mean held-out (and training) EPE of the untrained TVNet, both trained
TVNets, scikit-image's `optical_flow_tvl1` (defaults) and, with `--opencv_python` (see `benchmarks/tvnet.py`),
OpenCV's `DualTVL1OpticalFlow` (defaults and scaleStep 0.5) on the same pairs (`--peers false` skips these three).

    python benchmarks/tvnet_training.py [--steps 40] [--opencv_python /tmp/cvenv/bin/python]
    python benchmarks/tvnet_training.py --setting 5/3/15 --pyramid cascade --presmoothing false \
        --warp_interpolation bicubic --warp_padding zeros --steps 100 --peers false   # OpenCV-like TVNet
    python benchmarks/tvnet_training.py --smoke      # 2 pairs, 2 steps, 32 px, no XLA: a test of the script

Prints JSON and a markdown table and writes benchmarks/results/tvnet_training.{json,md} (or `--out_dir`).
"""
import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from _report import save_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TRAIN_IMAGES = ("camera", "astronaut", "coffee", "rocket")
HELD_OUT_IMAGES = ("chelsea",)

_OPENCV_SCRIPT = r"""
import json, sys, time, numpy as np, cv2
data = np.load(sys.argv[1])
first, second = data["first"], data["second"]
for name, options in {"defaults": {}, "scaleStep 0.5": {"ScaleStep": 0.5}}.items():
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    for key, value in options.items():
        getattr(tvl1, "set" + key)(value)
    start = time.perf_counter()
    flows = np.stack([tvl1.calc(a, b, None) for a, b in zip(first, second)])
    seconds = (time.perf_counter() - start) / len(first)
    path = sys.argv[2] + name.replace(" ", "_") + ".npy"
    np.save(path, flows)
    print(json.dumps({"name": name, "seconds": seconds, "path": path, "version": cv2.__version__}), flush=True)
"""


def _grey(image):
    """scikit-image photograph -> float grey 0-255 (ITU-R 601 luma for RGB)."""
    image = np.asarray(image, np.float64)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.299, 0.587, 0.114])
    if image.max() <= 1.0:
        image = image * 255.0
    return image


def smooth_flow(rng, size, grid, max_flow):
    """A random smooth flow `[size, size, 2]`: a `grid x grid` Gaussian field upsampled bicubically, in pixels."""
    import tensorflow as tf

    coarse = np.clip(rng.normal(scale=max_flow / 2.0, size=(1, grid, grid, 2)), -max_flow, max_flow)
    return tf.image.resize(coarse.astype(np.float32), (size, size), method="bicubic").numpy()[0]


def synthetic_pairs(names, per_image, size, grid, max_flow, seed):
    """`per_image` pairs per named image: (frame1, frame2 [size, size] grey 0-255, flow [size, size, 2], name)."""
    import tensorflow as tf
    from skimage import data

    from kerasvid.ops.warp import bilinear_warp

    rng = np.random.default_rng(seed)
    margin = int(np.ceil(max_flow)) + 2
    big = size + 2 * margin
    pairs = []
    for name in names:
        image = _grey(getattr(data, name)())
        for _ in range(per_image):
            top = rng.integers(0, image.shape[0] - big + 1)
            left = rng.integers(0, image.shape[1] - big + 1)
            second = image[top:top + big, left:left + big].astype(np.float32)
            flow = smooth_flow(rng, big, grid, max_flow)
            first = bilinear_warp(tf.constant(second[None, :, :, None]), tf.constant(flow[None])).numpy()[0, :, :, 0]
            keep = np.s_[margin:margin + size, margin:margin + size]
            pairs.append((first[keep], second[keep], flow[keep], name))
    return pairs


def motorcycle_pairs(size, count):
    """Crops of scikit-image's motorcycle stereo pair at quarter size: (left, right, flow with NaN = unknown)."""
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()

    def quarter(image):  # 4x4 box down-sampling; inf (unknown disparity) propagates
        height, width = image.shape[0] // 4 * 4, image.shape[1] // 4 * 4
        image = image[:height, :width].astype(np.float64)
        return image.reshape(height // 4, 4, width // 4, 4, *image.shape[2:]).mean(axis=(1, 3))

    first, second = _grey(quarter(left)), _grey(quarter(right))
    u = -quarter(disparity) / 4.0
    flow = np.stack([np.where(np.isfinite(u), u, np.nan), np.zeros_like(u)], axis=-1)
    height, width = first.shape
    size = min(size, height, width)
    lefts = np.linspace(0, width - size, count).round().astype(int) if count > 1 else [(width - size) // 2]
    top = (height - size) // 2
    return [(first[top:top + size, x:x + size].astype(np.float32), second[top:top + size, x:x + size].astype(
        np.float32), flow[top:top + size, x:x + size].astype(np.float32), "motorcycle") for x in lefts]


def stack(pairs):
    """Pairs -> (frame1, frame2 `[n, H, W, 3]` grey as RGB, flow `[n, H, W, 2]`)."""
    rgb = lambda images: np.repeat(np.stack(images)[..., None], 3, axis=-1)  # noqa: E731
    return (rgb([p[0] for p in pairs]), rgb([p[1] for p in pairs]), np.stack([p[2] for p in pairs]))


def epe(flow, truth):
    """Mean end-point error per pair over the pixels with known flow (numpy, independent of the loss code)."""
    valid = np.all(np.isfinite(truth), axis=-1)
    error = np.sqrt(np.sum((flow - np.nan_to_num(truth)) ** 2, axis=-1))
    return np.array([error[i][valid[i]].mean() for i in range(len(flow))])


def tvnet_flows(layer, frame1, frame2):
    """One pair at a time (one compiled shape; the time per pair is that of an unbatched call)."""
    import tensorflow as tf

    return np.concatenate([layer(tf.constant(frame1[i:i + 1]), tf.constant(frame2[i:i + 1])).numpy()
                           for i in range(len(frame1))])


def train(layer, frame1, frame2, truth, loss_name, steps, batch, learning_rate, seed):
    """Adam on the layer's kernels; batches drawn at random from the training pairs. Returns the loss per step."""
    import keras
    import tensorflow as tf

    from kerasvid.losses import EndpointError, tvl1_energy

    optimizer = keras.optimizers.Adam(learning_rate)
    supervised = EndpointError()

    @tf.function
    def step(first, second, flow_true):
        with tf.GradientTape() as tape:
            flow = layer(first, second)
            if loss_name == "tvl1_energy":
                loss = tf.reduce_mean(tvl1_energy(first, second, flow))
            else:
                loss = supervised(flow_true, flow)
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(grads, layer.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    truth = np.where(np.isfinite(truth), truth, 2e9).astype(np.float32)  # EndpointError's unknown-flow marker
    losses, start = [], time.perf_counter()
    for number in range(steps):
        index = rng.choice(len(frame1), size=min(batch, len(frame1)), replace=False)
        losses.append(float(step(tf.constant(frame1[index]), tf.constant(frame2[index]), tf.constant(truth[index]))))
        if number in (0, steps - 1) or (number + 1) % 10 == 0:  # the first step compiles
            print(f"{loss_name} step {number + 1}/{steps}: loss {losses[-1]:.4f}, {time.perf_counter() - start:.1f} s",
                  file=sys.stderr, flush=True)
    return losses


def scikit_image_flows(frame1, frame2):
    from skimage.registration import optical_flow_tvl1

    flows = []
    start = time.perf_counter()
    for a, b in zip(frame1[..., 0] / 255.0, frame2[..., 0] / 255.0):
        v, u = optical_flow_tvl1(a, b)
        flows.append(np.stack([u, v], axis=-1))
    return np.stack(flows), (time.perf_counter() - start) / len(frame1)


def opencv_flows(opencv_python, frame1, frame2):
    """{name: (flows, seconds per pair)} from OpenCV's DualTVL1 in its own interpreter; {} without one."""
    if not opencv_python or not os.path.exists(opencv_python):
        print(f"OpenCV peer skipped: no python with opencv-contrib at {opencv_python!r}", file=sys.stderr)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        pair = os.path.join(tmp, "pairs.npz")
        to_uint8 = lambda g: np.clip(np.round(g[..., 0]), 0, 255).astype(np.uint8)  # noqa: E731
        np.savez(pair, first=to_uint8(frame1), second=to_uint8(frame2))
        result = subprocess.run([opencv_python, "-c", _OPENCV_SCRIPT, pair, os.path.join(tmp, "flow_")],
                                capture_output=True, text=True, check=True)
        out = {}
        for line in result.stdout.splitlines():
            r = json.loads(line)
            out[f"OpenCV {r['version']} DualTVL1 ({r['name']})"] = (np.load(r["path"]), r["seconds"])
        return out


def markdown(rows, config):
    sources = list(rows[0]["held_out_by_source"])
    lines = ["| method | held-out EPE (px) | " + " | ".join(f"held-out {name}" for name in sources)
             + " | training EPE (px) | s / pair |", "|---" * (4 + len(sources)) + "|"]
    for r in rows:
        train_epe = "-" if r.get("train_epe") is None else f"{r['train_epe']:.3f}"
        lines.append(f"| {r['method']} | {r['held_out_epe']:.3f} | "
                     + " | ".join(f"{r['held_out_by_source'][name]:.3f}" for name in sources)
                     + f" | {train_epe} | {r['s_per_pair']} |")
    lines += ["", f"{config['train_pairs']} training pairs ({', '.join(config['train_images'])}), "
                  f"{config['held_out_pairs']} held-out pairs ({config['held_out_synthetic']} synthetic from "
                  f"{', '.join(config['held_out_images'])}, {config['held_out_motorcycle']} motorcycle crops), "
                  f"{config['size']}x{config['size']} px, synthetic flows up to {config['max_flow']} px; TVNet "
                  f"{config['setting']}, Adam lr {config['learning_rate']}, {config['steps']} steps of batch "
                  f"{config['batch']}."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", default="3/2/10", help="TVNet scales/warps/iterations")
    parser.add_argument("--pyramid", default="released", choices=("released", "cascade"), help="TVNet's pyramid")
    parser.add_argument("--presmoothing", default="true", choices=("true", "false"), help="TVNet's presmoothing")
    parser.add_argument("--warp_interpolation", default="bilinear", choices=("bilinear", "bicubic"))
    parser.add_argument("--warp_padding", default="border", choices=("border", "zeros"))
    parser.add_argument("--outer_iterations", type=int, default=1, help="TVNet's outer_iterations (OpenCV's)")
    parser.add_argument("--median_filtering", type=int, default=1, help="TVNet's median_filtering (1 = off)")
    parser.add_argument("--peers", default="true", choices=("true", "false"),
                        help="also run scikit-image and OpenCV (they do not depend on the TVNet flags)")
    parser.add_argument("--size", type=int, default=96, help="crop side in pixels")
    parser.add_argument("--per_image", type=int, default=6, help="synthetic pairs per image")
    parser.add_argument("--motorcycle", type=int, default=3, help="held-out motorcycle crops")
    parser.add_argument("--grid", type=int, default=4, help="control points per side of the random flows")
    parser.add_argument("--max_flow", type=float, default=4.0, help="largest synthetic displacement (px)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit_compile", default="auto", choices=("auto", "true", "false"),
                        help="TVNet's jit_compile (auto = the layer's default)")
    parser.add_argument("--opencv_python", default="/tmp/cvenv/bin/python")
    parser.add_argument("--out_dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="2 pairs, 2 steps, 32 px, TVNet 1/1/3, no XLA")
    args = parser.parse_args(argv)
    if args.smoke:
        args.setting, args.size, args.per_image, args.motorcycle, args.steps, args.batch = "1/1/3", 32, 1, 0, 2, 1
        args.jit_compile = "false"  # compiling would take most of the run
        train_names, held_names = TRAIN_IMAGES[:1], HELD_OUT_IMAGES
    else:
        train_names, held_names = TRAIN_IMAGES, HELD_OUT_IMAGES

    import keras
    import tensorflow as tf

    from kerasvid.layers.tvnet import TVNet

    keras.utils.set_random_seed(args.seed)
    train_pairs = synthetic_pairs(train_names, args.per_image, args.size, args.grid, args.max_flow, args.seed)
    held_synthetic = synthetic_pairs(held_names, args.per_image, args.size, args.grid, args.max_flow, args.seed + 1)
    held_pairs = held_synthetic + (motorcycle_pairs(args.size, args.motorcycle) if args.motorcycle else [])
    train_1, train_2, train_flow = stack(train_pairs)
    held_1, held_2, held_flow = stack(held_pairs)
    sources = np.array([p[3] for p in held_pairs])

    scales, warps, iterations = (int(x) for x in args.setting.split("/"))
    jit = {"auto": None, "true": True, "false": False}[args.jit_compile]
    options = {"pyramid": args.pyramid, "presmoothing": args.presmoothing == "true",
               "warp_interpolation": args.warp_interpolation, "warp_padding": args.warp_padding,
               "outer_iterations": args.outer_iterations, "median_filtering": args.median_filtering}
    defaults = inspect.signature(TVNet.__init__).parameters
    setting = args.setting + "".join(f", {k}={v!r}" for k, v in options.items() if v != defaults[k].default)

    def make():
        layer = TVNet(scales=scales, warps=warps, iterations=iterations, jit_compile=jit, **options)
        layer(tf.constant(held_1[:1]), tf.constant(held_2[:1]))
        return layer

    def by_source(errors):
        return {name: float(errors[sources == name].mean()) for name in dict.fromkeys(sources)}

    rows = []

    def report(method, held, train_flows=None, seconds=None, **extra):
        errors = epe(held, held_flow)
        rows.append({"method": method, "held_out_epe": float(errors.mean()), "held_out_by_source": by_source(errors),
                     "train_epe": None if train_flows is None else float(epe(train_flows, train_flow).mean()),
                     "s_per_pair": None if seconds is None else round(seconds, 4), **extra})
        print(json.dumps(rows[-1]), flush=True)

    untrained = make()
    start_weights = untrained.get_weights()
    held = tvnet_flows(untrained, held_1, held_2)  # the first call compiles
    start = time.perf_counter()
    tvnet_flows(untrained, held_1, held_2)
    seconds = (time.perf_counter() - start) / len(held_1)
    report(f"TVNet {setting} untrained (= TV-L1)", held, tvnet_flows(untrained, train_1, train_2),
           seconds)
    for loss_name, label in (("tvl1_energy", "unsupervised tvl1_energy"), ("endpoint_error", "supervised EndpointError")):
        layer = make()
        layer.set_weights(start_weights)
        start = time.perf_counter()
        losses = train(layer, train_1, train_2, train_flow, loss_name, args.steps, args.batch, args.learning_rate,
                       args.seed)
        train_seconds = time.perf_counter() - start
        report(f"TVNet {setting} trained, {label}", tvnet_flows(layer, held_1, held_2),
               tvnet_flows(layer, train_1, train_2), seconds, first_loss=losses[0], last_loss=losses[-1],
               train_seconds=round(train_seconds, 1))
    if args.peers == "true":
        flows, seconds = scikit_image_flows(held_1, held_2)
        report("scikit-image optical_flow_tvl1 (defaults)", flows, scikit_image_flows(train_1, train_2)[0], seconds)
        opencv_train = opencv_flows(args.opencv_python, train_1, train_2)
        for name, (flows, seconds) in opencv_flows(args.opencv_python, held_1, held_2).items():
            report(name, flows, opencv_train[name][0], seconds)

    config = {"setting": setting, "tvnet_options": options, "size": args.size, "max_flow": args.max_flow,
              "steps": args.steps, "batch": args.batch, "learning_rate": args.learning_rate, "train_images": list(train_names),
              "held_out_images": list(held_names), "train_pairs": len(train_pairs), "held_out_pairs": len(held_pairs),
              "held_out_synthetic": len(held_synthetic), "held_out_motorcycle": len(held_pairs) - len(held_synthetic),
              "smoke": args.smoke}
    save_report("tvnet_training" + ("_smoke" if args.smoke else ""), {"config": config, "rows": rows},
                markdown(rows, config), args.out_dir)
    return rows


if __name__ == "__main__":
    main()
