"""VideoSoftmax: the closed-form batch update (a [B, B] coefficient matrix) vs a sample-by-sample tf.while_loop.

Both compute supp Eq. 5-6 in log space with the update before the read; the script checks that they agree and
times one training call (graph mode, `tf.function`) per batch size, in one run so the ratios are comparable.

Run: `python benchmarks/bench_video_softmax.py` (well under a minute).
"""
import json
import math
import time

import numpy as np


def main():
    import tensorflow as tf

    from kerasvid.layers import VideoSoftmax

    num_videos, decay = 1000, 0.9
    log_d, log_k = math.log(decay), math.log(1 - decay)

    def sequential(log_sigma, count, f, index):
        """Reference: one sample at a time (what a direct transcription of the equations does)."""

        def body(i, log_sigma, count, out):
            v = index[i]
            old = log_sigma[v]
            new = tf.where(count[v] > 0, tf.reduce_logsumexp(tf.stack([log_d + old, log_k + f[i]])), f[i])
            log_sigma = tf.tensor_scatter_nd_update(log_sigma, [[v]], [new])
            count = tf.tensor_scatter_nd_add(count, [[v]], [1])
            return i + 1, log_sigma, count, out.write(i, tf.exp(f[i] - new))

        n = tf.shape(f)[0]
        _, log_sigma, count, out = tf.while_loop(lambda i, *_: i < n, body,
                                                 (0, log_sigma, count, tf.TensorArray(tf.float32, n)))
        return out.stack(), log_sigma, count

    results = []
    for batch in (15, 64, 256, 1024):
        rng = np.random.default_rng(batch)
        f = tf.constant(rng.normal(0, 2, batch).astype("float32"))
        index = tf.constant(rng.integers(0, min(num_videos, batch // 3 + 1), batch).astype("int32"))
        layer = VideoSoftmax(num_videos, decay)
        layer(f[:1], index[:1], training=True)  # a seen video, so both branches of the update run
        state = (tf.Variable(layer.log_sigma.numpy()), tf.Variable(layer.count.numpy()))
        closed = tf.function(lambda f, i: layer(f, i, training=False))
        loop = tf.function(lambda f, i: sequential(state[0], state[1], f, i)[0])
        diff = float(tf.reduce_max(tf.abs(closed(f, index) - loop(f, index))))
        timing = {}
        for name, fn in (("closed_form", closed), ("while_loop", loop)):
            fn(f, index)
            repeats = 20
            start = time.perf_counter()
            for _ in range(repeats):
                fn(f, index).numpy()
            timing[name] = (time.perf_counter() - start) / repeats * 1e3
        results.append({"batch": batch, "max_abs_diff": diff, "closed_form_ms": round(timing["closed_form"], 3),
                        "while_loop_ms": round(timing["while_loop"], 3),
                        "speedup": round(timing["while_loop"] / timing["closed_form"], 2)})
    print(json.dumps(results, indent=2))
    print("\n| batch | closed form (ms) | while_loop (ms) | speed-up | max abs diff |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch']} | {r['closed_form_ms']:.3f} | {r['while_loop_ms']:.3f} | {r['speedup']:.1f}x | "
              f"{r['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()
