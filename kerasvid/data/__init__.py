"""kerasvid.data: record schema, sharded writer, converters, tf.data video pipelines and synthetic datasets.

Records follow TF Model Garden / DMVR (`kerasvid.data.schema`); `video_dataset` reads them into
`({"image": float32 [B, T, H, W, 3]}, labels)` batches.
"""
from kerasvid.data.pipeline import (ErrorCounter, decode_examples, list_files, make_decoder,  # noqa: F401
                                    video_dataset)
from kerasvid.data.preprocess import normalize, resize_and_center_crop  # noqa: F401
from kerasvid.data.schema import make_sequence_example, parse_sequence_example  # noqa: F401
from kerasvid.data.synthetic import write_synthetic_dataset, write_synthetic_ego_exo  # noqa: F401
from kerasvid.data.writer import ShardedRecordWriter, file_pattern, write_records  # noqa: F401
