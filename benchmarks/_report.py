"""Shared by the benchmark scripts: print a result as JSON and a markdown table, and save both under results/; the
training step that the step-time benchmarks time; the PyTorch peers' timing loop and runner."""
import json
import os
import subprocess
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def save_report(name, data, table, out_dir=None):
    """Prints `data` (JSON) and `table` (markdown) and writes `<out_dir>/<name>.json` and `<name>.md`.

    Returns:
        The output directory.
    """
    out_dir = out_dir or RESULTS_DIR
    print(json.dumps(data, indent=1))
    print(table)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(table + "\n")
    return out_dir


def sgd_train_step(model, x, labels, learning_rate, jit_compile=False):
    """A `tf.function` training step of `model` on one fixed batch: sparse cross-entropy of the float32 logits, SGD
    with momentum 0.9 (loss-scaled under the `mixed_float16` policy), XLA-compiled with `jit_compile`. Returns the
    step; each call returns the loss."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), "float32")
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def folding_variants(name, frames, size, classes=174, xla=True, seed=0):
    """The registered model `name` at batch 1 x `frames` x `size` x `size` x 3 in the forms the folding benchmarks
    compare: "conv3d" (kerasvid 0.1's layers: every frame-wise layer as Conv3D / Pooling3D and Keras' composite
    BatchNormalization, `kerasvid.layers.conv3d_form(model, keras_batch_norm=True)`, the same weights), "folded"
    (as kerasvid builds it: frame-wise 2D layers, fused BatchNorm) and, with `xla`, "folded_xla" (both functions
    XLA-compiled).

    Returns:
        `(variants, model, difference)`: `{variant: (train_step, inference)}`, each a function returning numpy
        (`sgd_train_step`; `model(x, training=False)` in a `tf.function`), the folded model, and the max
        |logit difference| between the folded and the Conv3D forms (0 up to float rounding).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from kerasvid import zoo
    from kerasvid.layers.frames import conv3d_form

    keras.utils.set_random_seed(seed)
    model = zoo.get_model(name, num_classes=classes, input_shape=(frames, size, size, 3))
    old = conv3d_form(model, keras_batch_norm=True)
    x = tf.constant(np.random.default_rng(seed).normal(size=(1, frames, size, size, 3)).astype("float32"))
    labels = tf.constant([3])

    def forms(m, jit):
        step = sgd_train_step(m, x, labels, 0.01, jit_compile=jit)

        @tf.function(jit_compile=jit)
        def infer():
            return m(x, training=False)

        return (lambda: step().numpy()), (lambda: infer().numpy())

    difference = float(np.abs(np.asarray(model(x, training=False), np.float32)
                              - np.asarray(old(x, training=False), np.float32)).max())
    variants = {"conv3d": forms(old, False), "folded": forms(model, False)}
    if xla:
        variants["folded_xla"] = forms(model, True)
    return variants, model, difference


# The end of every PyTorch peer script (which defines `train`, `infer` and `rounds` before it): one warm-up call each,
# then interleaved rounds; prints the minimum seconds of each as one JSON line.
TORCH_TIMING = r"""
best = {}
for fn in (train, infer):
    fn()
for _ in range(rounds):
    for name, fn in (("train", train), ("infer", infer)):
        start = time.perf_counter(); fn(); t = time.perf_counter() - start
        best[name] = min(best.get(name, t), t)
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), **best}))
"""


def torch_peer(python, script, *args):
    """Runs a PyTorch peer `script` (ending with `TORCH_TIMING`) with `args` in the interpreter `python`: its
    `{"train", "infer", "torch", "threads"}`, or None where that interpreter is missing or fails (a line says why;
    PyTorch is a benchmark-only dependency, never kerasvid's)."""
    if not os.path.exists(python):
        print(f"pytorch peer skipped: no interpreter at {python} (PyTorch is a benchmark-only dependency: "
              f"python3 -m venv /work/torchvenv && /work/torchvenv/bin/pip install torch torchvision)")
        return None
    run = subprocess.run([python, "-c", script, *(str(a) for a in args)], capture_output=True, text=True)
    if run.returncode != 0:
        print(f"pytorch peer skipped: {python} failed: {run.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def cpu_run_result(start, load_before, ceiling, rounds, input_shape, classes, rows, **extra):
    """The header fields of a CPU timing run (machine, TensorFlow, load averages before and now, the matmul ceiling)
    with its `rows`, and the markdown line that says them: `(result, line)`."""
    import tensorflow as tf

    result = {"device": "cpu", "cpus": os.cpu_count(), "tensorflow": tf.__version__, "rounds": rounds, **extra,
              "input": "x".join(str(d) for d in input_shape), "classes": classes,
              "matmul_gflop_per_s": round(ceiling, 1), "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()],
              "seconds": round(time.time() - start, 1), "rows": rows}
    line = (f"load average {result['load_average_before'][0]} -> {result['load_average_after'][0]} (1 min); "
            f"fp32 matmul ceiling {result['matmul_gflop_per_s']} GFLOP/s; input {result['input']}, "
            f"min of {rounds} interleaved rounds")
    return result, line
