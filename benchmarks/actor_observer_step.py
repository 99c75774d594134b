"""One actor-observer training step with the real ResNet-152 builder at 224x224 (the paper's setting, small batch).

Builds `actor_observer_resnet152(num_classes=157)`, runs `--steps` SGD steps of `actor_observer_objective`
(three VideoSoftmax layers, dist_ratio, ActorObserverLoss, equalize_grad_norm) on random frames, and reports the
build time, the step times (first = tracing + running), whether every trunk/selector variable got a gradient and the
norms of the gradients reaching (d_pos, d_neg, p_x, p_y, p_z) after balancing (they must be equal).

Run: `python benchmarks/actor_observer_step.py [--batch 2] [--steps 2]`.
"""
import argparse
import json
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from kerasvid.layers import VideoSoftmax
    from kerasvid.losses import ActorObserverLoss, actor_observer_objective
    from kerasvid.models.actor_observer import actor_observer_resnet152

    start = time.time()
    model = actor_observer_resnet152(num_classes=157, input_shape=(1, args.size, args.size, 3))
    build_s = time.time() - start
    probs = {}

    # The same recording subclass as tests/test_actor_observer.py's Spy (a benchmark does not import the tests).
    class RecordingVideoSoftmax(VideoSoftmax):
        def call(self, f, video_index, training=None):
            probs[self.name] = super().call(f, video_index, training=training)
            return probs[self.name]

    softmaxes = [RecordingVideoSoftmax(num_videos=4, name=f"p_{s}") for s in "xyz"]
    loss = ActorObserverLoss()
    optimizer = keras.optimizers.SGD(3e-5, momentum=0.9)
    rng = np.random.default_rng(0)
    step_s, report = [], {}
    for step in range(args.steps):
        frames = [rng.normal(0, 1, (args.batch, 1, args.size, args.size, 3)).astype("float32") for _ in range(3)]
        index = tf.constant(rng.integers(0, 4, args.batch), tf.int32)
        t0 = time.time()
        with tf.GradientTape() as tape:
            outputs = model(frames, training=True)
            result = actor_observer_objective(outputs, index, softmaxes, loss)
        watched = [outputs["d_pos"], outputs["d_neg"]] + [probs[f"p_{s}"] for s in "xyz"]
        *grads, g_pos, g_neg, g_x, g_y, g_z = tape.gradient(result["objective"],
                                                            model.trainable_variables + watched)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
        step_s.append(time.time() - t0)
        report = {
            "objective": float(result["objective"]),
            "variables_without_gradient": [v.path for v, g in zip(model.trainable_variables, grads)
                                           if g is None and "predictions" not in v.path],
            "balanced_grad_norms": [float(tf.norm(g)) for g in (g_pos, g_neg, g_x, g_y, g_z)],
        }
    report.update({"input": [1, args.size, args.size, 3], "batch": args.batch, "num_params": model.count_params(),
                   "build_s": round(build_s, 1), "step_s": [round(s, 2) for s in step_s]})
    print(json.dumps(report, indent=2))
    norms = report["balanced_grad_norms"]
    print("\n| ResNet-152 actor-observer, batch %d at %dx%d | value |\n|---|---|" % (args.batch, args.size, args.size))
    print(f"| build (s) | {report['build_s']} |")
    print(f"| first step incl. tracing (s) | {report['step_s'][0]} |")
    if len(step_s) > 1:
        print(f"| later step (s) | {report['step_s'][-1]} |")
    print(f"| gradient norms d_pos, d_neg, p_x, p_y, p_z | {', '.join(f'{n:.4g}' for n in norms)} |")
    print(f"| variables without gradient | {len(report['variables_without_gradient'])} |")


if __name__ == "__main__":
    main()
