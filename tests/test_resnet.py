"""The ResNet video backbone family: counts, weight transfer, insertion points, errors."""
import keras
import numpy as np
import pytest

from kerasvid import zoo
from kerasvid.backbones import resnet
from kerasvid.models.resnet_video import resnet_video
from tests.helpers import check_model, weights_only_count as _weights_only


def test_table1_weight_counts():
    # 11,372,112 / 2**20 = 10.84 and 33,361,872 / 2**20 = 31.81, as printed in the supplement's Table 1.
    c2d = zoo.c2d_resnet18(num_classes=400)
    c3d = zoo.c3d_resnet18(num_classes=400)
    assert _weights_only(c2d) == 11_372_112
    assert _weights_only(c3d) == 33_361_872
    assert f"{_weights_only(c2d) / 2**20:.3f}"[:5] == "10.84"
    assert f"{_weights_only(c3d) / 2**20:.3f}"[:5] == "31.81"


def test_c2d_resnet18_check_model(tmp_path):
    model = zoo.c2d_resnet18(num_classes=5, input_shape=(2, 32, 32, 3))
    x = np.random.default_rng(0).normal(size=(2, 2, 32, 32, 3)).astype("float32")
    # 11,166,912 backbone conv kernels; 4,800 conv output channels, each with a bias and 4 BN values; 512*5+5 head.
    check_model(model, x, expected_output_shape=(2, 5), expected_num_params=11_166_912 + 4_800 * 5 + 2_565,
                tmp_path=tmp_path)


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape)])


def test_c2d_matches_keras_applications_frame_by_frame():
    rng = np.random.default_rng(1)
    image_model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    _randomize_bn(image_model, rng)
    video_model = resnet_video(50, input_shape=(3, 64, 64, 3), include_top=False, pooling=None, stem_stride=2)
    assert resnet.transfer_2d_weights(video_model, image_model) == len([l for l in image_model.layers if l.weights])
    clip = rng.uniform(0, 1, size=(2, 3, 64, 64, 3)).astype("float32")
    video = video_model(clip, training=False).numpy()
    frames = image_model(clip.reshape(6, 64, 64, 3), training=False).numpy().reshape(video.shape)
    assert np.abs(video - frames).max() < 1e-4
    assert np.abs(frames).max() > 1e-2  # the comparison is not between zeros


def test_c3d_inflation_sums_over_time_to_2d_kernels():
    image_model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    video_model = resnet_video(50, input_shape=(4, 32, 32, 3), include_top=False, temporal_kernels=3,
                               stem_temporal_kernel=3, stem_stride=2)
    resnet.transfer_2d_weights(video_model, image_model)
    checked = 0
    for name in ("conv1_conv", "conv2_block1_1_conv", "conv3_block2_1_conv", "conv5_block3_3_conv"):
        k3 = video_model.get_layer(name).kernel.numpy()
        k2 = image_model.get_layer(name).kernel.numpy()
        if k3.ndim == 4:  # temporal size 1: a FrameConv2D holding the 2D kernel as it is
            np.testing.assert_array_equal(k3, k2)
            continue
        assert k3.shape[0] == 3
        np.testing.assert_allclose(k3.sum(axis=0), k2, atol=1e-6)
        checked += 1
    assert checked == 3  # the stem and the blocks' first 1x1 convs are inflated (kt=3); the last 1x1 stays kt=1


class _Probe:
    def __init__(self):
        self.calls = []

    def __call__(self, channels, name):
        self.calls.append((channels, name))
        return keras.layers.Rescaling(0.0, name=name)


def test_insertion_points_and_endpoints():
    assert resnet.insertion_points(18) == ["res2_0", "res2_1", "res3_0", "res3_1", "res4_0", "res4_1",
                                           "res5_0", "res5_1"]
    assert len(resnet.insertion_points(101)) == 33
    probe = _Probe()
    x = keras.Input((2, 32, 32, 3))
    feats = resnet.resnet_features(x, 18, stem_stride=1, insertions={"res3_1": probe, "res5_1": probe})
    assert probe.calls == [(128, "res3_1_insert"), (512, "res5_1_insert")]
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "res2": (2, 16, 16, 64), "res3": (2, 8, 8, 128), "res4": (2, 4, 4, 256), "res5": (2, 2, 2, 512)}
    model = keras.Model(x, feats)
    out = model(np.ones((1, 2, 32, 32, 3), "float32"), training=False)
    # The inserted layer zeroes the last block's output before its ReLU: res3 and res5 endpoints are exactly 0.
    assert np.all(out["res3"].numpy() == 0) and np.all(out["res5"].numpy() == 0)
    assert np.abs(out["res4"].numpy()).max() == 0  # res4 only sees zeros (+ BN shifts of zero-mean init) -> relu
    with pytest.raises(ValueError, match="res6_0"):
        resnet.resnet_features(x, 18, insertions={"res6_0": probe})


def test_stem_strides_give_res2_at_56():
    for size in (112, 224):
        x = keras.Input((1, size, size, 3))
        feats = resnet.resnet_features(x, 18, stem_stride=resnet.default_stem_stride((1, size, size, 3)))
        assert tuple(feats["res2"].shape[1:4]) == (1, 56, 56)


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="c2d_resnet18"):
        zoo.get_model("c2d_resnet81")
    with pytest.raises(ValueError, match=r"multiple of 16.*\(8, 100, 100, 3\)"):
        zoo.c2d_resnet18(input_shape=(8, 100, 100, 3))
    with pytest.raises(ValueError, match="num_classes=0"):
        zoo.c2d_resnet18(num_classes=0)
    with pytest.raises(ValueError, match="does not exist"):
        zoo.c2d_resnet18(weights=str(tmp_path / "missing.weights.h5"))
    path = str(tmp_path / "ten.weights.h5")
    saved = zoo.c2d_resnet18(num_classes=10, input_shape=(1, 32, 32, 3))
    saved.save_weights(path)
    with pytest.raises(ValueError, match="does not match"):
        zoo.c2d_resnet18(num_classes=7, input_shape=(1, 32, 32, 3), weights=path)
    reloaded = zoo.c2d_resnet18(num_classes=10, input_shape=(1, 32, 32, 3), weights=path)
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), reloaded.get_weights()))
    with pytest.raises(ValueError, match="depth 50, 101 and 152"):
        zoo.c2d_resnet18(weights="imagenet")
