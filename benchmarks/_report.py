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
