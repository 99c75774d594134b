"""Clip-consistent training augmentation: RandAugment, random erasing, MixUp and CutMix for videos.

Every frame of a clip gets the same transform (one rotation, one erased box, one colour change, one pasted box per
clip), so the motion between frames is untouched. The transforms are Keras 3's preprocessing layers
(`keras.layers.RandAugment`'s eleven operations, `RandomErasing`, `MixUp`, `CutMix`), used through their
`get_random_transformation` / `transform_images` split:

- per clip (`VideoAugment.clip`, in the record map): the transformation is sampled for one frame and applied to all
  `T` frames; the two operations with image statistics (`auto_contrast`, `equalization`) see the clip as one image
  (frames side by side), so their mapping is the clip's, not each frame's;
- per batch (`VideoAugment.batch`, after batching): the clip's frames are folded into the channels
  (`[B, T, H, W, 3] -> [B, H, W, 3T]`), so MixUp's weight and CutMix's box are shared by all frames; labels become
  soft `[B, num_classes]` and sum to 1. CutMix label weights are the pasted pixel fraction of the mask actually
  applied (Keras computes them from the unrounded box).

Randomness is stateless: the seeds come from the pipeline's per-record / per-batch seeds (a Keras `SeedGenerator`
that folds a counter into a given seed tensor), so with `video_dataset(seed=..., deterministic=True)` two runs
augment identically.

Enable it with `video_dataset(..., augment={"randaugment": (2, 0.5), "random_erasing": 0.25, "mixup": 0.8,
"cutmix": 1.0})` (or a `VideoAugment`), or the `train/main.py` flags `--randaugment=2,0.5 --random_erasing=0.25
--mixup=0.8 --cutmix=1.0`.
"""
import keras
import tensorflow as tf

# The operations of keras.layers.RandAugment (Keras 3.15), by the attribute names of its sub-layers.
RANDAUGMENT_OPS = ("random_shear", "random_translation", "random_rotation", "random_brightness",
                   "random_color_degeneration", "random_contrast", "random_sharpness", "random_posterization",
                   "solarization", "auto_contrast", "equalization")
# Operations that compute per-image statistics: applied to the clip as one image.
_CLIP_STATISTICS = ("auto_contrast", "equalization")
_VALUE_RANGE = (0, 255)  # the pipeline augments float frames on the 0..255 scale, before normalisation


class _StatelessSeed(keras.random.SeedGenerator):
    """A `keras.random.SeedGenerator` whose draws are `stateless_fold_in(seed, 1), (seed, 2), ...`: no variable, so
    Keras random layers become reproducible functions of a seed tensor inside `tf.data`.

    Args:
        seed: int tensor `[2]`.
    """

    def __init__(self, seed):  # no super().__init__(): it would create a state variable
        self._base = tf.cast(seed, tf.int64)
        self._count = 0

    def next(self, ordered=True):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._base, self._count)


def _frames_side_by_side(clip):
    """`[T, H, W, C]` -> `[1, H, T * W, C]`."""
    s = tf.shape(clip)
    return tf.reshape(tf.transpose(clip, [1, 0, 2, 3]), [1, s[1], s[0] * s[2], s[3]])


def _frames_back(image, shape):
    return tf.transpose(tf.reshape(image, [shape[1], shape[0], shape[2], shape[3]]), [1, 0, 2, 3])


def _fold_time_into_channels(images):
    """`[B, T, H, W, C]` -> `[B, H, W, T * C]`."""
    s = tf.shape(images)
    return tf.reshape(tf.transpose(images, [0, 2, 3, 1, 4]), [s[0], s[2], s[3], s[1] * s[4]])


def _unfold_time(images, shape):
    return tf.transpose(tf.reshape(images, [shape[0], shape[2], shape[3], shape[1], shape[4]]), [0, 3, 1, 2, 4])


def _check_probability(name, value):
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {name}={value!r}.")


class VideoAugment:
    """Clip-consistent RandAugment / random erasing (per clip) and MixUp / CutMix (per batch).

    Args:
        randaugment: None (off) or `(num_ops, magnitude)`: `num_ops` operations drawn with replacement from `ops`
            per clip, each at `keras.layers.RandAugment(factor=magnitude)`'s strength (magnitude in [0, 1]).
        ops: the RandAugment operations to draw from (default: all of `RANDAUGMENT_OPS`).
        random_erasing: probability of erasing one box per clip (`keras.layers.RandomErasing`, noise fill).
        erasing_scale: area range of the erased box (`RandomErasing(scale=...)`).
        mixup: MixUp Beta(alpha, alpha) parameter (0 = off).
        cutmix: CutMix Beta(alpha, alpha) parameter (0 = off).
        mix_switch_prob: with both on, the probability that a batch uses CutMix instead of MixUp.

    Example:
    >>> aug = VideoAugment(randaugment=(2, 0.5), mixup=0.8)
    >>> clips = aug.clip(clips, seed)                       # [..., T, H, W, 3], 0..255
    >>> images, soft = aug.batch(images, labels, seed, 10)  # labels [B] -> [B, 10]
    """

    def __init__(self, randaugment=None, ops=None, random_erasing=0.0, erasing_scale=(0.02, 0.33), mixup=0.0,
                 cutmix=0.0, mix_switch_prob=0.5):
        if randaugment is not None:
            if not (isinstance(randaugment, (tuple, list)) and len(randaugment) == 2 and int(randaugment[0]) >= 1
                    and 0.0 <= float(randaugment[1]) <= 1.0):
                raise ValueError(f"`randaugment` must be (num_ops >= 1, magnitude in [0, 1]), got "
                                 f"randaugment={randaugment!r}.")
        ops = tuple(ops or RANDAUGMENT_OPS)
        unknown = sorted(set(ops) - set(RANDAUGMENT_OPS))
        if unknown:
            raise ValueError(f"Unknown RandAugment ops {unknown}; known: {list(RANDAUGMENT_OPS)}.")
        _check_probability("random_erasing", random_erasing)
        _check_probability("mix_switch_prob", mix_switch_prob)
        for name, alpha in (("mixup", mixup), ("cutmix", cutmix)):
            if float(alpha) < 0:
                raise ValueError(f"`{name}` (the Beta alpha) must be >= 0, got {name}={alpha!r}.")
        self.randaugment, self.ops, self.random_erasing = randaugment, ops, float(random_erasing)
        self.erasing_scale, self.mixup, self.cutmix = tuple(erasing_scale), float(mixup), float(cutmix)
        self.mix_switch_prob = float(mix_switch_prob)
        # float32 whatever the global mixed-precision policy: these layers only transform pixels.
        if randaugment is not None:
            self._rand_augment = keras.layers.RandAugment(value_range=_VALUE_RANGE, num_ops=int(randaugment[0]),
                                                          factor=float(randaugment[1]), dtype="float32")
        if self.random_erasing:
            self._erasing = keras.layers.RandomErasing(factor=(self.random_erasing, self.random_erasing),
                                                       scale=self.erasing_scale, value_range=_VALUE_RANGE,
                                                       dtype="float32")
        self._mixup = keras.layers.MixUp(alpha=self.mixup, dtype="float32") if self.mixup else None
        self._cutmix = keras.layers.CutMix(factor=(self.cutmix, self.cutmix), dtype="float32") if self.cutmix else None

    @property
    def per_clip(self):
        return self.randaugment is not None or self.random_erasing > 0

    @property
    def per_batch(self):
        return bool(self.mixup or self.cutmix)

    # ----- per clip --------------------------------------------------------------------------------------------
    @staticmethod
    def _apply_layer(layer, clip, seed, clip_statistics=False):
        """One sampled transformation of `layer`, applied to every frame of `clip` `[T, H, W, 3]`."""
        if clip_statistics:
            return _frames_back(layer.transform_images(_frames_side_by_side(clip), None), tf.shape(clip))
        transformation = layer.get_random_transformation(clip[:1], training=True, seed=_StatelessSeed(seed))
        return layer.transform_images(clip, transformation, training=True)

    def _one_clip(self, clip, seed):
        seeds = tf.random.experimental.stateless_split(seed, 2 + (self.randaugment or (0,))[0])
        if self.randaugment is not None:
            choices = tf.random.stateless_uniform([int(self.randaugment[0])], seeds[0], 0, len(self.ops), tf.int32)
            for i in range(int(self.randaugment[0])):
                branches = [lambda name=name, s=seeds[2 + i]: self._apply_layer(
                    getattr(self._rand_augment, name), clip, s, name in _CLIP_STATISTICS) for name in self.ops]
                clip = tf.ensure_shape(tf.switch_case(choices[i], branches), clip.shape)
        if self.random_erasing:
            clip = self._apply_layer(self._erasing, clip, seeds[1])
        return clip

    def clip(self, clips, seed):
        """Augments float clips `[..., T, H, W, 3]` (0..255), one transform per clip.

        Args:
            clips: float32 `[T, H, W, 3]` or `[N, T, H, W, 3]`.
            seed: int tensor `[2]`.
        """
        if not self.per_clip:
            return clips
        if clips.shape.rank == 4:
            return self._one_clip(clips, seed)
        seeds = tf.random.experimental.stateless_split(seed, clips.shape[0])
        return tf.stack([self._one_clip(clips[i], seeds[i]) for i in range(clips.shape[0])])

    # ----- per batch -------------------------------------------------------------------------------------------
    def _mix(self, layer, folded, labels, seed, from_mask):
        transformation = layer.get_random_transformation(folded, training=True, seed=_StatelessSeed(seed))
        mixed = layer.transform_images(folded, transformation, training=True)
        if not from_mask:
            return mixed, layer.transform_labels(labels, transformation, training=True)
        # The weight of a clip's own label is the fraction of its pixels that were not pasted over.
        keep = 1.0 - tf.reduce_mean(tf.cast(transformation["batch_masks"][..., 0], tf.float32), axis=[1, 2])
        partner = tf.gather(labels, transformation["permutation_order"])
        return mixed, keep[:, None] * labels + (1.0 - keep[:, None]) * partner

    def batch(self, images, labels, seed, num_classes):
        """MixUp or CutMix of a batch.

        Args:
            images: float `[B, T, H, W, 3]`.
            labels: int `[B]` class indices, or float `[B, num_classes]` (one-/multi-hot).
            seed: int tensor `[2]`.
            num_classes: number of classes (for int labels).

        Returns:
            `(images, float32 labels [B, num_classes])`.
        """
        if labels.shape.rank == 1:
            labels = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
        labels = tf.cast(labels, tf.float32)
        if not self.per_batch:
            return images, labels
        shape = tf.shape(images)
        folded = _fold_time_into_channels(images)
        seeds = tf.random.experimental.stateless_split(seed, 3)
        if self._mixup is not None and self._cutmix is not None:
            use_cutmix = tf.random.stateless_uniform([], seeds[0]) < self.mix_switch_prob
            folded, labels = tf.cond(use_cutmix, lambda: self._mix(self._cutmix, folded, labels, seeds[1], True),
                                     lambda: self._mix(self._mixup, folded, labels, seeds[2], False))
        elif self._cutmix is not None:
            folded, labels = self._mix(self._cutmix, folded, labels, seeds[1], True)
        else:
            folded, labels = self._mix(self._mixup, folded, labels, seeds[2], False)
        return tf.ensure_shape(_unfold_time(folded, shape), images.shape), labels

    def mix_batches(self, dataset, seed, num_classes):
        """`dataset` of `({"image": ...}, labels)` batches -> the same with MixUp / CutMix and soft labels."""
        if not self.per_batch:
            return dataset
        if not num_classes:
            raise ValueError("MixUp / CutMix need the number of classes (`num_classes`) for their soft labels.")

        def mix(batch, value):
            features, labels = batch
            image, labels = self.batch(features["image"], labels, tf.stack([value, tf.constant(11, tf.int64)]),
                                       num_classes)
            return dict(features, image=image), labels

        return tf.data.Dataset.zip((dataset, tf.data.Dataset.random(seed=seed))).map(
            mix, num_parallel_calls=tf.data.AUTOTUNE)


def from_spec(spec):
    """None, a `VideoAugment`, or a dict of its arguments (`--data_kwargs=augment={...}`) -> VideoAugment or None."""
    if spec is None or isinstance(spec, VideoAugment):
        return spec
    if isinstance(spec, dict):
        return VideoAugment(**spec) if spec else None
    raise ValueError(f"`augment` must be None, a dict of VideoAugment arguments or a VideoAugment, got {spec!r}.")
