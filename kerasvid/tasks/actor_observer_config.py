"""`ActorObserverConfig`: the settings of the actor_observer task (`kerasvid.tasks.actor_observer`), one field each.

They arrive as `--task_kwargs` keys or as flags of the same names (`kerasvid train --task=actor_observer
--frames_root=...`), derived from the dataclass by `kerasvid.config_flags`. The module imports no TensorFlow, so
that the command line can define those flags before TensorFlow loads.
"""
import dataclasses
from typing import Tuple


@dataclasses.dataclass
class ActorObserverConfig:
    """The actor_observer task's settings (`--task_kwargs` keys, or the flags `kerasvid.config_flags` derives).

    Attributes:
        frames_root: Charades-Ego frames: `<root>/<vid>/<vid>-000001.jpg` and `<root>/<vid>EGO/...`.
        train_csv: Charades-Ego CSV listing `<vid>` and `<vid>EGO` rows (training pairs).
        eval_csv: the same for evaluation.
        charades_csv: classification-mixed setup: third-person Charades training CSV (needs num_classes).
        charades_root: and its frame root ("": frames_root).
        triplet_repeats: copies of the triplet set mixed with the Charades frames (the authors use 6).
        frame_stride: Charades frames of the mixed setup: every n-th frame inside an action interval.
        softmax_decay: VideoSoftmax decay (supp k = 0.1; the third-to-first-person experiment uses 0.95).
        softmax_read: VideoSoftmax `read`: "per_sample", or "after_batch" (what the reference code does).
        loss_decay: ActorObserverLoss decay (the reference's --finaldecay).
        classification_weight: weight of the classification loss of the mixed setup.
        triplet_loss: "dist_ratio" or "margin_rank".
        margin: margin of "margin_rank".
        balance_gradients: equalise the gradient norms of the triplet and classification losses.
        anchor_stride: every n-th third-person frame is an anchor (4: 6 fps at 24 fps).
        min_gap: negatives strictly more than this many frames from the positive (240: 10 s at 24 fps).
        fps: frame rate of the frame folders.
        crop_scale: RandomResizedCrop area range of the Charades-Ego frames (the triplets).
        charades_crop_scale: RandomResizedCrop area range of the mixed setup's Charades classification frames (as
            the reference's Charades loader).
        charades_color_jitter: ColorJitter brightness, contrast and saturation of those frames (0: no jitter).
    """

    frames_root: str = ""
    train_csv: str = ""
    eval_csv: str = ""
    charades_csv: str = ""
    charades_root: str = ""
    triplet_repeats: int = 6
    frame_stride: int = 4
    softmax_decay: float = 0.9
    softmax_read: str = dataclasses.field(default="per_sample", metadata={"enum": ("per_sample", "after_batch")})
    loss_decay: float = 0.9
    classification_weight: float = 2.0
    triplet_loss: str = dataclasses.field(default="dist_ratio", metadata={"enum": ("dist_ratio", "margin_rank")})
    margin: float = 0.0
    balance_gradients: bool = True
    anchor_stride: int = 4
    min_gap: int = 240
    fps: float = 24.0
    crop_scale: Tuple[float, float] = (0.8, 1.0)
    charades_crop_scale: Tuple[float, float] = (0.08, 1.0)
    charades_color_jitter: float = 0.4

    def __post_init__(self):
        if self.triplet_loss not in ("dist_ratio", "margin_rank"):
            raise ValueError(f"`triplet_loss` must be 'dist_ratio' or 'margin_rank', got {self.triplet_loss!r}")
        if self.softmax_read not in ("per_sample", "after_batch"):
            raise ValueError(f"`softmax_read` must be 'per_sample' or 'after_batch', got {self.softmax_read!r}")
        for key in ("crop_scale", "charades_crop_scale"):
            scale = getattr(self, key)
            if (not isinstance(scale, (tuple, list)) or len(scale) != 2
                    or not all(isinstance(v, (int, float)) for v in scale) or not 0 < scale[0] <= scale[1] <= 1):
                raise ValueError(f"`{key}` must be an area range (min, max) with 0 < min <= max <= 1, got "
                                 f"{key}={scale!r}")
        jitter = self.charades_color_jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise ValueError(f"`charades_color_jitter` must be a float in [0, 1), got charades_color_jitter={jitter!r}")

    @classmethod
    def from_task_kwargs(cls, task_kwargs):
        """The config of a `task_kwargs` dict; an unknown key raises a ValueError listing the known ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(task_kwargs) - set(known))
        if unknown:
            raise ValueError(f"Unknown actor_observer task_kwargs {unknown}; known: {sorted(known)}")
        return cls(**task_kwargs)
