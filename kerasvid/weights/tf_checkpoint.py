"""TF1 `tf.train.Saver` checkpoints into Keras models, by a builder's table of variable names.

A TF1 checkpoint stores each variable under its graph name (`group1/block0/conv1/weights`); a builder that
reproduces the graph gives the table Keras weight -> checkpoint name (`kerasvid.models.cpnet.tf1_variable_names`
for the CPNet authors' checkpoints). Values keep TF's layout (kernels `[..., C_in, C_out]`, as Keras), so a value
only loses or gains size-1 axes: a `[1, k, k, C_in, C_out]` conv3d kernel into a frame-wise `(k, k, C_in, C_out)`
conv, a `[1, 1, C_in, C_out]` conv2d kernel into a `Dense`. Everything is checked before anything is assigned: a
checkpoint that does not fit leaves the model as it was and raises one error naming the first variable that does not
fit and the two shapes, and a model variable the checkpoint holds nothing for is refused, as is a checkpoint variable
that fits no model variable (outside the optimizer's slots and the step counter).

    >>> pairs = [(model.get_layer("conv1_conv").kernel, "conv0/weights"), ...]
    >>> assign_checkpoint(pairs, read_checkpoint("log_jester/model-4.ckpt"), "log_jester/model-4.ckpt")
"""
import numpy as np

from kerasvid.weights import convert

# Variables a TF1 training checkpoint holds besides the model's: optimizer slots and step counters.
_OPTIMIZER_SLOTS = ("/Momentum", "/Adam", "/Adam_1", "/ExponentialMovingAverage", "/RMSProp", "/RMSProp_1")
_STEP_COUNTERS = ("batch", "global_step", "beta1_power", "beta2_power")


def _is_model_variable(name):
    """Whether a checkpoint variable belongs to the model (not an optimizer slot or a step counter)."""
    return name not in _STEP_COUNTERS and not name.endswith(_OPTIMIZER_SLOTS)


def read_checkpoint(prefix):
    """The model variables of a TF checkpoint: dict name -> numpy array (`tf.train.load_checkpoint`; optimizer
    slots and step counters are left out).

    Args:
        prefix: checkpoint prefix (`.../model-4.ckpt`, beside `.index` and `.data-*`) or a folder with a
            `checkpoint` file.

    Raises:
        ValueError: naming the path when it is not a readable checkpoint.
    """
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except Exception as err:  # NotFoundError / DataLossError: name the path
        raise ValueError(f"Cannot read a TF checkpoint at {str(prefix)!r}: {err}") from err
    return {name: reader.get_tensor(name) for name in sorted(reader.get_variable_to_shape_map())
            if _is_model_variable(name)}


def _fit_value(name, value, target_shape):
    """`value` reshaped to `target_shape` when the two differ only by leading size-1 axes (a TF1 conv3d kernel
    `[1, k, k, C_in, C_out]` into a frame-wise 2D kernel `[k, k, C_in, C_out]`, or back); a size-1 axis elsewhere
    would move the kernel's axes, so it is refused.

    Raises:
        ValueError: naming the checkpoint variable and both shapes.
    """
    value = np.asarray(value)
    target_shape = tuple(int(s) for s in target_shape)
    if value.shape == target_shape:
        return value

    def core(shape):
        shape = tuple(shape)
        while shape and shape[0] == 1:
            shape = shape[1:]
        return shape

    if core(value.shape) != core(target_shape):
        raise ValueError(f"The checkpoint variable {name!r} of shape {value.shape} does not fit the Keras weight of "
                         f"shape {target_shape}")
    return value.reshape(target_shape)


def _fits(name, value, shape):
    try:
        _fit_value(name, value, shape)
    except ValueError:
        return False
    return True


def assign_checkpoint(pairs, values, source, optional=()):
    """Assigns checkpoint values to Keras variables, all checked first.

    Args:
        pairs: list of `(keras_variable, checkpoint_name)`, one per model variable.
        values: dict checkpoint name -> numpy array (`read_checkpoint`).
        source: the checkpoint's path, for messages.
        optional: checkpoint name prefixes (e.g. the classifier's `"fc/"`) whose variables load only where all of
            them fit: otherwise they stay unused and their Keras variables keep their values.

    Returns:
        the number of variables assigned.

    Raises:
        ValueError: a checkpoint name the checkpoint lacks, a shape that does not fit, or a checkpoint model variable
            that no Keras variable takes; nothing is assigned then.
    """
    updates, used = [], set()
    for prefix in optional:
        group = [(v, n) for v, n in pairs if n.startswith(prefix)]
        if not group or not all(n in values and _fits(n, values[n], v.shape) for v, n in group):
            pairs = [(v, n) for v, n in pairs if not n.startswith(prefix)]
            values = {n: a for n, a in values.items() if not n.startswith(prefix)}
    for variable, name in pairs:
        if name not in values:
            raise ValueError(f"The checkpoint {str(source)!r} has no variable {name!r} for the Keras weight "
                             f"{variable.path} of shape {tuple(variable.shape)}")
        try:
            updates.append((variable, _fit_value(name, values[name], variable.shape)))
        except ValueError as err:
            raise ValueError(f"The checkpoint {str(source)!r} does not fit: {err} ({variable.path})") from err
        used.add(name)
    unused = [name for name in values if name not in used]
    return convert.assign_checked(updates, unused, values, f"variables of the checkpoint {str(source)!r}",
                                  "Keras weight")
