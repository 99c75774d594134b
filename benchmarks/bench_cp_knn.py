"""Benchmark: CP kNN dense vs chunked (time, peak memory) and CP module vs NL block (forward + backward).

    python benchmarks/bench_cp_knn.py [--quick] [--out benchmarks/results/bench_cp_knn.json]

Prints JSON and a markdown table. Peak memory is TF's CPU allocator peak (`tf.config.experimental.
get_memory_info("CPU:0")`) during the measured call, minus what was allocated before it. All ratios in the
table come from the same run. Sizes are the CPNet ones (DESIGN.md): res4 of an 8-frame clip (8x14x14, C=256),
res3 (8x28x28, C=128) and res3 of a 32-frame clip (32x28x28). kNN modes: "dense" = one N x N score block
(row top-k: plain `tf.math.top_k` over whole rows; two-stage: kerasvid's exact group selection), "frame pairs" =
the dense form `cp_knn` uses (half the multiply-adds), "auto" = what `cp_knn` picks under its memory budget
(frame pairs up to 8x28x28, query chunks above), "chunked 512" = blocks of 512 queries.

Figures that kerasvid's docstrings held before (they keep the method, the numbers live here), re-measured on the
shared 2-core CPU (TF 2.21, median of 5 calls after a warm-up):
- Two-stage top-k selection (`knn._top_k_indices`) against one `tf.math.top_k` over whole rows, rows "dense,
  two-stage" vs "dense, row top-k" (the whole kNN call, matmul included): 0.79x the time at N=8x14x14 (C=256,
  k=8), 0.57x at N=8x28x28 (C=128, k=12). The `cp_knn` docstring had said "about 4x faster" (not reproduced).
- `layers._blocks.fused_batch_norm` against `BatchNormalization(training=True)`, forward + backward of a
  `[1, 1568, 12, 64]` tensor (a CP-module MLP activation at 8x14x14, k=12; measured by hand, not by this
  script): 17.7 ms vs 52.3 ms. Its docstring had said it "halves the cost" of the CP module's MLP.
"""
import argparse
import json
import os
import statistics
import time

import tensorflow as tf

from kerasvid.layers import CPModule, NonLocalBlock
from kerasvid.ops import knn

CPU = "CPU:0"


def measure(fn, repeats):
    """Median seconds over `repeats` calls and the allocator peak of the first one (bytes above the start).

    With `repeats > 1` a warm-up call (tracing) comes first; a single call includes its tracing (~0.1 s), which
    is negligible at the sizes where a single call is used.
    """
    if repeats > 1:
        fn()
    tf.config.experimental.reset_memory_stats(CPU)
    base = tf.config.experimental.get_memory_info(CPU)["current"]
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if i == 0:
            peak = tf.config.experimental.get_memory_info(CPU)["peak"] - base
    return statistics.median(times), peak


def knn_rows(sizes, repeats):
    rows = []
    for frames, side, channels, k in sizes:
        n = frames * side * side
        points = tf.random.normal([1, n, channels], seed=0)
        full = lambda p, c=n: knn._query_chunk_knn(p, frames, k, c)  # noqa: E731 (one N x N score block)
        modes = {
            "dense, row top-k": (full, True),
            "dense, two-stage": (full, False),
            "frame pairs, two-stage": (lambda p: knn.cp_knn(p, frames, k, chunk_size=n), False),
            "auto, two-stage": (lambda p: knn.cp_knn(p, frames, k), False),
            "chunked 512, two-stage": (lambda p: knn.cp_knn(p, frames, k, chunk_size=512), False),
        }
        results = {}
        for mode, (call, plain) in modes.items():
            group_size = knn._group_size
            if plain:
                knn._group_size = lambda num_points, k, largest=32: 1  # plain tf.math.top_k over whole rows
            try:
                fn = tf.function(call)
                seconds, peak = measure(lambda: fn(points).numpy(), repeats if n <= 8000 else 1)
            finally:
                knn._group_size = group_size
            results[mode] = (seconds, peak)
        dense_s, dense_mem = results["dense, row top-k"]
        for mode, (seconds, peak) in results.items():
            rows.append({"what": "cp_knn", "size": f"N={frames}x{side}x{side}={n}, C={channels}, k={k}",
                         "mode": mode, "ms": round(seconds * 1e3, 1), "peak_MiB": round(peak / 2**20, 1),
                         "time_vs_dense_row_topk": round(seconds / dense_s, 3),
                         "mem_vs_dense_row_topk": round(peak / dense_mem, 3)})
    return rows


def module_rows(sizes, repeats):
    rows = []
    for frames, side, channels in sizes:
        n = frames * side * side
        x = tf.random.normal([1, frames, side, side, channels], seed=1)
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        results = {}
        for name, layer in (("CPModule k=8", CPModule(k=8)), ("NonLocalBlock", NonLocalBlock())):
            if name == "NonLocalBlock" and 4 * n * n * 4 > 0.4 * available:
                rows.append({"what": "fwd+bwd", "size": f"{frames}x{side}x{side}x{channels}", "mode": name,
                             "ms": None, "peak_MiB": None,
                             "note": f"skipped: NL needs > 4 N^2 floats ({4 * n * n * 4 / 2**30:.1f} GiB), "
                                     f"{available / 2**30:.1f} GiB available"})
                continue
            layer.build(x.shape)

            @tf.function
            def step(inp, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(inp)
                    loss = tf.reduce_sum(tf.square(layer(inp, training=True)))
                return tape.gradient(loss, [inp] + layer.trainable_weights)

            seconds, peak = measure(lambda: [g.numpy() for g in step(x)], repeats if n <= 8000 else 1)
            results[name] = (seconds, peak)
            rows.append({"what": "fwd+bwd", "size": f"{frames}x{side}x{side}x{channels}", "mode": name,
                         "ms": round(seconds * 1e3, 1), "peak_MiB": round(peak / 2**20, 1)})
        if len(results) == 2:
            cp, nl = results["CPModule k=8"], results["NonLocalBlock"]
            rows[-2]["time_vs_nl"] = round(cp[0] / nl[0], 3)
            rows[-2]["mem_vs_nl"] = round(cp[1] / nl[1], 3)
    return rows


def markdown(rows):
    keys = ["what", "size", "mode", "ms", "peak_MiB", "time_vs_dense_row_topk", "mem_vs_dense_row_topk",
            "time_vs_nl", "mem_vs_nl", "note"]
    keys = [k for k in keys if any(k in r for r in rows)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 32-frame sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/bench_cp_knn.json")
    args = parser.parse_args()
    knn_sizes = [(8, 14, 256, 8), (8, 28, 128, 12)] + ([] if args.quick else [(32, 28, 128, 8)])
    module_sizes = [(8, 14, 256), (8, 28, 128)] + ([] if args.quick else [(32, 14, 256)])
    rows = knn_rows(knn_sizes, args.repeats) + module_rows(module_sizes, args.repeats)
    meta = {"tensorflow": tf.__version__, "cpus": os.cpu_count(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "note": "shared 2-core machine: absolute times are noisy, ratios come from one run"}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(json.dumps({"meta": meta, "rows": rows}))
    print(markdown(rows))


if __name__ == "__main__":
    main()
