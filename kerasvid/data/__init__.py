"""kerasvid.data: record schema, sharded writer, converters, tf.data video pipelines and synthetic datasets.

Records follow TF Model Garden / DMVR (`kerasvid.data.schema`); `video_dataset` reads them into
`({"image": float32 [B, T, H, W, 3]}, labels)` batches, with the settings of a `VideoDataConfig`.

The names below are imported on first use, so that `kerasvid convert --help` does not wait for TensorFlow.
"""
import importlib

_EXPORTS = {
    "config": ("VideoDataConfig",),
    "pipeline": ("ErrorCounter", "decode_examples", "list_files", "make_decoder", "video_dataset"),
    "preprocess": ("normalize", "resize_and_center_crop"),
    "schema": ("make_sequence_example", "parse_sequence_example"),
    "synthetic": ("write_synthetic_dataset", "write_synthetic_ego_exo"),
    "writer": ("ShardedRecordWriter", "file_pattern", "write_records"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"kerasvid.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'kerasvid.data' has no attribute {name!r}")
