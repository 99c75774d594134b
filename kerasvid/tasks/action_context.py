"""Attentive action/context factorization training on (clip, conjugate) pairs (kerasvid's formulation)."""
import numpy as np
import tensorflow as tf

from kerasvid.losses.action_context import FactorizationLoss
from kerasvid.tasks.base import register_task
from kerasvid.tasks.classification import ClassificationTask

# task_kwargs keys -> FactorizationLoss arguments (and their defaults there).
LOSS_KEYS = ("classification_weight", "removal_weight", "consistency_weight", "overlap_weight", "margin",
             "negative_weight", "background_class", "uninformative_weight")


@register_task
class ActionContextTask(ClassificationTask):
    """Trains a factorization model (`i3d_action_context`, outputs="all") with `kerasvid.losses.FactorizationLoss`.

    Training batches are pairs from `kerasvid.data.conjugate_pairs.pair_dataset`: each clip and its conjugate (written
    by `kerasvid conjugates`) are sampled and augmented identically; both go through the model in one batch.
    Evaluation is the classification task's (top-1/top-5 or mAP on the logits `s`), on plain records.

    task_kwargs (`--task_kwargs`):
        conjugate_dir: directory of the conjugate shards of `--train_pattern` (required for training; with
            `--synthetic`, the exact conjugates of the generated records, `kerasvid.data.discovery.synthetic_data`).
        classification_weight, removal_weight, consistency_weight, overlap_weight, margin, negative_weight,
        background_class: `FactorizationLoss` arguments (defaults 1, 1, 1, 0, 1, 1, None).

    The model is built with `outputs="all"`; it must take the RGB clip alone (for `i3d_action_context`:
    `streams=("rgb",)` or `flow_source="tvnet"`, the default here).

    Args:
        config: a `kerasvid.tasks.TaskConfig`.
    """

    name = "action_context"

    def __init__(self, config):
        super().__init__(config)
        unknown = set(config.task_kwargs) - set(LOSS_KEYS) - {"conjugate_dir"}
        if unknown:
            raise ValueError(f"Unknown action_context task_kwargs {sorted(unknown)}; known: "
                             f"{['conjugate_dir', *LOSS_KEYS]}")
        loss_args = {k: config.task_kwargs[k] for k in LOSS_KEYS if k in config.task_kwargs}
        self.loss_fn = FactorizationLoss(multi_label=config.multi_label, **loss_args)

    def validate(self, modes):
        super().validate(modes)
        if "train" in modes and not self.config.task_kwargs.get("conjugate_dir"):
            raise ValueError("The action_context task trains on conjugate pairs: pass "
                             "--task_kwargs=conjugate_dir='<output_dir of kerasvid conjugates>'")
        if self.config.label_smoothing:
            raise ValueError(f"label_smoothing is not supported by the action_context task, got "
                             f"{self.config.label_smoothing}")

    def build_model(self):
        from kerasvid import zoo

        c = self.config
        kwargs = dict(c.model_kwargs)
        kwargs.setdefault("outputs", "all")
        if c.model == "i3d_action_context":
            kwargs.setdefault("flow_source", "tvnet")
        model = zoo.get_model(c.model, num_classes=self.num_classes, input_shape=(c.num_frames, *c.image_size, 3),
                              **kwargs)
        if len(model.inputs) != 1 or not isinstance(model.output, dict) or "action_scores" not in model.output:
            raise ValueError(f"The action_context task needs a model with one RGB input and outputs='all' (the "
                             f"ActionContextAttention dict); {c.model!r} with {kwargs} has {len(model.inputs)} "
                             f"inputs and outputs {type(model.output).__name__}")
        return model

    def build_dataset(self, training, input_context=None):
        if not training:
            return super().build_dataset(training, input_context)
        from kerasvid.data.conjugate_pairs import pair_dataset

        c = self.config
        return pair_dataset(c.train_pattern, c.task_kwargs["conjugate_dir"], self.data_config(True, input_context),
                            input_context=input_context)

    def compute_loss(self, model, inputs, labels, global_batch_size):
        batch = tf.shape(inputs["image"])[0]
        both = model(tf.concat([inputs["image"], inputs["conjugate"]], axis=0), training=True)
        both = {k: tf.cast(v, tf.float32) for k, v in both.items()}
        outputs = {k: v[:batch] for k, v in both.items()}
        conjugates = {k: v[batch:] for k, v in both.items()}
        terms = self.loss_fn.terms(labels, outputs, conjugates, pair_weights=inputs["pair_weight"])
        local = tf.cast(batch, tf.float32)
        # The terms are weighted means over this replica's batch; its share of the global mean is B_local / B.
        loss = terms["loss"] * local / tf.cast(global_batch_size, tf.float32)
        stats = {name: (terms[name] * local, local) for name in
                 ("classification", "action_removal", "context_consistency", "attention_overlap")}
        stats["accuracy"] = self.accuracy_stat(outputs["logits"], labels)
        if not self.config.multi_label:
            # How much the true class's action score drops from the clip to its conjugate (should grow).
            idx = tf.stack([tf.range(batch), tf.cast(labels, tf.int32)], axis=1)
            drop = tf.gather_nd(outputs["action_scores"], idx) - tf.gather_nd(conjugates["action_scores"], idx)
            weights = tf.cast(inputs["pair_weight"], tf.float32)
            stats["action_score_drop"] = (tf.reduce_sum(drop * weights), tf.reduce_sum(weights))
        return loss, stats

    def eval_outputs(self, model, inputs, labels):
        # The classification task's evaluation, on the combined scores s.
        def logits(x, training=False):
            return model(x, training=training)["logits"]

        return super().eval_outputs(logits, inputs, labels)

    def summary_images(self, model, inputs):
        """The middle frame of the first clip (min-max scaled) with its action map (red) and its context map
        (green) overlaid by `kerasvid.viz.attention_overlay` (alpha 0.5), each map averaged over time and over its
        K maps. Float `[1, H, W, 3]` images in [0, 1]."""
        from kerasvid import viz

        clip = inputs["image"][:1]
        out = model(clip, training=False)
        frame = np.asarray(clip[0, clip.shape[1] // 2], np.float64)
        frame = 255.0 * (frame - frame.min()) / max(frame.max() - frame.min(), 1e-6)
        images = {}
        for key, color in (("action_map", (255, 0, 0)), ("context_map", (0, 255, 0))):
            amap = np.asarray(out[key][0], np.float64).mean(axis=(0, 3))  # mean over time and maps -> [H', W']
            # A diverged model's maps (NaN) give a picture without overlay, not an error in the training loop.
            amap = np.where(np.isfinite(amap), np.maximum(amap, 0.0), 0.0)
            overlay = viz.attention_overlay(frame, amap, alpha=0.5, color=color)
            images[key] = (overlay.astype(np.float32) / 255.0)[None]
        return images
