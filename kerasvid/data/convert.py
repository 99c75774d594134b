"""`kerasvid convert`: videos or frame folders + a label file -> sharded SequenceExample records + manifest.

Resumable: shard i holds the inputs i, i + n, i + 2n, ... of the sorted input list; it is written under a temporary
name and renamed when complete, then a small sidecar (`.kerasvid_convert/<shard>.json`) records what it holds. A
rerun keeps every shard that has both, redoes the others, and so produces the same bytes as a clean run.

Example:
    kerasvid convert --format=kinetics --labels=train.csv --input_dir=videos/ --output_dir=records/ \
        --name=train --num_shards=100 --fps=10 --short_side=256 --workers=4
"""
import concurrent.futures
import functools
import hashlib
import json
import os
import sys
import threading

from kerasvid import _locks
from kerasvid import progress as progress_lib
from kerasvid.data import sources, writer

MANIFEST = "manifest.json"
LABELS = "labels.txt"
_STATE_DIR = ".kerasvid_convert"


def Progress(total, desc, stream=None, enabled=True):  # noqa: N802 - the former class's name (conjugates uses it)
    """The progress of a conversion (`kerasvid.progress.Progress` counting videos): a bar on an interactive terminal,
    a log line at the first video and every 10% otherwise."""
    return progress_lib.Progress(total, desc, unit="videos", log_lines=10, log_first=True,
                                 stream=stream, enabled=enabled)


def _write_json_atomic(path, data):
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sidecar_path(output_dir, shard):
    return os.path.join(output_dir, _STATE_DIR, os.path.basename(shard) + ".json")


def _remove_dead_temporaries(output_dir, name):
    """Deletes hidden temporary shards left by a killed converter (their writer's pid no longer runs)."""
    import glob

    for tmp in glob.glob(os.path.join(output_dir, f".{name}-*-of-*.tfrecord.tmp-*")):
        pid = tmp.rsplit("-", 1)[-1]
        if pid.isdigit() and not _locks.pid_alive(int(pid)):
            os.remove(tmp)


def _check_stale_shards(output_dir, name, num_shards, overwrite):
    """Shards of the same split with another shard count would be read together with the new ones."""
    import glob

    _remove_dead_temporaries(output_dir, name)
    stale = [p for p in sorted(glob.glob(writer.file_pattern(output_dir, name)))
             if not p.endswith(f"-of-{num_shards:05d}.tfrecord")]
    if stale and not overwrite:
        raise ValueError(f"{output_dir!r} already holds shards of split {name!r} with another shard count "
                         f"({os.path.basename(stale[0])}, ...); pass overwrite=True (--overwrite) or use a new "
                         f"output directory.")
    for p in stale:
        os.remove(p)


def _relative(path, input_dir):
    return (os.path.relpath(path, input_dir) if input_dir else path).replace(os.sep, "/")


def _example(item, label_idx, label_names, frames, fps, input_dir, quality):
    from kerasvid.data import schema

    return schema.make_sequence_example(
        [writer.encode_jpeg(f, quality) for f in frames], label_idx, label_text=[label_names[i] for i in label_idx],
        video_id=item.video_id, filename=_relative(item.source, input_dir), fps=fps, height=frames.shape[1],
        width=frames.shape[2])


def _present(item):
    return item.exists and os.path.exists(item.source)


def _input_record(item, labels, input_dir):
    """What a shard's content depends on for one input: id, file, labels, and the file's size and mtime."""
    entry = {"id": item.video_id, "source": _relative(item.source, input_dir), "labels": labels}
    if labels is not None:
        st = os.stat(item.source)
        entry.update(size=st.st_size if os.path.isfile(item.source) else None, mtime_ns=st.st_mtime_ns)
    return entry


def _check_label_names(label_names):
    for name in label_names:
        if not name or name != name.strip() or "\n" in name or "\r" in name:
            raise ValueError(f"Class name {name!r} cannot be written to labels.txt (empty, surrounding spaces or a "
                             f"line break).")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"The label map has duplicate class names: "
                         f"{sorted({n for n in label_names if label_names.count(n) > 1})[:5]}.")


def _check_label_map(output_dir, name, label_names, overwrite):
    """Before any shard is written: the output directory's label map (manifest.json, labels.txt) must be this one.

    A rerun of the only split converted so far may change it with `overwrite`; other splits converted with another
    map are never mixed with this one.
    """
    path = os.path.join(output_dir, MANIFEST)
    old_map, others = None, []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        old_map = old.get("label_map")
        others = sorted(k for k in old.get("splits", {}) if k != name)
    elif os.path.exists(os.path.join(output_dir, LABELS)):
        with open(os.path.join(output_dir, LABELS), encoding="utf-8") as f:
            old_map = [line.rstrip("\n") for line in f if line.strip()]
    if old_map is None or old_map == list(label_names):
        return
    described = f"{len(old_map)} classes ({', '.join(map(repr, old_map[:3]))}{', ...' if len(old_map) > 3 else ''})"
    new = f"{len(label_names)} classes ({', '.join(map(repr, label_names[:3]))}{', ...' if len(label_names) > 3 else ''})"
    if others:
        raise ValueError(f"{output_dir} holds split(s) {others} converted with another label map ({described}) than "
                         f"this one ({new}); convert split {name!r} with --label_map="
                         f"{os.path.join(output_dir, LABELS)} (the map those splits used), or use a new --output_dir.")
    if not overwrite:
        raise ValueError(f"{output_dir} was converted with another label map ({described}) than this one ({new}); "
                         f"pass --overwrite to rewrite split {name!r} with the new map, or use a new --output_dir.")


def _differences(old, new):
    keys = sorted(set(old) | set(new), key=str)
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _describe_input_change(old_inputs, new_inputs):
    if not isinstance(old_inputs, list) or not all(isinstance(x, dict) for x in old_inputs):
        return "inputs recorded by an older kerasvid"
    old_ids, new_ids = [x.get("id") for x in old_inputs], [x["id"] for x in new_inputs]
    if old_ids != new_ids:
        gone, added = sorted(set(old_ids) - set(new_ids)), sorted(set(new_ids) - set(old_ids))
        return f"other inputs (removed {gone[:3]}, added {added[:3]})"
    for o, n in zip(old_inputs, new_inputs):
        if o != n:
            return f"input {n['id']!r} changed ({_differences(o, n)})"
    return "other inputs"


def _usable_classes(items, present, fps, source_fps):
    """The derived label map: the sorted classes that have at least one input that decodes.

    The label of a skipped input must not become a class, and which inputs decode is only known by decoding them:
    each class's inputs are tried in order until one decodes (an input that decodes counts for all its labels), so
    this costs about one decode per class. Returns (class names, {input number: skip reason} of the inputs that
    failed; they are not decoded again).
    """
    by_label = {}
    for k, item in enumerate(items):
        if present[k]:
            for label in item.labels:
                by_label.setdefault(label, []).append(k)
    good_labels, failed = set(), {}
    for label in sorted(by_label):
        for k in by_label[label]:
            if label in good_labels:
                break
            if k in failed:
                continue
            try:
                sources.read_source(items[k], fps, source_fps)
            except sources.SkipInput as e:
                failed[k] = str(e)
            else:
                good_labels.update(items[k].labels)
    return sorted(good_labels), failed


def _one_writer(convert_fn):
    """Runs `convert_fn` holding the output directory's lock: two conversions into one directory at once would
    each check the label map before the other wrote it, and the manifest would keep one of their splits."""

    @functools.wraps(convert_fn)
    def locked(items, output_dir, name="train", *args, **kwargs):
        output_dir = os.path.abspath(output_dir)
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise ValueError(f"The output directory {output_dir!r} is a file.")
        with _locks.DirectoryLock(output_dir, f"kerasvid convert (split {name!r})"):
            return convert_fn(items, output_dir, name, *args, **kwargs)

    return locked


@_one_writer
def convert(items, output_dir, name="train", num_shards=1, label_names=None, fps=None, short_side=None,
            jpeg_quality=90, source_fps=None, input_dir=None, num_workers=2, progress=True, overwrite=False,
            settings=None):
    """Converts `items` (from `sources.parse_label_file`) into `num_shards` shards of split `name`.

    A shard's bytes are a function of what its sidecar records: the settings (including the label map) and, per
    input, the id, file, label indices, size and modification time. A rerun keeps a shard only when all of these
    are unchanged; otherwise it refuses, or with `overwrite` rewrites the shard.

    Args:
        items: list of `sources.Item`, in the order that defines the shard assignment (sorted by id).
        output_dir: output directory (shards, `manifest.json`, `labels.txt`, the hidden resume state).
        name: split name (a plain file-name prefix).
        num_shards: number of shards.
        label_names: class names in index order; None -> the sorted names of the inputs that exist and decode
            (the label of a skipped input never becomes a class; see `_usable_classes`).
        fps: resample every video to this rate (None: keep the source's frames).
        short_side: resize frames so their shorter side is this (None: keep).
        jpeg_quality: JPEG quality of the stored frames.
        source_fps: frame rate of frame folders (needed with `fps`; stored as `video/fps`).
        input_dir: root that `video/filename` is made relative to.
        num_workers: shards converted in parallel (threads: PyAV and TF release the GIL while decoding/encoding).
        progress: show progress on stderr.
        overwrite: rewrite this split's shards written with other settings, inputs or shard count (instead of
            refusing).
        settings: extra JSON-able settings recorded in the manifest (e.g. the label file).

    Returns:
        The manifest entry of this split (also merged into `<output_dir>/manifest.json`; the label map is written
        to `<output_dir>/labels.txt`, one class per line, which `train/main.py` reads beside the shards).

    Raises:
        ValueError: bad arguments, no input that exists, a label missing from the label map (naming file and
            label), existing shards written with other settings (without `overwrite`), or other splits of
            `output_dir` converted with another label map.
    """
    writer.check_split_name(name)
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"`num_shards` must be a positive int, got {num_shards!r}.")
    for flag, value in (("fps", fps), ("source_fps", source_fps)):
        if value is not None and not (0 < value < float("inf")):  # NaN fails the comparison too
            raise ValueError(f"`{flag}` must be a positive finite number, got {flag}={value}.")
    if short_side is not None and short_side < 8:
        raise ValueError(f"`short_side` must be >= 8, got {short_side}.")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"`jpeg_quality` must be in [1, 100], got {jpeg_quality}.")
    if not items:
        raise ValueError("No inputs to convert (the label file lists no videos).")
    present = [_present(item) for item in items]
    if not any(present):
        raise ValueError(f"None of the {len(items)} listed inputs exists (e.g. {items[0].source!r}); check "
                         f"--input_dir and the paths in the label file.")
    derived = label_names is None
    # Why an input is skipped, when that is known before converting (a missing input, whatever its label, and in a
    # derived label map the inputs that failed the probe: see `_usable_classes`).
    known_skips = {k: "missing input" for k, p in enumerate(present) if not p}
    if derived:
        label_names, failed = _usable_classes(items, present, fps, source_fps)
        known_skips.update(failed)
        if not label_names:
            reasons = "; ".join(f"{_relative(items[k].source, input_dir)}: {r}" for k, r in sorted(failed.items())[:3])
            raise ValueError(f"None of the {len(items)} listed inputs could be converted, nothing was written "
                             f"({reasons}{'; ...' if len(failed) > 3 else ''}).")
    else:
        label_names = list(label_names)
    _check_label_names(label_names)
    usable = [k for k in range(len(items)) if k not in known_skips]
    found = iter(sources.label_indices([items[k] for k in usable], label_names))
    indices = [None] * len(items)
    for k in usable:
        indices[k] = next(found)
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"The output directory {output_dir!r} is a file.")
    _check_label_map(output_dir, name, label_names, overwrite)
    os.makedirs(os.path.join(output_dir, _STATE_DIR), exist_ok=True)
    _check_stale_shards(output_dir, name, num_shards, overwrite)
    config = {"fps": fps, "short_side": short_side, "jpeg_quality": int(jpeg_quality), "source_fps": source_fps,
              "num_shards": num_shards, "label_map_sha256": hashlib.sha256(
                  "\n".join(label_names).encode("utf-8")).hexdigest(), "num_classes": len(label_names)}
    config.update(settings or {})

    shards = [writer.shard_path(output_dir, name, i, num_shards) for i in range(num_shards)]
    members = [[k for k in range(len(items)) if writer.shard_of(k, num_shards) == i] for i in range(num_shards)]
    inputs = [[_input_record(items[k], indices[k], input_dir) for k in members[i]] for i in range(num_shards)]
    bar = Progress(len(items), f"convert {name}", enabled=progress)
    results = [None] * num_shards
    todo = []
    for i, shard in enumerate(shards):
        side = _sidecar_path(output_dir, shard)
        if os.path.exists(shard) and os.path.exists(side):
            with open(side, encoding="utf-8") as f:
                done = json.load(f)
            if done.get("settings") == config and done.get("inputs") == inputs[i]:
                results[i] = done
                bar.update(len(members[i]))
                continue
            if not overwrite:
                what = (f"other settings ({_differences(done.get('settings') or {}, config)})"
                        if done.get("settings") != config else _describe_input_change(done.get("inputs"), inputs[i]))
                raise ValueError(f"Shard {shard} was written with {what}; pass --overwrite to rewrite it, or use a "
                                 f"new --output_dir.")
            os.remove(side)  # the shard is replaced atomically below; without its sidecar it is never kept
        todo.append(i)

    def run(i):
        converted, skipped = [], []

        def examples():
            for k in members[i]:
                item = items[k]
                try:
                    if indices[k] is None:
                        raise sources.SkipInput(known_skips[k])
                    frames, rate = sources.read_source(item, fps, source_fps)
                    frames = sources.resize_short_side_antialiased(frames, short_side)
                    ex = _example(item, indices[k], label_names, frames, rate, input_dir, jpeg_quality)
                except sources.SkipInput as e:
                    skipped.append({"video_id": item.video_id, "input": _relative(item.source, input_dir),
                                    "reason": str(e)})
                else:
                    converted.append({"video_id": item.video_id, "labels": indices[k], "num_frames": len(frames)})
                    yield ex
                finally:
                    bar.update()

        count = writer.write_shard(shards[i], examples())
        done = {"shard": os.path.basename(shards[i]), "num_records": count, "inputs": inputs[i],
                "converted": converted, "skipped": skipped, "settings": config}
        _write_json_atomic(_sidecar_path(output_dir, shards[i]), done)
        return i, done

    if todo:
        with concurrent.futures.ThreadPoolExecutor(max(1, min(num_workers, len(todo)))) as pool:
            for i, done in pool.map(run, todo):
                results[i] = done

    entry = _split_entry(results, label_names, config)
    if derived:
        entry["dropped_classes"] = sorted({label for k in known_skips for label in items[k].labels} -
                                          set(label_names))
    _merge_manifest(output_dir, name, entry, label_names)
    return entry


def _split_entry(results, label_names, config):
    per_class = {n: 0 for n in label_names}
    converted = [c for r in results for c in r["converted"]]
    for c in converted:
        for i in c["labels"]:
            per_class[label_names[i]] += 1
    skipped = sorted((s for r in results for s in r["skipped"]), key=lambda s: s["video_id"])
    return {"num_videos": len(converted), "num_frames": sum(c["num_frames"] for c in converted),
            "per_class": per_class, "skipped": skipped,
            "shards": [{"file": r["shard"], "num_records": r["num_records"]} for r in results],
            "settings": config}


_MANIFEST_LOCK = threading.Lock()


def _merge_manifest(output_dir, name, entry, label_names):
    path = os.path.join(output_dir, MANIFEST)
    with _MANIFEST_LOCK:
        manifest = {"format": "kerasvid SequenceExample (Model Garden / DMVR keys)", "label_map": label_names,
                    "splits": {}}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
            if old.get("label_map") == label_names:
                manifest["splits"] = old.get("splits", {})
            # else: `_check_label_map` allowed it: this split was the only one and is rewritten with the new map.
        manifest["splits"][name] = entry
        with open(os.path.join(output_dir, f".{LABELS}.tmp-{os.getpid()}"), "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in label_names))
        os.replace(f.name, os.path.join(output_dir, LABELS))
        _write_json_atomic(path, manifest)
    return manifest


def _build_command():
    """The flags of `kerasvid convert` (`kerasvid.command_flags.Command`)."""
    from absl import flags

    from kerasvid import command_flags

    command = command_flags.Command(
        "kerasvid convert", __doc__.split("\n\n")[0], epilog=sources.LIST_FORMAT + "\n\nOutput: "
        "<output_dir>/<name>-*-of-*.tfrecord shards, labels.txt (the label map,\none class per line: train/main.py "
        "reads it beside the shards) and manifest.json (counts, and the\nskipped inputs with their reason).")
    fv = command.flag_values
    flags.DEFINE_enum("format", None, list(sources.LABEL_FORMATS), "label file format", flag_values=fv)
    flags.DEFINE_string("labels", None, "label file (CSV / JSON / list, see below)", flag_values=fv)
    flags.DEFINE_string("input_dir", None, "root of the videos or frame folders", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "where the shards, labels.txt and manifest.json go", flag_values=fv)
    flags.DEFINE_string("name", "train", "split name, the shard prefix", flag_values=fv)
    flags.DEFINE_string("split", None, "Kinetics: keep rows of this `split` value", flag_values=fv)
    flags.DEFINE_string("label_map", None, "class names (txt: one per line; JSON list or {name: index}); default: "
                        "the sorted names of the listed inputs that exist", flag_values=fv)
    flags.DEFINE_integer("num_shards", 10, "number of shards", flag_values=fv)
    flags.DEFINE_float("fps", None, "resample to this frame rate (default: keep)", flag_values=fv)
    flags.DEFINE_float("source_fps", None, "frame rate of frame folders", flag_values=fv)
    flags.DEFINE_integer("short_side", None, "resize the shorter side to this (default: keep)", flag_values=fv)
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the frames", flag_values=fv)
    flags.DEFINE_integer("workers", max(1, (os.cpu_count() or 2)), "parallel decoding processes", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "rewrite this split's shards written with other settings, inputs or "
                      "shard count", flag_values=fv)
    flags.DEFINE_bool("no_progress", False, "no progress lines", flag_values=fv)
    return command


_MAX_REASONS = 20


def main(argv=None):
    """Entry point of `kerasvid convert` (argv without the subcommand); returns the exit status."""
    args = _build_command().parse(sys.argv[1:] if argv is None else argv,
                                 required=("format", "labels", "input_dir", "output_dir"))
    try:
        items = sources.parse_label_file(args.format, args.labels, args.input_dir, args.split)
        if args.label_map and not os.path.isfile(args.label_map):
            raise ValueError(f"--label_map={args.label_map!r} does not exist.")
        label_names = sources.load_label_map(args.label_map) if args.label_map else None
        if args.format == "list" and label_names is not None:
            items = sources.resolve_list_labels(items, label_names)  # labels may be written as indices
        entry = convert(items, args.output_dir, args.name, args.num_shards, label_names, args.fps, args.short_side,
                        args.jpeg_quality, args.source_fps, args.input_dir, args.workers, not args.no_progress,
                        args.overwrite, {"format": args.format, "labels": os.path.abspath(args.labels)})
    except ValueError as e:
        print(f"kerasvid convert: error: {e}", file=sys.stderr)
        return 2
    skipped = entry["skipped"]
    for s in skipped[:_MAX_REASONS]:
        print(f"kerasvid convert: skipped {s['input']}: {s['reason']}", file=sys.stderr)
    if len(skipped) > _MAX_REASONS:
        print(f"kerasvid convert: ... and {len(skipped) - _MAX_REASONS} more skipped inputs (all listed in "
              f"{os.path.join(os.path.abspath(args.output_dir), MANIFEST)})", file=sys.stderr)
    for cls in entry.get("dropped_classes", []):
        print(f"kerasvid convert: class {cls!r} is not in the label map: every input of it was skipped",
              file=sys.stderr)
    # The end of every data command (here, extract.main): a count line, then one error line and exit 1 when nothing
    # was made; the counts and wording differ per command.
    print(json.dumps({"name": args.name, "num_videos": entry["num_videos"], "skipped": len(skipped),
                      "output_dir": os.path.abspath(args.output_dir)}))
    if entry["num_videos"] == 0:
        print(f"kerasvid convert: error: no video of split {args.name!r} could be converted ({len(skipped)} "
              f"skipped, reasons above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
