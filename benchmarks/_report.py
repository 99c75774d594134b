"""Shared by the benchmark scripts: print a result as JSON and a markdown table, and save both under results/; the
training step that the step-time benchmarks time."""
import json
import os

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
