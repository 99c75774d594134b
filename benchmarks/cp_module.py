"""Benchmark: where a CP module's training-step time goes, at the sizes of cpnet_resnet34 (8x112x112 input).

    python benchmarks/cp_module.py [--rounds 7] [--k 12]

For the two module shapes of `cpnet_resnet34` (res3: 8x28x28x128, two modules; res4: 8x14x14x256, three modules;
k=12, MLP widths C/4, C/2), times in `tf.function`s, interleaved rounds, minimum of this process's CPU seconds and
of the wall time:

- `knn, TF ops` / `knn, compiled`: `cp_knn` alone (the correspondence proposals; no gradient), with the TF-ops
  selection or kerasvid's compiled kernel (`kerasvid.ops.native`, what `CPModule` uses when training on CPU),
- `forward`: `CPModule(x, training=True)`,
- `forward+backward`: the forward pass and the gradients of a loss with respect to the input and every weight, as
  a training step runs it (compiled kernels: the kNN selection and the fused MLP, `kerasvid.ops.cp_mlp`),
- `forward+backward, TF-ops MLP`: the same with the MLP in TF ops (the compiled kNN kept), to set beside it,
- `forward+backward, TF ops`: the same with TF ops only (the kNN selection and the gather gradient's `ScatterNd`),
- `forward+backward, gather gradient`: TF ops, with `tf.gather`'s own gradient (an `UnsortedSegmentSum`) for the
  neighbour gather instead of the module's `ScatterNd` one (`cp_module._gather_neighbours`).

The `per model` rows add the modules up (2 res3 + 3 res4), to set beside the C2D trunk's step time
(`benchmarks/cpnet.py`). Prints JSON and a markdown table, writes benchmarks/results/cp_module.{json,md}, with the
load average before and after: on a shared machine compare only figures of one run.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from _report import save_report  # noqa: E402
from kerasvid.layers import cp_module  # noqa: E402
from kerasvid.ops import native  # noqa: E402
from kerasvid.ops.knn import cp_knn  # noqa: E402

SHAPES = {"res3": ((1, 8, 28, 28, 128), 2), "res4": ((1, 8, 14, 14, 256), 3)}  # (input, modules in cpnet_resnet34)


def variants(shape, k):
    """The timed functions of one module shape: `{name: fn}`, each returning numpy-convertible tensors."""
    layer = cp_module.CPModule(k=k)
    x = tf.nn.relu(tf.random.stateless_normal(shape, seed=[0, 1]))  # a ReLU-fed residual sum, as in the trunk
    layer(x)
    layer.final_bn.gamma.assign(tf.ones_like(layer.final_bn.gamma))  # every weight gets a gradient
    points = tf.reshape(x, [shape[0], -1, shape[-1]])

    def train():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return tape.gradient(loss, [x] + layer.trainable_weights)

    def plain_gather(values, proposals, compiled=False):
        return tf.gather(values, proposals, batch_dims=1)

    def tf_ops(fn):
        """`fn` traced with the compiled kernels unavailable (read when the function is traced)."""
        def traced():
            with native.disabled():
                return fn()
        return traced

    def train_tf_ops_mlp():
        fused = cp_module.CPModule._compiled_mlp
        cp_module.CPModule._compiled_mlp = lambda *args: None  # read when the function is traced
        try:
            return train()
        finally:
            cp_module.CPModule._compiled_mlp = fused

    def train_gather_gradient():
        scatter = cp_module._gather_neighbours
        cp_module._gather_neighbours = plain_gather
        try:
            return train()
        finally:
            cp_module._gather_neighbours = scatter

    return {"knn, TF ops": tf.function(lambda: cp_knn(points, shape[1], k)),
            "knn, compiled": tf.function(lambda: cp_knn(points, shape[1], k, compiled=True)),
            "forward": tf.function(lambda: layer(x, training=True)),
            "forward+backward": tf.function(train),
            "forward+backward, TF-ops MLP": tf.function(train_tf_ops_mlp),
            "forward+backward, TF ops": tf.function(tf_ops(train)),
            "forward+backward, gather gradient": tf.function(tf_ops(train_gather_gradient))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--k", type=int, default=12)
    args = parser.parse_args()
    load_before = os.getloadavg()
    calls = {(where, name): fn for where, (shape, _) in SHAPES.items() for name, fn in variants(shape, args.k).items()}
    for fn in calls.values():  # tracing
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    wall, cpu = {}, {}
    for _ in range(args.rounds):
        for key, fn in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            tf.nest.map_structure(lambda t: t.numpy(), fn())
            t, c = time.perf_counter() - t0, time.process_time() - c0
            wall[key], cpu[key] = min(wall.get(key, t), t), min(cpu.get(key, c), c)
    rows = [{"where": where, "what": name, "cpu_ms": round(cpu[where, name] * 1e3, 1),
             "wall_ms": round(wall[where, name] * 1e3, 1)} for where, name in calls]
    for name in dict.fromkeys(name for _, name in calls):
        rows.append({"where": "per model (2 res3 + 3 res4)", "what": name,
                     "cpu_ms": round(sum(n * cpu[w, name] for w, (_, n) in SHAPES.items()) * 1e3, 1),
                     "wall_ms": round(sum(n * wall[w, name] for w, (_, n) in SHAPES.items()) * 1e3, 1)})
    result = {"tensorflow": tf.__version__, "cpus": os.cpu_count(), "k": args.k, "rounds": args.rounds,
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    lines = [f"load average {result['load_average_before'][0]} -> {result['load_average_after'][0]} (1 min); "
             f"k={args.k}, min of {args.rounds} interleaved rounds", "",
             "| where | what | CPU ms | wall ms |", "|---|---|---|---|"]
    lines += [f"| {r['where']} | {r['what']} | {r['cpu_ms']} | {r['wall_ms']} |" for r in rows]
    save_report("cp_module", result, "\n".join(lines))


if __name__ == "__main__":
    main()
