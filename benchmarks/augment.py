"""Cost of clip-consistent augmentation (`kerasvid.data.augment`) in the training pipeline: clips/s.

The same `kerasvid.data.video_dataset` (synthetic moving-digit records, 8 frames at 112x112, batch 8, training crop
and flip) without augmentation, with RandAugment (2 ops, magnitude 0.5), random erasing (p = 0.25), MixUp + CutMix,
and all of them; each figure is the median of 3 timed passes over `--batches` batches after a warm-up batch (the
warm-up, which traces the augmentation graph, is reported apart). Ratios to "none" are the comparable figures on a
loaded machine.

Run: `python benchmarks/augment.py [--batches 30]`; prints JSON and a markdown table, saves
benchmarks/results/augment.json.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _report import save_report  # noqa: E402

SETTINGS = {
    "none": None,
    "randaugment 2 x 0.5": {"randaugment": (2, 0.5)},
    "random erasing 0.25": {"random_erasing": 0.25},
    "mixup 0.8 + cutmix 1.0": {"mixup": 0.8, "cutmix": 1.0},
    "all": {"randaugment": (2, 0.5), "random_erasing": 0.25, "mixup": 0.8, "cutmix": 1.0},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args()

    from kerasvid.data import pipeline, synthetic

    with tempfile.TemporaryDirectory() as tmp:
        pattern = synthetic.write_synthetic_dataset(tmp, num_videos=32, num_frames=16, height=128, width=128,
                                                    num_shards=2)
        rows = {}
        for name, spec in SETTINGS.items():
            ds = pipeline.video_dataset(pattern, num_frames=8, image_size=(112, 112), batch_size=args.batch_size,
                                        num_classes=4, seed=0, augment=spec)
            it = iter(ds)
            start = time.time()
            next(it)
            warmup = time.time() - start
            rates = []
            for _ in range(3):
                start = time.time()
                for _ in range(args.batches):
                    next(it)
                rates.append(args.batches * args.batch_size / (time.time() - start))
            rows[name] = {"clips_per_s": sorted(rates)[1], "warmup_s": warmup}
    base = rows["none"]["clips_per_s"]
    for row in rows.values():
        row["ratio_to_none"] = row["clips_per_s"] / base
    data = {"batches": args.batches, "batch_size": args.batch_size, "clip": "8x112x112", "cpu_count": os.cpu_count(),
            "results": rows}
    table = "\n".join(["| augmentation | clips/s | ratio to none | warm-up (s) |", "|---|---|---|---|"] + [
        f"| {name} | {r['clips_per_s']:.1f} | {r['ratio_to_none']:.2f} | {r['warmup_s']:.1f} |"
        for name, r in rows.items()])
    save_report("augment", data, table)


if __name__ == "__main__":
    main()
