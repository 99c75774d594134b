"""kerasvid.data: record schema, sharded writer, converters, tf.data video pipelines and synthetic datasets.

Records follow TF Model Garden / DMVR (`kerasvid.data.schema`); `video_dataset` reads them into
`({"image": float32 [B, T, H, W, 3]}, labels)` batches, with the settings of a `VideoDataConfig`.

The names below are imported on first use, so that `kerasvid convert --help` does not wait for TensorFlow.
"""
from kerasvid._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "config": ("VideoDataConfig",),
    "pipeline": ("ErrorCounter", "decode_examples", "list_files", "make_decoder", "video_dataset"),
    "preprocess": ("normalize", "resize_and_center_crop"),
    "schema": ("make_sequence_example", "parse_sequence_example"),
    "synthetic": ("write_synthetic_dataset", "write_synthetic_ego_exo"),
    "writer": ("ShardedRecordWriter", "file_pattern", "write_records"),
})
