"""The task interface: what the training loop asks of one kind of training.

A task owns everything specific to a kind of training (classification, actor-observer triplets, action/context
factorization): building the model, building the datasets, the per-replica loss, evaluation outputs and their
aggregation, and images for TensorBoard. `kerasvid.training.Trainer` owns everything generic (strategies, the
custom loop, checkpoints, schedules, summaries, progress). A new task subclasses `Task`, sets `name`, implements
the four abstract methods and registers itself:

```python
@kerasvid.tasks.register_task
class ActorObserverTask(kerasvid.tasks.Task):
    name = "actor_observer"
    ...
```

Shapes in this file: `B` is the per-replica batch, `V` the number of evaluation views (clips x crops).
"""
import dataclasses
import difflib
from typing import Dict, Optional, Tuple

from kerasvid.data.config import VideoDataConfig, image_size_pair
from kerasvid.weights import presets

_TASKS = {}


@dataclasses.dataclass
class TaskConfig:
    """Settings shared by all tasks (one field per generic flag of `train/main.py`, with the same name).

    Attributes:
        model: registered model name (`kerasvid.zoo.list_models()`).
        model_kwargs: extra keyword arguments of the model builder (e.g. `{"k": 12}`).
        num_classes: number of classes (0 = the length of `label_names`: the lines of --labels_file or labels.txt).
        label_names: class names, index order (read from `labels.txt` beside the records when empty).
        train_pattern: training records (a TFRecord file glob).
        eval_pattern: evaluation records (a TFRecord file glob).
        num_frames: frames per clip (`T`).
        stride: temporal stride between sampled frames.
        image_size: crop size `(H, W)` (one value: a square; `kerasvid.data.config.image_size_pair`).
        batch_size: global training batch (split over all replicas and workers).
        eval_batch_size: videos per evaluation batch.
        eval_clips: evaluation clips per video.
        eval_crops: evaluation crops per clip (`V = eval_clips * eval_crops` views per video).
        multi_label: labels are multi-hot (sigmoid + binary cross-entropy, mAP).
        label_smoothing: label smoothing of the cross-entropy.
        normalization: normalisation preset of `kerasvid.data.preprocess.normalize`; "auto" (the default): the one
            the model's `weights` were trained with (`kerasvid.weights.normalization_for_weights`: "caffe" for
            `weights='imagenet'`, keras.applications' ResNets; "imagenet" without weights or for a `.weights.h5`).
        shuffle_buffer: shuffle buffer of the training records.
        seed: global seed.
        deterministic: deterministic ops and data order (for bit-identical resumes).
        data_kwargs: extra keyword arguments of the data pipeline (e.g. `{"flip": False}`); a key that is also a
            field here (num_frames, image_size, normalization, ...) must have that field's value (ValueError).
        task_kwargs: task-specific settings; each task documents its own keys.
    """

    model: str = "c2d_resnet18"
    model_kwargs: Dict = dataclasses.field(default_factory=dict)
    num_classes: int = 0
    label_names: Tuple[str, ...] = dataclasses.field(default=(), metadata={"flag": False})  # from labels.txt
    train_pattern: str = ""
    eval_pattern: str = ""
    num_frames: int = 8
    stride: int = 1
    image_size: Tuple[int, int] = (112, 112)
    batch_size: int = 8
    eval_batch_size: int = 8
    eval_clips: int = 1
    eval_crops: int = 1
    multi_label: bool = False
    label_smoothing: float = 0.0
    normalization: str = "auto"
    shuffle_buffer: int = 64
    seed: int = 0
    deterministic: bool = False
    data_kwargs: Dict = dataclasses.field(default_factory=dict)
    task_kwargs: Dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.image_size = image_size_pair(self.image_size)
        if self.normalization == "auto":
            self.normalization = presets.normalization_for_weights(self.model_kwargs.get("weights"))
        self.check_data_kwargs()

    def check_data_kwargs(self):
        """Raises one ValueError naming every `data_kwargs` key that is also a field of this config with another
        value (the model would be built for one setting and the pipeline run with another)."""
        fields = {f.name for f in dataclasses.fields(self)} - {"data_kwargs", "task_kwargs"}
        given_twice = []
        for key in sorted(set(self.data_kwargs) & fields):
            mine, theirs = getattr(self, key), self.data_kwargs[key]
            if key == "num_classes":
                mine = self.num_classes or len(self.label_names)
                if not mine:  # not known yet (the labels are read later): nothing to contradict
                    continue
            elif key == "image_size":
                theirs = image_size_pair(theirs)
            if theirs != mine:
                given_twice.append(f"data_kwargs {key}={self.data_kwargs[key]!r} but {key}={mine!r}")
        if given_twice:
            raise ValueError(f"Settings given twice with different values: {'; '.join(given_twice)}. Set each once, "
                             f"as its own setting (--num_frames, --image_size, ...), not in data_kwargs.")

    @property
    def train_data(self):
        """The `kerasvid.data.VideoDataConfig` of the training pipeline (as Model Garden's `train_data`): one clip
        per video, the global `batch_size` (a task splits it over workers)."""
        return self._data_config(training=True)

    @property
    def validation_data(self):
        """The `kerasvid.data.VideoDataConfig` of the evaluation pipeline: `eval_clips` x `eval_crops` views per
        video, `eval_batch_size` videos per batch."""
        return self._data_config(training=False, batch_size=self.eval_batch_size, num_clips=self.eval_clips,
                                 num_crops=self.eval_crops)

    def _data_config(self, **settings):
        """This config's fields of the same name as VideoDataConfig's (num_frames, stride, image_size, batch_size,
        multi_label, normalization, shuffle_buffer, seed, deterministic; num_classes: the labels' when 0), then
        `settings`, then the `data_kwargs` overrides (an unknown key raises a ValueError listing the valid ones)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name in VideoDataConfig.field_names()}
        shared["num_classes"] = self.num_classes or len(self.label_names) or None
        return VideoDataConfig(**{**shared, **settings}).replace(**self.data_kwargs)

    @property
    def num_views(self):
        return self.eval_clips * self.eval_crops


class Task:
    """Base class of the tasks. Subclasses implement `build_model`, `build_dataset`, `compute_loss`,
    `eval_outputs` and `aggregate_eval`; `validate` and `summary_images` have defaults.

    Args:
        config: a `TaskConfig`.
    """

    name = "base"

    def __init__(self, config: TaskConfig):
        self.config = config

    def validate(self, modes):
        """Raises ValueError for settings that cannot work, before any work starts.

        Args:
            modes: the modes that will run, a subset of {"train", "eval", "export"}.
        """

    def build_model(self):
        """Returns the `keras.Model` (built under the strategy scope by the caller)."""
        raise NotImplementedError

    def build_dataset(self, training: bool, input_context=None):
        """Returns this worker's `tf.data.Dataset` of `(inputs, labels)` batches.

        Training datasets repeat forever; each local batch is sliced over the local replicas by the loop.
        Evaluation datasets are finite (one pass) and are read in full by every worker.

        Args:
            training: training or evaluation data.
            input_context: None, or (multi-worker training) a `tf.distribute.InputContext`: read only this
                worker's shard of the records and batch `local_batch_size(input_context)` videos.
        """
        raise NotImplementedError

    def local_batch_size(self, input_context=None):
        """Videos per batch on this worker: `batch_size / num_workers` under multi-worker training.

        Raises:
            ValueError: `batch_size` is not divisible by the number of workers.
        """
        if input_context is None:
            return self.config.batch_size
        workers = input_context.num_input_pipelines
        if self.config.batch_size % workers:
            raise ValueError(f"batch_size={self.config.batch_size} must be divisible by the number of workers "
                             f"({workers}).")
        return self.config.batch_size // workers

    def model_inputs(self, inputs):
        """What the model is called on, from a batch's `inputs` (the loop's BatchNorm re-estimation uses it):
        `inputs["image"]` (the clips) by default; a task whose model takes other inputs overrides it."""
        return inputs["image"] if isinstance(inputs, dict) and "image" in inputs else inputs

    def compute_loss(self, model, inputs, labels, global_batch_size: int):
        """Runs the model in training mode on one replica's batch.

        Returns:
            `(loss, stats)`: `loss` is this replica's share of the global mean loss (summing `loss` over replicas
            gives the mean over the global batch, e.g. `tf.nn.compute_average_loss`), excluding the model's
            regularisation losses (the loop adds them); `stats` maps a name to a `(total, count)` pair of float32
            scalars; the loop sums both over replicas and steps and logs `total / count` (e.g.
            `"accuracy": (number correct, batch size)`).
        """
        raise NotImplementedError

    def eval_outputs(self, model, inputs, labels) -> Dict:
        """Runs the model in inference mode on one evaluation batch.

        Returns:
            A dict of per-video tensors (first axis = videos, views already merged), e.g. `{"probs", "labels"}`;
            the loop concatenates them over the whole evaluation set and hands them to `aggregate_eval`.
        """
        raise NotImplementedError

    def aggregate_eval(self, outputs: Dict) -> Dict:
        """Turns the concatenated numpy outputs into results (JSON-serialisable floats and ints).

        Must include `num_examples`; the loop adds `step`.
        """
        raise NotImplementedError

    def summary_images(self, model, inputs) -> Dict:
        """Images for TensorBoard: name -> float32 `[N, H, W, 3]` in [0, 1] (sample frames, flow, attention)."""
        return {}

    def checkpoint_objects(self) -> Dict:
        """Trackable state the task keeps outside the model (e.g. running loss statistics), checkpointed with it."""
        return {}

    def best_metric(self) -> Optional[Tuple[str, str]]:
        """`(name, "max"|"min")` of the evaluation result that selects the best checkpoint, or None."""
        return None

    # ----- serving ----------------------------------------------------------------------------------------------
    def export(self, model, export_dir, extra_settings=None):
        """Writes `model` as a SavedModel with this task's serving signatures (`kerasvid.export.write_archive`:
        `labels.txt` and `preprocessing.json` beside it) and returns `export_dir`.

        Args:
            model: the trained model (as `build_model` returned it).
            export_dir: output directory (replaced atomically).
            extra_settings: more entries for `preprocessing.json` (e.g. the training step).

        Raises:
            ValueError: the task (or this model) cannot serve; the message says why.
        """
        raise ValueError(f"The {self.name!r} task cannot export a serving model: {type(self).__name__} defines no "
                         f"export() (drop 'export' from --mode).")

    def export_tflite(self, model, export_dir):
        """Writes LiteRT (`.tflite`) files of `model` into `export_dir`; returns their paths.

        Raises:
            ValueError: the task (or this model) has no LiteRT export; the message says why.
        """
        raise ValueError(f"The {self.name!r} task has no LiteRT export: {type(self).__name__} defines no "
                         f"export_tflite() (drop --export_tflite).")


def register_task(cls):
    """Class decorator: registers a `Task` subclass under `cls.name`."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task expects a Task subclass, got {cls!r}.")
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"A task named {cls.name!r} is already registered ({_TASKS[cls.name]!r}).")
    _TASKS[cls.name] = cls
    return cls


def list_tasks():
    """Sorted names of the registered tasks."""
    return sorted(_TASKS)


def get_task(name, config):
    """Instantiates a registered task; unknown names raise ValueError with the closest names."""
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=2, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown task {name!r}.{hint} Registered tasks: {', '.join(list_tasks())}.")
    return _TASKS[name](config)
