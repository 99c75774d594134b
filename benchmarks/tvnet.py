"""TVNet benchmark: execution modes, and accuracy/speed on real frames next to CPU TV-L1 peers.

Part A (fixture pair, 240x240, TVNet-50): eager vs graph (`tf.function`) vs XLA (`jit_compile=True`), for the
unrolled graph and the default `tf.while_loop`; first call (trace/compile) and steady-state time per pair.

Part B (scikit-image's `stereo_motorcycle` pair at half size, 250x370): mean end-point error against the ground
truth (disparity d gives the flow u = -d, v = 0 from the left to the right image; `inf` = invalid, excluded) and
time per pair for several TVNet (scales, warps, iterations[, outer iterations, median filter, epsilon, zoom, ...])
settings, called the default way (the layer compiles its solver with XLA itself), batched and unbatched, next to
scikit-image's `optical_flow_tvl1` and OpenCV's `DualTVL1OpticalFlow` (`--opencv_configs`). The half-size 8-bit grey
pair is prepared in several independent ways (`--preparations`, see `PREPARATIONS`), each fed identically to every
method, since which method wins depends on the preparation; per preparation the table names OpenCV's most accurate
setting and the fastest TVNet setting at least as accurate. The load average is printed beside the timings (OpenCV
slows far more than TVNet under load: measure idle). OpenCV's TV-L1 lives in opencv-contrib, which conflicts with the
project's opencv-python-headless, so it runs in its own virtual environment, in a subprocess:

    python -m venv /tmp/cvenv && /tmp/cvenv/bin/pip install opencv-contrib-python-headless numpy
    python benchmarks/tvnet.py --opencv_python /tmp/cvenv/bin/python

Part C: a `tvnet_bn_inception` training step (6 frames, `--train_size` px, batch 1), TVNet in a plain graph (the
behaviour before the layer compiled itself) and compiled (the default).

Prints JSON and a markdown table, and writes them to benchmarks/results/tvnet.{json,md} (tvnet_quick with `--quick`).
The default run takes ~25 min on the shared 2-core machine when idle (Part B alone, `--skip_a --train_size 0`,
~15-20 min), mostly XLA compilation of the multi-scale settings (first call, reported; 60-180 s each under load) and
OpenCV's default setting (~12 s per call idle, 40-50 s under load, once per preparation); `--settings 1/1/50,5/5/15
--opencv_python ""` is a ~3 min run, and `--quick` (Part B only: TVNet with OpenCV's schedule and a 1-scale setting,
OpenCV `ScaleStep=0.5`, every preparation, batch 1) a 2 min smoke test. With `--figure PATH` it also writes the
README picture: first frame | kerasvid TVNet-50 flow | the authors' released flow.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from _report import save_report, sgd_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tvnet")

# argv: pairs.npz (first_<preparation>, second_<preparation>), output prefix, repeats,
# JSON {config name: {setter: value}}
_OPENCV_SCRIPT = r"""
import json, sys, time, numpy as np, cv2
data = np.load(sys.argv[1])
configs = json.loads(sys.argv[4])
preparations = [key[len("first_"):] for key in data.files if key.startswith("first_")]
for preparation in preparations:
    first, second = data["first_" + preparation], data["second_" + preparation]
    for n, (name, options) in enumerate(configs.items()):
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        for key, value in options.items():
            getattr(tvl1, "set" + key)(value)
        times = []
        for _ in range(int(sys.argv[3])):
            start = time.perf_counter()
            flow = tvl1.calc(first, second, None)
            times.append(time.perf_counter() - start)
        path = f"{sys.argv[2]}{preparation}_{n}.npy"
        np.save(path, flow)
        print(json.dumps({"name": name, "preparation": preparation, "seconds": min(times), "path": path,
                          "version": cv2.__version__, "threads": cv2.getNumThreads()}), flush=True)
"""

# OpenCV DualTVL1 settings: name -> {setter suffix: value}; "defaults" is tau 0.25, lambda 0.15, theta 0.3, 5 scales,
# 5 warpings, epsilon 0.01, 30 inner x 10 outer iterations, scaleStep 0.8, gamma 0, median filter 5
# (ScaleStep=0.8,ScalesNumber=10 was tried: 2.55-2.68 px in 10-11 s under load, far behind ScaleStep=0.5's 1.68-1.70)
OPENCV_CONFIGS = {"defaults": {}, "ScaleStep=0.5": {"ScaleStep": 0.5}}


def _timed(fn, repeats):
    """Returns (first call seconds, min steady seconds over `repeats`, last output)."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    steady = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        steady.append(time.perf_counter() - start)
    return first, min(steady) if steady else first, out


def _numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _half(image):
    """2x2 box down-sampling (pixel i of the result is centred on input pixels 2i, 2i+1); inf propagates."""
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    image = image[:height, :width].astype(np.float64)
    return image.reshape(height // 2, 2, width // 2, 2, *image.shape[2:]).mean(axis=(1, 3))


def parse_opencv_configs(text):
    """`defaults;ScaleStep=0.5;ScaleStep=0.8,ScalesNumber=10` -> {"defaults": {}, "ScaleStep=0.5": {"ScaleStep":
    0.5}, "ScaleStep=0.8,ScalesNumber=10": {"ScaleStep": 0.8, "ScalesNumber": 10}} (the names of
    `cv2.optflow.DualTVL1OpticalFlow` setters without `set`; values as numbers)."""
    configs = {}
    for name in (n.strip() for n in text.split(";")):
        if not name:
            continue
        options = {}
        for item in ([] if name == "defaults" else name.split(",")):
            key, sep, value = item.partition("=")
            try:
                options[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
            except ValueError:
                raise ValueError(f"--opencv_configs: expected SETTER=NUMBER, got {item!r} in {name!r}") from None
            if not sep or not key.strip().isidentifier():
                raise ValueError(f"--opencv_configs: expected SETTER=NUMBER, got {item!r} in {name!r}")
        configs[name] = options
    return configs


# Independent ways of making the half-size 8-bit grey pair from the full-size RGB pair (cropped to even sizes)
PREPARATIONS = {
    "current": "2x2 box means of the RGB, scikit-image `rgb2gray` (Rec. 709 luma), rounded to 8 bits",
    "antialiased": "RGB resized to half size by `skimage.transform.resize(anti_aliasing=True)` (Gaussian sigma 0.5, "
                   "then bilinear), `rgb2gray`, rounded to 8 bits",
    "opencv": "8-bit RGB resized by `cv2.resize(INTER_AREA)`, then `cv2.cvtColor(RGB2GRAY)` (BT.601 luma), as an "
              "OpenCV user would",
}


def prepare(name, left, right):
    """The half-size 8-bit grey pair `(first, second)` made from the full-size uint8 RGB pair by preparation `name`."""
    from skimage.color import rgb2gray

    to_uint8 = lambda g: np.clip(np.round(g * 255.0), 0, 255).astype(np.uint8)  # noqa: E731
    height, width = left.shape[0] // 2, left.shape[1] // 2
    if name == "current":
        return tuple(to_uint8(rgb2gray(_half(image) / 255.0)) for image in (left, right))
    if name == "antialiased":
        from skimage.transform import resize
        return tuple(to_uint8(rgb2gray(resize(image / 255.0, (height, width), anti_aliasing=True)))
                     for image in (left, right))
    if name == "opencv":
        import cv2
        return tuple(cv2.cvtColor(cv2.resize(np.ascontiguousarray(image), (width, height),
                                             interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
                     for image in (left, right))
    raise ValueError(f"--preparations: unknown preparation {name!r} (one of {', '.join(PREPARATIONS)})")


def _load():
    """'1m, 5m, 15m load average' as a string."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _epe(flow, truth, valid):
    return float(np.mean(np.sqrt(np.sum((flow - truth) ** 2, axis=-1))[valid]))


def part_a(repeats):
    import tensorflow as tf
    from PIL import Image

    from kerasvid.layers.tvnet import TVNet

    frames = [np.asarray(Image.open(os.path.join(FIXTURES, n)).convert("RGB"), np.float32)[None]
              for n in ("img1.png", "img2.png")]
    first, second = tf.constant(frames[0]), tf.constant(frames[1])
    import scipy.io
    reference = scipy.io.loadmat(os.path.join(FIXTURES, "result.mat"))["flow"]
    rows = []
    for unroll in (False, True):
        layer = TVNet(iterations=50, unroll=unroll)
        layer(first, second)
        modes = [("eager", lambda: layer(first, second)), ("graph", tf.function(layer))]
        if not unroll:  # XLA of the unrolled 50-iteration graph takes minutes to compile on CPU
            modes.append(("xla", tf.function(layer, jit_compile=True)))
        for mode, fn in modes:
            call = fn if mode == "eager" else (lambda fn=fn: fn(first, second))
            t_first, t_steady, flow = _timed(call, repeats)
            rows.append({"part": "A", "method": f"TVNet-50 {mode} ({'unrolled' if unroll else 'while_loop'})",
                         "first_call_s": round(t_first, 3), "s_per_pair": round(t_steady, 4),
                         "epe_vs_released": float(np.mean(np.sqrt(np.sum((_numpy(flow)[0] - reference) ** 2, -1))))})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def part_b(settings, batch, repeats, opencv_python, preparations=tuple(PREPARATIONS), opencv_configs=None):
    import tensorflow as tf
    from skimage import data
    from skimage.registration import optical_flow_tvl1

    from kerasvid.layers.tvnet import TVNet

    opencv_configs = OPENCV_CONFIGS if opencv_configs is None else opencv_configs
    left, right, disparity = data.stereo_motorcycle()
    height, width = left.shape[0] // 2, left.shape[1] // 2
    left, right = left[:2 * height, :2 * width], right[:2 * height, :2 * width]
    truth_u = -_half(disparity) / 2.0
    valid = np.isfinite(truth_u)
    truth = np.stack([np.where(valid, truth_u, 0.0), np.zeros_like(truth_u)], axis=-1)
    # Every method gets the same 8-bit grey frames of a preparation (TVNet as three equal channels: its luma is then
    # the identity)
    pairs = {name: prepare(name, left, right) for name in preparations}
    rows = []

    def add(row):
        row.update(part="B", load_avg=_load())
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name, (grey0, grey1) in pairs.items():
        t_first, t_steady, (v, u) = _timed(lambda: optical_flow_tvl1(grey0 / 255.0, grey1 / 255.0),
                                           max(1, repeats // 2))
        add({"preparation": name, "method": "scikit-image optical_flow_tvl1 (defaults)", "batch": 1,
             "s_per_pair": round(t_steady, 4), "epe": _epe(np.stack([u, v], -1), truth, valid)})

    if opencv_python and os.path.exists(opencv_python) and opencv_configs:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "pairs.npz")
            out = os.path.join(tmp, "flow_")
            np.savez(path, **{f"{key}_{name}": frame for name, pair in pairs.items()
                              for key, frame in zip(("first", "second"), pair)})
            result = subprocess.run([opencv_python, "-c", _OPENCV_SCRIPT, path, out, str(max(1, repeats // 2)),
                                     json.dumps(opencv_configs)], capture_output=True, text=True, check=True)
            for line in result.stdout.splitlines():
                r = json.loads(line)
                add({"preparation": r["preparation"], "method": f"OpenCV {r['version']} DualTVL1 ({r['name']}, "
                                                                f"{r['threads']} threads)", "batch": 1,
                     "s_per_pair": round(r["seconds"], 4), "epe": _epe(np.load(r["path"]), truth, valid)})
    else:
        print(f"OpenCV peer skipped: no python with opencv-contrib at {opencv_python!r}", file=sys.stderr)

    for setting in settings:
        scales, warps, iterations, options = setting
        layer = TVNet(scales=scales, warps=warps, iterations=iterations, **options)
        label = f"TVNet {scales}/{warps}/{iterations}" + "".join(f" {k}={v}" for k, v in options.items())
        for size in sorted({1, batch}):
            for name, (grey0, grey1) in pairs.items():  # same shapes: the layer compiles once per batch size
                first = tf.constant(np.repeat(np.repeat(grey0[None, :, :, None], 3, -1), size, 0), tf.float32)
                second = tf.constant(np.repeat(np.repeat(grey1[None, :, :, None], 3, -1), size, 0), tf.float32)
                # the default mode: the layer called as it is (it compiles its solver itself)
                t_first, t_steady, flow = _timed(lambda: layer(first, second), repeats)
                add({"preparation": name, "method": f"{label} (default: XLA {layer._use_xla()})", "batch": size,
                     "first_call_s": round(t_first, 2), "s_per_pair": round(t_steady / size, 4),
                     "epe": _epe(_numpy(flow)[0], truth, valid)})
    return rows, (height, width)


def part_c(size, repeats):
    """A `tvnet_bn_inception` training step (6 frames, batch 1, SGD) with TVNet compiled (default) and not."""
    import tensorflow as tf

    import kerasvid.layers.tvnet as tvnet_module
    from kerasvid import zoo

    rows = []
    x = tf.random.uniform((1, 6, size, size, 3), 0, 255, seed=0)
    labels = tf.constant([3])
    original = tvnet_module.TVNet._use_xla
    for compiled in (False, True):
        tvnet_module.TVNet._use_xla = original if compiled else (lambda self: False)
        try:
            model = zoo.tvnet_bn_inception(num_classes=101, input_shape=(6, size, size, 3))
            step = sgd_train_step(model, x, labels, 0.001)
            t_first, t_steady, _ = _timed(lambda: step().numpy(), repeats)
        finally:
            tvnet_module.TVNet._use_xla = original
        rows.append({"part": "C", "method": f"tvnet_bn_inception training step, 6x{size}x{size}, TVNet "
                                            f"{'XLA (default)' if compiled else 'plain graph (before)'}",
                     "batch": 1, "first_call_s": round(t_first, 2), "s_per_pair": round(t_steady, 4)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def figure(path):
    from PIL import Image

    from kerasvid.layers.tvnet import TVNet
    from kerasvid.viz import flow_to_color, write_png
    import scipy.io

    frames = [np.asarray(Image.open(os.path.join(FIXTURES, n)).convert("RGB"), np.float32)[None]
              for n in ("img1.png", "img2.png")]
    flow = TVNet(iterations=50)(frames[0], frames[1]).numpy()[0]
    reference = scipy.io.loadmat(os.path.join(FIXTURES, "result.mat"))["flow"]
    scale = float(np.sqrt((reference ** 2).sum(-1)).max())
    gap = np.full((240, 4, 3), 255, np.uint8)
    strip = np.concatenate([frames[0][0].astype(np.uint8), gap, flow_to_color(flow, scale), gap,
                            flow_to_color(reference, scale)], axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_png(path, strip)
    print(f"wrote {path}", file=sys.stderr)


def _fastest_line(peer, ours, batch_note="", tolerance=0.0):
    good = [r for r in ours if r["epe"] <= peer["epe"] + tolerance]
    within = f"within {tolerance} px of it" if tolerance else "at least as accurate"
    if not good:
        return f"no TVNet setting here{batch_note} is {within}."
    fastest = min(good, key=lambda r: r["s_per_pair"])
    ratio = peer["s_per_pair"] / fastest["s_per_pair"]
    return (f"fastest TVNet {within}{batch_note} = {fastest['method']} batch {fastest['batch']} "
            f"({fastest['epe']:.3f} px, {fastest['s_per_pair']} s/pair): "
            + (f"{ratio:.1f}x faster." if ratio >= 1 else f"{1 / ratio:.1f}x slower."))


def markdown(rows, size):
    lines = ["| part | preparation | method | batch | first call (s) | s / pair | EPE (px) | load avg 1/5/15 min |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        epe = r.get("epe", r.get("epe_vs_released"))
        lines.append(f"| {r['part']} | {r.get('preparation', '-')} | {r['method']} | {r.get('batch', 1)} | "
                     f"{r.get('first_call_s', '-')} | {r['s_per_pair']} | {'-' if epe is None else format(epe, '.4g')} "
                     f"| {r.get('load_avg', '-')} |")
    lines += ["", f"Part A: fixture pair 240x240, EPE against the authors' result.mat. Part B: motorcycle "
                  f"{size[0]}x{size[1]}, EPE against the ground truth (valid pixels). Part C: s / pair is "
                  f"s / training step. Load average at the end: {_load()}."]
    rows_b = [r for r in rows if r["part"] == "B"]
    for preparation in dict.fromkeys(r["preparation"] for r in rows_b):
        these = [r for r in rows_b if r["preparation"] == preparation]
        peers = [r for r in these if not r["method"].startswith("TVNet")]
        ours = [r for r in these if r["method"].startswith("TVNet")]
        lines += ["", f"Preparation `{preparation}`: {PREPARATIONS.get(preparation, '')}."]
        opencv = [r for r in peers if r["method"].startswith("OpenCV")]
        if opencv:
            best = min(opencv, key=lambda r: (r["epe"], r["s_per_pair"]))
            lines.append(f"- OpenCV's most accurate: {best['method']} ({best['epe']:.3f} px, {best['s_per_pair']} s): "
                         + _fastest_line(best, [r for r in ours if r["batch"] == 1], " at batch 1"))
            # TVNet with OpenCV's schedule lands within ~0.003 px of OpenCV either side (float32 noise)
            lines.append("  - " + _fastest_line(best, [r for r in ours if r["batch"] == 1], " at batch 1", 0.01))
        for peer in sorted(peers, key=lambda r: r["epe"]):
            lines.append(f"- vs {peer['method']} ({peer['epe']:.3f} px, {peer['s_per_pair']} s): "
                         + _fastest_line(peer, ours))
    return "\n".join(lines)


OPTION_KEYS = {"o": ("outer_iterations", int), "m": ("median_filtering", int), "e": ("epsilon", float),
               "z": ("zoom", float), "p": ("pyramid", str), "s": ("presmoothing", lambda v: bool(int(v))),
               "i": ("warp_interpolation", str), "b": ("warp_padding", str),
               "t": ("stretch", lambda v: bool(int(v)))}


def parse_setting(text):
    """`5/5/10/o3/m5/e0.01/pcascade/s0/ibicubic/bzeros/t0` -> (5, 5, 10, {"outer_iterations": 3,
    "median_filtering": 5, "epsilon": 0.01, "pyramid": "cascade", "presmoothing": False, "warp_interpolation":
    "bicubic", "warp_padding": "zeros", "stretch": False})."""
    parts = text.split("/")
    if len(parts) < 3 or not all(p.isdigit() for p in parts[:3]):
        raise ValueError(f"--settings: expected SCALES/WARPS/ITERATIONS[/options], got {text!r}")
    options = {}
    for part in parts[3:]:
        if not part or part[0] not in OPTION_KEYS:
            raise ValueError(f"--settings: unknown option {part!r} in {text!r} (o, m, e, z, p, s, i, b, t)")
        key, kind = OPTION_KEYS[part[0]]
        options[key] = kind(part[1:])
    return int(parts[0]), int(parts[1]), int(parts[2]), options


CB = "pcascade/s0/ibicubic/bzeros"
# --quick: Part B only, TVNet with OpenCV's schedule on the frames as given and a 1-scale setting (fast to compile),
# OpenCV ScaleStep=0.5
QUICK = {"settings": f"5/5/30/o10/m5/e0.01/{CB}/t0,1/1/30/t0", "batch": 1, "repeats": 1, "skip_a": True,
         "train_size": 0, "opencv_configs": "ScaleStep=0.5"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default=f"1/1/50,5/5/15,5/3/15/pcascade/s0,5/5/30/{CB},5/5/15/o3/m5/{CB},"
                                              f"5/5/30/o10/m5/e0.01/{CB},5/5/15/o3/m5/{CB}/t0,5/5/20/o3/m5/{CB},"
                                              f"5/5/30/o10/m5/e0.01/{CB}/t0",
                        help="TVNet scales/warps/iterations[/oOUTER][/mMEDIAN][/eEPSILON][/zZOOM][/pPYRAMID][/s0 = no "
                             "presmoothing][/iWARP_INTERPOLATION][/bWARP_PADDING][/t0 = no stretch], comma separated; "
                             "the last of the default is OpenCV's ScaleStep=0.5 setting (its schedule, no stretch)")
    parser.add_argument("--preparations", default=",".join(PREPARATIONS),
                        help=f"Part B frame preparations, comma separated, of: {', '.join(PREPARATIONS)}")
    parser.add_argument("--opencv_configs", default=";".join(OPENCV_CONFIGS),
                        help="OpenCV DualTVL1 settings, ';' separated: 'defaults' or SETTER=NUMBER[,SETTER=NUMBER] "
                             "(cv2.optflow.DualTVL1OpticalFlow setters without 'set')")
    parser.add_argument("--train_size", type=int, default=112, help="frame size of the training-step part (0: skip)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--opencv_python", default="/tmp/cvenv/bin/python")
    parser.add_argument("--skip_a", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test (< 3 min): " + " ".join(f"--{k} {v}" for k, v in QUICK.items()) +
                             " unless given; writes tvnet_quick.{json,md}")
    parser.add_argument("--figure", default=None, help="write the README flow picture to this PNG path")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    try:
        settings = [parse_setting(s) for s in args.settings.split(",") if s]
        preparations = [p for p in args.preparations.split(",") if p]
        for name in preparations:
            if name not in PREPARATIONS:
                raise ValueError(f"--preparations: unknown preparation {name!r} (one of {', '.join(PREPARATIONS)})")
        if not preparations:
            raise ValueError(f"--preparations: none given ({args.preparations!r})")
        opencv_configs = parse_opencv_configs(args.opencv_configs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if args.figure:
        figure(args.figure)
    rows = [] if args.skip_a else part_a(args.repeats)
    rows_b, size = part_b(settings, args.batch, args.repeats, args.opencv_python, preparations, opencv_configs)
    rows += rows_b
    if args.train_size:
        rows += part_c(args.train_size, args.repeats)
    table = markdown(rows, size)
    save_report("tvnet_quick" if args.quick else "tvnet", rows, table)
    return rows


if __name__ == "__main__":
    main()
