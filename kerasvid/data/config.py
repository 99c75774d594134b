"""`VideoDataConfig`: every setting of the video input pipeline in one dataclass (as Model Garden's `DataConfig`).

`kerasvid.data.video_dataset(pattern, config)` and `kerasvid.data.conjugate_pairs.pair_dataset` read it; the tasks
build it from their `TaskConfig` and apply `data_kwargs` (a dict of field overrides, `--data_kwargs`) with
`VideoDataConfig.replace`, which names an unknown key and the valid ones. The module imports no TensorFlow, so
that a command line can list the fields (`dataclasses.fields(VideoDataConfig)`) before TensorFlow loads.
"""
import dataclasses
from typing import Any, Optional, Tuple

AUTOTUNE = -1  # the value of tf.data.AUTOTUNE (not imported here: see the module docstring)


def image_size_pair(image_size):
    """`image_size` as `(height, width)` positive ints; one int (or a one-item sequence) means a square.

    The one conversion of a crop size: `TaskConfig` and `VideoDataConfig` hold its result.

    Raises:
        ValueError: anything else, naming the value.
    """
    bad = ValueError(f"`image_size` must be (height, width) positive ints or one int (a square), got "
                     f"{image_size!r}.")
    if isinstance(image_size, (str, bytes, float)):
        raise bad
    values = [image_size] if not hasattr(image_size, "__len__") else list(image_size)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(hasattr(v, "__index__") and int(v) >= 1 for v in values):
        raise bad
    return int(values[0]), int(values[1])


@dataclasses.dataclass
class VideoDataConfig:
    """The settings of `kerasvid.data.video_dataset`, field by field.

    Attributes:
        num_frames: T, frames per clip (required).
        stride: temporal stride between sampled frames, in stored frames (see the records' `video/fps`).
        image_size: `(H, W)` of the output clips; one int means a square (`image_size_pair`; ValueError otherwise).
        training: training sampling and augmentation, shuffling and endless repetition; False: the evaluation
            views, in record order, once.
        batch_size: videos per batch.
        num_classes: number of classes; required for multi-hot / one-hot labels and `mirror_labels`, and used to
            check the label range.
        multi_label: labels as float32 multi-hot `[B, num_classes]` (Charades).
        one_hot: single-label data as float32 one-hot `[B, num_classes]` (records with several labels become
            multi-hot).
        normalization: a preset of `kerasvid.data.preprocess.normalize` ("imagenet", "caffe", "torchvision_video",
            "bn_inception", "minus_one_one", "zero_one" or "none").
        num_clips: temporal views per video (evaluation) or clips per video (training).
        num_crops: spatial views per clip in evaluation (1: the centre crop; 3: crops slid along the longer side).
        sampler: "dense" (`num_frames` frames `stride` apart) or "tsn" (one frame per segment).
        shuffle_buffer: record shuffle buffer in training (the shards are shuffled too); 0 or 1: no record shuffle.
        seed: seed of the shuffles and the augmentation; None: not reproducible.
        deterministic: fixed element order (with `seed`, batches are identical run to run).
        on_error: "raise": a bad record or shard stops iteration with one `InvalidArgumentError` line naming the
            shard, the record index and the reason; "skip": it is dropped, logged on stderr and counted in the
            dataset's `error_counter`.
        repeat: number of epochs; None: forever in training, once in evaluation.
        crop: training crop: "random_resized" (area `crop_scale`, aspect ratio `crop_aspect_ratio`),
            "scale_jitter" (short side ~ U[`scale_jitter`], then a random crop) or "center".
        crop_scale: area range (fraction of the frame) of the "random_resized" crop.
        crop_aspect_ratio: aspect-ratio range of the "random_resized" crop.
        scale_jitter: short-side range in pixels of the "scale_jitter" crop.
        flip: random horizontal flip in training.
        mirror_labels: `{a: b}` classes that swap under a flip (Jester `{11: 12, 16: 17}`), or pairs; None: none.
        color_jitter: strength s of `kerasvid.data.preprocess.color_jitter` in training (0: off).
        eval_short_side: the short side frames are resized to before the evaluation crops (None: crop / 0.875).
        drop_remainder: drop the last incomplete batch; None: True in training, False in evaluation.
        auto_shard: tf.data auto-shard policy under multi-worker strategies: "data", "file", "auto" or "off".
        num_parallel_calls: parallelism of the decoding (`AUTOTUNE` = -1: tf.data chooses; 0 or None: sequential).
        prefetch: batches prefetched (`AUTOTUNE`: tf.data chooses; 0: none).
        augment: clip-consistent training augmentation: a `kerasvid.data.augment.VideoAugment` or a dict of its
            arguments (randaugment, random_erasing, mixup, cutmix); MixUp / CutMix make the labels soft.

    Example:
    >>> config = VideoDataConfig(num_frames=8, image_size=(64, 64), batch_size=4).replace(flip=False)
    >>> ds = kerasvid.data.video_dataset(pattern, config)
    """

    num_frames: int
    stride: int = 1
    image_size: Tuple[int, int] = (224, 224)
    training: bool = True
    batch_size: int = 8
    num_classes: Optional[int] = None
    multi_label: bool = False
    one_hot: bool = False
    normalization: str = "imagenet"
    num_clips: int = 1
    num_crops: int = 1
    sampler: str = "dense"
    shuffle_buffer: int = 64
    seed: Optional[int] = None
    deterministic: bool = False
    on_error: str = "raise"
    repeat: Optional[int] = None
    crop: str = "random_resized"
    crop_scale: Tuple[float, float] = (0.49, 1.0)
    crop_aspect_ratio: Tuple[float, float] = (0.5, 2.0)
    scale_jitter: Tuple[int, int] = (256, 320)
    flip: bool = True
    mirror_labels: Any = None
    color_jitter: float = 0.0
    eval_short_side: Optional[int] = None
    drop_remainder: Optional[bool] = None
    auto_shard: str = "data"
    num_parallel_calls: Optional[int] = AUTOTUNE
    prefetch: Optional[int] = AUTOTUNE
    augment: Any = None

    def __post_init__(self):
        self.image_size = image_size_pair(self.image_size)

    @classmethod
    def field_names(cls):
        """The names of the fields, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def check_keys(cls, keys, what="data_kwargs"):
        """Raises a ValueError naming the keys of `keys` that are not fields (and the valid ones)."""
        unknown = sorted(set(keys) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"Unknown {what} key{'s' if len(unknown) > 1 else ''} {unknown}: the video data "
                             f"settings (kerasvid.data.VideoDataConfig) are {sorted(cls.field_names())}")

    def replace(self, **overrides):
        """A copy with `overrides` (field name -> value, e.g. `data_kwargs`) applied; unknown names raise."""
        self.check_keys(overrides)
        return dataclasses.replace(self, **overrides)

    @classmethod
    def resolve(cls, config=None, what="video_dataset", **overrides):
        """The config a pipeline function runs with: `config.replace(**overrides)`, or, without a config, one made
        of the keywords (the keyword calls `video_dataset(pattern, num_frames=8, ...)`).
        """
        if config is None:
            cls.check_keys(overrides, f"{what} keyword")
            if "num_frames" not in overrides:
                raise TypeError(f"{what}() needs a VideoDataConfig or num_frames=")
            return cls(**overrides)
        if not isinstance(config, cls):
            raise TypeError(f"{what}(): `config` must be a kerasvid.data.VideoDataConfig, got "
                            f"{type(config).__name__} {config!r}")
        cls.check_keys(overrides, f"{what} keyword")
        return dataclasses.replace(config, **overrides)
