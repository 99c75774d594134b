"""tf.distribute strategy factory and chief/worker helpers (TF Model Garden `distribute_utils`, simplified)."""
import json
import os
import tempfile

import tensorflow as tf

from kerasvid.training.config import STRATEGIES


def validate_strategy_args(strategy, num_devices=0, tpu_address=""):
    """Checks strategy flags before any work starts; raises ValueError naming the bad value."""
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got strategy={strategy!r}.")
    if num_devices < 0:
        raise ValueError(f"`num_devices` must be >= 0 (0 = all visible devices), got num_devices={num_devices}.")
    if strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy='multi_worker' needs the TF_CONFIG environment variable (cluster and task); "
                             "it is not set.")
        try:
            config = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {os.environ['TF_CONFIG']!r}") from None
        if "cluster" not in config or "task" not in config:
            raise ValueError(f"TF_CONFIG must have 'cluster' and 'task' entries, got keys {sorted(config)}.")
    if strategy != "tpu" and tpu_address:
        raise ValueError(f"`tpu_address` is only used with strategy='tpu', got strategy={strategy!r} and "
                         f"tpu_address={tpu_address!r}.")


def split_cpu_into_logical_devices(count):
    """Splits the (first) physical CPU into `count` logical devices (for testing mirrored strategies on a CPU).

    Must run before TensorFlow initialises its devices (before any op runs).
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)


def get_strategy(strategy="default", num_devices=0, tpu_address="", collective_timeout_s=0):
    """Builds a `tf.distribute.Strategy` by name.

    Args:
        strategy: one of `"default"` (no distribution), `"one_device"` (first GPU, else CPU), `"mirrored"` (all
            local GPUs, or all logical CPU devices when there is no GPU), `"multi_worker"`
            (`MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`), `"tpu"` (`TPUStrategy`).
        num_devices: for `"mirrored"`, how many local devices to use (0 = all).
        tpu_address: TPU name or `grpc://` address for `"tpu"` ("" = local / from the environment).
        collective_timeout_s: for `"multi_worker"`, abort a collective (all-reduce) that waits longer than this
            (`CommunicationOptions.timeout_seconds`; 0 = wait forever): a worker whose peer is gone without closing
            its connection (a dead host) fails instead of hanging. A killed process closes its sockets, and its
            peers fail within seconds either way.

    Returns:
        A `tf.distribute.Strategy`.
    """
    validate_strategy_args(strategy, num_devices, tpu_address)
    if strategy == "default":
        return tf.distribute.get_strategy()
    if strategy == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if strategy == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        if num_devices:
            if num_devices > len(devices):
                raise ValueError(f"num_devices={num_devices} but only {len(devices)} devices are visible: "
                                 f"{[d.name for d in devices]}.")
            devices = devices[:num_devices]
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if strategy == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout_s or None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True on the worker that writes final checkpoints, summaries and exports (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_dir(model_dir, strategy):
    """The model directory on the chief; a per-worker temporary directory on the other workers.

    Every worker must save checkpoints (saving is a collective operation under MultiWorkerMirroredStrategy), but
    only the chief's copy is kept.
    """
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return os.path.join(tempfile.gettempdir(), "kerasvid_workers",
                        f"{os.path.basename(os.path.abspath(model_dir))}_{resolver.task_type}_{resolver.task_id}")
