"""The actor-observer claim in miniature: learning a shared first/third-person space aligns paired videos, and the
selector learns which frames to trust.

Synthetic "exo" (third-person) and "ego" (first-person) views of the same clips: one scikit-learn digit moving on a
32x32 canvas. The exo view draws it grey on black; the ego view is a different rendering of the same state (mirrored,
inverted, tinted, noisier, at a lower frame rate), and in one contiguous quarter of each clip the digit is hidden in
the ego view. Training uses the package's pieces exactly as the task does: triplets sampled by
`kerasvid.data.actor_observer.sample_triplet_frames` (anchor every 2nd exo frame, time-mapped ego positive, negative at
least `gap` ego frames away), `actor_observer_network` (with a small CNN trunk instead of ResNet-152, to run in
seconds on a CPU), three `VideoSoftmax` layers, `dist_ratio`, `ActorObserverLoss` and `equalize_grad_norm`
(`actor_observer_objective`).

Reported on held-out clips, before and after training:
- median alignment error (seconds at 6 fps; `kerasvid.metrics.median_alignment_error`, smoothing radius 3), with a
  random-matrix baseline;
- the selector: mean selector score `f_x + f_y + f_z` (the log of the unnormalised triplet weight) of triplets whose
  ego frames show the digit vs triplets whose positive ego frame has it hidden, and the AUC of that separation.

Run: `python benchmarks/actor_observer_alignment.py [--steps 400] [--seed 0]` (about a minute on 2 CPU cores).
"""
import argparse
import json
import time

import numpy as np

FPS = 6.0
SIZE = 32


def render_clips(num_clips, rng, n_exo=48, n_ego=36, hidden_fraction=0.25):
    """Returns a list of dicts: `exo` [n_exo, 32, 32, 3], `ego` [n_ego, 32, 32, 3], `ego_hidden` bool [n_ego]."""
    from sklearn.datasets import load_digits

    digits = load_digits().images / 16.0
    clips = []
    for _ in range(num_clips):
        digit = np.kron(digits[rng.integers(len(digits))], np.ones((2, 2)))  # 16x16
        # A path that visits different places at different times: x sweeps across, y oscillates.
        phase, period, direction = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.4), rng.choice([-1, 1])

        def position(t):  # t in [0, 1]
            x = 8 + direction * 8 * (2 * t - 1)
            y = 8 + 7 * np.sin(2 * np.pi * t / period + phase)
            return int(round(x)), int(round(y))

        def draw(t):
            canvas = np.zeros((SIZE, SIZE))
            x, y = position(t)
            canvas[y:y + 16, x:x + 16] = digit
            return canvas

        exo = np.stack([draw(j / (n_exo - 1)) for j in range(n_exo)])
        exo = np.repeat(exo[..., None], 3, axis=-1) + rng.normal(0, 0.05, (n_exo, SIZE, SIZE, 3))
        start = rng.integers(0, n_ego - int(hidden_fraction * n_ego))
        hidden = np.zeros(n_ego, bool)
        hidden[start:start + int(hidden_fraction * n_ego)] = True
        ego = []
        for i in range(n_ego):
            view = np.zeros((SIZE, SIZE)) if hidden[i] else draw(i / (n_ego - 1))
            view = 1.0 - view[:, ::-1]  # mirrored and inverted
            ego.append(view[..., None] * np.array([1.0, 0.7, 0.4]))  # tinted
        ego = np.stack(ego) + rng.normal(0, 0.1, (n_ego, SIZE, SIZE, 3))
        clips.append({"exo": exo.astype("float32"), "ego": ego.astype("float32"), "ego_hidden": hidden})
    return clips


def clip_triplets(clips, rng, gap):
    """All triplets `(clip, exo, ego_pos, ego_neg)` of the clips (one random negative per anchor)."""
    from kerasvid.data.actor_observer import sample_triplet_frames

    rows = []
    for c, clip in enumerate(clips):
        frames = sample_triplet_frames(len(clip["exo"]), len(clip["ego"]), rng, anchor_stride=2, min_gap=gap)
        rows += [(c, *f) for f in frames]
    return np.array(rows)


def small_trunk():
    import keras

    frames = keras.Input((1, SIZE, SIZE, 3))
    x = keras.layers.Reshape((SIZE, SIZE, 3))(frames)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)  # keeps where the digit is: the time cue
    x = keras.layers.Dense(64)(x)
    return keras.Model(frames, x, name="small_cnn")


def embed(model, frames):
    trunk = model.get_layer("small_cnn")
    return trunk(frames[:, None], training=False).numpy()


def evaluate(model, clips, triplets, rng):
    from kerasvid import metrics

    matrices = []
    for clip in clips:
        ego, exo = embed(model, clip["ego"]), embed(model, clip["exo"])
        matrices.append(np.linalg.norm(ego[:, None] - exo[None], axis=-1))
    error = metrics.median_alignment_error(matrices, fps=FPS, radius=3, rng=np.random.default_rng(0))
    random_error = metrics.median_alignment_error([rng.random(m.shape) for m in matrices], fps=FPS, radius=3,
                                                  rng=np.random.default_rng(0))
    x, y, z = (np.stack([clips[c][view][f] for c, f in zip(triplets[:, 0], triplets[:, k])])[:, None]
               for view, k in (("ego", 2), ("exo", 1), ("ego", 3)))
    out = model([x, y, z], training=False)
    score = sum(out[k].numpy() for k in ("selector_x", "selector_y", "selector_z"))
    hidden = np.array([clips[c]["ego_hidden"][f] for c, f in zip(triplets[:, 0], triplets[:, 2])])
    visible_scores, hidden_scores = score[~hidden], score[hidden]
    auc = float(np.mean(visible_scores[:, None] > hidden_scores[None, :]))
    fx = out["selector_x"].numpy()  # the stream that sees the hidden frame
    auc_x = float(np.mean(fx[~hidden][:, None] > fx[hidden][None, :]))
    accuracy = metrics.triplet_accuracy(out["d_pos"].numpy()[~hidden], out["d_neg"].numpy()[~hidden])
    return {"median_alignment_error_s": error, "random_matrix_error_s": random_error,
            "selector_visible_mean": float(visible_scores.mean()), "selector_hidden_mean": float(hidden_scores.mean()),
            "selector_auc_visible_over_hidden": auc, "selector_x_auc_visible_over_hidden": auc_x,
            "triplet_accuracy_visible": accuracy}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=15)
    parser.add_argument("--train_clips", type=int, default=40)
    parser.add_argument("--eval_clips", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from kerasvid.layers import VideoSoftmax
    from kerasvid.losses import ActorObserverLoss, actor_observer_objective
    from kerasvid.models.actor_observer import actor_observer_network

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, held_out = render_clips(args.train_clips, rng), render_clips(args.eval_clips, rng)
    gap = 9  # ego frames (1.5 s at 6 fps)
    eval_triplets = clip_triplets(held_out, np.random.default_rng(1), gap)
    model = actor_observer_network(input_shape=(1, SIZE, SIZE, 3), trunk=small_trunk(), variant="share")
    before = evaluate(model, held_out, eval_triplets, np.random.default_rng(2))

    softmaxes = [VideoSoftmax(num_videos=len(train), decay=0.9) for _ in range(3)]
    loss = ActorObserverLoss(decay=0.9)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step(x, y, z, index):
        with tf.GradientTape() as tape:
            outputs = model([x, y, z], training=True)
            result = actor_observer_objective(outputs, index, softmaxes, loss)
        grads = tape.gradient(result["objective"], model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return result["objective"], tf.reduce_mean(result["per_triplet_loss"])

    train_triplets = clip_triplets(train, rng, gap)
    start = time.time()
    history = []
    for s in range(args.steps):
        if s % 50 == 0:  # fresh negatives now and then, as a new epoch would draw
            train_triplets = clip_triplets(train, rng, gap)
        rows = train_triplets[rng.choice(len(train_triplets), args.batch, replace=False)]
        x, y, z = (np.stack([train[c][view][f] for c, f in zip(rows[:, 0], rows[:, k])])[:, None]
                   for view, k in (("ego", 2), ("exo", 1), ("ego", 3)))
        objective, mean_l = step(x, y, z, rows[:, 0].astype("int32"))
        history.append(float(mean_l))
    train_seconds = time.time() - start
    after = evaluate(model, held_out, eval_triplets, np.random.default_rng(2))

    report = {"steps": args.steps, "batch": args.batch, "train_clips": args.train_clips,
              "eval_clips": args.eval_clips, "seed": args.seed, "train_seconds": round(train_seconds, 1),
              "mean_triplet_loss_first_50": float(np.mean(history[:50])),
              "mean_triplet_loss_last_50": float(np.mean(history[-50:])), "before": before, "after": after}
    print(json.dumps(report, indent=2))
    rows = [("median alignment error (s)", "median_alignment_error_s"),
            ("random-matrix alignment error (s)", "random_matrix_error_s"),
            ("triplet accuracy (digit visible)", "triplet_accuracy_visible"),
            ("selector f_x+f_y+f_z, digit visible", "selector_visible_mean"),
            ("selector f_x+f_y+f_z, digit hidden in ego", "selector_hidden_mean"),
            ("selector AUC visible > hidden (f_x+f_y+f_z)", "selector_auc_visible_over_hidden"),
            ("selector AUC visible > hidden (f_x alone)", "selector_x_auc_visible_over_hidden")]
    print("\n| held-out clips | untrained | trained |\n|---|---|---|")
    for label, key in rows:
        print(f"| {label} | {before[key]:.3f} | {after[key]:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
