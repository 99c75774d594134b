"""The CPNet claim in miniature: correspondences see motion direction that C2D's temporal pooling cannot.

    python benchmarks/cpnet_motion.py [--train 1024] [--test 256] [--epochs 10] [--seeds 0]

Data: `kerasvid.data.synthetic.render_moving_digits` with 4 classes (a digit moving right, down, left, up over
textured noise; 8 frames of 32x32). Right/left and down/up are time-reversals of each other, and a clip reversed
in time is a clip of the opposite class: a C2D network (per-frame convolutions, average over T, H, W) gives a clip
and its reversal the same output, so it can at best tell the axis, not the direction (50% accuracy).
The CP variant is the same network with one `CPModule` (k=4) after its second conv stage (16x16 map). Both are trained with
Adam for the same number of epochs and evaluated on held-out clips (a different seed). Prints JSON + markdown.
"""
import argparse
import json
import os
import time

import keras
import numpy as np

from kerasvid.data.synthetic import render_moving_digits
from kerasvid.layers import CPModule

NUM_CLASSES = 4


def small_video_net(with_cp, frames=8, size=32, k=4, name=None):
    """conv(16, /2) - conv(32) - [CPModule at 16x16] - conv(64, /2) - average over T, H, W - dense."""
    inputs = keras.Input((frames, size, size, 3))
    x = inputs
    for i, (width, stride) in enumerate(((16, 2), (32, 1), (64, 2))):
        x = keras.layers.Conv3D(width, (1, 3, 3), strides=(1, stride, stride), padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        if with_cp and i == 1:
            x = CPModule(k=k, momentum=0.9, name="cp")(x)  # after the stage, before its ReLU (as in CPNet)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling3D(name="pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or ("cp_net" if with_cp else "c2d_net"))


def clips(num, seed, frames=8, size=32):
    data = render_moving_digits(num_videos=num, num_classes=NUM_CLASSES, num_frames=frames, height=size,
                                width=size, seed=seed)
    return data["frames"].astype("float32") / 255.0, data["labels"].astype("int32")


def train_and_eval(with_cp, train, test, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = small_video_net(with_cp)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(*train, batch_size=16, epochs=epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    _, test_acc = model.evaluate(*test, batch_size=64, verbose=0)
    # C2D sanity check: a clip and its time-reversal get the same logits (so direction is invisible to it).
    x = test[0][:8]
    gap = float(np.abs(model(x, training=False).numpy() - model(x[:, ::-1], training=False).numpy()).max())
    return {"model": model.name, "seed": seed, "params": model.count_params(), "epochs": epochs,
            "train_acc": round(float(history.history["accuracy"][-1]), 4), "test_acc": round(float(test_acc), 4),
            "reversal_logit_gap": round(gap, 5), "train_s": round(seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--test", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="benchmarks/results/cpnet_motion.json")
    args = parser.parse_args()
    train = clips(args.train, seed=1000)
    test = clips(args.test, seed=2000)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for with_cp in (False, True):
            rows.append(train_and_eval(with_cp, train, test, args.epochs, seed))
            print(json.dumps(rows[-1]), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "chance": 1 / NUM_CLASSES, "axis_only_ceiling": 0.5}, f, indent=1)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
