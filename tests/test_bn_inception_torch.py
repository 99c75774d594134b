"""pretrainedmodels' / TSN's PyTorch BN-Inception weights into `bn_inception`: the converted
model computes what the PyTorch module computed (tests/fixtures/torch_reference: real PyTorch float64 outputs)."""
import importlib.util
import os

import keras
import numpy as np
import pytest

from kerasvid import zoo
from kerasvid.models.tvnet_inception import TORCH_NAMES
from kerasvid.weights import convert, torch_files

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "torch_reference")


def _reference_weights():
    spec = importlib.util.spec_from_file_location("reference_weights", os.path.join(HERE, "reference_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def state():
    ref = _reference_weights()
    return ref.make_state_dict(ref.read_keys(os.path.join(HERE, "keys_bninception.txt")))


def _write(tmp_path, arrays, name="bninception.safetensors"):
    path = tmp_path / name
    torch_files.write_safetensors(path, arrays)
    return str(path)


def test_bn_inception_from_pytorch_computes_the_pytorch_outputs(tmp_path, state):
    with np.load(os.path.join(HERE, "expected_bninception.npz")) as f:
        expected = {k: f[k] for k in f.files}
    # TSN's own file stores the BatchNorm tensors as (1, C): both layouts load to the same model.
    tsn = {k: (v[None] if "_bn." in k and v.ndim == 1 else v) for k, v in state.items()}
    model = zoo.bn_inception(num_classes=1000, input_shape=(1, 224, 224, 3), weights=_write(tmp_path, tsn))
    features = keras.Model(model.input, [model.output, model.get_layer("inception_5b_output").output])
    x = np.transpose(expected["input"], (0, 2, 3, 1))[:, None]  # NCHW -> [B, T=1, H, W, C]
    logits, block = (np.asarray(v) for v in features(x, training=False))
    want_block = np.transpose(expected["inception_5b_output"], (0, 2, 3, 1))[:, None]
    scale = np.abs(want_block).max()
    assert scale > 1e-2
    np.testing.assert_allclose(block, want_block, atol=1e-4 * scale)
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-4 * np.abs(expected["logits"]).max())


@pytest.mark.large
def test_a_file_that_does_not_fit_is_refused_and_the_model_is_left_as_it_was(tmp_path, state):
    model = zoo.bn_inception(num_classes=1000, input_shape=(1, 64, 64, 3))
    before = [w.numpy().copy() for w in model.weights]
    bad = dict(state)
    bad["inception_4a_1x1.weight"] = bad["inception_4a_1x1.weight"][:, :100]
    with pytest.raises(ValueError, match=r"'inception_4a_1x1.weight' of shape \(224, 100, 1, 1\) does not fit the "
                                         r"Keras weight of shape \((1, )?1, 1, 576, 224\)"):
        convert.load_torch_weights(model, _write(tmp_path, bad), TORCH_NAMES)
    missing = {k: v for k, v in state.items() if not k.startswith("inception_5b_pool_proj_bn.")}
    with pytest.raises(ValueError, match="no tensor 'inception_5b_pool_proj_bn.weight'"):
        convert.load_torch_weights(model, _write(tmp_path, missing, "missing.safetensors"), TORCH_NAMES)
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.weights, before))
    # Without the top the classifier's tensors are left unused; with a top of another width (fine-tuning) the
    # classifier keeps its initial weights and the rest loads.
    assert zoo.bn_inception(include_top=False, input_shape=(1, 64, 64, 3), weights=_write(tmp_path, state)) is not None
    tuned = zoo.bn_inception(num_classes=101, input_shape=(1, 64, 64, 3), weights=_write(tmp_path, state))
    assert not np.any(tuned.get_layer("predictions").bias.numpy())
    np.testing.assert_array_equal(tuned.get_layer("inception_3a_1x1_bn").moving_mean.numpy(),
                                  state["inception_3a_1x1_bn.running_mean"])
    extra = dict(state, **{"new_fc.weight": np.zeros((5, 1024), np.float32)})
    with pytest.raises(ValueError, match="fit no layer .*new_fc.weight"):
        convert.load_torch_weights(model, _write(tmp_path, extra, "extra.safetensors"), TORCH_NAMES)


def test_builders_without_pytorch_names_refuse_pth(tmp_path):
    path = _write(tmp_path, {"x": np.zeros(2, np.float32)}, "w.safetensors")
    with pytest.raises(ValueError, match="no mapping from PyTorch names"):
        zoo.c2d_resnet18(num_classes=2, input_shape=(1, 32, 32, 3), weights=path)


def test_tvnet_flow_tower_starts_from_the_pytorch_rgb_weights(tmp_path, state):
    """TSN cross-modality start of the TVNet flow tower from the PyTorch ImageNet file: the first conv averaged over
    RGB and repeated over the flow channels (2 per flow: 2 frames give 2), every other conv and BatchNorm copied; the
    classifier is not."""
    model = zoo.tvnet_bn_inception(num_classes=7, input_shape=(2, 64, 64, 3), tvnet_iterations=1,
                                   rgb_weights=_write(tmp_path, state))
    kernel = model.get_layer("conv1_7x7_s2").kernel.numpy()
    torch_kernel = state["conv1_7x7_s2.weight"]  # (64, 3, 7, 7)
    want = np.repeat(np.transpose(torch_kernel, (2, 3, 1, 0)).mean(axis=2, keepdims=True), 2, axis=2)
    np.testing.assert_allclose(kernel.reshape(want.shape), want, rtol=1e-6, atol=1e-7)
    bn = model.get_layer("inception_5b_pool_proj_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["inception_5b_pool_proj_bn.running_var"])
    assert model.get_layer("predictions").kernel.shape == (1024, 7)
