"""Benchmark: training-step time and peak memory of C2D / NL / CPNet ResNets (batch 1, 112x112).

    python benchmarks/cpnet.py [--frames 8] [--models c2d_resnet18,cpnet_resnet18,...] [--repeats 3] [--inter-op 1]

A model spec is a registry name, optionally `:variant` for CPNet (`cpnet_resnet34:released_code`), optionally
`+tf_mlp`: the CP modules' MLP traced in TF ops (the compiled kNN kept), or
`+tf_ops`: the training step traced without kerasvid's compiled CP-module kernels (`kerasvid.ops.native`, which
CPNet training uses by default on CPU), to compare the two in one run. One
training step = forward (training=True), softmax cross-entropy, backward, SGD update, in a `tf.function`. All
models are built and warmed up first, then timed round-robin (one step each per round, `--repeats` rounds;
median and minimum: on a shared machine noise only adds time, so the minimum is the steadier estimate), so that a
change of load on a shared machine hits every model alike; peak memory is TF's CPU allocator peak during a step above
what was allocated before it. Ratios are to the C2D model of the same depth, from the same run. Prints JSON and a
markdown table, with this process's minimum CPU seconds per step beside the wall times (less sensitive to other
processes on a shared machine) and the load average before and after. `--inter-op N` sets TF's inter-op thread
pool (0: TF's default, one thread per core); on a 2-core machine 1 is faster for every model (ops then run one
after another, each on both cores).
"""
import argparse
import json
import os
import statistics
import time

import tensorflow as tf

from _report import sgd_train_step
from kerasvid import zoo
from kerasvid.layers import cp_module
from kerasvid.ops import native

CPU = "CPU:0"
DEFAULT_MODELS = ("c2d_resnet18,nl_resnet18,cpnet_resnet18,c2d_resnet34,cpnet_resnet34,"
                  "cpnet_resnet34:released_code")


def build(spec, frames, num_classes):
    name, _, variant = spec.split("+")[0].partition(":")
    kwargs = {"variant": variant} if variant else {}
    return zoo.get_model(name, num_classes=num_classes, input_shape=(frames, 112, 112, 3), **kwargs)


def prepare(spec, frames, num_classes=174):
    """Builds the model and returns a traced, warmed-up `tf.function` training step (SGD with momentum)."""
    model = build(spec, frames, num_classes)
    x = tf.random.uniform([1, frames, 112, 112, 3], seed=0)
    step = sgd_train_step(model, x, tf.constant([3]), 0.01)
    if spec.endswith("+tf_mlp"):
        fused = cp_module.CPModule._compiled_mlp
        cp_module.CPModule._compiled_mlp = lambda *args: None  # read when the step is traced
        try:
            step().numpy()
        finally:
            cp_module.CPModule._compiled_mlp = fused
    elif spec.endswith("+tf_ops"):
        with native.disabled():  # traced with the TF ops instead of the compiled kernels
            step().numpy()  # trace + optimizer slots
    else:
        step().numpy()
    return model, step


def timed_step(step):
    """Seconds of one step, this process's CPU seconds during it, and the allocator peak during it above what was
    allocated before it (bytes)."""
    tf.config.experimental.reset_memory_stats(CPU)
    base = tf.config.experimental.get_memory_info(CPU)["current"]
    start, cpu_start = time.perf_counter(), time.process_time()
    step().numpy()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return seconds, cpu, tf.config.experimental.get_memory_info(CPU)["peak"] - base


def bench(specs, frames, repeats):
    """Round-robin over the models (one step each per round), so that load drifts hit all of them alike."""
    prepared = {spec: prepare(spec, frames) for spec in specs}
    times = {spec: [] for spec in specs}
    cpu_times = {spec: [] for spec in specs}
    peaks = {spec: 0 for spec in specs}
    for _ in range(repeats):
        for spec, (_, step) in prepared.items():
            seconds, cpu, peak = timed_step(step)
            times[spec].append(seconds)
            cpu_times[spec].append(cpu)
            peaks[spec] = max(peaks[spec], peak)
    return [{"model": spec, "frames": frames, "params": prepared[spec][0].count_params(),
             "step_s": round(statistics.median(times[spec]), 3), "step_min_s": round(min(times[spec]), 3),
             "cpu_min_s": round(min(cpu_times[spec]), 3),
             "peak_MiB": round(peaks[spec] / 2**20, 1)}
            for spec in specs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inter-op", type=int, default=0, help="inter-op threads (0: TF's default)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    load_before = os.getloadavg()
    rows = bench(args.models.split(","), args.frames, args.repeats)
    baselines = {r["model"].split("_")[1]: r for r in rows if r["model"].startswith("c2d_")}
    for r in rows:
        base = baselines.get(r["model"].split(":")[0].split("+")[0].split("_")[1])
        if base:
            r["time_vs_c2d"] = round(r["step_s"] / base["step_s"], 3)
            r["min_time_vs_c2d"] = round(r["step_min_s"] / base["step_min_s"], 3)
            r["min_cpu_vs_c2d"] = round(r["cpu_min_s"] / base["cpu_min_s"], 3)
            r["mem_vs_c2d"] = round(r["peak_MiB"] / base["peak_MiB"], 3)
    meta = {"tensorflow": tf.__version__, "cpus": os.cpu_count(), "batch": 1, "size": "112x112",
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "note": "shared 2-core CPU machine: absolute times are noisy; ratios come from one run"}
    out = args.out or f"benchmarks/results/cpnet_{args.frames}f_interop{args.inter_op}.json"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(json.dumps({"meta": meta, "rows": rows}))
    keys = ["model", "frames", "params", "step_s", "step_min_s", "peak_MiB", "time_vs_c2d", "min_time_vs_c2d",
            "cpu_min_s", "min_cpu_vs_c2d", "mem_vs_c2d"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
