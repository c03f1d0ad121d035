"""The training loop: a custom loop over `strategy.run`.

Keras 3's `model.fit` breaks under MultiWorkerMirroredStrategy
(keras-team/keras#20585), so training is our own loop: one `tf.function` step
that runs the task's loss on every replica, sums gradients across replicas and
applies them. Checkpoints hold the model and the optimizer(s); a resumed run
skips the examples already consumed, so it continues the same example stream and
reaches the same weights as an uninterrupted one. Evaluation during training runs the
`Evaluator` on the same model.

A training run owns its model directory while it writes there (`ModelDirLock`),
resumes only with a config that keeps the run what it was (`config_changes`),
and reports damaged checkpoints and failed writes with one line naming them
(`checkpoints`, `model_dir`).
"""

import os
import time

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context

from axial_tf.experiment.checkpoints import (
    CHECKPOINT_SUBDIR,
    UNREADABLE_SUBDIR,
    UnreadableCheckpointError,
    initialize_from,
    model_checkpoint_items,
    save_checkpoint,
    set_aside_newer_than,
    try_restore,
)
from axial_tf.experiment.config import CONFIG_FILENAME, CONFIG_HISTORY_FILENAME, save_config
from axial_tf.experiment.pretrained import init_checkpoint_source
from axial_tf.experiment.tasks import task_for_config
from axial_tf.losses import check_finite
from axial_tf.training.config_changes import check_resume_config
from axial_tf.training.evaluator import Evaluator
from axial_tf.training.model_dir import ModelDirLock
from axial_tf.training.optimization import OptimizerGroup
from axial_tf.training.progress import ProgressBar
from axial_tf.training.runtime import configure_runtime, is_chief, worker_name


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint was kept."""


def keep_gradient_sums_in_order():
    """Makes tf.function calls on this thread keep every AddN an AddN (Grappler memory optimizer off).

    A tensor read by three or more ops gets its gradient from an AddN. When Grappler's static
    estimate of a graph's peak memory passes 80% of the device's memory (a CPU device reports
    256 MB, so any real training step qualifies), its memory optimizer rewrites such an AddN into
    a temporary variable that each term is added to as soon as it is ready. The order of those
    additions, and so the round-off, then follows thread timing: two runs with the same seed
    and op determinism drifted apart within a few steps while another job shared the CPU.
    """
    call_options = context.context().function_call_options  # per thread
    config = config_pb2.ConfigProto.FromString(call_options.config_proto_serialized)
    config.graph_options.rewrite_options.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
    call_options.config_proto_serialized = config


class Trainer:
    """Trains the model of an experiment config in `model_dir` (and evaluates it with an `Evaluator`).

    Args:
        config: an `ExperimentConfig`.
        model_dir: where checkpoints, summaries, `config.yaml` and metrics go.
        strategy: a `tf.distribute.Strategy` (see `strategies.get_strategy`).
        log: print function for progress lines (None = silent).
        allow_config_change: resume even when the config changes the model, the data order,
            the losses or the optimizer (see `config_changes`); otherwise that is refused.
        resume_from_intact: when the latest checkpoint is unreadable, resume from the newest
            intact one (the newer ones are moved to `checkpoints/unreadable/`); otherwise
            training stops and names both.

    Example:
        >>> trainer = Trainer(load_config("configs/demo/panoptic_shapes.yaml"), "runs/demo",
        ...                   tf.distribute.get_strategy())
        >>> trainer.train()
        >>> trainer.evaluate()  # {"pq": ..., "miou": ...}
    """

    def __init__(self, config, model_dir, strategy, log=print, allow_config_change=False, resume_from_intact=False):
        self.config = config
        self.model_dir = model_dir
        self.strategy = strategy
        self.log = log or (lambda *args, **kwargs: None)
        self.allow_config_change = allow_config_change
        self.resume_from_intact = resume_from_intact
        self.task = task_for_config(config)
        # Seeded after preparing the data: preparing a dataset for the first time may draw
        # random numbers, and the initial weights must not depend on whether it was prepared.
        self.task.prepare_data()
        configure_runtime(config)
        training = config.training
        if training.batch_size % strategy.num_replicas_in_sync:
            raise ValueError(
                f"training.batch_size={training.batch_size} is not divisible by the "
                f"{strategy.num_replicas_in_sync} replicas of the {type(strategy).__name__}."
            )
        with strategy.scope():
            self.model = self.task.build_model()
            backbone = getattr(self.model, "backbone", None)
            self.optimizer = OptimizerGroup(
                config.optimizer, training.steps,
                backbone_variables=backbone.trainable_variables if backbone is not None else (),
                mixed_float16=training.mixed_precision == "mixed_float16",
            )
            self.optimizer.build(self.model.trainable_variables)
        self._train_iterator = None
        self._checkpoint = None
        self._manager = None
        self._train_step = None
        self.evaluator = Evaluator(config, model_dir, strategy, log=self.log, task=self.task, model=self.model,
                                   step=lambda: self.step)
        self.is_chief = is_chief(strategy)
        # Non-chief workers of a multi-worker run write their (identical) checkpoints
        # to a private folder, as tf.distribute requires, and no summaries.
        writer_dir = model_dir if self.is_chief else os.path.join(model_dir, f".worker_{worker_name(strategy)}")
        self.checkpoint_dir = os.path.join(writer_dir, CHECKPOINT_SUBDIR)

    # ------------------------------------------------------------------ state

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def _ensure_train_state(self):
        """Creates the checkpoint of model and optimizer state (once)."""
        if self._checkpoint is not None:
            return
        self._checkpoint = self._new_checkpoint()
        self._manager = self._new_manager()

    def _new_checkpoint(self):
        return tf.train.Checkpoint(**model_checkpoint_items(self.model), **self.optimizer.checkpoint_items())

    def _new_manager(self):
        """A manager of `self._checkpoint` that reads the checkpoint directory's current state."""
        return tf.train.CheckpointManager(
            self._checkpoint, self.checkpoint_dir,
            max_to_keep=self.config.training.keep_checkpoints, step_counter=self.optimizer.iterations,
        )

    def _make_train_iterator(self):
        """The training input, continued where the restored step left it.

        Distributed iterators cannot be checkpointed, so a resumed run skips the
        examples it already consumed; the pipeline's randomness is keyed by the
        example's position, so the remaining stream is exactly the original one.
        """
        training = self.config.training
        dataset_fn = self.task.train_dataset_fn(training.batch_size)
        consumed = self.step * training.batch_size

        def skipping_fn(context):
            return dataset_fn(context, start_example=consumed // context.num_input_pipelines)

        self._train_iterator = iter(self.strategy.distribute_datasets_from_function(skipping_fn))

    def restore_or_initialize(self):
        """Resumes from the latest checkpoint, else applies `training.init_checkpoint`.

        Returns:
            "resumed", "initialized" or "fresh".

        Raises:
            UnreadableCheckpointError: The latest checkpoint is truncated or corrupt (and
                `resume_from_intact` is off, or no earlier checkpoint is intact); the message
                names it and the newest intact earlier one.
            ValueError: The checkpoint does not hold the variables of this model.
        """
        self._ensure_train_state()
        if self._manager.latest_checkpoint:
            restored = self._resume()
            self.log(f"Resumed from {restored} (step {self.step}).")
            return "resumed"
        if self.config.training.init_checkpoint:
            report = initialize_from(self.model, init_checkpoint_source(self.config.training.init_checkpoint))
            self.log(
                f"Initialised from {self.config.training.init_checkpoint}: {report['restored']} variables restored, "
                f"{len(report['missing'])} not restored" + (f" ({', '.join(report['missing'][:20])}" +
                                                            (", ..." if len(report["missing"]) > 20 else "") + ")"
                                                            if report["missing"] else "") + "."
            )
            return "initialized"
        return "fresh"

    def _resume(self):
        """Restores the latest checkpoint, or the newest intact one (see `resume_from_intact`); returns its prefix."""
        latest = self._manager.latest_checkpoint
        error = try_restore(self._checkpoint, latest)
        if error is None:
            return latest
        if not isinstance(error, UnreadableCheckpointError):
            raise error
        intact = self._restore_newest_intact_before(latest)
        if intact is None:
            raise UnreadableCheckpointError(latest, error.reason, f"no earlier checkpoint in {self.checkpoint_dir} "
                                            "is intact; move the checkpoints folder aside to start over")
        unreadable_dir = os.path.join(self.checkpoint_dir, UNREADABLE_SUBDIR)
        if not self.resume_from_intact:
            raise UnreadableCheckpointError(
                latest, error.reason, f"the newest intact checkpoint is {os.path.basename(intact)}: pass "
                f"--resume_from_intact to resume from it (the newer ones are then moved to {unreadable_dir})")
        moved = set_aside_newer_than(self.checkpoint_dir, intact)
        self._manager = self._new_manager()
        self.log(f"{latest} is unreadable ({error.reason}); resuming from {os.path.basename(intact)}, the newest "
                 f"intact checkpoint. Moved to {unreadable_dir}: {', '.join(moved)}.")
        return intact

    def _restore_newest_intact_before(self, latest):
        """Restores the newest checkpoint before `latest` that reads completely; returns its prefix (or None)."""
        earlier = [path for path in tf.train.get_checkpoint_state(self.checkpoint_dir).all_model_checkpoint_paths
                   if path != latest]
        for prefix in reversed(earlier):
            checkpoint = self._new_checkpoint()  # the failed restore may have left state in the old one
            if try_restore(checkpoint, prefix) is None:
                self._checkpoint = checkpoint
                return prefix
        return None

    def _prepare_run(self):
        """Checks the config against the saved one, restores or initialises, then saves the config.

        The check comes first, so a refused config leaves the model directory untouched.
        """
        self._ensure_train_state()
        changes = []
        if self.is_chief and self._manager.latest_checkpoint:
            saved = os.path.join(self.model_dir, CONFIG_FILENAME)
            changes = check_resume_config(self.config, saved, self.allow_config_change)
        self.restore_or_initialize()
        if self._train_iterator is None:
            self._make_train_iterator()
        if self.is_chief:
            save_config(self.config, self.model_dir)
        for change in changes:
            kind = ("accepted: allow_config_change" if change.changes_the_run
                    else "accepted: it keeps the model and the data order")
            self.log(f"Config change on resume: {change} ({kind}).")
        if changes:
            self.log(f"The previous {CONFIG_FILENAME} is kept in {CONFIG_HISTORY_FILENAME}.")

    # --------------------------------------------------------------- training

    def _build_train_step(self):
        strategy, task, model, optimizer = self.strategy, self.task, self.model, self.optimizer
        replicas = strategy.num_replicas_in_sync

        def replica_step(batch):
            with tf.GradientTape() as tape:
                losses = task.losses(model, batch, training=True)
                total = losses["total_loss"] + optimizer.l2_penalty(model.trainable_variables)
                # Each replica's loss is its own batch mean; gradients are summed across replicas.
                scaled = optimizer.scale_loss(total / replicas)
            losses = check_finite({**losses, "total_loss": total})
            # The finiteness checks must run before the update, so a NaN step changes nothing.
            with tf.control_dependencies(list(losses.values())):
                gradients = tape.gradient(scaled, model.trainable_variables)
                losses["gradient_norm"] = optimizer.apply(gradients, model.trainable_variables)
            return losses

        if self.config.training.jit_compile:
            replica_step = tf.function(replica_step, jit_compile=True)

        @tf.function
        def train_step(iterator):
            per_replica = strategy.run(replica_step, args=(next(iterator),))
            return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

        return train_step

    def train(self, steps=None, eval_interval=None):
        """Trains up to `steps` (default `training.steps`) total steps, holding the model directory's lock.

        Args:
            steps: global step to stop at.
            eval_interval: evaluate every this many steps (None: never).

        Returns:
            The last logged losses (dict of floats).

        Raises:
            TrainingDivergedError: on a NaN/Inf loss; checkpoints written before
                it are kept and the diverged step is never saved.
            ModelDirError: another run writes to the model directory (named with its
                pid, host and command), or a write failed (e.g. a full disk); the
                directory keeps its last complete checkpoint.
            ConfigChangeError: resuming with a config that changes the run (see
                `config_changes`) without `allow_config_change`.
            UnreadableCheckpointError, ValueError: see `restore_or_initialize`.
        """
        # Workers other than the chief write to their own folder (see __init__) and lock that.
        with ModelDirLock(os.path.dirname(self.checkpoint_dir), log=self.log):
            return self._train(steps or self.config.training.steps, eval_interval)

    def _train(self, total_steps, eval_interval):
        """The training loop of `train`, run while the lock is held."""
        t = self.config.training
        self._prepare_run()
        if self._train_step is None:
            self._train_step = self._build_train_step()
        if t.deterministic:
            keep_gradient_sums_in_order()  # here: it applies to the calling thread only
        writer = _summary_writer(os.path.join(self.model_dir, "train"), self.is_chief)
        progress = ProgressBar(total_steps, start=self.step, log=self.log, batch_size=t.batch_size)
        losses = {}
        window_start, window_examples = time.time(), 0
        while self.step < total_steps:
            try:
                losses = {k: float(v) for k, v in self._train_step(self._train_iterator).items()}
            except tf.errors.InvalidArgumentError as error:
                if "NaN or Inf" not in str(error):
                    raise
                message = next(line for line in str(error).splitlines() if "NaN or Inf" in line).strip()
                raise TrainingDivergedError(
                    f"Training diverged at step {self.step + 1}: {message}. The last good checkpoint "
                    f"({self._manager.latest_checkpoint or 'none yet'}) is kept; lower the learning rate or "
                    "enable gradient clipping (optimizer.clip_gradient_norm)."
                ) from None
            step = self.step
            window_examples += t.batch_size
            progress.update(step, losses)
            if step % t.summary_interval == 0 or step == total_steps:
                elapsed = max(time.time() - window_start, 1e-9)
                with writer.as_default(step=step):
                    for name, value in losses.items():
                        tf.summary.scalar(f"losses/{name}", value)
                    tf.summary.scalar("learning_rate", float(self.optimizer.learning_rate()))
                    tf.summary.scalar("throughput/images_per_second", window_examples / elapsed)
                window_start, window_examples = time.time(), 0
            if step % t.checkpoint_interval == 0 or step == total_steps:
                save_checkpoint(self._manager, step)
            if eval_interval and (step % eval_interval == 0 or step == total_steps):
                self.evaluate()
        progress.close()
        return losses

    # ------------------------------------------------------------- evaluation

    @property
    def last_metrics(self):
        """The headline metrics of the last evaluation (None before one)."""
        return self.evaluator.last_metrics

    def evaluate(self, **kwargs):
        """Evaluates the current weights (see `Evaluator.evaluate` for the arguments)."""
        return self.evaluator.evaluate(**kwargs)


def _summary_writer(directory, enabled):
    return tf.summary.create_file_writer(directory) if enabled else tf.summary.create_noop_writer()
