"""The model registry behind `kerasvid.zoo` (torchvision-style `@register_model`), and the registry of the pictures
a model family draws of a trained model (`register_pictures`, `model_pictures`).

It lives below the model files so that each model file can register its builders without importing
`kerasvid.zoo` (imports point downward); `kerasvid.zoo` re-exports everything here.
"""
import dataclasses
import difflib
from typing import Callable, Optional, Tuple

_REGISTRY = {}
_PICTURES = {}  # layer class -> picture function


@dataclasses.dataclass(frozen=True)
class ReportedResult:
    """A result a paper reports for a model, with the protocol that gives it (what a full run should reach).

    Attributes:
        metrics: `((name, value), ...)` as printed in the paper, e.g. `(("accuracy (%)", 79.2),)`.
        dataset: dataset and split (and what the network was trained on, where that differs).
        frames: frames / clips per video (or "still images").
        views: test views and how predictions or features are combined.
        source: where the number is printed (e.g. "TVNet supp. Table 1").
    """

    metrics: Tuple[Tuple[str, float], ...]
    dataset: str
    frames: str
    views: str
    source: str

    def __str__(self):
        values = ", ".join(f"{name} {value:g}" for name, value in self.metrics)
        return f"{values} ({self.dataset}; {self.frames}; {self.views}; {self.source})"


# Only numbers printed in the papers' texts at hand (the supplements; the main papers' result
# tables were not available, so the CPNet, I3D, actor-observer and video factorization models have none yet), and
# the accuracies publishers give for the published weights a model loads.
REPORTED_RESULTS = {
    "tvnet_bn_inception": (ReportedResult(
        (("ASLAN accuracy (%)", 79.2), ("AUC (%)", 84.3)), "ASLAN action similarity, nets trained on UCF101",
        "25 equal clips per video, features averaged",
        "TVNet-50 net's global_pool + inception_5b/5a/4e and RGB net's global_pool, 12 distances each, linear SVM",
        "TVNet supp. Table 1"),),
    "action_context_image": (ReportedResult(
        (("mAP (%)", 80.2),), "Pascal VOC2012 action, validation", "still images, short side 256",
        "whole feature map; DenseNet-161 features (kerasvid default DenseNet-121), with conjugate samples; "
        "baseline without factorization 78.2", "factorization supp. Sec. 1"),),
    # torchvision's published Kinetics-400 weights (the accuracies torchvision's documentation gives for them).
    **{name: (ReportedResult((("top-1 (%)", top1),), "Kinetics-400 validation",
                             "clips of 16 frames at 15 fps, 112x112", "5 clips per video, video-level",
                             f"torchvision docs ({arch}, KINETICS400_V1 weights)"),)
       for name, arch, top1 in (("r3d_resnet18", "r3d_18", 63.2), ("mc3_resnet18", "mc3_18", 63.96),
                                ("r2plus1d_resnet18", "r2plus1d_18", 67.46))},
}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Metadata of a registered model.

    Attributes:
        name: registry name (the builder's name).
        builder: the builder function.
        paper: the paper the model comes from (short citation).
        default_input: the default `input_shape` `(T, H, W, C)` (or `(H, W, C)` for image models) used for the
            parameter and GFLOPs figures.
        num_classes: `num_classes` used for the figures.
        num_params: total parameter count (trainable + non-trainable) of
            `builder(num_classes=num_classes, input_shape=default_input)`; a test recomputes it.
        gflops: multiply-adds x 2 of one forward pass at batch 1 for `default_input`, in 1e9; a test recomputes it.
        recipe: the flagfile in `zoo/` that trains it, or "" where none exists yet.
        reported: the paper's `ReportedResult`s for this model (`REPORTED_RESULTS`), empty where none is printed.
    """

    name: str
    builder: Callable
    paper: str
    default_input: Tuple[int, ...]
    num_classes: int
    num_params: Optional[int]
    gflops: Optional[float]
    recipe: str = ""
    reported: Tuple[ReportedResult, ...] = ()


def register_model(paper, default_input, num_params=None, gflops=None, recipe="", num_classes=400, name=None):
    """Decorator that registers a builder in the zoo.

    Args:
        paper: short citation, e.g. "Liu et al., CVPR 2019 (CPNet)".
        default_input: default `input_shape` of the builder.
        num_params: the recorded parameter count for `num_classes` and `default_input` (checked by a test).
        gflops: the recorded GFLOPs for `default_input` (checked by a test).
        recipe: flagfile under `zoo/`.
        num_classes: the class count the figures refer to.
        name: registry name; defaults to the function name.
    """

    def wrap(fn):
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"A model named {key!r} is already registered (by {_REGISTRY[key].builder!r}).")
        _REGISTRY[key] = ModelInfo(key, fn, paper, tuple(default_input), num_classes, num_params, gflops, recipe,
                                   REPORTED_RESULTS.get(key, ()))
        return fn

    return wrap


def list_models():
    """Returns the sorted names of all registered models."""
    return sorted(_REGISTRY)


def model_info(name):
    """Returns the `ModelInfo` of a registered model; unknown names raise a ValueError with the closest names."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model name {name!r}.{hint} Available: {', '.join(list_models())}.")
    return _REGISTRY[name]


def get_model(name, **kwargs):
    """Builds a registered model by name: `get_model("cpnet_resnet18", num_classes=174)`."""
    return model_info(name).builder(**kwargs)


def find_layers(model, layer_class):
    """The layers of `model` that are instances of `layer_class`, in layer order, nested models included (the
    sublayers of a found layer are not searched)."""
    found = []

    def visit(layer):
        for sub in getattr(layer, "layers", ()):
            if isinstance(sub, layer_class):
                found.append(sub)
            else:
                visit(sub)

    visit(model)
    return found


def register_pictures(layer_class):
    """Decorator: registers `fn(model, clip, frames, scale)` as the pictures of every model that has a
    `layer_class` layer (`find_layers`). A model family registers its pictures in its own model file.

    `fn` gets the trained model, one model input `clip` (`[1, T, H, W, C]`, preprocessed as for the model), the same
    clip as a person sees it (`frames`, uint8 `[T, H, W, 3]`) and an integer enlargement `scale`; it returns a dict
    of picture name -> uint8 `[H', W', 3]` image.

    Example (as `kerasvid/models/cpnet.py` does):

        @register_pictures(CPModule)
        def correspondence_picture(model, clip, frames, scale=4):
            return {"correspondences": image}  # uint8 [H', W', 3]
    """

    def wrap(fn):
        if layer_class in _PICTURES and _PICTURES[layer_class] is not fn:
            raise ValueError(f"Pictures of {layer_class.__name__} layers are already registered "
                             f"(by {_PICTURES[layer_class]!r}).")
        _PICTURES[layer_class] = fn
        return fn

    return wrap


def has_pictures(model):
    """Whether a registered model family draws pictures of `model` (`register_pictures`)."""
    return any(find_layers(model, layer_class) for layer_class in _PICTURES)


def model_pictures(model, clip, frames, scale=4):
    """The pictures the registered families draw of `model` for one clip: name -> uint8 `[H', W', 3]` image
    (empty for a model no family draws). Arguments as the picture functions of `register_pictures` take them."""
    pictures = {}
    for layer_class, fn in _PICTURES.items():
        if find_layers(model, layer_class):
            pictures.update(fn(model, clip, frames, scale=scale))
    return pictures
