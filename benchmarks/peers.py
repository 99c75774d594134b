"""kerasvid against its peers on this machine: the frame-wise (folded) C2D networks against their Conv3D form
(kerasvid 0.1's layout), with and without XLA, and against PyTorch where a torch venv exists.

    python benchmarks/peers.py [--rounds 5] [--models c2d_resnet18] [--frames 8] [--size 112] [--no_xla]
                               [--torch_python /work/torchvenv/bin/python]

For each model (batch 1, 174 classes, `--frames` x `--size` x `--size`): the training step (`sgd_train_step`:
cross-entropy, backward, SGD with momentum 0.9, in a `tf.function`; also `jit_compile=True`) and inference
(`model(x, training=False)` in a `tf.function`, also XLA-compiled), for

- `conv3d`: the same network as kerasvid 0.1 built it: every frame-wise layer as Conv3D / MaxPooling3D and Keras'
  composite BatchNormalization (`kerasvid.layers.conv3d_form(model, keras_batch_norm=True)`, the same weights),
- `folded`: the network as kerasvid builds it (2D ops on the frames folded into the batch, fused BatchNorm),
- `folded_xla`: the same, XLA-compiled,
- `pytorch` (c2d_resnet18 only): torchvision's resnet18 with a stride-1 stem (the same convolutions) on the T
  frames as a batch, 2 threads, run by `--torch_python` in a subprocess; skipped with a printed line when that
  interpreter is missing or cannot import torch (PyTorch is never a kerasvid dependency).

Every variant is warmed up (tracing, XLA compilation), then the rounds interleave the variants (one call each per
round) and each figure is the minimum over the rounds, of the wall time and, less sensitive to other processes on a
shared machine, of this process's CPU time (both cores busy: up to 2x the wall time). GFLOP/s use the registry's forward count (TF profiler) for
inference and 3x it for a training step, beside a measured fp32 matmul rate (this machine's ceiling). The load
average before and after is printed: on a shared machine compare only the figures of one run. Prints JSON and a
markdown table and writes them to benchmarks/results/peers.{json,md}.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from _report import TORCH_TIMING, cpu_run_result, folding_variants, save_report  # noqa: E402
from _report import torch_peer as run_torch_peer  # noqa: E402
from kerasvid.models.common import count_gflops  # noqa: E402

CLASSES = 174

# Runs in the torch venv: torchvision resnet18 with conv1 at stride 1 (kerasvid's stem for 112-pixel inputs) on
# the frames of one clip as a batch; prints one JSON line of the minimum seconds per training step and inference.
TORCH_SCRIPT = r"""
import json, sys, time
import torch, torchvision
frames, size, classes, rounds = (int(v) for v in sys.argv[1:5])
torch.set_num_threads(2)
model = torchvision.models.resnet18(num_classes=classes)
model.conv1 = torch.nn.Conv2d(3, 64, 7, stride=1, padding=3, bias=False)
x = torch.randn(frames, 3, size, size)
label = torch.tensor([3])
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

def train():
    model.train()
    opt.zero_grad()
    logits = model(x).mean(0, keepdim=True)  # the clip's logits: mean over frames, as kerasvid's head pools T
    torch.nn.functional.cross_entropy(logits, label).backward()
    opt.step()

def infer():
    model.eval()
    with torch.no_grad():
        model(x)

""" + TORCH_TIMING


def matmul_gflops(n=1024, repeats=5):
    """This machine's fp32 matmul rate (GFLOP/s): the best of `repeats` n x n products."""
    a = tf.random.normal((n, n))
    mm = tf.function(tf.matmul)
    mm(a, a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def torch_peer(python, frames, size, rounds):
    """PyTorch's minimum seconds `{"train", "infer", "torch", "threads"}`, or None (a line says why)."""
    return run_torch_peer(python, TORCH_SCRIPT, frames, size, CLASSES, rounds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="c2d_resnet18")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--torch_python", default="/work/torchvenv/bin/python")
    parser.add_argument("--no_xla", action="store_true", help="skip the XLA-compiled variant (its compilation is slow)")
    args = parser.parse_args()
    start = time.time()
    load_before = os.getloadavg()
    ceiling = matmul_gflops()
    rows = []
    for name in args.models.split(","):
        variants, model, difference = folding_variants(name, args.frames, args.size, CLASSES, xla=not args.no_xla)
        gflops = count_gflops(model)
        calls = [(variant, kind, fns[i]) for variant, fns in variants.items()
                 for i, kind in enumerate(("train", "infer"))]
        for _, _, fn in calls:  # warm-up: tracing and XLA compilation
            fn()
        best, cpu = {}, {}
        for _ in range(args.rounds):
            for variant, kind, fn in calls:
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                t, c = time.perf_counter() - t0, time.process_time() - c0
                best[variant, kind] = min(best.get((variant, kind), t), t)
                cpu[variant, kind] = min(cpu.get((variant, kind), c), c)
        if name == "c2d_resnet18":
            peer = torch_peer(args.torch_python, args.frames, args.size, args.rounds)
            if peer:
                best["pytorch", "train"], best["pytorch", "infer"] = peer["train"], peer["infer"]
        base = {kind: best["conv3d", kind] for kind in ("train", "infer")}
        for (variant, kind), seconds in sorted(best.items(), key=lambda kv: (kv[0][1] != "train", kv[0][0])):
            flops = gflops * (3 if kind == "train" else 1)
            cpu_s = cpu.get((variant, kind))
            rows.append({"model": name, "variant": variant, "what": kind, "seconds": round(seconds, 4),
                         "cpu_seconds": None if cpu_s is None else round(cpu_s, 4),
                         "cpu_vs_conv3d": None if cpu_s is None else round(cpu_s / cpu["conv3d", kind], 3),
                         "speedup_vs_conv3d": round(base[kind] / seconds, 3),
                         "gflop_per_s": round(flops / seconds, 1),
                         "vs_pytorch": round(seconds / best["pytorch", kind], 3) if ("pytorch", kind) in best
                         else None})
        print(f"{name}: folded vs conv3d max |logit difference| {difference:.2e}")
    result, header = cpu_run_result(
        start, load_before, ceiling, args.rounds, (1, args.frames, args.size, args.size, 3), CLASSES, rows,
        TF_ENABLE_ONEDNN_OPTS=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: on for x86 builds)"))
    lines = [f"{header}; TF_ENABLE_ONEDNN_OPTS={result['TF_ENABLE_ONEDNN_OPTS']}", "",
             "| model | what | variant | seconds | speed-up vs Conv3D | GFLOP/s | CPU s (vs Conv3D) | "
             "time / PyTorch's |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:  # peers_video.py writes its table the same way, with other columns (what is shared: _report)
        peer = "-" if r["vs_pytorch"] is None else f"{r['vs_pytorch']}x"
        cpu_s = "-" if r["cpu_seconds"] is None else f"{r['cpu_seconds']} ({r['cpu_vs_conv3d']}x)"
        lines.append(f"| {r['model']} | {r['what']} | {r['variant']} | {r['seconds']} | {r['speedup_vs_conv3d']}x "
                     f"| {r['gflop_per_s']} | {cpu_s} | {peer} |")
    save_report("peers", result, "\n".join(lines))


if __name__ == "__main__":
    main()
