"""torchvision's ImageNet ResNets and training checkpoints in their layout into kerasvid's ResNets:
such a file implies torchvision's trunk ("v1.5": stride on the 3x3, no conv bias, BN eps 1e-5, PyTorch's
symmetric padding), and the converted model computes what torchvision's module computed
(tests/fixtures/torch_reference: real PyTorch float64 outputs with the stand-in weights of reference_weights.py)."""
import os

import numpy as np
import pytest

from kerasvid import zoo
from kerasvid.models.resnet_video import resnet_video
from kerasvid.weights import torch_files
from tests.test_bn_inception_torch import _reference_weights

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "torch_reference")


REF = _reference_weights()


def _state(name, **shapes):
    keys = [(k, shapes.get(k, s)) for k, s in REF.read_keys(os.path.join(HERE, f"keys_{name}.txt"))]
    return REF.make_state_dict(keys)


def _write(path, arrays):
    torch_files.write_safetensors(path, arrays)
    return str(path)


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("resnet50") / "resnet50.safetensors", _state("resnet50"))


def test_resnet50_from_torchvision_computes_the_pytorch_logits(resnet50_file):
    with np.load(os.path.join(HERE, "expected_resnet50.npz")) as f:
        x, want = f["input"], f["logits"]
    assert np.array_equal(x, REF.make_input((1, 3, 224, 224)))
    model = zoo.c2d_resnet50(num_classes=1000, input_shape=(1, 224, 224, 3), weights=resnet50_file)
    got = np.asarray(model(np.transpose(x, (0, 2, 3, 1))[:, None], training=False))  # NCHW -> [B, T=1, H, W, C]
    scale = np.abs(want).max()
    assert scale > 0.1 and np.std(want) > 0.01 * scale
    np.testing.assert_allclose(got, want, atol=1e-4 * scale)
    # The file implied torchvision's layout.
    assert model.get_layer("conv1_bn").epsilon == 1e-5 and not model.get_layer("conv1_conv").use_bias
    assert model.get_layer("conv3_block1_1_conv").strides[-1] == 1
    assert model.get_layer("conv3_block1_2_conv").strides[-1] == 2


def test_the_torchvision_layout_is_what_the_logits_need(resnet50_file):
    """The same file in a trunk with the stride on the 1x1 (keras.applications) cannot be built: the layout comes
    with the file, and an option that contradicts it is refused."""
    with pytest.raises(ValueError, match="need stride_on_3x3=True; got stride_on_3x3=False"):
        resnet_video(depth=50, num_classes=1000, input_shape=(1, 32, 32, 3), weights=resnet50_file,
                     stride_on_3x3=False)


def _count_reads(monkeypatch):
    """The paths `torch_files.read_pth` / `read_safetensors` parse from now on (each parse of a weights file)."""
    reads = []
    for name in ("read_pth", "read_safetensors"):
        real = getattr(torch_files, name)
        monkeypatch.setattr(torch_files, name, lambda path, real=real: reads.append(str(path)) or real(path))
    return reads


def test_a_pth_file_not_in_torchvision_layout_is_read_once_and_refused_in_one_line(monkeypatch):
    """A real PyTorch .pth of other modules (not torchvision's ResNet keys): parsed once (to learn its layout),
    then refused in one line naming the file."""
    path = os.path.join(HERE, "checkpoint_zip.pth")
    reads = _count_reads(monkeypatch)
    with pytest.raises(ValueError, match=r"'c2d_resnet50' has no mapping from PyTorch names; '.*checkpoint_zip\.pth' "
                                         r"cannot be loaded into it") as info:
        zoo.c2d_resnet50(num_classes=2, input_shape=(1, 32, 32, 3), weights=path)
    assert "\n" not in str(info.value) and reads == [path]


def test_a_resnet50_file_does_not_fit_a_resnet101_in_one_line(resnet50_file, monkeypatch):
    reads = _count_reads(monkeypatch)
    with pytest.raises(ValueError, match=r"does not fit the model 'c2d_resnet101': The state_dict has no tensor "
                                         r"'layer3\.6\.conv1\.weight' for the Keras weight conv4_block7_1_conv/kernel")\
            as info:
        zoo.c2d_resnet101(num_classes=1000, input_shape=(1, 32, 32, 3), weights=resnet50_file)
    assert "\n" not in str(info.value) and reads == [resnet50_file]  # read once: layout, then the tensors
    with pytest.raises(ValueError, match="does not fit a ResNet-18"):
        zoo.c2d_resnet18(num_classes=1000, input_shape=(1, 32, 32, 3), weights=resnet50_file)


def test_without_top_or_with_another_class_count_the_classifier_is_left(resnet50_file):
    state = _state("resnet50")
    tuned = zoo.c2d_resnet50(num_classes=7, input_shape=(1, 32, 32, 3), weights=resnet50_file)
    assert not np.any(tuned.get_layer("predictions").bias.numpy())
    np.testing.assert_array_equal(tuned.get_layer("conv5_block3_3_bn").moving_variance.numpy(),
                                  state["layer4.2.bn3.running_var"])
    np.testing.assert_array_equal(tuned.get_layer("conv4_block1_0_conv").kernel.numpy().reshape(512, 1024),
                                  state["layer3.0.downsample.0.weight"][:, :, 0, 0].T)
    features = zoo.c2d_resnet50(include_top=False, input_shape=(1, 32, 32, 3), weights=resnet50_file)
    np.testing.assert_array_equal(features.get_layer("conv2_block1_2_conv").kernel.numpy().reshape(3, 3, 64, 64),
                                  np.transpose(state["layer1.0.conv2.weight"], (2, 3, 1, 0)))


def test_the_charades_resnet152_checkpoint_loads_whole_into_actor_observer(tmp_path):
    """The Charades ResNet-152 Actor-Observer starts from: torchvision's resnet152 keys with `module.` prefixes
    (DataParallel) and a 157-class fc. Every tensor maps: the trunk's into the shared trunk, fc into the classifier."""
    state = _state("resnet152", **{"fc.weight": (157, 2048), "fc.bias": (157,)})
    path = _write(tmp_path / "resnet_rgb.safetensors", {f"module.{k}": v for k, v in state.items()})
    model = zoo.actor_observer_resnet152(num_classes=157, input_shape=(1, 32, 32, 3), weights=path)
    trunk = model.get_layer("trunk")
    tensors = [k for k in state if not k.endswith("num_batches_tracked")]
    assert len(trunk.weights) + 2 == len(tensors)  # every tensor has its Keras weight, the fc two in the classifier
    np.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(), state["fc.weight"].T)
    np.testing.assert_array_equal(trunk.get_layer("conv4_block36_2_bn").moving_mean.numpy(),
                                  state["layer3.35.bn2.running_mean"])
    np.testing.assert_array_equal(trunk.get_layer("conv1_conv").kernel.numpy().reshape(7, 7, 3, 64),
                                  np.transpose(state["conv1.weight"], (2, 3, 1, 0)))
    assert not np.any(model.get_layer("selector_first_fc").bias.numpy())  # the file has no selectors
    assert trunk.get_layer("conv1_bn").epsilon == 1e-5


def test_presets_name_the_published_files_and_their_input(tmp_path, monkeypatch):
    from kerasvid.weights import presets

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    charades = presets.weights_info("resnet152_charades")
    assert charades.url.endswith("resnet_rgb.pth.tar?dl=1") and charades.file_hash == ""
    # Dropbox's `?dl=1` is not part of the file name: the cached copy is resnet_rgb.pth.tar.
    with pytest.raises(ValueError, match=f"put it at {tmp_path / 'models' / 'resnet_rgb.pth.tar'}\\."):
        presets.weights_file("resnet152_charades", download=False)
    assert presets.normalization_for_weights("/data/resnet_rgb.pth.tar") == "imagenet"
    assert presets.normalization_for_weights("resnet50-0676ba61.pth") == "imagenet"
    v1 = presets.weights_info("resnet50_imagenet1k_v1")
    assert (v1.file_hash, v1.reported.split(" ")[1]) == ("sha256-prefix:0676ba61", "76.13")


def test_imagenet_weights_need_the_keras_applications_layout():
    """keras.applications' ResNet v1 weights into a torchvision-layout trunk would load (biases dropped, strides
    elsewhere) and compute something else: refused before any download, naming the options."""
    with pytest.raises(ValueError, match=r"needs their layout, got \{'stride_on_3x3': True, 'use_bias': False\}"):
        resnet_video(50, input_shape=(1, 64, 64, 3), weights="imagenet", stride_on_3x3=True, use_bias=False)
    from kerasvid.models.actor_observer import actor_observer_network

    with pytest.raises(ValueError, match=r"needs their layout, got \{'padding': 'torch'\}"):
        actor_observer_network(152, input_shape=(1, 64, 64, 3), weights="imagenet", padding="torch")
