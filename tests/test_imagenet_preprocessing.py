"""The ImageNet start gets the input its weights were trained on: keras.applications' ResNets expect "caffe"
preprocessing (RGB -> BGR, minus the BGR means, 0..255), and the weights choose it."""
import keras
import numpy as np
import pytest

from kerasvid.backbones import resnet
from kerasvid.data import preprocess
from kerasvid.models.resnet_video import resnet_video
from kerasvid.tasks.base import TaskConfig
from kerasvid.weights import presets
from tests.test_resnet import _randomize_bn


def test_caffe_normalization_by_hand():
    x = np.array([[[[10, 200, 30], [0, 255, 128]]]], np.uint8)  # [1, 1, 2, 3] RGB
    want = np.array([[[[30 - 103.939, 200 - 116.779, 10 - 123.68], [128 - 103.939, 255 - 116.779, 0 - 123.68]]]])
    np.testing.assert_allclose(preprocess.normalize(x, "caffe").numpy(), want, atol=1e-4)


@pytest.mark.large
def test_c2d_on_caffe_input_equals_keras_applications_on_preprocess_input():
    """One frame: the C2D ResNet-50 with keras.applications' weights, fed `normalize(x, "caffe")`, computes what
    keras.applications.ResNet50 computes on `keras.applications.resnet.preprocess_input(x)`."""
    rng = np.random.default_rng(3)
    image_model = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    _randomize_bn(image_model, rng)
    video_model = resnet_video(50, input_shape=(1, 64, 64, 3), include_top=False, pooling="avg", stem_stride=2)
    resnet.transfer_2d_weights(video_model, image_model)
    frame = rng.uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    want = image_model(keras.applications.resnet.preprocess_input(frame.copy()), training=False).numpy()
    got = video_model(preprocess.normalize(frame[:, None], "caffe"), training=False).numpy()
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The RGB mean/std input the recipes used to feed is a different input, not a rounding away.
    wrong = video_model(preprocess.normalize(frame[:, None], "imagenet"), training=False).numpy()
    assert np.abs(wrong - want).max() > 100 * np.abs(got - want).max()


@pytest.mark.parametrize("weights, expected", [
    ("imagenet", "caffe"), (None, "imagenet"), ("i3d_kinetics_rgb_imagenet", "minus_one_one"),
    ("cpnet_resnet34_jester", "imagenet"), ("/any/where/bn_inception-52deb4733.pth", "bn_inception"),
    ("/any/where/mine.weights.h5", "imagenet")])
def test_the_weights_choose_the_normalization(weights, expected):
    assert presets.normalization_for_weights(weights) == expected
    kwargs = {} if weights is None else {"weights": weights}
    assert TaskConfig(model="c2d_resnet50", model_kwargs=kwargs).normalization == expected
    # An explicit setting wins.
    assert TaskConfig(model_kwargs=kwargs, normalization="zero_one").normalization == "zero_one"


@pytest.mark.parametrize("preset, bgr, mean, std", [
    ("torchvision_video", False, (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
    ("bn_inception", True, (104 / 255, 117 / 255, 128 / 255), (1 / 255, 1 / 255, 1 / 255))])
def test_the_published_weights_presets_by_hand(preset, bgr, mean, std):
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 4, 3)).astype(np.float32)
    y = x[..., ::-1] if bgr else x
    want = (y / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(preprocess.normalize(x, preset).numpy(), want, rtol=1e-5, atol=1e-3)
    assert presets.normalization_for_weights({"torchvision_video": "r2plus1d_18_kinetics400",
                                              "bn_inception": "bn_inception_imagenet"}[preset]) == preset


@pytest.mark.parametrize("preset", preprocess.NORMALIZATIONS)
def test_denormalize_inverts_every_preset(preset):
    frames = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    back = preprocess.denormalize(preprocess.normalize(frames, preset).numpy(), preset)
    np.testing.assert_array_equal(back, frames)
