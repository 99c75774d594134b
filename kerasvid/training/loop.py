"""The custom training loop over tf.distribute (not `model.fit`, which fails under MultiWorkerMirroredStrategy in
Keras 3, keras-team/keras#20585).

Data position: each worker reads its own local `tf.data` iterator, which is checkpointed with the model (a
`DistributedIterator` is not trackable); the loop slices each local batch into one piece per local replica with
`experimental_distribute_values_from_function`. Gradient accumulation runs `accumulation_steps` micro-batches
inside one step function and applies the average of their gradients once (each micro-batch loss is divided by
`accumulation_steps`): k micro-batches of `batch_size` make the step of one batch k times larger. Global-norm
clipping all-reduces the gradients first, so the norm is the norm of the global gradient.

Reliability: every step checks the loss and the gradient norm; a NaN/inf or a loss far above its starting value
(`TrainConfig.divergence_factor`) stops the run with `DivergenceError`, and no checkpoint with a non-finite value
is written (`checkpoints.Checkpointer.save`). SIGTERM (preemption) is caught: the loop finishes the current step,
saves a checkpoint and raises `Preempted`; the workers of a multi-worker run agree on the step (the flag is
all-reduced with the loss), so they save together. A rerun resumes from that checkpoint.
"""
import json
import os
import signal
import statistics
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from kerasvid.training import checkpoints as checkpoints_lib
from kerasvid.training import schedules
from kerasvid.training import strategy as strategy_lib
from kerasvid.training import summaries as summaries_lib

REFERENCE_STEPS = 10  # the divergence test compares each loss with the median loss of the run's first steps
_LONG_STEP_SECONDS = 10.0  # steps (and evaluations) slower than this, and 5x the median, are logged
_ADVICE = "Lower --learning_rate, add --clip_norm or --warmup_steps, or check the data."
# What a collective raises when a peer worker is gone (closed socket, reset, timeout, coordination service abort).
_COLLECTIVE_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError,
                      tf.errors.CancelledError, tf.errors.UnknownError, tf.errors.InternalError)


class DivergenceError(RuntimeError):
    """Raised when training diverges: a NaN/inf loss or gradient, a loss far above its starting value, or
    non-finite weights at a checkpoint. The message names the last finite checkpoint (none is written after)."""


class NonFiniteLossError(DivergenceError):
    """Raised when the training loss becomes NaN or infinite."""


class WorkerLostError(RuntimeError):
    """Raised on a multi-worker run when a collective fails because another worker died or stopped answering."""


class Preempted(Exception):
    """Raised after SIGTERM once the checkpoint of the current step is saved; rerunning resumes from it.

    Attributes:
        step: the step saved. path: the checkpoint (None on non-chief workers).
    """

    def __init__(self, step, path):
        super().__init__(f"Stopped by SIGTERM after step {step}; saved {path or 'the checkpoint (chief)'}. "
                         "Rerun the same command to resume from it.")
        self.step, self.path = step, path


class _SigtermFlag:
    """Sets `requested` on SIGTERM while active (main thread only; elsewhere SIGTERM keeps its handler)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):  # pylint: disable=unused-argument
        if not self.requested:
            logging.warning("SIGTERM received: finishing the current step, then saving a checkpoint.")
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _seed_generator_states(model):
    """The state variables of the model's Keras `SeedGenerator`s (dropout masks, random augmentation layers).

    `tf.train.Checkpoint(model=...)` does not track them, so a resumed run would draw other dropout masks than an
    uninterrupted one; the loop checkpoints them explicitly.
    """
    return {f"{i}": v.value for i, v in enumerate(model.variables) if "seed_generator_state" in v.path}


def sublayers(layer):
    """Every layer inside `layer` (itself excluded), depth first, each once, found through public attributes only:
    a `keras.Model`'s `layers`, and the layers a custom layer keeps in its public attributes (alone or in a list,
    tuple or dict), e.g. a `CPModule`'s `final_bn` and `mlp_bns`."""
    found, seen = [], {id(layer)}

    def children(obj):
        if isinstance(obj, keras.Model):
            yield from obj.layers
        if isinstance(obj, keras.layers.Layer):
            for name, value in vars(obj).items():
                if not name.startswith("_"):
                    yield from _layers_in(value)

    def visit(obj):
        for child in children(obj):
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                visit(child)

    visit(layer)
    return found


MIN_BATCH_NORM_VALUES = 16  # fewer values per channel in a training step's batch statistics draw a warning


def small_batch_norms(model, batch):
    """`[(layer name, values per channel)]` of the BatchNormalization layers of `model` (at its top level, where
    the input shape is known) whose batch statistics average fewer than `MIN_BATCH_NORM_VALUES` values per channel
    when a replica trains on `batch` clips.

    Over so few values the statistics are noise and the gradient through the normalisation explodes: measured on
    `tvnet_bn_inception` at 3x32x32 (BN-Inception's last maps are 1x1), batch 2, the gradient norm of `conv1` is
    4.7e7 against 672 at 3x64x64, batch 8, and two SGD steps throw TVNet's kernels to 1e5.
    """
    found = []
    for layer in model.layers if isinstance(model, keras.Model) else []:
        if not isinstance(layer, keras.layers.BatchNormalization) or not layer.trainable:
            continue
        try:
            shape = layer.input.shape
        except (AttributeError, ValueError):  # shared or not called symbolically
            continue
        axes = [d for i, d in enumerate(shape[1:], 1) if i != (layer.axis % len(shape))]
        if None in axes:
            continue
        count = int(batch * np.prod(axes, dtype=np.int64))
        if count < MIN_BATCH_NORM_VALUES:
            found.append((layer.name, count))
    return found


def _layers_in(value):
    if isinstance(value, keras.layers.Layer):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _layers_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _layers_in(v)


def recalibrate_batch_norm(model, dataset, num_batches, model_inputs=None):
    """Sets every BatchNormalization's moving mean / variance to the average of its batch statistics over
    `num_batches` batches of `dataset` (forward passes in training mode; no weight is trained).

    Batch i uses momentum i / (i + 1), so after N batches the moving value is exactly the mean of the N batch
    values. Every worker reads the same (unsharded) batches, so replicas and workers stay identical.

    Args:
        model: the model; its BatchNormalization layers are found by `sublayers`.
        dataset: `(inputs, labels)` batches.
        num_batches: batches to average.
        model_inputs: maps a batch's `inputs` to what the model is called on (the loop passes the task's
            `model_inputs`); None calls the model on `inputs` itself.

    Returns:
        The number of BatchNormalization layers re-estimated.
    """
    layers = [l for l in sublayers(model) if isinstance(l, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    saved = [l.momentum for l in layers]
    start = time.time()
    logging.info("Re-estimating the statistics of %d BatchNorm layers on %d training batches...", len(layers),
                 num_batches)
    try:
        for i, (inputs, _) in enumerate(dataset.take(num_batches)):
            for layer in layers:
                layer.momentum = i / (i + 1.0)
            model(model_inputs(inputs) if model_inputs else inputs, training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    logging.info("Re-estimated the statistics of %d BatchNorm layers on %d batches in %.1fs.", len(layers),
                 num_batches, time.time() - start)
    return len(layers)


def _batch_size(batch):
    """The size of the first axis of a batch (a Python int when static)."""
    first = tf.nest.flatten(batch)[0]
    return first.shape[0] if first.shape[0] is not None else tf.shape(first)[0]


def set_mixed_precision(mixed_precision):
    """Sets the global Keras dtype policy ("" = float32)."""
    keras.mixed_precision.set_global_policy(f"mixed_{mixed_precision}" if mixed_precision else "float32")


class Trainer:
    """Trains and evaluates one task under one strategy.

    Args:
        task: a `kerasvid.tasks.Task`.
        strategy: a `tf.distribute.Strategy`.
        model_dir: checkpoints, summaries and `eval_results.json` go here.
        config: a `TrainConfig`.

    Example:
    ```python
    trainer = Trainer(task, tf.distribute.get_strategy(), "/tmp/run", TrainConfig(train_steps=50))
    trainer.train()
    results = trainer.evaluate()
    ```
    """

    def __init__(self, task, strategy, model_dir, config):
        self.task = task
        self.strategy = strategy
        self.model_dir = model_dir
        self.config = config
        self.chief = strategy_lib.is_chief(strategy)
        set_mixed_precision(config.mixed_precision)
        with strategy.scope():
            self.model = task.build_model()
            self.optimizer = schedules.build_optimizer(
                config.optimizer, config.learning_rate_schedule(), config.momentum, config.weight_decay,
                config.nesterov, mixed_float16=config.mixed_precision == "float16")
            self.optimizer.build(self.model.trainable_variables)
        # Host-side state (plain variables, the same on every worker): step and running sums of the log window.
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # The first steps' losses (the divergence test's reference), checkpointed so that a resumed run keeps them.
        self._reference_losses = tf.Variable(tf.zeros([REFERENCE_STEPS]), trainable=False, name="reference_losses")
        self._reference_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="reference_count")
        self._train_fn = None
        self._eval_fn = None
        self._metric_state = None
        self._stat_names = None
        self._sync_fn = None
        self.history = []  # (step, logs) of every log line of this process
        self.last_eval = None  # results of the last evaluate()

    # ----- data -------------------------------------------------------------------------------------------------
    @property
    def num_local_replicas(self):
        if self.strategy.num_replicas_in_sync == 1:
            return 1
        return len(self.strategy.extended.worker_devices)

    def _split_for_replicas(self, batch):
        """Slices a local batch into one piece per local replica (a PerReplica value)."""
        n = self.num_local_replicas
        if self.strategy.num_replicas_in_sync == 1:
            return batch

        def value_fn(ctx):
            i = ctx.replica_id_in_sync_group % n

            def piece(t):
                size = (t.shape[0] if t.shape[0] is not None else tf.shape(t)[0]) // n  # static when it can be
                return t[i * size:(i + 1) * size]

            return tf.nest.map_structure(piece, batch)

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    # ----- training ---------------------------------------------------------------------------------------------
    def _replica_step(self, batches, stop):
        cfg = self.config
        model, optimizer, task = self.model, self.optimizer, self.task
        num_replicas = self.strategy.num_replicas_in_sync
        variables = model.trainable_variables
        grads_sum, loss_sum, stats_sum, clips = None, 0.0, None, 0
        for inputs, labels in batches:
            # Every replica gets an equal piece of the global batch (`_split_for_replicas`).
            piece = _batch_size((inputs, labels))
            global_batch = piece * num_replicas
            clips += piece
            with tf.GradientTape() as tape:
                loss, stats = task.compute_loss(model, inputs, labels, global_batch)
                loss = tf.cast(loss, tf.float32) / cfg.accumulation_steps
                total = loss
                if model.losses:
                    total += tf.add_n([tf.cast(l, tf.float32) for l in model.losses]) / (
                        num_replicas * cfg.accumulation_steps)
                scaled = optimizer.scale_loss(total)
            grads = tape.gradient(scaled, variables)
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
            grads_sum = grads if grads_sum is None else [a + b for a, b in zip(grads_sum, grads)]
            loss_sum += total
            stats = {k: (tf.cast(t, tf.float32), tf.cast(c, tf.float32)) for k, (t, c) in stats.items()}
            stats_sum = stats if stats_sum is None else {
                k: (stats_sum[k][0] + t, stats_sum[k][1] + c) for k, (t, c) in stats.items()}
        grads = grads_sum
        grad_norm = tf.linalg.global_norm(grads)  # this replica's share, before clipping (NaN/inf stops the run)
        if cfg.clip_norm:
            ctx = tf.distribute.get_replica_context()
            if num_replicas > 1:  # clip the global gradient; the optimizer sums the replicas' shares again
                grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            unscale = getattr(optimizer, "dynamic_scale", None)
            if unscale is not None:
                grads = [g / unscale for g in grads]
            grads, _ = tf.clip_by_global_norm(grads, cfg.clip_norm)
            if unscale is not None:
                grads = [g * unscale for g in grads]
            if num_replicas > 1:
                grads = [g / num_replicas for g in grads]
        optimizer.apply(grads, variables)
        # The largest weight magnitude after the update (exploding parameters stop the run: `_check_divergence`).
        weight_max = tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(tf.cast(v, tf.float32))) for v in variables])) \
            if variables else tf.constant(0.0)
        # Per-replica values, so that they reduce: summed over replicas, `clips` is the step's global batch.
        return loss_sum, stats_sum, grad_norm, tf.identity(stop), tf.cast(clips, tf.float32), weight_max

    def _make_train_fn(self):
        replica_step = self._replica_step
        if self.config.jit_compile:
            replica_step = tf.function(replica_step, jit_compile=True)

        @tf.function
        def train_fn(iterator, stop):
            """One step; `stop` is this worker's SIGTERM flag (0/1), summed over replicas: every worker sees it."""
            batches = [self._split_for_replicas(next(iterator)) for _ in range(self.config.accumulation_steps)]
            loss, stats, grad_norm, stop, clips, weight_max = self.strategy.run(replica_step, args=(batches, stop))
            reduce = lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)  # noqa: E731
            return (reduce(loss), {k: (reduce(t), reduce(c)) for k, (t, c) in stats.items()}, reduce(grad_norm),
                    reduce(stop), reduce(clips),
                    # the replicas hold the same weights: their mean is the one maximum
                    self.strategy.reduce(tf.distribute.ReduceOp.MEAN, weight_max, axis=None))

        return train_fn

    def _train_dataset(self):
        input_context = None
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            num_workers = self.strategy.extended._num_workers  # pylint: disable=protected-access
            if num_workers > 1:
                input_context = tf.distribute.InputContext(
                    num_input_pipelines=num_workers,
                    input_pipeline_id=self.strategy.extended._id_in_cluster,  # pylint: disable=protected-access
                    num_replicas_in_sync=self.strategy.num_replicas_in_sync)
        dataset = self.task.build_dataset(training=True, input_context=input_context)
        local_batch = tf.nest.flatten(dataset.element_spec)[0].shape[0]  # static when the batches drop remainders
        if local_batch is not None and local_batch % self.num_local_replicas:
            raise ValueError(f"The local batch ({local_batch}) must be divisible by the number of local replicas "
                             f"({self.num_local_replicas}).")
        return dataset

    def sync_replica_statistics(self):
        """Sets every float non-trainable variable (BatchNorm moving statistics) to its mean over all replicas.

        Keras creates them with aggregation "none", so each replica updates its own copy from its own batch (local
        BatchNorm, like the per-GPU BN of the CPNet code) and the copies drift apart; the loop averages them before
        every checkpoint, evaluation and the end of training, so that saved weights, every worker's weights and a
        resumed run agree. A no-op with one replica.
        """
        if self.strategy.num_replicas_in_sync == 1:
            return
        variables = [v for v in self.model.non_trainable_variables
                     if v.dtype in ("float32", "float16", "bfloat16", "float64")]
        if not variables:
            return
        if self._sync_fn is None:
            def replica_fn():
                ctx = tf.distribute.get_replica_context()
                means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables])
                for v, mean in zip(variables, means):
                    v.assign(mean)

            self._sync_fn = tf.function(lambda: self.strategy.run(replica_fn))
        self._sync_fn()

    def _log_window(self):
        """Returns the mean loss and stats of the log window from the metric state."""
        state = self._metric_state.numpy()
        logs = {"loss": float(state[0, 0] / max(state[0, 1], 1.0))}
        for i, name in enumerate(self._stat_names):
            logs[name] = float(state[i + 1, 0] / max(state[i + 1, 1], 1e-12))
        return logs

    def train(self, eval_callback=None):
        """Runs (or resumes) training up to `config.train_steps`.

        Args:
            eval_callback: called as `eval_callback(step)` every `config.eval_every` steps (train_and_eval).

        Returns:
            The last log dict (`loss`, stats, `learning_rate`, `clips_per_s`).

        Raises:
            DivergenceError (NonFiniteLossError for a NaN/inf loss): training diverged; no checkpoint was written
                after the last finite one, which the message names.
            Preempted: SIGTERM arrived; the checkpoint of the last completed step was saved.
            checkpoints.CheckpointWriteError: `model_dir` cannot be written; earlier checkpoints are intact.
        """
        cfg = self.config
        batch = getattr(self.task.config, "batch_size", 0) // max(1, self.strategy.num_replicas_in_sync)
        few = small_batch_norms(self.model, batch) if batch else []
        if few and self.chief:
            logging.warning(
                "%d BatchNormalization layers average fewer than %d values per channel in a training step (%s: %d "
                "values with %d clips per replica): their statistics are noise and their gradients can explode. "
                "Use a larger batch or input size.", len(few), MIN_BATCH_NORM_VALUES, few[0][0], few[0][1], batch)
        dataset = self._train_dataset()
        iterator = iter(dataset)
        self._train_fn = self._make_train_fn()
        concrete = self._train_fn.get_concrete_function(iterator, tf.TensorSpec([], tf.float32))
        self._stat_names = sorted(concrete.structured_outputs[1])
        self._metric_state = tf.Variable(tf.zeros([1 + len(self._stat_names), 2]), trainable=False,
                                         name="metric_state")
        ckpt = checkpoints_lib.Checkpointer(self.model_dir, self.strategy, cfg.keep_checkpoints, model=self.model,
                                            optimizer=self.optimizer, step=self.step,
                                            metric_state=self._metric_state, data=iterator,
                                            rng=_seed_generator_states(self.model),
                                            reference_losses=self._reference_losses,
                                            reference_count=self._reference_count,
                                            **self.task.checkpoint_objects())
        ckpt.restore()
        start = int(self.step.numpy())
        if start >= cfg.train_steps:
            logging.info("Training already finished (step %d >= train_steps %d).", start, cfg.train_steps)
            return {}
        summaries = summaries_lib.Summaries(os.path.join(self.model_dir, "train"), enabled=self.chief)
        try:
            with _SigtermFlag() as sigterm:
                try:
                    logs = self._train_steps(iterator, ckpt, summaries, sigterm, start, eval_callback)
                except _COLLECTIVE_ERRORS as e:
                    if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
                        raise
                    first = (e.message or "").strip().splitlines()[0] if e.message else type(e).__name__
                    raise WorkerLostError(
                        f"Another worker of this multi-worker run failed or stopped answering at step "
                        f"{int(self.step.numpy()) + 1} ({first}); this worker stops too. Restart every worker with "
                        f"the same command to resume from the last checkpoint "
                        f"({ckpt.latest or 'none yet: from the start'}).") from None
            self.sync_replica_statistics()
            if cfg.bn_recalibration_batches:
                recalibrate_batch_norm(self.model, self.task.build_dataset(training=True),
                                       cfg.bn_recalibration_batches, self.task.model_inputs)
            self._save(ckpt, cfg.train_steps)
            if eval_callback is not None:
                self._maybe_save_best(ckpt, self._timed_eval(ckpt, eval_callback, cfg.train_steps), cfg.train_steps)
        finally:
            summaries.close()
        return logs

    def _save(self, ckpt, step):
        try:
            return ckpt.save(step)
        except checkpoints_lib.NonFiniteStateError as e:
            raise DivergenceError(f"Training diverged: {e} {_ADVICE}") from None

    def _timed_eval(self, ckpt, eval_callback, step):
        start = time.time()
        try:
            results = eval_callback(step)
        except checkpoints_lib.NonFiniteStateError as e:
            raise DivergenceError(f"Training diverged at step {step}: {e} The last finite checkpoint is "
                                  f"{ckpt.latest_finite() or 'none'}. {_ADVICE}") from None
        seconds = time.time() - start
        if seconds > _LONG_STEP_SECONDS:
            logging.info("The evaluation at step %d took %.1fs.", step, seconds)
        return results

    def _check_divergence(self, ckpt, step, loss, grad_norm, weight_max=0.0):
        """Raises DivergenceError for a NaN/inf loss or gradient norm, a weight beyond `max_weight` after the step,
        or a loss above `divergence_factor` x the median of the first steps' losses; records the first steps'
        losses."""
        cfg = self.config
        where = f"at step {step}. Training stopped; the last finite checkpoint ({ckpt.latest_finite() or 'none yet'}) "
        if not np.isfinite(loss):
            raise NonFiniteLossError(f"The training loss is {loss} {where}is kept. {_ADVICE}")
        if not np.isfinite(grad_norm) and cfg.mixed_precision != "float16":  # float16: the loss scale handles it
            raise DivergenceError(f"The gradient norm is {grad_norm} (loss {loss:.4g}) {where}is kept. {_ADVICE}")
        if cfg.max_weight and not weight_max <= cfg.max_weight:
            largest = max(self.model.trainable_variables, key=lambda v: float(np.max(np.abs(np.asarray(v)))))
            raise DivergenceError(
                f"A weight reached {weight_max:.3g} (> --max_weight={cfg.max_weight:g}; largest: {largest.path}) "
                f"after the update of step {step} (gradient norm {grad_norm:.3g}, loss {loss:.4g}): the parameters "
                f"are exploding. Training stopped; the last checkpoint "
                f"({ckpt.latest_finite() or 'none yet'}) is kept. {_ADVICE}")
        count = int(self._reference_count.numpy())
        reference = self._reference_losses.numpy()[:count]
        if cfg.divergence_factor and count:
            median = float(np.median(reference))
            if median > 0 and loss > cfg.divergence_factor * median:
                raise DivergenceError(
                    f"The training loss {loss:.4g} is more than --divergence_factor={cfg.divergence_factor:g} times "
                    f"the median loss of the first {count} steps ({median:.4g}) {where}is kept. {_ADVICE}")
        if count < REFERENCE_STEPS:
            self._reference_losses[count].assign(loss)
            self._reference_count.assign(count + 1)

    def _train_steps(self, iterator, ckpt, summaries, sigterm, start, eval_callback):
        cfg = self.config
        sample = None
        if cfg.image_summaries_every and self.chief:
            sample = next(iter(self.task.build_dataset(training=False)))
        progress = summaries_lib.Progress(cfg.train_steps, start, cfg.log_every)
        window_start, window_clips = time.time(), 0.0
        step_seconds = []
        logs = {}
        for step in range(start + 1, cfg.train_steps + 1):
            step_start = time.time()
            loss, stats, grad_norm, stop, clips, weight_max = self._train_fn(
                iterator, tf.constant(float(sigterm.requested)))
            loss = float(loss)
            self._log_long_step(step, time.time() - step_start, step_seconds, first=step == start + 1)
            self._check_divergence(ckpt, step, loss, float(grad_norm), float(weight_max))
            update = np.zeros(self._metric_state.shape, np.float32)
            update[0] = (loss, 1.0)
            for i, name in enumerate(self._stat_names):
                update[i + 1] = (float(stats[name][0]), float(stats[name][1]))
            self._metric_state.assign_add(update)
            self.step.assign(step)
            window_clips += float(clips)
            if step % cfg.log_every == 0 or step == cfg.train_steps:
                logs = self._log_window()
                elapsed = time.time() - window_start
                logs["learning_rate"] = float(self.optimizer.learning_rate)
                logs["clips_per_s"] = window_clips / max(elapsed, 1e-9)
                self.history.append((step, dict(logs)))
                summaries.scalars(logs, step)
                progress.update(step, {k: logs[k] for k in ["loss", *self._stat_names]})
                self._metric_state.assign(tf.zeros_like(self._metric_state))
                window_start, window_clips = time.time(), 0.0
            if float(stop) > 0 and step != cfg.train_steps:  # SIGTERM on some worker: all save this step
                self.sync_replica_statistics()
                raise Preempted(step, self._save(ckpt, step))
            if sample is not None and step % cfg.image_summaries_every == 0:
                summaries.images(self.task.summary_images(self.model, sample[0]), step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step != cfg.train_steps:
                self.sync_replica_statistics()
                self._save(ckpt, step)
            if eval_callback is not None and cfg.eval_every and step % cfg.eval_every == 0 \
                    and step != cfg.train_steps:
                self.sync_replica_statistics()
                results = self._timed_eval(ckpt, eval_callback, step)
                self._maybe_save_best(ckpt, results, step)
        return logs

    @staticmethod
    def _log_long_step(step, seconds, history, first):
        """Logs a step slower than _LONG_STEP_SECONDS and 5x the median step (the first step traces the graph)."""
        if first:
            if seconds > _LONG_STEP_SECONDS:
                logging.info("Step %d took %.1fs (it builds and optimizes the step function; later steps are "
                             "faster).", step, seconds)
            return
        if len(history) >= 5 and seconds > _LONG_STEP_SECONDS and seconds > 5 * statistics.median(history):
            logging.info("Step %d took %.1fs (median step %.2fs).", step, seconds, statistics.median(history))
        history.append(seconds)
        del history[:-50]

    def _maybe_save_best(self, ckpt, results, step):
        best = self.task.best_metric()
        if best and results and best[0] in results:
            try:
                ckpt.save_best(step, results[best[0]], *best)
            except checkpoints_lib.NonFiniteStateError as e:
                raise DivergenceError(f"Training diverged: {e} {_ADVICE}") from None

    # ----- evaluation -------------------------------------------------------------------------------------------
    def restore_for_inference(self, checkpoint=None):
        """Loads model weights from `checkpoint` (default: the latest in `model_dir`); returns the path."""
        path = checkpoints_lib.Checkpointer(self.model_dir, self.strategy, 1, model=self.model).restore_model_only(
            self.model, checkpoint)
        reader = tf.train.load_checkpoint(path)
        if "step/.ATTRIBUTES/VARIABLE_VALUE" in reader.get_variable_to_shape_map():
            self.step.assign(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
        self.check_finite_weights(f"The checkpoint {path}")
        return path

    def check_finite_weights(self, what="The model"):
        """Raises `checkpoints.NonFiniteStateError` when a model weight is NaN/inf: such a model must not be
        evaluated (every prediction would be a miss) nor exported."""
        bad = checkpoints_lib.nonfinite_variables(self.model.weights)
        if bad:
            raise checkpoints_lib.NonFiniteStateError(
                f"{what} has {len(bad)} NaN or infinite weights (first: {', '.join(bad[:3])}); refusing to "
                "evaluate or export it. Pass --checkpoint=<an earlier checkpoint> or retrain.")

    def evaluate(self, write=True):
        """Evaluates on the task's evaluation data; writes `<model_dir>/eval_results.json` (chief only).

        Every worker evaluates the whole set (outside `strategy.run`: the model is called in the cross-replica
        context), so results are the same everywhere.

        Returns:
            The results dict (`step`, `num_examples`, and the task's metrics, e.g. `top1`, `top5`).
        """
        self.check_finite_weights()
        if self._eval_fn is None:
            self._eval_fn = tf.function(lambda x, y: self.task.eval_outputs(self.model, x, y))
        outputs = {}
        for inputs, labels in self.task.build_dataset(training=False):
            for k, v in self._eval_fn(inputs, labels).items():
                outputs.setdefault(k, []).append(v.numpy())
        if not outputs:
            raise ValueError(f"The evaluation data {self.task.config.eval_pattern!r} produced no batch.")
        outputs = {k: np.concatenate(v, axis=0) for k, v in outputs.items()}
        results = {"step": int(self.step.numpy()), **self.task.aggregate_eval(outputs)}
        logging.info("eval at step %d: %s", results["step"], json.dumps(results))
        if results.get("num_nonfinite"):
            logging.warning("%d of %d evaluation predictions are NaN or infinite; the metrics count them as misses.",
                            results["num_nonfinite"], results["num_examples"])
        self.last_eval = results
        if write and self.chief:
            tf.io.gfile.makedirs(self.model_dir)
            path = os.path.join(self.model_dir, "eval_results.json")
            with tf.io.gfile.GFile(path + ".tmp", "w") as f:
                json.dump(results, f, indent=2)
            tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
            scalars = {k: v for k, v in results.items() if isinstance(v, (int, float)) and k != "step"}
            evsum = summaries_lib.Summaries(os.path.join(self.model_dir, "eval"))
            evsum.scalars(scalars, results["step"])
            evsum.close()
        return results
