"""Which classification models convert to LiteRT (builtin ops only), and how close the interpreter is to Keras.

Each model is built at a small input (random weights), converted with `kerasvid.export.export_tflite` (through
`classifier_tflite_function`, as `--mode=export --export_tflite` does) and run on one random uint8 clip with the
LiteRT interpreter; the table gives the conversion time (measured under load on a shared machine), the flatbuffer
size and the max abs difference of the logits from the same function run by TensorFlow.

    python benchmarks/tflite_models.py [--models c2d_resnet18,i3d] [--out_dir DIR]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import save_report  # noqa: E402

# model -> (T, size, builder kwargs, normalization)
MODELS = {
    "c2d_resnet18": (4, 32, {}, "imagenet"),
    "c3d_resnet18": (4, 32, {}, "imagenet"),
    "nl_resnet18": (4, 32, {}, "imagenet"),
    "cpnet_resnet18": (4, 32, {"k": 3}, "imagenet"),
    "bn_inception": (1, 32, {}, "imagenet"),
    "tvnet_bn_inception": (3, 32, {"tvnet_iterations": 3}, "none"),
    "i3d": (8, 64, {}, "imagenet"),
    "i3d_action_context": (8, 64, {"streams": ("rgb",)}, "imagenet"),
}


def convert_one(name, out_dir):
    import keras
    import tensorflow as tf

    from kerasvid import export, zoo

    frames, size, kwargs, normalization = MODELS[name]
    keras.utils.set_random_seed(0)
    model = zoo.get_model(name, num_classes=4, input_shape=(frames, size, size, 3), **kwargs)
    fn = export.classifier_tflite_function(model, frames, (size, size), normalization)
    path = os.path.join(out_dir, f"{name}.tflite")
    start = time.time()
    try:
        export.export_tflite(fn, path, model)
    except ValueError as e:
        return {"model": name, "converts": False, "error": str(e)[:300]}
    seconds = time.time() - start
    x = np.random.default_rng(0).integers(0, 256, (1, frames, size, size, 3), dtype=np.uint8)
    out = export.run_tflite(path, frames=x)
    ref = fn(tf.constant(x))["logits"].numpy()
    return {"model": name, "converts": True, "input": f"{frames}x{size}x{size}", "convert_s": round(seconds, 1),
            "size_mib": round(os.path.getsize(path) / 2 ** 20, 1), "logits_abs": float(np.abs(ref).max()),
            "max_abs_diff": float(np.abs(out["logits"] - ref).max())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out_dir", default=None)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tflite_models_")
    rows = [convert_one(name, work) for name in args.models.split(",")]
    lines = ["| model | input | converts | convert (s) | .tflite (MiB) | max abs logit | max abs diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["converts"]:
            lines.append(f"| `{r['model']}` | {r['input']} | yes | {r['convert_s']} | {r['size_mib']} | "
                         f"{r['logits_abs']:.3g} | {r['max_abs_diff']:.2g} |")
        else:
            lines.append(f"| `{r['model']}` | - | no: {r['error']} | - | - | - | - |")
    save_report("tflite_models", {"rows": rows}, "\n".join(lines), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
