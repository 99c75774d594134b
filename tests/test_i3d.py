"""I3D backbone: endpoint geometry, parameter counts, logits head and the kinetics-i3d checkpoint converter."""
import functools
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.backbones import i3d
from tests.helpers import GOOGLENET_ROWS, reference_num_params


def test_supplement_geometry_128x256x352():
    """Supplement Sec. 2.1: 128 frames of 256x352 -> Mixed_5c 16x8x11x1024 (strides 8, 32, 32)."""
    x = keras.Input((128, 256, 352, 3))
    ends = i3d.i3d_features(x)
    assert tuple(ends) == i3d.I3D_ENDPOINTS[:-1]
    assert tuple(ends["Mixed_5c"].shape) == (None, 16, 8, 11, 1024)
    widths = {k: v.shape[-1] for k, v in ends.items() if k.startswith("Mixed")}
    assert widths == {k: r[0] + r[2] + r[4] + r[5] for k, r in GOOGLENET_ROWS.items()}
    assert tuple(ends["Mixed_4f"].shape) == (None, 32, 16, 22, 832)
    model = keras.Model(x, ends["Mixed_5c"])
    assert tuple(model.compute_output_shape((1, 128, 256, 352, 3))) == (1, 16, 8, 11, 1024)


def test_param_counts_match_googlenet_widths():
    x = keras.Input((8, 64, 64, 2))
    feats = i3d.i3d_features(x, name="flow")["Mixed_5c"]
    assert keras.Model(x, feats).count_params() == reference_num_params(2)
    x = keras.Input((8, 224, 224, 3))
    feats = i3d.i3d_features(x)["Mixed_5c"]
    logits = i3d.i3d_logits(feats, 400)
    model = keras.Model(x, logits)
    assert model.count_params() == reference_num_params(3, 400) == 12_704_544


def test_odd_sizes_round_up_like_tf_same_padding():
    x = keras.Input((9, 33, 47, 3))
    model = keras.Model(x, i3d.i3d_features(x)["Mixed_5c"])
    out = model(np.random.default_rng(0).normal(size=(1, 9, 33, 47, 3)).astype("float32"))

    def down(n, strides):
        for s in strides:
            n = math.ceil(n / s)
        return n
    expected = (1, down(9, (2, 1, 1, 2, 2)), down(33, (2, 2, 2, 2, 2)), down(47, (2, 2, 2, 2, 2)), 1024)
    assert tuple(out.shape) == expected == (1, 2, 2, 2, 1024)
    assert np.all(np.isfinite(out)) and np.all(np.asarray(out) >= 0)  # ends with ReLU


def test_logits_head_matches_numpy_window_average():
    x = keras.Input((24, 96, 96, 3))
    feats = i3d.i3d_features(x)["Mixed_5c"]  # 3x3x3x1024: window clipped to (2, 3, 3)
    logits = i3d.i3d_logits(feats, 5)
    model = keras.Model(x, [feats, logits])
    clip = np.random.default_rng(1).uniform(-1, 1, size=(2, 24, 96, 96, 3)).astype("float32")
    fmap, out = (np.asarray(t) for t in model(clip))
    conv = model.get_layer(i3d.layer_name("i3d", i3d.LOGITS_UNIT, "conv"))
    w, b = (np.asarray(v) for v in conv.weights)
    windows = np.stack([fmap[:, t:t + 2].mean(axis=(1, 2, 3)) for t in range(2)], axis=1)  # [B, 2, 1024]
    expected = (windows @ w.reshape(1024, 5) + b).mean(axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="final_endpoint"):
        i3d.i3d_features(keras.Input((8, 32, 32, 3)), final_endpoint="Mixed_6a")


@functools.lru_cache(maxsize=None)
def _kernel_shapes(in_channels):
    x = keras.Input((8, 32, 32, in_channels))
    ends = i3d.i3d_features(x, name="probe")
    probe = keras.Model(x, ends["Mixed_5c"])
    # The checkpoints hold Conv3D kernels: the frame-wise (1x1x1) units' 4-D kernels with their leading 1.
    shapes = {unit: tuple(probe.get_layer(i3d.layer_name("probe", unit, "conv")).kernel.shape)
              for unit in i3d.conv_unit_scopes()}
    return {unit: (1,) * (5 - len(shape)) + shape for unit, shape in shapes.items()}


def _write_kinetics_checkpoint(path, scope, in_channels, num_classes, rng, drop=None, prefix=None, slots=False):
    """Writes a TF1 name-based checkpoint with kinetics-i3d's variable names (Sonnet shapes for BN); `prefix`
    overrides `<scope>/inception_i3d/` (`""`: the unscoped kin600 layout); `slots` adds `<name>/Momentum` copies
    holding other values, as an optimizer would."""
    names, values = [], []

    def add(name, value):
        if name != drop:
            names.append(name)
            values.append(value.astype("float32"))
            if slots:
                names.append(name + "/Momentum")
                values.append(rng.normal(size=value.shape).astype("float32"))

    prefix = f"{scope}/inception_i3d/" if prefix is None else prefix
    for unit, kernel in _kernel_shapes(in_channels).items():
        cout = kernel[-1]
        add(prefix + unit + "/conv_3d/w", rng.normal(size=kernel) * 0.1)
        add(prefix + unit + "/batch_norm/beta", rng.normal(size=(1, 1, 1, 1, cout)))
        add(prefix + unit + "/batch_norm/moving_mean", rng.normal(size=(1, 1, 1, 1, cout)))
        add(prefix + unit + "/batch_norm/moving_variance", rng.uniform(0.5, 2.0, size=(1, 1, 1, 1, cout)))
    add(prefix + "Logits/Conv3d_0c_1x1/conv_3d/w", rng.normal(size=(1, 1, 1, 1024, num_classes)))
    add(prefix + "Logits/Conv3d_0c_1x1/conv_3d/b", rng.normal(size=(num_classes,)))
    names.append("global_step")  # unrelated variables are ignored
    values.append(np.array(7.0, "float32"))
    tf.raw_ops.SaveV2(prefix=path, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(v) for v in values])
    return dict(zip(names, values))


def test_checkpoint_converter_reproduces_source_values(tmp_path):
    rng = np.random.default_rng(2)
    ckpt = str(tmp_path / "model.ckpt")
    source = _write_kinetics_checkpoint(ckpt, "Flow", 2, 7, rng)
    x = keras.Input((8, 32, 32, 2))
    ends = i3d.i3d_features(x, name="flow_i3d")
    logits = i3d.i3d_logits(ends["Mixed_5c"], 7, name="flow_i3d")
    model = keras.Model(x, [ends["Conv3d_1a_7x7"], logits])
    copied = i3d.load_kinetics_i3d_checkpoint(model, ckpt, modality="flow", name="flow_i3d")
    assert len(copied) == 4 * len(i3d.conv_unit_scopes()) + 2 == len(source) - 1
    for unit in ("Conv3d_1a_7x7", "Mixed_5b/Branch_2/Conv3d_0a_3x3", "Mixed_4e/Branch_3/Conv3d_0b_1x1"):
        conv = model.get_layer(i3d.layer_name("flow_i3d", unit, "conv"))
        bn = model.get_layer(i3d.layer_name("flow_i3d", unit, "bn"))
        key = f"Flow/inception_i3d/{unit}"
        np.testing.assert_array_equal(np.asarray(conv.kernel), source[key + "/conv_3d/w"].reshape(conv.kernel.shape))
        np.testing.assert_array_equal(np.asarray(bn.moving_variance),
                                      source[key + "/batch_norm/moving_variance"].ravel())
        np.testing.assert_array_equal(np.asarray(bn.beta), source[key + "/batch_norm/beta"].ravel())
    # The converted stem computes the source's Conv3D + BN (offset only, eps 1e-3) + ReLU.
    clip = rng.uniform(-1, 1, size=(1, 8, 32, 32, 2)).astype("float32")
    stem, _ = model(clip, training=False)
    key = "Flow/inception_i3d/Conv3d_1a_7x7"
    conv = tf.nn.conv3d(clip, source[key + "/conv_3d/w"], strides=[1, 2, 2, 2, 1], padding="SAME").numpy()
    mean, var, beta = (source[f"{key}/batch_norm/{n}"].ravel() for n in ("moving_mean", "moving_variance", "beta"))
    expected = np.maximum((conv - mean) / np.sqrt(var + 1e-3) + beta, 0.0)
    np.testing.assert_allclose(np.asarray(stem), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(
        np.asarray(model.get_layer(i3d.layer_name("flow_i3d", i3d.LOGITS_UNIT, "conv")).bias),
        source["Flow/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/b"])


def test_checkpoint_converter_errors_name_the_problem(tmp_path):
    rng = np.random.default_rng(3)
    ckpt = str(tmp_path / "model.ckpt")
    missing = "RGB/inception_i3d/Mixed_4c/Branch_1/Conv3d_0b_3x3/batch_norm/moving_mean"
    _write_kinetics_checkpoint(ckpt, "RGB", 3, 4, rng, drop=missing)
    x = keras.Input((8, 32, 32, 3))
    model = keras.Model(x, i3d.i3d_features(x)["Mixed_5c"])
    with pytest.raises(ValueError, match="Mixed_4c/Branch_1/Conv3d_0b_3x3/batch_norm/moving_mean"):
        i3d.load_kinetics_i3d_checkpoint(model, ckpt, modality="rgb")
    with pytest.raises(ValueError, match=r"Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w.*top-level scopes found: \['RGB', 'global_step'\]"):
        i3d.load_kinetics_i3d_checkpoint(model, ckpt, modality="flow")
    with pytest.raises(ValueError, match="modality"):
        i3d.load_kinetics_i3d_checkpoint(model, ckpt, modality="depth")


def _assert_loaded(model, name, source, prefix):
    for unit in ("Conv3d_1a_7x7", "Mixed_3c/Branch_1/Conv3d_0b_3x3", "Mixed_5c/Branch_3/Conv3d_0b_1x1"):
        conv = model.get_layer(i3d.layer_name(name, unit, "conv"))
        bn = model.get_layer(i3d.layer_name(name, unit, "bn"))
        np.testing.assert_array_equal(np.asarray(conv.kernel),
                                      source[f"{prefix}{unit}/conv_3d/w"].reshape(conv.kernel.shape))
        np.testing.assert_array_equal(np.asarray(bn.moving_mean),
                                      source[f"{prefix}{unit}/batch_norm/moving_mean"].ravel())


@pytest.mark.large
def test_converter_loads_every_published_layout(tmp_path):
    """The five kinetics-i3d checkpoints, written with their names and shapes (400 or 600 classes; the unscoped
    kin600 one with optimizer slots): each value lands in its Keras weight, the Momentum slots are ignored; the
    zoo builders forward `kinetics_checkpoint` (the recipe's model_kwargs)."""
    from kerasvid.models.action_context import i3d as i3d_model
    from kerasvid.models.action_context import i3d_action_context

    rng = np.random.default_rng(5)
    paths, sources = {}, {}
    for layout, (modality, prefix) in i3d.KINETICS_I3D_CHECKPOINTS.items():
        os.makedirs(tmp_path / layout)
        paths[layout] = str(tmp_path / layout / "model.ckpt")
        classes = 600 if layout == "rgb_scratch_kin600" else 400
        sources[layout] = _write_kinetics_checkpoint(paths[layout], None, i3d.MODALITY_CHANNELS[modality], classes,
                                                     rng, prefix=prefix, slots=not prefix)
    assert "Conv3d_1a_7x7/conv_3d/w/Momentum" in sources["rgb_scratch_kin600"]
    assert "RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w" in sources["rgb_imagenet"]
    # The factorization model of zoo/i3d_action_context.flags, initialised from rgb_imagenet + flow_imagenet.
    model = i3d_action_context(num_classes=3, input_shape=(8, 32, 32, 3), streams=("rgb", "flow"),
                               kinetics_checkpoint={"rgb": paths["rgb_imagenet"], "flow": paths["flow_imagenet"]})
    _assert_loaded(model, "rgb_i3d", sources["rgb_imagenet"], "RGB/inception_i3d/")
    _assert_loaded(model, "flow_i3d", sources["flow_imagenet"], "Flow/inception_i3d/")
    for layout in ("rgb_scratch", "flow_scratch"):
        modality, prefix = i3d.KINETICS_I3D_CHECKPOINTS[layout]
        copied = i3d.load_kinetics_i3d_checkpoint(model, paths[layout], modality=modality, name=f"{modality}_i3d")
        assert len(copied) == 4 * len(i3d.conv_unit_scopes())  # no logits conv in this model
        _assert_loaded(model, f"{modality}_i3d", sources[layout], prefix)
    # The unscoped 600-class checkpoint, logits included, through the `i3d` builder.
    kin600 = i3d_model(num_classes=600, input_shape=(8, 32, 32, 3), kinetics_checkpoint=paths["rgb_scratch_kin600"])
    _assert_loaded(kin600, "rgb_i3d", sources["rgb_scratch_kin600"], "")
    logits = kin600.get_layer(i3d.layer_name("rgb_i3d", i3d.LOGITS_UNIT, "conv"))
    np.testing.assert_array_equal(np.asarray(logits.bias), sources["rgb_scratch_kin600"][
        f"{i3d.LOGITS_UNIT}/conv_3d/b"])
    copied = i3d.load_kinetics_i3d_checkpoint(kin600, paths["rgb_scratch_kin600"], name="rgb_i3d")
    assert len(copied) == 4 * len(i3d.conv_unit_scopes()) + 2 and not any("Momentum" in c for c in copied)
    # The 600-class RGB checkpoint into a flow stream: the stem kernel's shape names the mismatch.
    with pytest.raises(ValueError, match=r"'Conv3d_1a_7x7/conv_3d/w' has shape \(7, 7, 7, 3, 64\)"):
        i3d.load_kinetics_i3d_checkpoint(model, paths["rgb_scratch_kin600"], modality="flow", name="flow_i3d")


def test_weights_takes_a_kinetics_checkpoint_as_kinetics_checkpoint_does(tmp_path):
    """The one `weights=` API: a kinetics-i3d TF1 checkpoint prefix converts as `kinetics_checkpoint=` does."""
    from kerasvid.models.action_context import i3d as i3d_model

    ckpt = str(tmp_path / "model.ckpt")
    _write_kinetics_checkpoint(ckpt, "RGB", 3, 5, np.random.default_rng(4))
    by_weights = i3d_model(num_classes=5, input_shape=(8, 32, 32, 3), weights=ckpt)
    by_name = i3d_model(num_classes=5, input_shape=(8, 32, 32, 3), kinetics_checkpoint=ckpt)
    for a, b in zip(by_weights.weights, by_name.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="not both"):
        i3d_model(num_classes=5, input_shape=(8, 32, 32, 3), weights=ckpt, kinetics_checkpoint=ckpt)
