"""Video classification (single-label softmax or multi-label sigmoid), with multi-view evaluation."""
import dataclasses

import numpy as np
import tensorflow as tf

from kerasvid import metrics
from kerasvid.tasks.base import Task, register_task


def confusion_matrix(predictions, labels, num_classes):
    """`[C, C]` int matrix: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


@register_task
class ClassificationTask(Task):
    """Video classification: cross-entropy with optional label smoothing (softmax), or binary cross-entropy
    (sigmoid) for multi-label data; evaluation averages the class probabilities of the `V` views of each video
    (softmax, or sigmoid for multi-label) and reports top-1 / top-5 accuracy (single-label) or mAP (multi-label).

    Data: `kerasvid.data.video_dataset` records with `clip/label/index`; inputs `{"image": [B, T, H, W, 3]}`.
    The model is `kerasvid.zoo.get_model(config.model, num_classes=..., input_shape=(T, H, W, 3),
    **config.model_kwargs)`, called on `model_inputs(inputs)` (`inputs["image"]`); its logits are used in float32
    (the zoo's heads are float32 under mixed precision; the cast keeps a model of a subclass's own `build_model` with
    a float16/bfloat16 head working).

    Args:
        config: a `kerasvid.tasks.TaskConfig`.
    """

    name = "classification"

    @property
    def num_classes(self):
        return self.config.num_classes or len(self.config.label_names)

    def validate(self, modes):
        c = self.config
        if self.num_classes < 1:
            raise ValueError("The number of classes is unknown: pass --num_classes or put labels.txt (one class "
                             f"name per line) beside the records; got num_classes={c.num_classes} and no labels.")
        if c.label_names and c.num_classes and len(c.label_names) != c.num_classes:
            raise ValueError(f"num_classes={c.num_classes} but labels.txt lists {len(c.label_names)} names.")
        if not 0.0 <= c.label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got label_smoothing={c.label_smoothing}.")
        if c.multi_label and c.label_smoothing:
            raise ValueError("label_smoothing is only supported for single-label data (multi_label=False).")
        for name in ("num_frames", "stride", "batch_size", "eval_batch_size", "eval_clips", "eval_crops"):
            if getattr(c, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {name}={getattr(c, name)}.")
        needed = {"train": ["train_pattern"], "eval": ["eval_pattern"], "export": []}
        for mode in (m for m in needed if m in modes):  # fixed order: `modes` may be a set
            for attr in needed[mode]:
                pattern = getattr(c, attr)
                if not pattern:
                    raise ValueError(f"--mode includes {mode!r} but --{attr} is empty.")
                if not tf.io.gfile.glob(pattern):
                    raise ValueError(f"--{attr}={pattern!r} matches no file.")

    def build_model(self):
        from kerasvid import zoo  # imported here: tasks sit above the zoo and build by name

        c = self.config
        model = zoo.get_model(c.model, num_classes=self.num_classes,
                              input_shape=(c.num_frames, *c.image_size, 3), **c.model_kwargs)
        if len(model.inputs) != 1:  # the records give one clip: a second input would fail inside the training step
            raise ValueError(f"it takes {len(model.inputs)} inputs ({[t.name for t in model.inputs]}); classification "
                             f"feeds one clip of frames (build it with one input through --model_kwargs)")
        return model

    def data_config(self, training, input_context=None):
        """The `kerasvid.data.VideoDataConfig` of the training or evaluation pipeline: `TaskConfig.train_data` with
        this worker's batch, or `TaskConfig.validation_data`."""
        c = self.config
        if not training:
            return c.validation_data
        return dataclasses.replace(c.train_data, batch_size=self.local_batch_size(input_context))

    def build_dataset(self, training, input_context=None):
        from kerasvid import data

        c = self.config
        return data.video_dataset(c.train_pattern if training else c.eval_pattern,
                                  self.data_config(training, input_context), input_context=input_context)

    def _per_example_loss(self, logits, labels):
        if self.config.multi_label:
            return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, tf.float32), logits),
                                  axis=-1)
        if labels.shape.rank == 2:  # soft targets [B, C] (MixUp / CutMix, kerasvid.data.augment)
            targets = tf.cast(labels, tf.float32)
        else:
            targets = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)
        if self.config.label_smoothing:
            targets = targets * (1.0 - self.config.label_smoothing) + self.config.label_smoothing / self.num_classes
        return tf.nn.softmax_cross_entropy_with_logits(targets, logits)

    def compute_loss(self, model, inputs, labels, global_batch_size):
        logits = tf.cast(model(self.model_inputs(inputs), training=True), tf.float32)
        loss = tf.nn.compute_average_loss(self._per_example_loss(logits, labels), global_batch_size=global_batch_size)
        return loss, {"accuracy": self.accuracy_stat(logits, labels)}

    def accuracy_stat(self, logits, labels):
        """The training accuracy as a `(hits, count)` pair, by the rules of `kerasvid.metrics` (ties and
        non-finite logits are misses): top-1 for single-label data, per-class `logits > 0` for multi-label data."""
        if self.config.multi_label:
            hits = metrics.binary_hits(labels, logits)
        else:
            if labels.shape.rank == 2:  # soft targets (MixUp / CutMix): accuracy against the largest share
                labels = tf.argmax(labels, -1, output_type=tf.int32)
            hits = metrics.topk_hits(tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, on_value=True,
                                                off_value=False), logits, 1)
        return tf.reduce_sum(tf.cast(hits, tf.float32)), tf.cast(tf.size(hits), tf.float32)

    def eval_outputs(self, model, inputs, labels):
        logits = tf.cast(model(self.model_inputs(inputs), training=False), tf.float32)
        probs = tf.sigmoid(logits) if self.config.multi_label else tf.nn.softmax(logits)
        # Views of one video are contiguous: [B * V, C] -> [B, V, C] -> mean over views.
        probs = tf.reduce_mean(tf.reshape(probs, [-1, self.config.num_views, self.num_classes]), axis=1)
        return {"probs": probs, "labels": labels}

    def aggregate_eval(self, outputs):
        probs, labels = outputs["probs"], outputs["labels"]
        nonfinite = metrics.nonfinite_rows(probs)
        # Non-finite predictions are misses in every metric below; their count is reported beside them.
        results = {"num_examples": int(probs.shape[0]), "num_nonfinite": int(nonfinite.sum())}
        top5 = min(5, self.num_classes)
        if self.config.multi_label:
            labels = np.asarray(labels)
            results["map"] = metrics.mean_average_precision(labels, probs)
            results["top1"] = metrics.topk_accuracy(labels, probs, 1)
            results["top5"] = metrics.topk_accuracy(labels, probs, top5)
            return results
        labels = np.asarray(labels).astype(np.int64)
        results["top1"] = metrics.topk_accuracy(labels, probs, 1)
        results["top5"] = metrics.topk_accuracy(labels, probs, top5)
        # Non-finite predictions are left out of the confusion matrix (their argmax would be a guess) but count
        # in the support of their class: they are misses of the per-class accuracy too.
        finite = ~nonfinite
        predictions = metrics.top1_predictions(labels[finite], probs[finite])  # ties resolved against the label
        matrix = confusion_matrix(predictions, labels[finite], self.num_classes)
        names = list(self.config.label_names) or [str(i) for i in range(self.num_classes)]
        support = np.bincount(labels, minlength=self.num_classes)
        results["per_class_accuracy"] = {names[i]: float(matrix[i, i] / support[i])
                                         for i in range(self.num_classes) if support[i]}
        off = matrix - np.diag(np.diag(matrix))
        pairs = np.dstack(np.unravel_index(np.argsort(-off, axis=None, kind="stable"), off.shape))[0][:5]
        results["most_confused"] = [[names[t], names[p], int(off[t, p])] for t, p in pairs if off[t, p] > 0]
        if self.num_classes <= 32:
            results["confusion_matrix"] = matrix.tolist()
        return results

    def summary_images(self, model, inputs):
        from kerasvid.viz import clip_to_image_grid

        return {"sample_frames": clip_to_image_grid(inputs["image"][0])}

    def best_metric(self):
        return ("map", "max") if self.config.multi_label else ("top1", "max")

    # ----- serving ----------------------------------------------------------------------------------------------
    def _short_side(self):
        return self.data_config(False).eval_short_side

    def serving_predict(self, model):
        """`fn(normalised clips) -> dict` of the served outputs: `"logits"`, plus `"action_map"`, `"context_map"`,
        `"action_scores"`, `"context_scores"` for action/context factorization models (`ActionContextAttention`
        heads; the streams' maps concatenated along the last axis, as `outputs="all"` does)."""
        import keras

        from kerasvid.layers import ActionContextAttention

        if isinstance(model.output, dict):
            keys = [k for k in ("logits", "action_map", "context_map", "action_scores", "context_scores")
                    if k in model.output]
            return lambda clips: {k: model(clips, training=False)[k] for k in keys}
        heads = [layer for layer in model.layers if isinstance(layer, ActionContextAttention)]
        if not heads:
            return lambda clips: {"logits": model(clips, training=False)}
        # The heads' feature maps and the logits in one pass; the (small) heads rerun on the maps for their dicts.
        features = keras.Model(model.inputs, [head.input for head in heads] + [model.output])

        def predict(clips):
            *maps, logits = features(clips, training=False)
            outs = [head(f, training=False) for head, f in zip(heads, maps)]
            result = {"logits": logits}
            for key in ("action_map", "context_map"):
                result[key] = tf.concat([o[key] for o in outs], axis=-1)
            for key in ("action_scores", "context_scores"):
                result[key] = tf.add_n([o[key] for o in outs]) / float(len(outs))
            return result

        return predict

    @staticmethod
    def input_tvnet(model):
        """The model's `TVNet` layer when it reads the model's input directly (`tvnet_bn_inception`), else None."""
        from kerasvid.layers import TVNet

        layers = [layer for layer in model.layers if isinstance(layer, TVNet)]
        if len(layers) == 1 and len(model.inputs) == 1 and layers[0].input is model.inputs[0]:
            return layers[0]
        return None

    def export(self, model, export_dir, extra_settings=None):
        """Classification signatures (`kerasvid.export.classification_endpoints`: `serving_default`, `serve_jpeg`,
        `serve_examples`, each `logits` + `probs` and the attention maps of factorization models), plus
        `serve_flow` (`frame1`, `frame2` uint8 `[B, H, W, 3]` -> `flow` `[B, h, w, 2]`, the model's own TVNet on
        the resized, cropped and normalised frames) for models whose TVNet reads the input frames."""
        from kerasvid import export as export_lib

        c = self.config
        export_lib.check_video_classifier(model, f"{self.name} export of {c.model!r}")
        extra = {}
        tvnet = self.input_tvnet(model)
        if tvnet is not None:
            extra["serve_flow"] = export_lib.frame_pair_endpoint(
                "serve_flow", lambda a, b: {"flow": tvnet(a, b)}, c.image_size, c.normalization, self._short_side())
        return export_lib.export_saved_model(
            model, export_dir, c.num_frames, c.image_size, c.label_names, c.normalization, c.stride,
            short_side=self._short_side(), multi_label=c.multi_label, predict=self.serving_predict(model),
            extra_endpoints=extra, extra_settings={"task": self.name, "model": c.model, **(extra_settings or {})})

    def export_tflite(self, model, export_dir):
        """`model.tflite` (uint8 crops `[1, T, H, W, 3]` -> `logits`, `probs`) and, for models whose TVNet reads the
        input frames, `flow.tflite` (two uint8 frames `[1, H, W, 3]` -> `flow`). Returns the paths."""
        import os

        from kerasvid import export as export_lib

        c = self.config
        tf.io.gfile.makedirs(export_dir)
        paths = [export_lib.export_tflite(
            export_lib.classifier_tflite_function(model, c.num_frames, c.image_size, c.normalization,
                                                  c.multi_label), os.path.join(export_dir, export_lib.TFLITE_FILE),
            model)]
        tvnet = self.input_tvnet(model)
        if tvnet is not None:
            paths.append(export_lib.export_tflite(
                export_lib.flow_tflite_function(tvnet, c.image_size, c.normalization),
                os.path.join(export_dir, export_lib.FLOW_TFLITE_FILE), tvnet))
        return paths
