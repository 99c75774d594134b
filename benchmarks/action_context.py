"""The action/context factorization claim in miniature: does the factorized model look at the actor and
ignore the background?

Synthetic clips (`kerasvid.data.synthetic.render_moving_digits`): the action is a digit moving in one of 4
directions; in training the background texture is correlated with the class, at test it is either still correlated
("class") or shuffled. Conjugate samples are made by kerasvid's own tool (`kerasvid.data.inpaint.conjugate_clip`:
digit boxes removed, Telea inpainting, Poisson blending). The same small Conv3D backbone is trained
  - without factorization (global average pooling + dense, cross-entropy), and
  - with `ActionContextAttention` and `FactorizationLoss` on (clip, conjugate) pairs, as the issue formulates it, and
  - the same with kerasvid's extra term `uninformative_weight=1` (a conjugate must not predict the action).
Reported: accuracy on class-correlated vs shuffled backgrounds (the drop), and how often the action map's maximum
falls inside the digit's box. Prints JSON and a markdown table, writes them and an attention picture to
benchmarks/results/ (action_context.{json,md,png}).

    python benchmarks/action_context.py [--steps 500] [--loss_kwargs '{"action_margin": 1.0}']
"""
import argparse
import json
import os
import time

import numpy as np

from _report import save_report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--train_clips", type=int, default=384)
    parser.add_argument("--test_clips", type=int, default=192)
    parser.add_argument("--loss_kwargs", default="{}", help="JSON keyword arguments of FactorizationLoss")
    parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from kerasvid import viz
    from kerasvid.data.inpaint import conjugate_clip
    from kerasvid.data.synthetic import render_moving_digits
    from kerasvid.layers import ActionContextAttention
    from kerasvid.losses import FactorizationLoss

    frames_, size, classes = 8, 32, 4
    t0 = time.time()
    train = render_moving_digits(args.train_clips, classes, frames_, size, size, seed=1, background="class")
    test = {bg: render_moving_digits(args.test_clips, classes, frames_, size, size, seed=2, background=bg)
            for bg in ("class", "shuffled")}
    conj = np.stack([conjugate_clip(f, list(b), band=2, radius=3)[0] for f, b in zip(train["frames"], train["boxes"])])
    data_s = time.time() - t0
    loss_kwargs = json.loads(args.loss_kwargs)
    loss_fns = {"factorized": FactorizationLoss(**loss_kwargs),
                "factorized_uninformative": FactorizationLoss(**{"uninformative_weight": 1.0, **loss_kwargs})}

    def norm(x):
        return x.astype("float32") / 127.5 - 1.0

    def build(factorized):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((frames_, size, size, 3))
        x = keras.layers.Conv3D(16, 3, strides=(1, 2, 2), padding="same", activation="relu")(inputs)
        x = keras.layers.Conv3D(32, 3, strides=(2, 2, 2), padding="same", activation="relu")(x)
        x = keras.layers.Conv3D(64, 3, padding="same", activation="relu")(x)
        if factorized:
            return keras.Model(inputs, ActionContextAttention(classes)(x))
        return keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.GlobalAveragePooling3D()(x)))

    def fit(variant):
        factorized = variant != "baseline"
        loss_fn = loss_fns.get(variant)
        model, opt = build(factorized), keras.optimizers.Adam(1e-3)
        x_all, xc_all, y_all = norm(train["frames"]), norm(conj), train["labels"]

        @tf.function
        def step(x, xc, y):
            with tf.GradientTape() as tape:
                if factorized:
                    out = model(tf.concat([x, xc], 0), training=True)
                    b = tf.shape(x)[0]
                    loss = loss_fn(y, ({k: v[:b] for k, v in out.items()}, {k: v[b:] for k, v in out.items()}))
                else:
                    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x, training=True)))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        rng = np.random.default_rng(0)
        for _ in range(args.steps):
            i = rng.choice(len(x_all), args.batch_size, replace=False)
            step(x_all[i], xc_all[i], y_all[i])
        return model

    def map_in_box(action_map, boxes):
        """Share of clips whose action-map argmax cell centre lies in the digit box (one cell of tolerance)."""
        n, tt, hh, ww = action_map.shape
        hits = 0
        for i in range(n):
            t, y, x = np.unravel_index(np.argmax(action_map[i]), action_map[i].shape)
            cy, cx = (y + 0.5) / hh, (x + 0.5) / ww
            window = boxes[i][t * frames_ // tt:(t + 1) * frames_ // tt]
            hits += any(b[0] - 1 / hh <= cy <= b[2] + 1 / hh and b[1] - 1 / ww <= cx <= b[3] + 1 / ww for b in window)
        return hits / n

    results, picture = {}, None
    for name in ("baseline", "factorized", "factorized_uninformative"):
        factorized = name != "baseline"
        t0 = time.time()
        model = fit(name)
        row = {"train_s": round(time.time() - t0, 1)}
        for bg, d in test.items():
            out = model(norm(d["frames"]), training=False)
            logits = out["logits"] if factorized else out
            row[f"top1_{bg}"] = float(np.mean(np.argmax(logits, -1) == d["labels"]))
            if factorized:
                amap = np.asarray(out["action_map"])[..., 0]
                row[f"action_map_in_box_{bg}"] = map_in_box(amap, d["boxes"])
                if bg == "shuffled" and name == "factorized_uninformative":
                    picture = (d["frames"][0], amap[0])
        row["drop_points"] = round(100 * (row["top1_class"] - row["top1_shuffled"]), 1)
        results[name] = row
    report = {"benchmark": "action_context", "steps": args.steps, "data_s": round(data_s, 1), "results": results,
              "claim": {name: {"map_in_box>=0.9": results[name]["action_map_in_box_shuffled"] >= 0.9,
                               "factorized_drop<=5": results[name]["drop_points"] <= 5,
                               "baseline_drop>=20": results["baseline"]["drop_points"] >= 20}
                        for name in ("factorized", "factorized_uninformative")}}
    lines = ["| model | top-1, class backgrounds | top-1, shuffled | drop (points) | action max in box (shuffled) |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['top1_class']:.3f} | {r['top1_shuffled']:.3f} | {r['drop_points']} | "
                     f"{r.get('action_map_in_box_shuffled', float('nan')):.2f} |")
    save_report("action_context", report, "\n".join(lines), args.out_dir)
    # Attention picture: the middle frame of a shuffled-background clip | the action map of its time step over it.
    clip, amap = picture
    t = amap.shape[0] // 2
    frame = clip[t * frames_ // amap.shape[0]]
    overlay = viz.attention_overlay(frame, amap[t], alpha=0.5, method="nearest")
    side_by_side = np.concatenate([frame, overlay], axis=1)
    viz.write_png(os.path.join(args.out_dir, "action_context.png"), np.repeat(np.repeat(side_by_side, 4, 0), 4, 1))


if __name__ == "__main__":
    main()
