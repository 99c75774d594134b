"""Actor-observer triplet training (Sigurdsson et al., CVPR 2018) on Charades-Ego style frame folders.

Without Charades-Ego, `train/main.py --task=actor_observer --synthetic` writes moving-digit ego/exo pairs in that layout
(`kerasvid.data.discovery.synthetic_data`) and sets `frames_root`, `train_csv`, `eval_csv` and the sampling
(`anchor_stride`, `min_gap`, `fps`) to match.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from kerasvid.data import actor_observer as triplet_data
from kerasvid.tasks.base import Task, register_task
from kerasvid.tasks.actor_observer_config import ActorObserverConfig

INPUT_KEYS = triplet_data.INPUT_KEYS


# task_kwargs keys and their defaults.
DEFAULTS = dataclasses.asdict(ActorObserverConfig())


def video_weights(selectors, video_index):
    """Offline VideoSoftmax for evaluation: `p/k = exp(f) / mean_{same video} exp(f)` per stream, multiplied.

    With every frame of a video at hand the normaliser of supp Eq. 1 is computed exactly instead of online.

    Args:
        selectors: float `[N, 3]` selector scores (x, y, z streams).
        video_index: int `[N]`.

    Returns:
        float `[N]` triplet weights `w = p_x p_y p_z` (each `p` with mean 1 over its video).
    """
    selectors = np.asarray(selectors, np.float64)
    video_index = np.asarray(video_index)
    log_w = np.zeros(len(selectors))
    for v in np.unique(video_index):
        rows = video_index == v
        f = selectors[rows]
        log_mean = np.log(np.mean(np.exp(f - f.max(axis=0)), axis=0)) + f.max(axis=0)
        log_w[rows] = np.sum(f - log_mean, axis=1)
    return np.exp(log_w)


@register_task
class ActorObserverTask(Task):
    """Trains `actor_observer_resnet152` (or any model with its outputs) on first/third-person triplets.

    Training batches: triplets `(x, y, z)` of `kerasvid.data.actor_observer.build_triplets` (every 4th third-person
    frame, the time-mapped first-person frame, a first-person frame more than 10 s away), optionally mixed with labelled
    third-person Charades frames (`charades_csv`, the classification-mixed setup; build the model with
    `num_classes`). The objective is `kerasvid.losses.actor_observer_objective`: three VideoSoftmax layers (one per
    stream, keyed by the paired video), `dist_ratio` (or `margin_rank`), `ActorObserverLoss`, `equalize_grad_norm`.
    The VideoSoftmax and loss states live in the task (`checkpoint_objects()`); the loop must checkpoint them for
    an exact resume. Gradient accumulation (the reference accumulates 4 batches) is the loop's
    `--accumulation_steps`; the states fold in every micro-batch, as in the reference. Training augmentation, as
    the reference: random resized crop (area `crop_scale` (0.8, 1) for the triplet frames, `charades_crop_scale`
    (0.08, 1) plus colour jitter `charades_color_jitter` (0.4) for the Charades classification frames) and a flip.

    Evaluation: triplets of `eval_csv` (fixed negatives); triplet accuracy, weighted by the selector (offline
    VideoSoftmax, `video_weights`) and on the top 1/2/5/10/50 % most-selected triplets.

    Inputs: `{"first_person", "third_person", "first_person_negative": [B, 1, H, W, 3], "video_index": [B]}`;
    labels `[B]`: -1 for triplets, the class for classification samples.

    task_kwargs: the fields of `ActorObserverConfig` (the task's `options`).

    Args:
        config: a `kerasvid.tasks.TaskConfig` (`num_frames` must be 1).
    """

    name = "actor_observer"

    def __init__(self, config):
        super().__init__(config)
        self.options = ActorObserverConfig.from_task_kwargs(config.task_kwargs)
        self._samples = {}
        self.video_softmaxes = None
        self.loss = None

    # ----- configuration ----------------------------------------------------------------------------------------
    def validate(self, modes):
        c, o = self.config, self.options
        if c.num_frames != 1:
            raise ValueError(f"The actor_observer task works on single frames: --num_frames must be 1, got "
                             f"{c.num_frames}")
        for mode, key in (("train", "train_csv"), ("eval", "eval_csv")):
            if mode in modes:
                if not o.frames_root or not getattr(o, key):
                    raise ValueError(f"--mode includes {mode!r}: pass --task_kwargs=frames_root=...,{key}=...")
                if not tf.io.gfile.exists(getattr(o, key)):
                    raise ValueError(f"The {key} {getattr(o, key)!r} does not exist")
        if o.charades_csv and not c.num_classes:
            raise ValueError("The classification-mixed setup (charades_csv) needs --num_classes (157 for Charades)")

    def samples(self, split):
        """The `kerasvid.data.actor_observer.Sample`s of "train" or "eval" (built once, from the CSVs and frame
        folders)."""
        if split in self._samples:
            return self._samples[split]
        o = self.options
        records = triplet_data.read_charades_csv(o.train_csv if split == "train" else o.eval_csv)
        pairs = triplet_data.paired_videos(records)
        counts = {vid: triplet_data.count_frames(o.frames_root, vid) for pair in pairs for vid in pair}
        seed = self.config.seed + (0 if split == "train" else 1)
        samples = triplet_data.build_triplets(pairs, o.frames_root, counts, seed=seed,
                                              anchor_stride=o.anchor_stride, min_gap=o.min_gap)
        if not samples:
            raise ValueError(f"No {split} triplet: check frames_root={o.frames_root!r} and the CSV ({len(pairs)} "
                             f"pairs found)")
        if split == "train" and o.charades_csv:
            root = o.charades_root or o.frames_root
            charades = triplet_data.read_charades_csv(o.charades_csv)
            counts = {r["id"]: triplet_data.count_frames(root, r["id"]) for r in charades}
            labelled = triplet_data.build_classification_samples(charades, root, counts, num_videos=len(pairs),
                                                                  fps=o.fps,
                                                                  frame_stride=o.frame_stride)
            samples = triplet_data.mix_samples(samples, labelled, o.triplet_repeats, seed=self.config.seed)
        logging.info("actor_observer task: %d %s samples (%d triplets) from %d paired videos", len(samples), split,
                     sum(s.is_triplet for s in samples), len(pairs))
        self._samples[split] = (samples, len(pairs))
        return self._samples[split]

    # ----- model and state --------------------------------------------------------------------------------------
    def build_model(self):
        from kerasvid.layers import VideoSoftmax
        from kerasvid.losses import ActorObserverLoss

        o = self.options
        num_videos = self.samples("train")[1] + 1 if o.train_csv else 1  # + the classification dummy
        model = self.build_network()
        # Built here, under the strategy scope, so that their state is mirrored like the model's.
        self.video_softmaxes = [VideoSoftmax(num_videos, decay=o.softmax_decay, read=o.softmax_read,
                                             name=f"video_softmax_{s}") for s in "xyz"]
        for layer in self.video_softmaxes:
            layer.build((None,), (None,))
        self.loss = ActorObserverLoss(decay=o.loss_decay, name="actor_observer_loss")
        self.loss.build()
        return model

    def build_network(self):
        """The network: `kerasvid.zoo.get_model(config.model, num_classes or None, (1, H, W, 3), **model_kwargs)`."""
        from kerasvid import zoo

        c = self.config
        return zoo.get_model(c.model, num_classes=c.num_classes or None, input_shape=(1, *c.image_size, 3),
                             **c.model_kwargs)

    def checkpoint_objects(self):
        """The task's state to checkpoint beside the model: the three VideoSoftmax layers and the loss."""
        names = ("video_softmax_x", "video_softmax_y", "video_softmax_z")
        return {**dict(zip(names, self.video_softmaxes)), "actor_observer_loss": self.loss}

    # ----- data -------------------------------------------------------------------------------------------------
    def _load(self, path, seed, training):
        """One frame as the model sees it: `kerasvid.data.actor_observer.load_frame` with this task's settings."""
        c = self.config
        return triplet_data.load_frame(path, seed, training, c.image_size, c.normalization, self.options.crop_scale)

    def build_dataset(self, training, input_context=None):
        c = self.config
        samples, _ = self.samples("train" if training else "eval")
        batch = self.local_batch_size(input_context) if training else c.eval_batch_size
        o = self.options
        return triplet_data.triplet_dataset(samples, training, batch, c.image_size, c.normalization, o.crop_scale,
                                            seed=c.seed, deterministic=c.deterministic, input_context=input_context,
                                            classification_crop_scale=o.charades_crop_scale,
                                            classification_color_jitter=o.charades_color_jitter)

    # ----- loss and evaluation ----------------------------------------------------------------------------------
    def model_inputs(self, inputs):
        """The three streams, in the model's input order `INPUT_KEYS`."""
        return [inputs[k] for k in INPUT_KEYS]

    def _objective(self, model, inputs, labels, training):
        from kerasvid.losses import actor_observer_objective, dist_ratio, margin_rank

        o = self.options
        outputs = model(self.model_inputs(inputs), training=training)
        if o.triplet_loss == "margin_rank":
            triplet_loss = lambda a, b: margin_rank(a, b, o.margin)  # noqa: E731
        else:
            triplet_loss = dist_ratio
        result = actor_observer_objective(
            outputs, inputs["video_index"], self.video_softmaxes, self.loss,
            labels=labels if "logits" in outputs else None, classification_weight=o.classification_weight,
            triplet_loss=triplet_loss, balance_gradients=o.balance_gradients, training=training)
        return outputs, result

    def compute_loss(self, model, inputs, labels, global_batch_size):
        outputs, result = self._objective(model, inputs, labels, training=True)
        is_triplet = tf.cast(tf.reshape(labels, [-1]) < 0, tf.float32)
        correct = tf.cast(outputs["d_pos"] < outputs["d_neg"], tf.float32) * is_triplet
        stats = {
            "triplet_accuracy": (tf.reduce_sum(correct), tf.reduce_sum(is_triplet)),
            "triplet_loss": (tf.reduce_sum(result["per_triplet_loss"] * is_triplet), tf.reduce_sum(is_triplet)),
        }
        return result["objective"], stats

    def eval_outputs(self, model, inputs, labels):
        outputs = model(self.model_inputs(inputs), training=False)
        selectors = tf.stack([outputs["selector_x"], outputs["selector_y"], outputs["selector_z"]], axis=1)
        return {"d_pos": outputs["d_pos"], "d_neg": outputs["d_neg"], "selectors": selectors,
                "video_index": inputs["video_index"]}

    def aggregate_eval(self, outputs):
        from kerasvid import metrics

        d_pos, d_neg = np.asarray(outputs["d_pos"]), np.asarray(outputs["d_neg"])
        weights = video_weights(outputs["selectors"], outputs["video_index"])
        # Triplets with a non-finite distance or selector are misses in every accuracy; num_nonfinite counts them.
        nonfinite = metrics.nonfinite_rows(np.stack([d_pos, d_neg, weights], axis=1))
        results = {"num_examples": int(d_pos.shape[0]), "num_nonfinite": int(nonfinite.sum()),
                   "triplet_accuracy": metrics.triplet_accuracy(d_pos, d_neg),
                   "weighted_triplet_accuracy": metrics.triplet_accuracy(d_pos, d_neg, weights)}
        for percent in (1, 2, 5, 10, 50):
            results[f"top{percent}_selected_accuracy"] = metrics.topk_selected_accuracy(d_pos, d_neg, weights, percent)
        return results

    def alignment_error(self, model, split="eval", batch_size=32, radius=3):
        """Median alignment error (seconds) over the paired videos of `split` (Sigurdsson et al. 2018).

        Every `anchor_stride`-th frame of both videos (6 fps at 24 fps) goes through the model's shared trunk;
        `kerasvid.metrics.alignment_error` box-smooths their distance matrix and compares the arg-min with the
        linear time mapping.

        Args:
            model: the trained network (its shared trunk is the nested `keras.Model` layer).
            split: "train" or "eval" (which CSV's pairs).
            batch_size: frames per trunk call.
            radius: smoothing radius of the distance matrix (3).

        Returns:
            dict: `median_alignment_error_s`, `num_videos`.
        """
        from kerasvid import metrics

        matrices = [m for _, _, m in self.alignment_distances(model, split, batch_size)]
        fps = self.options.fps / self.options.anchor_stride
        return {"median_alignment_error_s": metrics.median_alignment_error(matrices, fps=fps, radius=radius),
                "num_videos": len(matrices)}

    def alignment_distances(self, model, split="eval", batch_size=32):
        """`[(third_id, first_id, M)]` for the paired videos of `split` with frames: `M[i, j] = ||f(ego_i) -
        f(third_j)||` over every `anchor_stride`-th frame, `f` the model's shared trunk (its nested keras.Model)."""
        import keras

        o = self.options
        trunks = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        if len(trunks) != 1:
            raise ValueError(f"Expected one shared trunk (a nested keras.Model) in {model.name!r}, found "
                             f"{[t.name for t in trunks]}")
        records = triplet_data.read_charades_csv(o.train_csv if split == "train" else o.eval_csv)

        def embed(video_id):
            ds = triplet_data.frame_dataset(o.frames_root, video_id, o.anchor_stride, batch_size,
                                            self.config.image_size, self.config.normalization)
            return np.concatenate([trunks[0](frames, training=False).numpy() for frames in ds])

        out = []
        for third_id, first_id in triplet_data.paired_videos(records):
            if min(triplet_data.count_frames(o.frames_root, v) for v in (third_id, first_id)) < 1:
                continue
            ego, third = embed(first_id), embed(third_id)
            out.append((third_id, first_id, np.linalg.norm(ego[:, None] - third[None], axis=-1)))
        return out

    def alignment_report(self, model, split="eval", batch_size=32, radius=3):
        """The actor-observer alignment evaluation as the paper reports it (CVPR 2018), for `--mode=align`.

        The median over paired videos of `kerasvid.metrics.alignment_error` (seconds; frames sampled every
        `anchor_stride`-th frame at `fps`, i.e. 6 fps at 24 fps; the distance matrix box-smoothed with `radius`),
        with the two baselines the evaluation prints: the same without smoothing (radius 0) and a random distance
        matrix of the same shape (uniform, seed 0).

        Returns:
            dict: `median_alignment_error_s`, `median_alignment_error_unsmoothed_s`, `random_matrix_error_s`,
            `num_videos`, `fps`, `radius`, and `per_video` (`third_person`, `first_person`, `error_s`).
        """
        from kerasvid import metrics

        pairs = self.alignment_distances(model, split, batch_size)
        if not pairs:
            raise ValueError(f"No paired video with frames in the {split} CSV (frames_root="
                             f"{self.options.frames_root!r}): nothing to align.")
        fps = self.options.fps / self.options.anchor_stride
        matrices = [m for _, _, m in pairs]
        rng = np.random.default_rng(0)
        random = [rng.random(m.shape) for m in matrices]
        return {"median_alignment_error_s": metrics.median_alignment_error(matrices, fps=fps, radius=radius),
                "median_alignment_error_unsmoothed_s": metrics.median_alignment_error(matrices, fps=fps, radius=0),
                "random_matrix_error_s": metrics.median_alignment_error(random, fps=fps, radius=radius),
                "num_videos": len(pairs), "fps": fps, "radius": radius,
                "per_video": [{"third_person": t, "first_person": f,
                               "error_s": metrics.alignment_error(m, fps=fps, radius=radius)} for t, f, m in pairs]}

    def best_metric(self):
        return ("weighted_triplet_accuracy", "max")

    # ----- serving ----------------------------------------------------------------------------------------------
    def export(self, model, export_dir, extra_settings=None):
        """Actor-observer signatures on single frames (uint8 `[B, H, W, 3]`, any size: resized and centre-cropped
        to `image_size` and normalised as in evaluation):

        - `serving_default` (`frames`): `embedding` `[B, D]` (the shared trunk's feature), `selector_first_person`
          and `selector_third_person` `[B]` (the selector score of the frame as a first-person `x` / third-person
          `y` stream), and `logits`, `probs` when the model has the third-person classifier;
        - `serve_pair_distance` (`frame1`, `frame2`): `distance` `[B]`, the model's `d_pos` between the two
          frames' embeddings.
        """
        import keras

        from kerasvid import export as export_lib
        from kerasvid.data import preprocess

        c = self.config
        trunks = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        names = {layer.name for layer in model.layers}
        needed = {"selector_first_fc", "selector_x", "selector_third_fc", "selector_y", "d_pos"}
        if len(trunks) != 1 or not needed <= names:
            raise ValueError(f"The triplet export needs an actor-observer network (one shared trunk and the layers "
                             f"{sorted(needed)}); {model.name!r} has trunks {[t.name for t in trunks]} and lacks "
                             f"{sorted(needed - names)}.")
        trunk = trunks[0]
        classifier = model.get_layer("predictions") if "predictions" in names else None

        def embed(frames):
            return tf.cast(trunk(frames[:, None], training=False), tf.float32)

        def per_frame(frames):
            frames = export_lib.checked("serving_default", frames, [None, None, None, 3], "uint8 frames [B, H, W, 3]")
            f = embed(preprocess.normalize(preprocess.resize_and_center_crop(frames, c.image_size), c.normalization))
            out = {"embedding": f,
                   "selector_first_person": model.get_layer("selector_x")(model.get_layer("selector_first_fc")(f)),
                   "selector_third_person": model.get_layer("selector_y")(model.get_layer("selector_third_fc")(f))}
            if classifier is not None:
                logits = tf.cast(classifier(f), tf.float32)  # the dropout before it is the identity here
                out.update(logits=logits, probs=tf.nn.softmax(logits))
            return out

        distance = model.get_layer("d_pos")
        pair = export_lib.frame_pair_endpoint(
            "serve_pair_distance", lambda a, b: {"distance": distance(embed(a), embed(b))}, c.image_size,
            c.normalization)
        endpoints = {"serving_default": (per_frame, [tf.TensorSpec(None, tf.uint8, name="frames")]),
                     "serve_pair_distance": pair}
        labels = None
        if classifier is not None:
            num_classes = int(classifier.units)
            labels = list(c.label_names) or [str(i) for i in range(num_classes)]
        settings = {"kind": "actor_observer", "task": self.name, "model": c.model, "num_frames": 1,
                    "image_size": [int(s) for s in c.image_size],
                    "short_side": preprocess.default_short_side(c.image_size), "normalization": c.normalization,
                    "input_dtype": "uint8", **(extra_settings or {})}
        return export_lib.write_archive(export_dir, model, endpoints, settings, labels)
