"""The kerasvid model zoo: `list_models()`, `get_model(name, **kwargs)` and every builder by name.

    import kerasvid
    model = kerasvid.zoo.cpnet_resnet34(num_classes=27, input_shape=(8, 112, 112, 3))
    kerasvid.zoo.list_models()
    kerasvid.zoo.list_weights()   # published checkpoints: source, license, preprocessing, reported accuracy

`python -m kerasvid.zoo` prints the model table (name, paper, parameters, GFLOPs for the default input);
`--weights` the table of known published checkpoints; `--markdown` as markdown.
"""
import sys

from kerasvid import _submodules, _quiet

if __name__ == "__main__":  # `python -m kerasvid.zoo`: no TensorFlow loading notices above the table
    _quiet.quiet_tensorflow()
# The registry's API is public from here (`kerasvid.zoo.get_model`, `kerasvid.zoo.register_model`, ...).
from kerasvid.models.registry import ModelInfo, get_model, list_models, model_info, register_model  # noqa: F401
# The known published checkpoints and what each needs (`kerasvid.zoo.list_weights()`).
from kerasvid.weights.presets import WeightsInfo, list_weights, weights_info  # noqa: F401
# The pictures a model family draws of a trained model (registered in its model file; `kerasvid train --pictures`).
from kerasvid.models.registry import has_pictures, model_pictures, register_pictures  # noqa: F401

# Each paper's model file registers its builders on import: every module of kerasvid.models is imported, so a new
# model file needs no line here.
_submodules.import_modules("kerasvid.models")
for _name in list_models():
    globals()[_name] = model_info(_name).builder
del _name


def model_table(markdown=True):
    """Returns the model table (from the registry's recorded figures) as markdown or plain text."""
    rows = [("model", "paper", "input (T, H, W, C)", "params (M)", "GFLOPs", "recipe",
             "paper's result (dataset; frames; views; source)")]
    for name in list_models():
        info = model_info(name)
        params = f"{info.num_params / 1e6:.2f}" if info.num_params else "-"
        gflops = f"{info.gflops:.1f}" if info.gflops else "-"
        shape = "x".join(str(v) for v in info.default_input)
        reported = "<br>".join(str(r) for r in info.reported) or "-"
        rows.append((f"`{name}`", info.paper, shape, params, gflops, f"`{info.recipe}`" if info.recipe else "-",
                     reported))
    return _render(rows, markdown)


def weights_table(markdown=True):
    """Returns the table of known published checkpoints (`list_weights()`) as markdown or plain text."""
    rows = [("weights", "models", "dataset", "normalization", "publisher's result", "license", "file")]
    for w in list_weights():
        rows.append((f"`{w.name}`", ", ".join(f"`{m}`" for m in w.models), w.dataset, f"`{w.normalization}`",
                     w.reported or "-", w.license, w.url or w.source))
    return _render(rows, markdown)


def _render(rows, markdown):
    """Rows of strings (the first is the header) as a markdown table or aligned plain text."""
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    table = weights_table if "--weights" in argv else model_table
    print(table(markdown="--markdown" in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
