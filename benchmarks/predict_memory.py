"""Peak memory of `kerasvid predict` on a 4 s and a 40 s 720p video (the 40 s one must stay within 1.3x).

Synthesizes two 1280x720 25 fps H.264 videos with PyAV (libx264, preset ultrafast; a moving gradient and a moving
square, so every frame differs), exports a C2D ResNet-18 classifier (8 x 112 x 112, random weights), then runs each
measurement in its own subprocess and reads that subprocess's peak resident set size
(`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`, read by a fresh wrapper process per run, so runs do not mask
each other):

- `predict`: `python -m kerasvid.cli predict --saved_model ... video` (SavedModel load + seek-and-decode);
- `predict --num_clips=10`: ten evenly spaced clips;
- `full decode` (reference, what `predict` did before): every frame decoded into a list, no model.

    python benchmarks/predict_memory.py [--out_dir DIR] [--keep]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import save_report  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 25
FULL_DECODE = ("import av, sys\n"
               "with av.open(sys.argv[1]) as c:\n"
               "    frames = [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]\n"
               "print(len(frames))\n")
# Runs argv[1:] as a child and prints the child's peak RSS in MiB (ru_maxrss is in KiB on Linux).
WRAPPER = ("import resource, subprocess, sys, time\n"
           "start = time.time()\n"
           "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "if r.returncode: sys.exit(r.stderr[-3000:])\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, time.time() - start)\n")


def write_video(path, seconds):
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
        for i in range(int(seconds * FPS)):
            frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            frame[..., 0] = (xs + 4 * i) % 256
            frame[..., 1] = (ys + 2 * i) % 256
            frame[..., 2] = 128
            x0, y0 = (16 * i) % (WIDTH - 100), (8 * i) % (HEIGHT - 100)
            frame[y0:y0 + 100, x0:x0 + 100] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def export_model(path):
    import keras

    from kerasvid import export, zoo

    keras.utils.set_random_seed(0)
    model = zoo.c2d_resnet18(num_classes=10, input_shape=(8, 112, 112, 3))
    export.export_saved_model(model, path, 8, (112, 112), [f"class{i}" for i in range(10)])
    return path


def peak_rss(command):
    env = {**os.environ, "PYTHONPATH": _REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{command} failed: {out.stderr[-3000:]}")
    mib, seconds = out.stdout.split()
    return float(mib), float(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=None, help="report directory (default benchmarks/results)")
    parser.add_argument("--work_dir", default=None, help="where the videos and the export go (default: a temp dir)")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="predict_memory_")
    os.makedirs(work, exist_ok=True)
    start = time.time()
    videos = {s: os.path.join(work, f"video_{s}s.mp4") for s in (4, 40)}
    for seconds, path in videos.items():
        if not os.path.exists(path):
            write_video(path, seconds)
    saved = os.path.join(work, "export")
    if not os.path.exists(saved):
        export_model(saved)
    prepared = time.time() - start
    rows = []
    runs = {
        "predict": lambda v: [sys.executable, "-m", "kerasvid.cli", "predict", "--saved_model", saved, v],
        "predict --num_clips=10": lambda v: [sys.executable, "-m", "kerasvid.cli", "predict", "--saved_model", saved,
                                             "--num_clips=10", v],
        "full decode (reference)": lambda v: [sys.executable, "-c", FULL_DECODE, v],
    }
    for name, command in runs.items():
        for seconds, path in videos.items():
            mib, wall = peak_rss(command(path))
            rows.append({"run": name, "video_s": seconds, "frames": seconds * FPS, "peak_rss_mib": round(mib, 1),
                         "wall_s": round(wall, 2), "video_mib": round(os.path.getsize(path) / 2 ** 20, 1)})
    ratios = {}
    for name in runs:
        short, long_ = (next(r for r in rows if r["run"] == name and r["video_s"] == s) for s in (4, 40))
        ratios[name] = round(long_["peak_rss_mib"] / short["peak_rss_mib"], 3)
    data = {"resolution": f"{WIDTH}x{HEIGHT}", "fps": FPS, "model": "c2d_resnet18 8x112x112 (random weights)",
            "rows": rows, "ratio_40s_over_4s": ratios, "within_1.3x": ratios["predict"] <= 1.3,
            "prepare_s": round(prepared, 1), "note": "wall times measured under load on a shared machine"}
    lines = ["| run | video | frames | peak RSS (MiB) | wall (s) |", "|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['video_s']} s 720p | {r['frames']} | {r['peak_rss_mib']:.0f} | {r['wall_s']:.1f} |"
              for r in rows]
    lines += ["", "| run | peak RSS 40 s / 4 s |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in ratios.items()]
    save_report("predict_memory", data, "\n".join(lines), args.out_dir)
    return 0 if data["within_1.3x"] else 1


if __name__ == "__main__":
    sys.exit(main())
