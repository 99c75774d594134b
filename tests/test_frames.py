"""Frame-wise 2D layers (kerasvid.layers.frames) against the Conv3D / Pooling3D form they replace."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import zoo
from kerasvid.layers.frames import FrameAveragePooling2D, FrameConv2D, FrameMaxPooling2D, conv3d_form
from tests.helpers import check_layer

# Odd and even sides: "same" with stride 2 pads unevenly.
CLIP = np.random.default_rng(0).normal(size=(2, 3, 9, 10, 4)).astype("float32")


def _conv3d_reference(layer, x):
    """tf.nn.conv3d with the kernel expanded to (1, kh, kw, C, F): the Conv3D form, written independently."""
    kernel = np.asarray(layer.kernel)[None]
    y = tf.nn.conv3d(x, kernel, strides=(1, 1) + tuple(layer.strides) + (1,), padding=layer.padding.upper())
    return y.numpy() + (np.asarray(layer.bias) if layer.use_bias else 0.0)


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_frame_conv_is_conv3d_check_layer(strides, padding):
    out = {1: (9, 10) if padding == "same" else (7, 8), 2: (5, 5) if padding == "same" else (4, 4)}[strides]
    check_layer(FrameConv2D, dict(filters=5, kernel_size=(3, 3), strides=(strides, strides),
                                         padding=padding), input_data=CLIP,
                expected_output_shape=(2, 3) + out + (5,), expected_output=_conv3d_reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel, strides, padding", [(3, 1, "same"), (3, 2, "same"), (3, 2, "valid"),
                                                      (7, 2, "valid"), (1, 2, "same"), ((1, 3), 1, "same")])
def test_frame_conv_matches_keras_conv3d_outputs_and_gradients(kernel, strides, padding):
    """Exactly the numbers of a keras Conv3D holding the (1, kh, kw) kernel: outputs, input and weight gradients."""
    layer = FrameConv2D(6, kernel, strides=strides, padding=padding, name="conv1_conv")
    layer.build(CLIP.shape)
    rng = np.random.default_rng(1)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    conv3d = layer.to_3d()
    assert isinstance(conv3d, keras.layers.Conv3D) and tuple(conv3d.kernel.shape) == (1,) + tuple(layer.kernel.shape)
    x = tf.constant(CLIP)
    projection = lambda shape: tf.constant(np.random.default_rng(2).normal(size=shape).astype("float32"))
    grads = []
    for candidate in (layer, conv3d):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = candidate(x)
            loss = tf.reduce_sum(y * projection(y.shape))
        grads.append((y.numpy(), *[g.numpy() for g in tape.gradient(loss, [x] + candidate.trainable_weights)]))
    (y2, dx2, dk2, db2), (y3, dx3, dk3, db3) = grads
    np.testing.assert_allclose(y2, y3, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx2, dx3, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dk2[None], dk3, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(db2, db3, rtol=1e-4, atol=1e-3)
    assert np.abs(dx2).max() > 1e-2


@pytest.mark.parametrize("cls", [FrameMaxPooling2D, FrameAveragePooling2D])
@pytest.mark.parametrize("strides, padding", [(1, "same"), (2, "same"), (2, "valid"), (1, "valid")])
def test_frame_pooling_matches_pooling3d(cls, strides, padding):
    layer = cls(3, strides=strides, padding=padding)
    pool3d = layer.to_3d()
    x = tf.constant(CLIP)
    out = []
    for candidate in (layer, pool3d):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = candidate(x)
            loss = tf.reduce_sum(y * y)
        out.append((y.numpy(), tape.gradient(loss, x).numpy()))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-6, atol=1e-6)
    # numpy reference for one window: frame 1, output (0, 0), channel 2, "valid" stride-s windows start at 0
    if padding == "valid":
        window = CLIP[:, 1, :3, :3, 2]
        want = window.max(axis=(1, 2)) if cls is FrameMaxPooling2D else window.mean(axis=(1, 2))
        np.testing.assert_allclose(out[0][0][:, 1, 0, 0, 2], want, rtol=1e-6)


@pytest.mark.parametrize("cls", [FrameMaxPooling2D, FrameAveragePooling2D])
def test_frame_pooling_check_layer(cls):
    check_layer(cls, dict(pool_size=(3, 3), strides=(2, 2), padding="same"), input_data=CLIP,
                expected_output_shape=(2, 3, 5, 5, 4), expected_output=lambda layer, x: layer.to_3d()(x).numpy())


def test_dynamic_frames_and_errors():
    inputs = keras.Input((None, 9, 10, 4))
    model = keras.Model(inputs, FrameMaxPooling2D(2)(FrameConv2D(3, 3, padding="same", name="c")(inputs)))
    assert tuple(model.output.shape) == (None, None, 4, 5, 3)
    assert model(CLIP).shape == (2, 3, 4, 5, 3) and model(CLIP[:, :2]).shape == (2, 2, 4, 5, 3)
    with pytest.raises(ValueError, match="expected ndim=5"):
        FrameConv2D(3, 3)(CLIP[:, 0])
    with pytest.raises(ValueError, match="channels-last clips.*channels_first"):
        FrameMaxPooling2D(2, data_format="channels_first")


def test_c2d_resnet_equals_its_conv3d_form():
    """The whole folded C2D ResNet-18 against the same network built of Conv3D / MaxPooling3D (0.1's layout) with
    the same weights: outputs and gradients."""
    keras.utils.set_random_seed(0)
    model = zoo.c2d_resnet18(num_classes=5, input_shape=(3, 32, 32, 3))
    old = conv3d_form(model, keras_batch_norm=True)
    kinds = lambda m: {type(layer).__name__ for layer in m.layers}
    assert {"FrameConv2D", "FrameMaxPooling2D"} <= kinds(model) and not {"Conv3D", "MaxPooling3D"} & kinds(model)
    assert {"Conv3D", "MaxPooling3D", "BatchNormalization"} <= kinds(old)
    assert not {"FrameConv2D", "FrameMaxPooling2D", "FusedBatchNormalization"} & kinds(old)
    assert [layer.name for layer in old.layers] == [layer.name for layer in model.layers]
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 3, 32, 32, 3)).astype("float32"))
    results = []
    for m in (model, old):
        with tf.GradientTape() as tape:
            y = m(x, training=False)
            loss = tf.reduce_sum(y * tf.range(5, dtype=tf.float32))
        grad = tape.gradient(loss, m.get_layer("conv2_block1_1_conv").kernel)
        results.append((y.numpy(), np.reshape(grad.numpy(), (3, 3, 64, 64))))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-3, atol=1e-3)
    assert np.abs(results[0][0]).max() > 1e-3
