"""Feature extraction: one feature array per video from a zoo model's named endpoint (`kerasvid extract`).

    kerasvid extract --model=i3d --weights=rgb.weights.h5 --endpoint=Mixed_5c --num_frames=64 \\
        --image_size=224,224 --output_dir=features/ videos/*.mp4
    kerasvid extract --model=c2d_resnet50 --weights=imagenet --endpoint=res5 --records='data/train-*' \\
        --output_dir=features/

Endpoints are the backbones' own names: ResNet `res2`..`res5` (`kerasvid.backbones.resnet`), I3D `Conv3d_1a_7x7`
.. `Mixed_5c` (`kerasvid.backbones.i3d`, the factorization paper extracts `Mixed_5c`), BN-Inception `conv2_3x3`,
`inception_3c` .. `inception_5b`, `global_pool` (`kerasvid.backbones.bn_inception`); any layer name also works.

Clips are sampled and preprocessed exactly as evaluation does (`kerasvid.data`: `num_clips` evenly spaced dense
clips, or with `--num_clips=0` consecutive non-overlapping clips covering the whole video; short side resized, then
`num_crops` crops; `normalization`), decoded in one pass that holds only the frames of clips not yet computed, so
memory does not grow with the video's length (only the features do). Each video gives a float32 array
`[V, ...endpoint shape]` (V = clips x crops, clip-major), or `[V, C]` with `--pool=avg`, saved as
`<output_dir>/<id>.npy` or (`--format=tfrecord`) `<id>.tfrecord` holding one `tf.train.Example` (`features` flat
float list, `shape`, `video/id`, `video/filename`).

Files are written under a temporary name and renamed, so a killed run leaves no partial feature file; a rerun skips
every video whose file exists and finishes the rest. `manifest.json` lists the settings, the videos written and the
videos skipped with the reason (already extracted, or the decoding error). A rerun with other settings into the same
`--output_dir` is refused (one directory, one setting). Jobs running at the same time into one `--output_dir` merge
their entries into `manifest.json` under a lock (`.manifest.lock`), so none is lost.

Bad inputs are skipped and counted, the others extracted: a video `kerasvid convert` would refuse (truncated, one
frame, a still image renamed `.mp4`: `kerasvid.data.video_files.check_frames`), a FIFO or other non-regular file
(it would block), a record shard that is truncated (its records before the damage are extracted). The last line
counts what was written, skipped and failed; the exit status is 1 when every input failed.
"""
import contextlib
import json
import os
import re
import sys


MANIFEST = "manifest.json"
FORMATS = ("npy", "tfrecord")


# ----- endpoints ---------------------------------------------------------------------------------------------------
def known_endpoints():
    """The backbones' endpoint names (ResNet, I3D, BN-Inception), in order."""
    from kerasvid.backbones import bn_inception, i3d, resnet

    return tuple(resnet.STAGE_NAMES) + tuple(i3d.I3D_ENDPOINTS) + tuple(bn_inception.ENDPOINTS)


def _matching_layers(model, endpoint):
    names = [layer.name for layer in model.layers]
    if endpoint in names:
        return [endpoint]
    stage = re.fullmatch(r"res([2-5])", endpoint)
    if stage:  # ResNet stage output = the last block's `_out` activation (after any inserted module)
        blocks = [n for n in names if re.fullmatch(rf"conv{stage.group(1)}_block\d+_out", n)]
        return blocks[-1:]
    # I3D units end in `_relu`, mixed blocks are `<stream>_i3d_<block>`; BN-Inception blocks end in `_output`.
    pattern = re.compile(rf"(.+_)?{re.escape(endpoint)}(_relu|_output)?")
    return [n for n in names if pattern.fullmatch(n)]


def endpoint_model(model, endpoint):
    """A `keras.Model` from `model`'s (single) input to its endpoint `endpoint` (same weights, not copied).

    The endpoint is searched in `model` and then in its nested functional models (e.g. the actor-observer trunk).

    Raises:
        ValueError: unknown or ambiguous endpoint (the message lists the endpoints the model has), or a model with
            more than one input.
    """
    import keras

    bases = [model] + [layer for layer in model.layers if isinstance(layer, keras.Model)]
    for base in bases:
        found = _matching_layers(base, endpoint)
        if len(found) > 1:
            raise ValueError(f"--endpoint={endpoint!r} is ambiguous in model {model.name!r}: layers {found}; pass "
                             f"one of these layer names instead.")
        if found:
            if len(base.inputs) != 1:
                raise ValueError(f"Feature extraction needs a model with one frames input; {base.name!r} takes "
                                 f"{[t.name for t in base.inputs]} (e.g. build one stream: --model_kwargs="
                                 f"\"streams=('rgb',)\").")
            return keras.Model(base.inputs, base.get_layer(found[0]).output, name=f"{model.name}_{endpoint}")
    available = [e for e in known_endpoints() if any(len(_matching_layers(b, e)) == 1 for b in bases)]
    raise ValueError(f"Unknown --endpoint={endpoint!r} for model {model.name!r}; its endpoints are {available} "
                     f"(or any layer name).")


# ----- clips -------------------------------------------------------------------------------------------------------
def video_file_clip_batches(path, num_frames, stride=1, num_clips=1, sampler="dense", batch_clips=8, stats=None):
    """Yields uint8 `[b, T, H, W, 3]` RGB batches of the clips of a video file (`samplers.video_clip_indices`),
    decoding it once and holding only the frames of the clips not yet yielded (`video_files.stream_clips`)."""
    from kerasvid.data import samplers, video_files

    n = video_files.count_frames(path)  # refuses what `kerasvid convert` refuses (`video_files.check_frames`)
    try:
        idx = samplers.video_clip_indices(n, num_frames, stride, num_clips, sampler)
        yield from video_files.stream_clips(path, idx, batch_clips, stats)
    except video_files.WrongFrameCount as e:  # the count was wrong: the caller restarts on the decoded count
        video_files.check_frame_count(path, e.seen, decoded=True)
        raise _Restart(samplers.video_clip_indices(e.seen, num_frames, stride, num_clips, sampler))


class _Restart(Exception):
    """Restart a video's extraction on corrected clip indices (its frame count was wrong)."""

    def __init__(self, idx):
        super().__init__("frame count in the header was wrong")
        self.idx = idx


def record_clip_batches(serialized, num_frames, stride=1, num_clips=1, sampler="dense", batch_clips=8):
    """Yields uint8 `[b, T, H, W, 3]` batches of the clips of one serialized SequenceExample (only the chosen frames
    are decoded, one batch at a time)."""
    import tensorflow as tf

    from kerasvid.data import samplers, schema

    frames = schema.parse_sequence_example(serialized)["frames"]
    n = int(tf.size(frames))
    if n == 0:
        raise ValueError("record has no frames (`image/encoded` is empty)")
    idx = samplers.video_clip_indices(n, num_frames, stride, num_clips, sampler)
    for start in range(0, len(idx), batch_clips):
        rows = idx[start:start + batch_clips]
        decoded = [tf.io.decode_jpeg(frames[i], channels=3) for i in rows.ravel()]
        yield tf.reshape(tf.stack(decoded), [*rows.shape, *decoded[0].shape]).numpy()


def preprocess_clips(clips, image_size, normalization="imagenet", num_crops=1, short_side=None):
    """Evaluation preprocessing of `kerasvid.data` on uint8 clips `[N, T, H, W, 3]` -> float32 `[N * crops, T, h, w, 3]`
    (views clip-major, as `video_dataset(training=False)` orders them)."""
    import tensorflow as tf

    from kerasvid.data import preprocess

    n, t = clips.shape[:2]
    h, w = int(image_size[0]), int(image_size[1])
    crops = preprocess.resize_and_crops(tf.reshape(clips, [n * t, *clips.shape[2:]]), (h, w), short_side, num_crops)
    crops = tf.transpose(tf.reshape(crops, [num_crops, n, t, h, w, 3]), [1, 0, 2, 3, 4, 5])
    return preprocess.normalize(tf.reshape(crops, [n * num_crops, t, h, w, 3]), normalization)


# ----- inputs ------------------------------------------------------------------------------------------------------
def _safe_id(text):
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text).lstrip(".") or "video"


class _RecordReader:
    """Serialized record `i` of a shard, read sequentially (records are requested in shard order), so no more than
    one record is in memory."""

    def __init__(self):
        self._shard, self._iter, self._next = None, None, 0

    def __call__(self, shard, index):
        import tensorflow as tf

        if shard != self._shard or index < self._next:
            self._shard, self._iter, self._next = shard, tf.data.TFRecordDataset(shard).as_numpy_iterator(), 0
        while self._next <= index:
            record = next(self._iter)
            self._next += 1
        return record


def list_inputs(videos=(), records=""):
    """`[(id, description, (kind, payload))]` for video files (`("video", path)`) and / or the records of a pattern
    (`("record", (shard, index))`; records are not kept in memory); ids are unique."""
    items = []
    for path in videos:
        items.append((_safe_id(os.path.splitext(os.path.basename(path))[0]), path, ("video", path)))
    if records:
        import tensorflow as tf

        from kerasvid.data import pipeline, schema

        for shard in pipeline.list_files(records):
            count = 0  # records read from this shard
            try:
                for i, serialized in enumerate(tf.data.TFRecordDataset(shard).as_numpy_iterator()):
                    try:
                        ctx = tf.io.parse_single_sequence_example(serialized, context_features=schema.context_features(
                            (schema.VIDEO_ID, schema.VIDEO_FILENAME)))[0]
                        name = ctx[schema.VIDEO_ID].numpy().decode() or os.path.splitext(
                            os.path.basename(ctx[schema.VIDEO_FILENAME].numpy().decode()))[0]
                    except tf.errors.InvalidArgumentError:
                        name = ""
                    name = name or f"{os.path.basename(shard).split('.')[0]}-{i:05d}"
                    items.append((_safe_id(name), f"{shard}#{i}", ("record", (shard, i))))
                    count = i + 1
            except tf.errors.OpError as e:  # a truncated or corrupt shard: its records before the damage still count
                reason = (f"shard {shard} is truncated or corrupt after record {count} (the records after it are "
                          f"lost: {e.message.splitlines()[0]})")
                items.append((_safe_id(f"{os.path.basename(shard).split('.')[0]}-damaged"), f"{shard}#{count}",
                              ("error", reason)))
    seen = {}
    for vid, desc, _ in items:
        if vid in seen:
            raise ValueError(f"Two inputs map to the same feature file {vid!r}: {seen[vid]} and {desc} (rename one "
                             f"of them).")
        seen[vid] = desc
    return items


# ----- output ------------------------------------------------------------------------------------------------------
def _temporary(path):
    """The hidden temporary name `path` is written under (per process: two jobs into one directory never share one;
    `_remove_dead_temporaries` deletes those of killed jobs)."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")


def _remove_dead_temporaries(output_dir):
    from kerasvid import _locks  # the converter's test of a writer's pid, shared

    for name in os.listdir(output_dir):
        pid = name.rsplit(".tmp-", 1)[-1] if name.startswith(".") and ".tmp-" in name else ""
        if name.startswith(".") and name.endswith(".tmp") or pid.isdigit() and not _locks.pid_alive(int(pid)):
            os.remove(os.path.join(output_dir, name))


@contextlib.contextmanager
def _locked(output_dir):
    """An exclusive lock on `<output_dir>/.manifest.lock` (fcntl; released when the process dies), held while the
    manifest is read, merged and replaced, so that concurrent jobs into one directory lose no entry."""
    import fcntl

    with open(os.path.join(output_dir, ".manifest.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path, write):
    tmp = _temporary(path)
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_features(path, features, vid, source, fmt):
    import numpy as np

    if fmt == "npy":
        _atomic_write(path, lambda f: np.save(f, features))
        return
    import tensorflow as tf

    example = tf.train.Example(features=tf.train.Features(feature={
        "features": tf.train.Feature(float_list=tf.train.FloatList(value=features.ravel())),
        "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(features.shape))),
        "video/id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[vid.encode()])),
        "video/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()]))}))
    tmp = _temporary(path)
    with tf.io.TFRecordWriter(tmp) as writer:
        writer.write(example.SerializeToString())
    os.replace(tmp, path)


def read_tfrecord_features(path):
    """Reads a `--format=tfrecord` feature file back: `(features array, video id)`."""
    import numpy as np
    import tensorflow as tf

    example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(path))).numpy())
    f = example.features.feature
    array = np.asarray(f["features"].float_list.value, np.float32).reshape(list(f["shape"].int64_list.value))
    return array, f["video/id"].bytes_list.value[0].decode()


def _progress(total, stream=None):
    """The progress of an extraction (`kerasvid.progress.Progress` counting videos): a bar on a terminal, one log
    line per video otherwise ("kerasvid extract: [3/10] <id>: <what happened>"), both on stderr."""
    from kerasvid import progress

    return progress.Progress(total, "kerasvid extract", unit="videos",
                             line="kerasvid extract: [{done}/{total}] {text}", stream=stream)


# ----- the extractor -----------------------------------------------------------------------------------------------
def build_model(model_name, weights=None, num_frames=16, image_size=(224, 224), num_classes=None, model_kwargs=None,
                checkpoint=None):
    """The model to extract from: a `.keras` file (`weights` ending in `.keras`), or the zoo builder `model_name`
    built for `(num_frames, H, W, 3)` with `weights` (a `.weights.h5` file or "imagenet"); with `checkpoint` (a
    `train/main.py` model_dir, whose latest checkpoint is used, or a checkpoint prefix) the trained weights are
    restored into it."""
    import keras

    if weights and str(weights).endswith(".keras"):
        if not os.path.exists(weights):
            raise ValueError(f"--weights={weights!r} does not exist.")
        return keras.saving.load_model(weights, safe_mode=True)
    from kerasvid import zoo

    info = zoo.model_info(model_name)
    if len(info.default_input) != 4:
        raise ValueError(f"--model={model_name!r} is an image model (input {info.default_input}); feature "
                         f"extraction takes video models [T, H, W, 3].")
    if not (weights or checkpoint) and not any(k.endswith(("weights", "checkpoint")) for k in (model_kwargs or {})):
        print(f"kerasvid extract: warning: no --weights: the features of {model_name!r} come from random weights.",
              file=sys.stderr)
    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("num_classes", num_classes or info.num_classes)
    model = zoo.get_model(model_name, input_shape=(num_frames, *image_size, 3), weights=weights or None, **kwargs)
    if checkpoint:
        from kerasvid.training.checkpoints import restore_model

        path = resolve_checkpoint(checkpoint)
        restore_model(model, path, f"{model_name!r} built with {kwargs} for {(num_frames, *image_size, 3)}")
    return model


def resolve_checkpoint(checkpoint):
    """The latest checkpoint of a model_dir, or `checkpoint` itself (a prefix); ValueError when there is none."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
    if not path or not tf.io.gfile.glob(path + ".index"):
        raise ValueError(f"--checkpoint={checkpoint!r} holds no checkpoint.")
    return path


def _run_dir(checkpoint):
    """The training run's folder of `--checkpoint` (a model_dir, or a checkpoint prefix inside one), or ""."""
    run_dir = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
    return run_dir if run_dir and os.path.isdir(run_dir) else ""


def run_record(checkpoint):
    """The `run_config.json` that `kerasvid train` wrote in the `checkpoint`'s run (its model_dir, or the folder
    of a checkpoint prefix), or `{}` (no `checkpoint`, or no record): read once per command, then handed to
    `run_settings` and `resolve_normalization`."""
    from kerasvid.data import discovery

    run_dir = _run_dir(checkpoint) if checkpoint else ""
    return discovery.read_run_config(run_dir) if run_dir else {}


def run_settings(config):
    """`(model name, num_classes, model_kwargs text)` of a run's record `config` (`run_record`), or
    `("", 0, "")`: the run's model is built as it was trained (e.g. a CPNet's `cp_k`)."""
    run_flags = config.get("flags", {})
    return (str(run_flags.get("model", "")), int(config.get("num_classes") or 0),
            str(run_flags.get("model_kwargs") or ""))


class FeatureExtractor:
    """Extracts and writes endpoint features of videos; see the module docstring.

    Args:
        model: a Keras video model; endpoint: its endpoint name (`endpoint_model`).
        output_dir: where `<id>.npy` / `<id>.tfrecord` and `manifest.json` go.
        num_frames, stride, num_clips, sampler, num_crops, image_size, normalization, short_side: clip sampling and
            preprocessing (as evaluation in `kerasvid.data`; `num_clips=0` covers the video).
        pool: "none" (the endpoint's map) or "avg" (mean over every axis but channels -> `[V, C]`).
        fmt: "npy" or "tfrecord". batch_size: views per model call.
        settings: extra entries recorded in the manifest (e.g. the model name and weights).
    """

    def __init__(self, model, endpoint, output_dir, num_frames=16, stride=1, num_clips=1, sampler="dense",
                 num_crops=1, image_size=(224, 224), normalization="imagenet", short_side=None, pool="none",
                 fmt="npy", batch_size=8, settings=None):
        from kerasvid.data import preprocess

        if fmt not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}.")
        if pool not in ("none", "avg"):
            raise ValueError(f"--pool must be 'none' or 'avg', got {pool!r}.")
        for name, value, low in (("num_frames", num_frames, 1), ("stride", stride, 1), ("num_clips", num_clips, 0),
                                 ("num_crops", num_crops, 1), ("batch_size", batch_size, 1)):
            if int(value) < low:
                raise ValueError(f"--{name} must be >= {low}, got {name}={value}.")
        preprocess.check_normalization(normalization)
        self.features = endpoint_model(model, endpoint)
        self._read_record = _RecordReader()
        self.output_dir, self.fmt, self.pool, self.batch_size = output_dir, fmt, pool, int(batch_size)
        self.clip_args = dict(num_frames=int(num_frames), stride=int(stride), num_clips=int(num_clips),
                              sampler=sampler)
        self.view_args = dict(image_size=tuple(int(v) for v in image_size), normalization=normalization,
                              num_crops=int(num_crops), short_side=short_side)
        self.settings = {"endpoint": endpoint, "format": fmt, "pool": pool, **self.clip_args,
                         **{k: list(v) if isinstance(v, tuple) else v for k, v in self.view_args.items()},
                         **(settings or {})}

    def features_of(self, clips):
        """float32 features `[V, ...]` of uint8 clips `[N, T, H, W, 3]`."""
        return self._features_of_batches([clips])

    def _features_of_batches(self, batches):
        import numpy as np

        out = []
        for clips in batches:
            views = preprocess_clips(clips, **self.view_args)
            out += [np.asarray(self.features(views[i:i + self.batch_size], training=False), np.float32)
                    for i in range(0, int(views.shape[0]), self.batch_size)]
        out = np.concatenate(out)
        if self.pool == "avg":
            out = out.reshape(out.shape[0], -1, out.shape[-1]).mean(axis=1)
        return out

    def features_of_input(self, kind, payload):
        """Features of a video file (`kind="video"`, a path) or a record (`"record"`, `(shard, index)`)."""
        batch_clips = max(1, self.batch_size // self.view_args["num_crops"])
        if kind == "error":  # an input known to be unreadable when listed (`list_inputs`): skipped and counted
            raise ValueError(payload)
        if kind == "record":
            return self._features_of_batches(record_clip_batches(self._read_record(*payload),
                                                                 batch_clips=batch_clips, **self.clip_args))
        try:
            return self._features_of_batches(video_file_clip_batches(payload, batch_clips=batch_clips,
                                                                     **self.clip_args))
        except _Restart as restart:
            from kerasvid.data import video_files

            return self._features_of_batches(video_files.stream_clips(payload, restart.idx, batch_clips))

    def _path(self, vid):
        return os.path.join(self.output_dir, f"{vid}.{self.fmt}")

    def _start_manifest(self):
        os.makedirs(self.output_dir, exist_ok=True)
        _remove_dead_temporaries(self.output_dir)  # of a killed run (never those of a job still running)
        path = os.path.join(self.output_dir, MANIFEST)
        if os.path.exists(path):
            with open(path) as f:
                previous = json.load(f).get("settings")
            if previous != self.settings:
                changed = sorted(k for k in set(previous or {}) | set(self.settings)
                                 if (previous or {}).get(k) != self.settings.get(k))
                raise ValueError(f"--output_dir={self.output_dir!r} holds features extracted with other settings "
                                 f"(differing: {changed}; see {path}); use another --output_dir.")
        return {"settings": self.settings, "written": [], "skipped": []}

    def _save_manifest(self, manifest):
        """Writes `manifest` (this run's entries) merged into the one on disk, under the directory's lock: the
        entries of ids this run has not met are kept (another job into the same directory wrote them)."""
        path = os.path.join(self.output_dir, MANIFEST)
        with _locked(self.output_dir):
            on_disk = {}
            if os.path.exists(path):
                with open(path) as f:
                    on_disk = json.load(f)
            if on_disk.get("settings") != manifest["settings"]:
                on_disk = {}
            ours = {e["id"] for key in ("written", "skipped") for e in manifest[key]}
            merged = {"settings": manifest["settings"]}
            for key in ("written", "skipped"):
                merged[key] = [e for e in on_disk.get(key, []) if e["id"] not in ours] + manifest[key]
            for m in (manifest, merged):
                m["num_written"], m["num_skipped"] = len(m["written"]), len(m["skipped"])
            data = json.dumps(merged, indent=1).encode()
            _atomic_write(path, lambda f: f.write(data))

    def run(self, items, progress=None):
        """Extracts every `(id, description, loader)` of `list_inputs`; returns the manifest dict.

        `progress`: a `kerasvid.progress.Progress` (default: bar / a line per video on stderr)."""
        manifest = self._start_manifest()
        progress = progress or _progress(len(items))
        self._save_manifest(manifest)
        for vid, source, (kind, payload) in items:
            path = self._path(vid)
            if os.path.exists(path):
                manifest["skipped"].append({"id": vid, "input": source, "reason": "already extracted",
                                            "file": os.path.basename(path)})
                status = "already extracted, skipped"
            else:
                try:
                    feats = self.features_of_input(kind, payload)
                except Exception as e:  # noqa: BLE001 - any decoding failure skips this video, with its reason
                    reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
                    manifest["skipped"].append({"id": vid, "input": source, "reason": reason})
                    status = f"skipped ({reason})"
                else:
                    _write_features(path, feats, vid, source, self.fmt)
                    manifest["written"].append({"id": vid, "input": source, "file": os.path.basename(path),
                                                "shape": list(feats.shape)})
                    status = f"wrote {os.path.basename(path)} {tuple(feats.shape)}"
            self._save_manifest(manifest)
            progress.update(text=f"{vid}: {status}")
        return manifest


# ----- command line ------------------------------------------------------------------------------------------------
def _parse_args(argv):
    from absl import flags

    from kerasvid import command_flags

    command = command_flags.Command(
        "kerasvid extract", "Writes one feature array per video from a model endpoint (resumable; manifest.json "
        "lists what was written and skipped).", positional="videos",
        epilog="Endpoints: ResNet res2..res5; I3D Conv3d_1a_7x7..Mixed_5c; BN-Inception conv2_3x3, inception_3c.."
               "inception_5b, global_pool; or any layer name.\nExample: kerasvid extract --model=i3d "
               "--endpoint=Mixed_5c --num_frames=64 --output_dir=feats videos/*.mp4")
    fv = command.flag_values
    flags.DEFINE_string("records", "", "SequenceExample records (glob) instead of / besides videos", flag_values=fv)
    flags.DEFINE_string("model", "", "registered model name (kerasvid.zoo.list_models())", flag_values=fv)
    flags.DEFINE_string("weights", "", "a .weights.h5 file, 'imagenet', or a whole .keras model", flag_values=fv)
    flags.DEFINE_string("checkpoint", "", "a train/main.py model_dir (latest checkpoint; its model, num_classes and "
                        "model_kwargs are the defaults) or checkpoint prefix", flag_values=fv)
    flags.DEFINE_string("model_kwargs", "", "extra builder arguments, key=value,... (literals)", flag_values=fv)
    flags.DEFINE_integer("num_classes", 0, "head size of the weights (default: registry)", flag_values=fv)
    flags.DEFINE_string("endpoint", None, "endpoint or layer name (res5, Mixed_5c, ...)", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "where <id>.npy / <id>.tfrecord and manifest.json go", flag_values=fv)
    flags.DEFINE_enum("format", "npy", list(FORMATS), "feature file format", flag_values=fv)
    flags.DEFINE_integer("num_frames", 16, "frames per clip (T)", flag_values=fv)
    flags.DEFINE_integer("stride", 1, "temporal stride between sampled frames", flag_values=fv)
    flags.DEFINE_integer("num_clips", 1, "clips per video; 0 = consecutive clips covering it", flag_values=fv)
    flags.DEFINE_enum("sampler", "dense", ["dense", "tsn"], "clip sampler", flag_values=fv)
    flags.DEFINE_integer("num_crops", 1, "crops per clip", flag_values=fv)
    flags.DEFINE_string("image_size", "224,224", "H,W", flag_values=fv)
    flags.DEFINE_integer("short_side", 0, "resize target (default: crop / 0.875)", flag_values=fv)
    flags.DEFINE_string("normalization", "auto", "normalisation preset of kerasvid.data.preprocess; auto: the "
                        "one the --checkpoint's run trained with, else the one --weights expect (caffe for "
                        "imagenet, a published file's own), else imagenet", flag_values=fv)
    flags.DEFINE_enum("pool", "none", ["none", "avg"], "none (the endpoint's map) or avg (mean over every axis but "
                      "channels)", flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "views per model call", flag_values=fv)
    args = command.parse(argv, required=("endpoint", "output_dir"))
    args.run_record = run_record(args.checkpoint)
    recorded_model, recorded_classes, recorded_kwargs = run_settings(args.run_record)
    if not args.model_kwargs and args.model in ("", recorded_model):  # the run's model, as it was trained
        args.model_kwargs = recorded_kwargs
    args.model, args.num_classes = args.model or recorded_model, args.num_classes or recorded_classes
    if not args.videos and not args.records:
        command.error("give video files or --records")
    if not args.model and not args.weights.endswith(".keras"):
        command.error("--model is required (unless --weights is a .keras model file)")
    try:
        size = [int(v) for v in args.image_size.split(",")]
    except ValueError:
        command.error(f"--image_size must be H,W integers, got {args.image_size!r}")
    args.image_size = tuple(size * 2 if len(size) == 1 else size)
    if len(args.image_size) != 2:
        command.error(f"--image_size must be H,W, got {args.image_size!r}")
    return args


def resolve_normalization(normalization, weights=None, run_config=None):
    """The preset `kerasvid extract` feeds: `normalization` itself unless it is "auto"; then, with the record of
    the `--checkpoint`'s training run (`run_record`) holding its flags, the preset that run trained with (its
    `--normalization`, or what its weights implied); else the one `weights` implies
    (`kerasvid.weights.presets.normalization_for_weights`: "caffe" for "imagenet", a published file's own), else
    "imagenet"."""
    from kerasvid.weights import presets

    if normalization != "auto":
        return normalization
    run_flags = (run_config or {}).get("flags")
    if run_flags is not None:
        recorded = run_flags.get("normalization", "auto")
        if recorded != "auto":
            return recorded
        return presets.normalization_for_weights(
            _literal_kwargs(str(run_flags.get("model_kwargs") or "")).get("weights"))
    return presets.normalization_for_weights(weights or None)


def _literal_kwargs(text):
    """--model_kwargs as `kerasvid train` reads it (`command_flags.parse_kwargs`: literals, bare words are
    strings), so that a run's recorded model_kwargs build the same model here."""
    from kerasvid import command_flags

    return command_flags.parse_kwargs(text, "model_kwargs")


def main(argv=None):
    """`kerasvid extract ...`; returns 0, or 1 with a one-line error for bad settings or when every input failed
    (a summary line counts the written, skipped and failed inputs)."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        items = list_inputs(args.videos, args.records)
        normalization = resolve_normalization(args.normalization, args.weights, args.run_record)
        model = build_model(args.model, args.weights or None, args.num_frames, args.image_size,
                            args.num_classes or None, _literal_kwargs(args.model_kwargs), args.checkpoint or None)
        extractor = FeatureExtractor(
            model, args.endpoint, args.output_dir, args.num_frames, args.stride, args.num_clips, args.sampler,
            args.num_crops, args.image_size, normalization, args.short_side or None, args.pool, args.format,
            args.batch_size, settings={"model": args.model or model.name, "weights": args.weights,
                                       "checkpoint": resolve_checkpoint(args.checkpoint) if args.checkpoint else ""})
        manifest = extractor.run(items)
    except ValueError as e:
        print(f"kerasvid extract: error: {e}", file=sys.stderr)
        return 1
    where = os.path.join(args.output_dir, MANIFEST)
    failed = [s for s in manifest["skipped"] if s["reason"] != "already extracted"]
    print(f"kerasvid extract: {manifest['num_written']} written, {manifest['num_skipped']} skipped, of which "
          f"{len(failed)} failed ({where})")
    if failed and len(failed) == len(items):
        print(f"kerasvid extract: error: every one of the {len(items)} inputs failed, nothing was extracted (first: "
              f"{failed[0]['input']}: {failed[0]['reason']}; all reasons in {where})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
