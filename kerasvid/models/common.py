"""Pieces every kerasvid builder shares: argument checks, the classification head, weight loading, GFLOPs."""
import os

import keras

from kerasvid.weights import convert, presets

POOLINGS = ("avg", "max", None)


def validate_common_args(num_classes, include_top, weights, pooling, dropout_rate, classifier_activation=None):
    """Checks the keras.applications-style arguments shared by all builders; raises ValueError naming the value."""
    if include_top and (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(f"`num_classes` must be an integer >= 1 when include_top=True, got num_classes={num_classes!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}, got pooling={pooling!r}")
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got dropout_rate={dropout_rate!r}")
    if (weights is not None and weights != "imagenet" and not presets.is_preset(weights)
            and not os.path.exists(str(weights)) and not is_tf_checkpoint(weights)):
        raise ValueError(f"`weights` must be None, 'imagenet', a weights preset (kerasvid.zoo.list_weights()) or the "
                         f"path to a .weights.h5 file (or, where the builder maps PyTorch names, a .pth / .safetensors "
                         f"file); the path "
                         f"{weights!r} does not exist")
    if classifier_activation is not None:
        keras.activations.get(classifier_activation)  # raises a clear ValueError for unknown names


def is_tf_checkpoint(path):
    """Whether `path` is a TensorFlow checkpoint prefix (`<path>.index` exists) or a folder with a `checkpoint`
    file (what `tf.train.load_checkpoint` reads), e.g. a kinetics-i3d `.../rgb_imagenet/model.ckpt`."""
    path = str(path)
    return os.path.exists(path + ".index") or os.path.isfile(os.path.join(path, "checkpoint"))


def classifier_head(x, num_classes, include_top, pooling, dropout_rate, classifier_activation, name="head"):
    """Global pooling over every axis but batch and channels, dropout and a dense classifier.

    Args:
        x: KerasTensor `[batch, ..., C]` (rank 4 or 5).
        num_classes: classifier width.
        include_top: when False, returns the pooled features (or `x` itself when `pooling=None`).
        pooling: "avg" or "max" (used when include_top=False; the top always averages, as in the papers).
        dropout_rate: dropout before the classifier.
        classifier_activation: None (logits), "softmax", ...
        name: prefix of the head's layer names.

    Returns:
        `[batch, num_classes]` float32 logits/probabilities, or pooled features `[batch, C]`.
    """
    rank = len(x.shape)
    avg = keras.layers.GlobalAveragePooling3D if rank == 5 else keras.layers.GlobalAveragePooling2D
    mx = keras.layers.GlobalMaxPooling3D if rank == 5 else keras.layers.GlobalMaxPooling2D
    if not include_top:
        if pooling == "avg":
            return avg(name=f"{name}_avg_pool")(x)
        if pooling == "max":
            return mx(name=f"{name}_max_pool")(x)
        return x
    y = avg(name=f"{name}_avg_pool")(x)
    if dropout_rate:
        y = keras.layers.Dropout(dropout_rate, name=f"{name}_dropout")(y)
    # float32 under mixed precision too (the Keras mixed-precision guide: the last layer's softmax/logits).
    return keras.layers.Dense(num_classes, activation=classifier_activation, name="predictions", dtype="float32")(y)


def load_model_weights(model, weights, torch_names=None, torch_optional=()):
    """Loads a `.weights.h5` file into `model`, with an error that names the mismatching layer or shapes.

    Args:
        model: the built model.
        weights: None (nothing to do), a path, or a weights preset name (`kerasvid.weights.presets.weights_file`:
            the cached or downloaded file). ("imagenet" is handled by the builder that supports it.)
        torch_names: for a builder whose layers carry the PyTorch module names: `{torch module: keras layer}` for
            the names that differ; then a `.pth` / `.pt` / `.pth.tar` / `.safetensors` path is read without PyTorch
            and mapped (`kerasvid.weights.convert.load_torch_weights`). None: such files are refused.
        torch_optional: PyTorch modules whose tensors may stay unused (the classifier of a model without its top).
    """
    if weights is None:
        return model
    path = presets.weights_file(weights) if presets.is_preset(weights) else str(weights)
    if not os.path.exists(path):
        raise ValueError(f"The weights path {path!r} does not exist")
    if convert.is_torch_file(path):
        if torch_names is None:
            raise ValueError(f"{model.name!r} has no mapping from PyTorch names; {path!r} cannot be loaded into it "
                             f"(pass a .weights.h5 file of this model)")
        convert.load_torch_weights(model, path, torch_names, torch_optional)
        return model
    try:
        model.load_weights(path)
    except ValueError as err:
        raise ValueError(f"The weights file {path!r} does not match the model {model.name!r} (e.g. a different "
                         f"num_classes or include_top): {err}") from err
    return model


def _function_graph(graph, name):
    """The FuncGraph of the function `name` called from `graph` (looked up in it and its outer graphs)."""
    while graph is not None:
        function = getattr(graph, "_functions", {}).get(name)
        if function is not None and getattr(function, "graph", None) is not None:
            return function.graph
        graph = getattr(graph, "outer_graph", None)
    raise ValueError(f"count_gflops: cannot find the graph of function {name!r}")


def _graph_float_ops(graph):
    """Float ops of `graph` (TF profiler), descending into called functions: a `while_loop` body counts once per
    iteration of its static `maximum_iterations` (its upper bound where the loop can stop early), a `cond`'s
    costlier branch once, a function call once."""
    import tensorflow as tf

    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    total = tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=opts).total_float_ops
    for op in graph.get_operations():
        if op.type in ("While", "StatelessWhile"):
            trips = tf.get_static_value(op.inputs[1])  # while_v2 inputs: counter, maximum_iterations, loop vars
            if trips is None or trips < 0:
                raise ValueError(f"count_gflops: the while_loop {op.name} has no static maximum_iterations")
            total += int(trips) * _graph_float_ops(_function_graph(graph, op.get_attr("body").name))
        elif op.type in ("If", "StatelessIf"):
            total += max(_graph_float_ops(_function_graph(graph, op.get_attr(b).name))
                         for b in ("then_branch", "else_branch"))
        elif op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            total += _graph_float_ops(_function_graph(graph, op.get_attr("f").name))
    return total


def count_gflops(model):
    """Floating-point operations of one forward pass at batch 1, in 1e9, as TF's profiler counts them.

    The graph of `model(x, training=False)` is traced and profiled (`tf.compat.v1.profiler`, float_operation): a
    multiply-add counts 2. Ops without registered statistics (e.g. top-k, MaxPool3D, AvgPool3D, FusedBatchNormV3)
    count 0; 2D pools count one op per window element (so the frame-wise pools of the C2D trunks count, their
    Pooling3D form did not), a composite BatchNorm its element-wise ops (a `FusedBatchNormalization` nothing). Called functions (e.g. an
    XLA-compiled solver) are profiled too, and a `tf.while_loop` body counts once per iteration (its static
    `maximum_iterations`), so a loop counts what its unrolled graph would. (Variable shapes are static, so the
    graph need not be frozen, which would copy every weight into it.)
    """
    import tensorflow as tf

    specs = [tf.TensorSpec((1,) + tuple(inp.shape[1:]), inp.dtype) for inp in model.inputs]
    single = len(specs) == 1

    @tf.function
    def forward(*args):
        return model(args[0] if single else list(args), training=False)

    return _graph_float_ops(forward.get_concrete_function(*specs).graph) / 1e9
