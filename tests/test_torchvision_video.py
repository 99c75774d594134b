"""torchvision's Kinetics-400 video ResNets (r3d_18, mc3_18, r2plus1d_18) as `r3d_resnet18`, `mc3_resnet18`,
`r2plus1d_resnet18`: torchvision's state_dict maps onto the kerasvid model, and the converted
model computes what the PyTorch module computed (tests/fixtures/torch_reference: real PyTorch float64 outputs of the
modules with deterministic stand-in weights)."""
import importlib.util
import os

import keras
import numpy as np
import pytest

from kerasvid import zoo
from kerasvid.backbones import resnet
from kerasvid.models import common
from kerasvid.models.resnet_video import torchvision_video_names
from kerasvid.weights import torch_files

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "torch_reference")
ARCHS = {"r3d_resnet18": "r3d_18", "mc3_resnet18": "mc3_18", "r2plus1d_resnet18": "r2plus1d_18"}


def _reference_weights():
    spec = importlib.util.spec_from_file_location("reference_weights", os.path.join(HERE, "reference_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _state(arch):
    ref = _reference_weights()
    return ref.make_state_dict(ref.read_keys(os.path.join(HERE, f"keys_{arch}.txt")))


def _write(tmp_path, arrays, name):
    path = tmp_path / name
    torch_files.write_safetensors(path, arrays)
    return str(path)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_torchvision_weights_compute_the_pytorch_outputs(tmp_path, name):
    arch = ARCHS[name]
    with np.load(os.path.join(HERE, f"expected_{arch}.npz")) as f:
        expected = {k: f[k] for k in f.files}
    x = np.transpose(expected["input"], (0, 2, 3, 4, 1))  # NCTHW -> NTHWC
    model = getattr(zoo, name)(num_classes=400, input_shape=x.shape[1:],
                               weights=_write(tmp_path, _state(arch), f"{arch}.safetensors"))
    pooled = model.get_layer("head_avg_pool").output
    logits, features = (np.asarray(v) for v in keras.Model(model.input, [model.output, pooled])(x, training=False))
    scale = np.abs(expected["layer4_pooled"]).max()
    assert scale > 1e-2
    np.testing.assert_allclose(features, expected["layer4_pooled"], atol=2e-5 * scale, rtol=0)
    np.testing.assert_allclose(logits, expected["logits"], atol=2e-5 * np.abs(expected["logits"]).max(), rtol=0)


def test_fine_tuning_keeps_the_trunk_and_a_new_classifier(tmp_path):
    """Another number of classes: every trunk tensor loads, torchvision's `fc` (400 classes) is left out and the new
    classifier keeps its initial weights; include_top=False loads the trunk alone."""
    state = _state("mc3_18")
    path = _write(tmp_path, state, "mc3_18.safetensors")
    model = zoo.mc3_resnet18(num_classes=7, input_shape=(4, 32, 32, 3), weights=path)
    fresh = zoo.mc3_resnet18(num_classes=7, input_shape=(4, 32, 32, 3))
    np.testing.assert_array_equal(model.get_layer("conv3_block1_1_conv").kernel.numpy(),
                                  np.transpose(state["layer2.0.conv1.0.weight"][:, :, 0], (2, 3, 1, 0)))
    np.testing.assert_array_equal(model.get_layer("conv1_bn").moving_variance.numpy(), state["stem.1.running_var"])
    assert model.get_layer("predictions").kernel.shape == (512, 7)
    trunk = zoo.mc3_resnet18(include_top=False, input_shape=(4, 32, 32, 3), weights=path)
    x = np.random.default_rng(0).uniform(size=(1, 4, 32, 32, 3)).astype("float32")
    features = keras.Model(model.input, model.get_layer("head_avg_pool").output)
    np.testing.assert_allclose(trunk(x), features(x), rtol=1e-6, atol=1e-6)
    assert not np.allclose(fresh.get_layer("conv1_conv").kernel.numpy(), model.get_layer("conv1_conv").kernel.numpy())


def test_a_file_of_another_architecture_is_refused_in_one_line(tmp_path):
    r3d = _state("r3d_18")
    model = zoo.r2plus1d_resnet18(num_classes=400, input_shape=(4, 32, 32, 3))
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"does not fit the model 'r2plus1d_resnet18': The tensor 'stem.0.weight' of "
                                         r"shape \(64, 3, 3, 7, 7\) does not fit the Keras weight of shape "
                                         r"\(7, 7, 3, 45\)"):
        common.load_model_weights(model, _write(tmp_path, r3d, "r3d_18.safetensors"),
                                  torch_names=torchvision_video_names("r2plus1d_18"), torch_optional=("fc",))
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    # r3d's layer2 conv (3x3x3) into mc3's (1x3x3): the first tensor that does not fit, with both shapes.
    mixed = {**_state("mc3_18"), "layer2.0.conv1.0.weight": r3d["layer2.0.conv1.0.weight"]}
    with pytest.raises(ValueError, match=r"'layer2.0.conv1.0.weight' of shape \(128, 64, 3, 3, 3\) does not fit the "
                                         r"Keras weight of shape \(3, 3, 64, 128\)"):
        zoo.mc3_resnet18(num_classes=400, input_shape=(4, 32, 32, 3),
                         weights=_write(tmp_path, mixed, "mc3_mixed.safetensors"))


def test_layout_matches_torchvision_shapes():
    """Time halves at res3-res5 (r3d, r2plus1d) or stays (mc3); space: 112 -> 56 (stem) -> 56, 28, 14, 7."""
    for name, times in (("r3d_resnet18", (8, 4, 2, 1)), ("mc3_resnet18", (8, 8, 8, 8)),
                        ("r2plus1d_resnet18", (8, 4, 2, 1))):
        model = getattr(zoo, name)(include_top=False, pooling=None, input_shape=(8, 112, 112, 3))
        shapes = [model.get_layer(f"conv{s}_block2_out").output.shape[1:4] for s in (2, 3, 4, 5)]
        assert shapes == [(t, h, h) for t, h in zip(times, (56, 28, 14, 7))], (name, shapes)
    assert resnet.r2plus1d_width(64, 128) == 230 and resnet.r2plus1d_width(64, 64) == 144
