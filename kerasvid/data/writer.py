"""Sharded, atomic TFRecord writing: `name-00000-of-00010.tfrecord`.

Every shard is written under a hidden temporary name (`.name-00000-of-00010.tfrecord.tmp-<pid>`) and renamed to its
final name only once it is complete and flushed, so a reader globbing `name-*-of-*.tfrecord` never sees a partial
shard, and a converter killed half-way can keep the shards that exist and redo the others.
"""
import os
import re

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def check_split_name(name):
    """Validates a split / dataset name used in file names (no path separators, no leading dot)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(f"`name` must be a plain file-name prefix (letters, digits, '_', '-', '.', '=', '+'; no "
                         f"path separators, no leading dot), got {name!r}.")
    return name


def shard_path(output_dir, name, index, num_shards):
    """Path of shard `index` of `num_shards`: `<output_dir>/<name>-00003-of-00010.tfrecord`."""
    if not 0 <= index < num_shards:
        raise ValueError(f"Shard index must be in [0, {num_shards}), got {index}.")
    return os.path.join(output_dir, f"{check_split_name(name)}-{index:05d}-of-{num_shards:05d}.tfrecord")


def file_pattern(output_dir, name):
    """Glob pattern matching every (complete) shard of split `name` in `output_dir`."""
    return os.path.join(output_dir, f"{check_split_name(name)}-*-of-*.tfrecord")


def shard_of(index, num_shards):
    """The shard that record number `index` goes to (round robin; the converters use the same rule)."""
    return index % num_shards


def _serialize(example):
    if isinstance(example, bytes):
        return example
    if hasattr(example, "SerializeToString"):
        # Deterministic: protobuf map fields (the feature dicts) otherwise serialise in a per-process order, and
        # a resumed conversion must reproduce a clean run byte for byte.
        return example.SerializeToString(deterministic=True)
    raise TypeError(f"Records must be bytes or protos with SerializeToString, got {type(example).__name__}.")


def _temp_path(path):
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}")


def write_shard(path, examples, options=None):
    """Writes one shard atomically (temporary name, flush + fsync, rename).

    Args:
        path: final path of the shard.
        examples: iterable of `tf.train.SequenceExample` / `tf.train.Example` or serialized bytes.
        options: optional `tf.io.TFRecordOptions` (e.g. compression).

    Returns:
        The number of records written.
    """
    import tensorflow as tf  # lazily: `kerasvid convert --help` must not wait for TensorFlow

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _temp_path(path)
    count = 0
    try:
        with tf.io.TFRecordWriter(tmp, options=options) as w:
            for ex in examples:
                w.write(_serialize(ex))
                count += 1
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return count


class ShardedRecordWriter:
    """Streams records round robin into `num_shards` shards, each renamed into place on `close()`.

    Use as a context manager: on an exception inside the block the temporary files are deleted and no shard appears.

    Args:
        output_dir: directory of the shards (created if missing).
        name: split name, the shards' prefix (`train` -> `train-00000-of-00002.tfrecord`).
        num_shards: number of shards (>= 1).
        options: optional `tf.io.TFRecordOptions`.

    Example:
    >>> with ShardedRecordWriter("/tmp/data", "train", num_shards=2) as w:
    ...     for ex in examples:
    ...         w.write(ex)
    >>> w.paths  # ['/tmp/data/train-00000-of-00002.tfrecord', '/tmp/data/train-00001-of-00002.tfrecord']
    """

    def __init__(self, output_dir, name, num_shards, options=None):
        if not isinstance(num_shards, int) or num_shards < 1:
            raise ValueError(f"`num_shards` must be a positive int, got {num_shards!r}.")
        import tensorflow as tf

        os.makedirs(output_dir, exist_ok=True)
        self.paths = [shard_path(output_dir, name, i, num_shards) for i in range(num_shards)]
        self._tmps = [_temp_path(p) for p in self.paths]
        self._writers = [tf.io.TFRecordWriter(t, options=options) for t in self._tmps]
        self.counts = [0] * num_shards
        self._next = 0
        self._closed = False

    def write(self, example):
        if self._closed:
            raise ValueError("write() on a closed ShardedRecordWriter.")
        shard = shard_of(self._next, len(self.paths))
        self._writers[shard].write(_serialize(example))
        self.counts[shard] += 1
        self._next += 1

    def close(self):
        """Flushes every shard and renames it to its final name."""
        if self._closed:
            return
        self._closed = True
        for w, tmp, path in zip(self._writers, self._tmps, self.paths):
            w.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)

    def abort(self):
        """Closes and deletes the temporary files; no shard is published."""
        self._closed = True
        for w, tmp in zip(self._writers, self._tmps):
            w.close()
            if os.path.exists(tmp):
                os.remove(tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_records(examples, output_dir, name, num_shards):
    """Writes `examples` into `num_shards` atomic shards and returns their paths (record i goes to shard i % n)."""
    with ShardedRecordWriter(output_dir, name, num_shards) as w:
        for ex in examples:
            w.write(ex)
    return list(w.paths)


def encode_jpeg(frame, quality=90):
    """JPEG-encodes one uint8 RGB frame `[H, W, 3]` with TensorFlow's encoder (deterministic for a given input).

    The same encoder is used by the converters and the synthetic datasets, so reruns produce identical bytes.
    """
    import tensorflow as tf

    return tf.io.encode_jpeg(tf.convert_to_tensor(frame, tf.uint8), quality=int(quality),
                             chroma_downsampling=True).numpy()
