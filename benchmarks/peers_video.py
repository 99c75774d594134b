"""kerasvid's torchvision-layout video ResNets against torchvision's own, on this machine.

    python benchmarks/peers_video.py [--rounds 5] [--models r3d_resnet18,mc3_resnet18,r2plus1d_resnet18]
                                     [--frames 16] [--size 112] [--torch_python /work/torchvenv/bin/python]

For each model (batch 1, 400 classes, `--frames` x `--size` x `--size`, torchvision's clip by default): kerasvid's
training step (`_report.sgd_train_step`: cross-entropy, backward, SGD with momentum 0.9 in a `tf.function`) and
inference (`model(x, training=False)` in a `tf.function`), and the same two for torchvision's `r3d_18` / `mc3_18` /
`r2plus1d_18` (2 threads, run by `--torch_python` in a subprocess; skipped with a printed line when that interpreter
is missing: PyTorch is never a kerasvid dependency). kerasvid's functions are warmed up, then the rounds interleave
them; each figure is the minimum over the rounds. GFLOP/s use the registry's forward count (TF profiler: 2x the
multiply-adds torchvision publishes) for inference and 3x it for a training step, beside a measured fp32 matmul rate.
The load average before and after is printed: on a shared machine compare only the figures of one run. Prints JSON
and a markdown table and writes them to benchmarks/results/peers_video.{json,md}.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _report import TORCH_TIMING, cpu_run_result, save_report, sgd_train_step, torch_peer  # noqa: E402
from peers import matmul_gflops  # noqa: E402
from kerasvid import zoo  # noqa: E402
from kerasvid.models.common import count_gflops  # noqa: E402
from kerasvid.models.resnet_video import TORCHVISION_VIDEO  # noqa: E402

CLASSES = 400

# Runs in the torch venv: torchvision's video ResNet `arch`, one clip; prints the minimum seconds per training step
# and inference as one JSON line.
TORCH_SCRIPT = r"""
import json, sys, time
import torch, torchvision
arch, frames, size, classes, rounds = sys.argv[1], *(int(v) for v in sys.argv[2:6])
torch.set_num_threads(2)
model = getattr(torchvision.models.video, arch)(num_classes=classes)
x = torch.randn(1, 3, frames, size, size)
label = torch.tensor([3])
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

def train():
    model.train()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), label).backward()
    opt.step()

def infer():
    model.eval()
    with torch.no_grad():
        model(x)

""" + TORCH_TIMING


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default=",".join(TORCHVISION_VIDEO))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--torch_python", default="/work/torchvenv/bin/python")
    args = parser.parse_args()
    start, load_before = time.time(), os.getloadavg()
    ceiling = matmul_gflops()
    x = tf.constant(np.random.default_rng(0).normal(size=(1, args.frames, args.size, args.size, 3)), tf.float32)
    rows = []
    for name in args.models.split(","):
        model = zoo.get_model(name, num_classes=CLASSES, input_shape=(args.frames, args.size, args.size, 3))
        gflops = count_gflops(model)
        step = sgd_train_step(model, x, tf.constant([3]), 0.01)
        infer = tf.function(lambda: model(x, training=False))
        calls = {"train": lambda: step().numpy(), "infer": lambda: infer().numpy()}
        for fn in calls.values():
            fn()
        best = {}
        for _ in range(args.rounds):
            for kind, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                best[kind] = min(best.get(kind, float("inf")), time.perf_counter() - t0)
        peer = torch_peer(args.torch_python, TORCH_SCRIPT, TORCHVISION_VIDEO[name][0], args.frames, args.size, CLASSES,
                          args.rounds)
        for kind in ("train", "infer"):
            flops = gflops * (3 if kind == "train" else 1)
            rows.append({"model": name, "what": kind, "kerasvid_seconds": round(best[kind], 4),
                         "kerasvid_gflop_per_s": round(flops / best[kind], 1),
                         "pytorch_seconds": None if peer is None else round(peer[kind], 4),
                         "vs_pytorch": None if peer is None else round(best[kind] / peer[kind], 3)})
    result, header = cpu_run_result(start, load_before, ceiling, args.rounds,
                                    (1, args.frames, args.size, args.size, 3), CLASSES, rows)
    lines = [header, "",
             "| model | what | kerasvid s | GFLOP/s | PyTorch s | kerasvid / PyTorch time |", "|---|---|---|---|---|---|"]
    for r in rows:
        peer = "-" if r["vs_pytorch"] is None else f"{r['pytorch_seconds']} | {r['vs_pytorch']}x"
        lines.append(f"| {r['model']} | {r['what']} | {r['kerasvid_seconds']} | {r['kerasvid_gflop_per_s']} | "
                     f"{peer if peer != '-' else '- | -'} |")
    save_report("peers_video", result, "\n".join(lines))


if __name__ == "__main__":
    main()
