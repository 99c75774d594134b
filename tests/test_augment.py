"""Clip-consistent augmentation (kerasvid.data.augment): one transform per clip, soft MixUp / CutMix labels."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasvid import tasks
from kerasvid.data import augment, pipeline, synthetic

RNG = np.random.default_rng(0)
A = RNG.uniform(50, 150, (16, 16, 3)).astype("float32")  # mid-range: auto-contrast / equalization change it
SEED = tf.constant([3, 4], tf.int64)
# Per-pixel operations whose mapping depends on the clip only through statistics shared by shifted copies.
POINTWISE = ("random_brightness", "random_color_degeneration", "random_contrast", "random_posterization",
             "solarization", "auto_contrast", "equalization")


@pytest.mark.parametrize("op", augment.RANDAUGMENT_OPS)
def test_every_frame_gets_the_same_randaugment_op(op):
    aug = augment.VideoAugment(randaugment=(1, 0.9), ops=[op])
    run = tf.function(aug.clip)
    same = run(tf.constant(np.stack([A, A, A])), SEED).numpy()
    assert np.abs(same[0] - A).mean() > 0.5, op  # the op did something ...
    np.testing.assert_array_equal(same[1:], same[:1].repeat(2, 0))  # ... and identical frames stay identical
    # A frame's result does not depend on its position in the clip (B has A's pixel statistics: mirrored).
    b = A[:, ::-1]
    ab, ba = run(tf.constant(np.stack([A, b])), SEED).numpy(), run(tf.constant(np.stack([b, A])), SEED).numpy()
    np.testing.assert_array_equal(ab, ba[::-1])
    if op in POINTWISE:  # frames shifted by t pixels (circularly) stay shifted copies of each other
        shifted = run(tf.constant(np.stack([np.roll(A, t, axis=1) for t in range(4)])), SEED).numpy()
        for t in range(4):
            np.testing.assert_allclose(shifted[t], np.roll(shifted[0], t, axis=1), atol=1e-3)  # (sum order)


def test_a_per_frame_keras_layer_would_fail_the_same_check():
    """The check above can fail: RandomRotation on the frames as a batch rotates each frame differently."""
    out = keras.layers.RandomRotation(0.5, seed=1)(tf.constant(np.stack([A, A, A])), training=True).numpy()
    assert np.abs(out[1] - out[0]).max() > 1.0


def test_random_erasing_and_randaugment_on_several_clips():
    aug = augment.VideoAugment(randaugment=(3, 0.7), random_erasing=1.0)
    clips = tf.constant(np.stack([np.stack([A] * 4), np.stack([A[::-1]] * 4)]))  # [N=2, T=4, H, W, 3]
    out = aug.clip(clips, SEED).numpy()
    for clip in out:
        np.testing.assert_array_equal(clip, clip[:1].repeat(4, 0))
    assert np.abs(out[0, 0] - out[1, 0][::-1]).max() > 1.0  # the two clips drew different transforms
    erased = augment.VideoAugment(random_erasing=1.0).clip(clips[0], SEED).numpy()
    changed = np.any(erased != A, axis=-1)  # one box, the same in every frame
    assert 0 < changed[0].mean() < 1 and np.array_equal(changed, changed[:1].repeat(4, 0))
    np.testing.assert_array_equal(aug.clip(clips, SEED).numpy(), out)  # a function of the seed


def _distinct_clips(batch, frames=3, size=8):
    """Clips whose every pixel identifies (clip, frame): value 10 * clip + frame."""
    values = 10.0 * np.arange(batch)[:, None] + np.arange(frames)[None, :]
    return tf.constant(np.broadcast_to(values[:, :, None, None, None], (batch, frames, size, size, 3)), tf.float32)


def test_mixup_labels_sum_to_one_and_match_the_image_weights():
    x = RNG.uniform(0, 1, (6, 3, 8, 8, 3)).astype("float32")
    labels = tf.constant([0, 1, 2, 3, 0, 1])
    out, soft = augment.VideoAugment(mixup=0.8).batch(tf.constant(x), labels, SEED, 4)
    out, soft = out.numpy(), soft.numpy()
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    for i in range(6):
        # out_i = w x_i + (1 - w) x_j with ONE w for the whole clip: least squares over every frame, residual 0.
        fits = []
        for j in range(6):
            d = (x[i] - x[j]).ravel()
            w = 1.0 if j == i else float(d @ (out[i] - x[j]).ravel() / (d @ d))
            fits.append((np.abs(w * x[i] + (1 - w) * x[j] - out[i]).max(), j, w))
        residual, j, w = min(fits)
        assert residual < 1e-5
        want = np.zeros(4)
        np.add.at(want, [labels[i], labels[j]], [w, 1 - w])
        np.testing.assert_allclose(soft[i], want, atol=1e-5)


def test_cutmix_label_weights_equal_the_pasted_area():
    images, labels = _distinct_clips(6, frames=4, size=16), tf.constant([0, 1, 2, 3, 4, 5])
    for seed in range(5):
        out, soft = augment.VideoAugment(cutmix=1.0).batch(images, labels, tf.constant([seed, 9], tf.int64), 6)
        out, soft, x = out.numpy(), soft.numpy(), images.numpy()
        np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
        for i in range(6):
            pasted = out[i, ..., 0] != x[i, ..., 0]  # [T, H, W]
            assert np.array_equal(pasted, pasted[:1].repeat(4, 0))  # one box for the whole clip
            area = pasted[0].mean()
            assert soft[i, i] == pytest.approx(1.0 - area, abs=1e-6)
            if area:
                j = int(out[i, 0][pasted[0]][0, 0] // 10)
                assert soft[i, j] == pytest.approx(area, abs=1e-6)


@pytest.mark.large
def test_video_dataset_with_augment_is_deterministic_and_soft(tmp_path):
    pattern = synthetic.write_synthetic_dataset(str(tmp_path), num_videos=8, num_frames=8, height=32, width=32,
                                                num_shards=1)
    spec = {"random_erasing": 0.5, "mixup": 0.8, "cutmix": 1.0}  # (RandAugment: the same hook as erasing)

    def batches(checkpoint_after_first=False):
        """Two batches; optionally checkpoint the iterator after the first and restore it after the second, then
        read the second again (resumes must see the same augmented batch)."""
        it = iter(pipeline.video_dataset(pattern, num_frames=4, image_size=(32, 32), batch_size=4, num_classes=4, seed=5,
                                         deterministic=True, augment=spec))
        out = [next(it)]
        saved = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "ckpt" / "it")) if checkpoint_after_first else 0
        out.append(next(it))
        if checkpoint_after_first:
            tf.train.Checkpoint(iterator=it).restore(saved)
            out.append(next(it))
        return [(f["image"].numpy(), y.numpy()) for f, y in out]

    one, two = batches(checkpoint_after_first=True), batches()
    for (x1, y1), (x2, y2) in zip(one, two + two[1:]):  # the same batches run to run, and after the restore
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
        assert y1.shape == (4, 4) and np.allclose(y1.sum(1), 1.0)
    assert not np.array_equal(one[0][0], one[1][0])
    eval_ds = pipeline.video_dataset(pattern, num_frames=4, image_size=(32, 32), batch_size=4, training=False, num_classes=4,
                                     augment=spec)
    assert next(iter(eval_ds))[1].shape == (4,)  # evaluation is never augmented
    with pytest.raises(ValueError, match="randaugment"):
        augment.VideoAugment(randaugment=(2, 3.0))


def test_classification_loss_takes_soft_labels():
    task = tasks.get_task("classification", tasks.TaskConfig(num_classes=3))
    logits = tf.constant([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    soft = tf.constant([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]])
    log_p = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    np.testing.assert_allclose(task._per_example_loss(logits, soft).numpy(), -(soft.numpy() * log_p).sum(1),
                               rtol=1e-6)
    hard = task._per_example_loss(logits, tf.constant([1, 2])).numpy()
    np.testing.assert_allclose(hard, -log_p[[0, 1], [1, 2]], rtol=1e-6)


def test_train_flags_build_the_augment_spec(tmp_path):
    from absl import app, flags
    from absl.testing import flagsaver

    from kerasvid import train_cli as main

    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["main.py", "--randaugment=2,0.4", "--mixup=0.8",
                     "--data_kwargs=flip=False,augment={'cutmix': 1.0}"])
        assert main._data_kwargs() == {"flip": False, "augment": {"cutmix": 1.0, "randaugment": (2, 0.4),
                                                                   "mixup": 0.8}}
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["main.py", "--randaugment=2,3"])
        with pytest.raises(app.UsageError, match="magnitude in"):
            main._data_kwargs()
