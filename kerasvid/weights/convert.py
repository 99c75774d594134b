"""PyTorch state_dicts into Keras models whose layers carry the PyTorch module names.

Where a kerasvid model names its layers as the original names its modules (BN-Inception's Caffe names, for one), one
rule maps every tensor: the Keras layer `name` takes `<name>.weight`, `<name>.bias` (convolutions, dense layers,
BatchNorm scale and offset), `<name>.running_mean` and `<name>.running_var`; kernels go from PyTorch's
`(out, in, *spatial)` to Keras' `(*spatial, in, out)` (a dense layer's `(out, in)` is transposed), and size-1 axes
may differ (a 2-D kernel into a `(1, k, k)` Conv3D, TSN's BatchNorm tensors stored as `(1, C)`). Everything is
checked before anything is assigned: a file that does not fit leaves the model as it was and raises one error naming
the first tensor that does not fit and the two shapes.

    >>> model = kerasvid.zoo.bn_inception(num_classes=1000, input_shape=(1, 224, 224, 3),
    ...                                   weights="bn_inception-52deb4733.pth")
"""
import numpy as np

# Keras weight name -> the PyTorch parameter or buffer it comes from.
_TORCH_SUFFIX = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                 "moving_mean": "running_mean", "moving_variance": "running_var"}
# Buffers PyTorch keeps and Keras has no weight for.
_IGNORED = ("num_batches_tracked",)
_TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".safetensors")


def is_torch_file(path):
    """Whether `path` names a PyTorch or safetensors file (by its suffix)."""
    return str(path).endswith(_TORCH_SUFFIXES)


def _short_name(variable):
    return variable.path.split("/")[-1] if hasattr(variable, "path") else variable.name.split(":")[0].split("/")[-1]


def _to_keras(key, array, kind, target_shape):
    """One PyTorch tensor in the layout of a Keras weight of `kind` ("kernel" or other) and `target_shape`.

    Raises:
        ValueError: naming `key` and both shapes when they do not fit.
    """
    value = np.asarray(array)
    if kind == "kernel" and value.ndim >= 2:
        value = np.transpose(value, tuple(range(2, value.ndim)) + (1, 0))
    target_shape = tuple(int(s) for s in target_shape)
    if value.shape != target_shape:
        squeeze = tuple(s for s in value.shape if s != 1) == tuple(s for s in target_shape if s != 1)
        if not squeeze:
            raise ValueError(f"The tensor {key!r} of shape {tuple(np.shape(array))} does not fit the Keras weight of "
                             f"shape {target_shape} (as a {kind}: {value.shape})")
        value = value.reshape(target_shape)
    return value


def assign_state_dict(model, state, rename=None, optional=(), keep=()):
    """Assigns a PyTorch state_dict to `model`'s layers by name (see the module docstring).

    Args:
        model: a Keras model (or layer) whose sub-layers are named as the PyTorch modules.
        state: dict name -> numpy array (e.g. `kerasvid.weights.torch_files.load_state_dict(path)`).
        rename: dict PyTorch module name -> Keras layer name, for the few that differ (e.g.
            `{"last_linear": "predictions"}`).
        optional: PyTorch module names (e.g. the classifier) whose tensors load only where they fit: without its top
            the tensors stay unused; with a top of another width (fine-tuning) the Keras layer keeps its initial
            weights.
        keep: Keras layer names the state_dict has no tensors for (parts of the Keras model the PyTorch module
            does not have): they keep their weights.

    Returns:
        the number of tensors assigned.

    Raises:
        ValueError: a Keras weight without its tensor, a tensor that fits no weight (outside `optional`), or shapes
            that do not fit; the model is left unchanged.
    """
    keras_to_torch = {v: k for k, v in (rename or {}).items()}
    updates, used = [], set()
    for layer in _layers_with_weights(model):
        if layer.name in keep:
            continue
        module = keras_to_torch.get(layer.name, layer.name)
        if module in optional and not _fits(layer, module, state):
            continue
        for variable in layer.weights:
            kind = _short_name(variable)
            if kind not in _TORCH_SUFFIX:
                raise ValueError(f"Layer {layer.name!r} has a weight {kind!r} that no PyTorch tensor maps to")
            key = f"{module}.{_TORCH_SUFFIX[kind]}"
            if key not in state:
                raise ValueError(f"The state_dict has no tensor {key!r} for the Keras weight {layer.name}/{kind} "
                                 f"of shape {tuple(variable.shape)}")
            updates.append((variable, _to_keras(key, state[key], kind, variable.shape)))
            used.add(key)
    unused = [k for k in state if k not in used and not k.endswith(_IGNORED)
              and k.rsplit(".", 1)[0] not in optional]
    return assign_checked(updates, unused, state, "tensors of the state_dict", f"layer of {model.name!r}")


def assign_checked(updates, unused, values, what, target):
    """Assigns `updates` (pairs of Keras variable and value) once nothing in `unused` is left over.

    Raises:
        ValueError: "<n> <what> fit no <target>, e.g. [names] (shape ...)" when `unused` is not empty (nothing is
            assigned then).
    """
    if unused:
        raise ValueError(f"{len(unused)} {what} fit no {target}, e.g. {unused[:3]} "
                         f"(shape {tuple(np.shape(values[unused[0]]))})")
    for variable, value in updates:
        variable.assign(value.astype(variable.dtype))
    return len(updates)


def _fits(layer, module, state):
    """Whether every weight of `layer` has its tensor under `module` in `state`, in a shape that fits."""
    for variable in layer.weights:
        kind = _short_name(variable)
        key = f"{module}.{_TORCH_SUFFIX.get(kind, kind)}"
        if key not in state:
            return False
        try:
            _to_keras(key, state[key], kind, variable.shape)
        except ValueError:
            return False
    return True


def _layers_with_weights(model):
    """The leaf layers holding weights, each once (nested models are walked)."""
    seen, out = set(), []

    def walk(layer):
        children = getattr(layer, "layers", None)
        if children:
            for child in children:
                walk(child)
        elif layer.weights and id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)

    walk(model)
    return out


def load_torch_weights(model, path, rename=None, optional=()):
    """Reads a `.pth` / `.safetensors` file without PyTorch and assigns it to `model` (`assign_state_dict`)."""
    from kerasvid.weights import torch_files

    state = torch_files.load_state_dict(path)
    try:
        return assign_state_dict(model, state, rename, optional)
    except ValueError as err:
        raise ValueError(f"The weights file {str(path)!r} does not fit the model {model.name!r}: {err}") from err
