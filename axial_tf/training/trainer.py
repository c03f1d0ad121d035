"""The training and evaluation loop: a custom loop over `strategy.run`.

Keras 3's `model.fit` breaks under MultiWorkerMirroredStrategy
(keras-team/keras#20585), so training is our own loop: one `tf.function` step
that runs the task's loss on every replica, sums gradients across replicas and
applies them. Checkpoints hold the model and the optimizer(s); a resumed run
skips the examples already consumed, so it continues the same example stream and
reaches the same weights as an uninterrupted one.

A training run owns its model directory while it writes there (`ModelDirLock`),
resumes only with a config that keeps the run what it was (`config_changes`),
and reports damaged checkpoints and failed writes with one line naming them
(`checkpoints`, `model_dir`).
"""

import json
import os
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context

from axial_tf.losses import check_finite
from axial_tf.training.checkpoints import (
    UNREADABLE_SUBDIR,
    UnreadableCheckpointError,
    checkpoint_damage,
    restore_checkpoint,
    save_checkpoint,
    set_aside_newer_than,
    try_restore,
)
from axial_tf.training.config import CONFIG_FILENAME, CONFIG_HISTORY_FILENAME, save_config
from axial_tf.training.config_changes import check_resume_config
from axial_tf.training.model_dir import ModelDirLock, write_text_atomically, writing
from axial_tf.training.optimization import OptimizerGroup
from axial_tf.training.progress import ProgressBar
from axial_tf.training.tasks import make_task
from axial_tf.utils.visualization import class_palette, encode_panoptic_rgb


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


def configure_runtime(config):
    """Seeds, op determinism and the Keras dtype policy for a run (call before building models)."""
    keras.utils.set_random_seed(config.training.seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.training.mixed_precision)


class Trainer:
    """Trains and evaluates the model of an experiment config in `model_dir`.

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
        self.task = make_task(config)
        # Seeded after the task: preparing a dataset for the first time may draw random
        # numbers, and the initial weights must not depend on whether it was prepared.
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
            self.metrics = self.task.make_metrics()
        self._train_iterator = None
        self._checkpoint = None
        self._manager = None
        self._train_step = None
        self.last_metrics = None
        self.is_chief = _is_chief(strategy)
        # Non-chief workers of a multi-worker run write their (identical) checkpoints
        # to a private folder, as tf.distribute requires, and no summaries.
        self.checkpoint_dir = os.path.join(
            model_dir if self.is_chief else os.path.join(model_dir, f".worker_{_task_id(strategy)}"), "checkpoints"
        )

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
            report = initialize_from(self.model, self.config.training.init_checkpoint)
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

    def _build_eval_step(self):
        strategy, task, model, metrics = self.strategy, self.task, self.model, self.metrics

        @tf.function
        def eval_step(iterator):
            def replica_step(batch):
                predictions = task.eval_step(model, batch, metrics)
                return batch, predictions

            return strategy.run(replica_step, args=(next(iterator),))

        return eval_step

    def evaluate(self, split=None, steps=None, output_dir=None, image_summaries=3, save_predictions=None):
        """Evaluates the current weights on a split; writes `metrics.json`.

        Args:
            split: dataset split (default `data.eval_split`).
            steps: evaluation batches (default `evaluation.steps`, None = all).
            output_dir: where `metrics.json` and the evaluation summaries go (default
                `model_dir/eval`); evaluation writes nothing else, so a read-only model
                directory can be evaluated into another folder.
            image_summaries: predictions written as TensorBoard images.
            save_predictions: also write every panoptic prediction as a PNG under
                `output_dir/predictions` (default `evaluation.save_predictions`).

        Returns:
            The headline metrics (dict of floats, fractions).

        Raises:
            ModelDirError: `output_dir` cannot be written.
        """
        e = self.config.evaluation
        steps = steps or e.steps
        output_dir = output_dir or os.path.join(self.model_dir, "eval")
        dataset = self.strategy.distribute_datasets_from_function(self.task.eval_dataset_fn(e.batch_size, split))
        iterator = iter(dataset)
        self.metrics.reset_state()
        eval_step = self._build_eval_step()
        save_predictions = e.save_predictions if save_predictions is None else save_predictions
        prediction_dir = os.path.join(output_dir, "predictions")
        examples, done = [], 0
        while steps is None or done < steps:
            try:
                batch, predictions = eval_step(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                break
            done += 1
            if save_predictions and "panoptic_pred" in predictions:
                with writing(prediction_dir, "predictions to"):
                    write_panoptic_pngs(batch, predictions, prediction_dir)
            if len(examples) < image_summaries:
                examples.append(_first_local(batch, predictions))
        headline, full = self.task.report(self.metrics)
        if self.is_chief:
            _write_metrics(output_dir, {"step": self.step, "batches": done, **headline, "details": full})

        if not self.is_chief:
            self.last_metrics = headline
            return headline
        with writing(output_dir, "evaluation summaries to"):
            writer = tf.summary.create_file_writer(output_dir)
            with writer.as_default(step=self.step):
                for name, value in headline.items():
                    tf.summary.scalar(f"metrics/{name}", value)
                for index, (batch, predictions) in enumerate(examples):
                    if "panoptic_pred" in predictions:
                        tf.summary.image(f"predictions/{index}", _prediction_image(batch, predictions), max_outputs=1)
        self.log("Evaluation at step {}: {}".format(self.step, ", ".join(f"{k}={v:.4f}" for k, v in headline.items())))
        self.last_metrics = headline
        return headline


def model_checkpoint_items(model):
    """Checkpoint items holding every model variable under its unique Keras path.

    TF's object tracking does not see Keras 3 layers kept in lists (stages,
    blocks) nor the random-generator states, so the variables are saved as one
    flat mapping `path -> variable`, which covers all of them.
    """
    variables = {variable.path: variable for variable in model.variables}
    if len(variables) != len(model.variables):
        raise ValueError(f"{model.name} has variables with the same path; they cannot be checkpointed by name.")
    return {"model_variables": variables}


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in resolver.cluster_spec().as_dict())


def _task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{resolver.task_type}_{resolver.task_id}" if resolver is not None else "0"


def _summary_writer(directory, enabled):
    return tf.summary.create_file_writer(directory) if enabled else tf.summary.create_noop_writer()


def _write_metrics(output_dir, values):
    path = os.path.join(output_dir, "metrics.json")
    with writing(path, "metrics"):
        tf.io.gfile.makedirs(output_dir)
        write_text_atomically(path, json.dumps(values, indent=2, default=_json_default))


def prediction_png_path(directory, file_name):
    """`directory/<file name without suffix>.png`, keeping the record's sub-folders.

    Records of one split may share a base name in different sub-folders (`day/frame.png`,
    `night/frame.png`), so the relative path is kept; parts that would leave `directory`
    (absolute paths, `..`) are dropped.
    """
    parts = [part for part in pathlib.PurePosixPath(file_name.replace("\\", "/")).parts
             if part not in ("/", ".", "..")]
    return os.path.join(directory, *parts[:-1], os.path.splitext(parts[-1])[0] + ".png")


def write_panoptic_pngs(batch, predictions, directory):
    """Writes each example's `panoptic_pred` as `prediction_png_path(directory, file name)` (all replicas)."""
    names = getattr(batch["file_name"], "values", (batch["file_name"],))
    maps = getattr(predictions["panoptic_pred"], "values", (predictions["panoptic_pred"],))
    for replica_names, replica_maps in zip(names, maps):
        for name, panoptic in zip(replica_names.numpy(), replica_maps):
            path = prediction_png_path(directory, name.decode())
            tf.io.gfile.makedirs(os.path.dirname(path))
            tf.io.write_file(path, tf.io.encode_png(encode_panoptic_rgb(panoptic)))


def _first_local(batch, predictions):
    """The first replica's first example of an evaluation batch (for image summaries)."""
    def local(value):
        values = getattr(value, "values", (value,))
        return values[0][:1]

    return (tf.nest.map_structure(local, batch), tf.nest.map_structure(local, predictions))


def _prediction_image(batch, predictions):
    """Image | semantic prediction side by side, uint8 [1, H, 2W, 3]."""
    image = tf.cast(tf.clip_by_value(batch["image"], 0, 255), tf.uint8)
    semantic = predictions["semantic_pred"]
    palette = tf.constant(class_palette(256), tf.uint8)
    colours = tf.gather(palette, tf.clip_by_value(semantic, 0, 255))
    return tf.concat([image, colours], axis=2)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON.")


def initialize_from(model, path):
    """Partial initialisation for fine-tuning from a checkpoint or `.keras` model.

    Accepts an axial_tf `.keras` file, an axial_tf training checkpoint (prefix or
    model dir), or a DeepLab2 checkpoint. Variables found with a matching shape
    are restored; the rest keep their initial values.

    Returns:
        dict with `restored` (count) and `missing` (names of model variables not restored).

    Raises:
        FileNotFoundError: No checkpoint at `path`.
        UnreadableCheckpointError: The checkpoint is truncated or corrupt.
        ValueError: The `.keras` file cannot be loaded safely.
    """
    if str(path).endswith(".keras"):
        from axial_tf.export.loading import load_keras_model  # safe_mode, one-line errors

        source = load_keras_model(path)
        values = {v.path: v for v in source.weights}
        restored, missing = 0, []
        for variable in model.weights:
            match = values.get(variable.path)
            if match is not None and tuple(match.shape) == tuple(variable.shape):
                variable.assign(match)
                restored += 1
            else:
                missing.append(variable.path)
        return {"restored": restored, "missing": missing}
    prefix = tf.train.latest_checkpoint(os.path.join(path, "checkpoints")) or tf.train.latest_checkpoint(path) \
        if os.path.isdir(path) else path
    if prefix is None:
        raise FileNotFoundError(f"No checkpoint found at {path}.")
    shapes = _checkpoint_shapes(prefix)
    if any(key.startswith("encoder/_") for key in shapes):
        from axial_tf.checkpoints.deeplab2_converter import load_deeplab2_checkpoint

        report = load_deeplab2_checkpoint(model, prefix, strict=False)
        return {"restored": report["restored"], "missing": report["missing"]}
    saved = {key.split("/.ATTRIBUTES")[0] for key in shapes if key.startswith("model_variables/")}
    targets = model_checkpoint_items(model)["model_variables"]
    present = {}
    for path, variable in targets.items():
        key = "model_variables/" + _escape(path)
        if key in saved and tuple(shapes[key + "/.ATTRIBUTES/VARIABLE_VALUE"]) == tuple(variable.shape):
            present[path] = variable
    restore_checkpoint(tf.train.Checkpoint(model_variables=present), prefix, partial=True)
    return {"restored": len(present), "missing": sorted(set(targets) - set(present))}


def _checkpoint_shapes(prefix):
    """`{key: shape}` of a checkpoint; raises UnreadableCheckpointError if its files are damaged."""
    damage = checkpoint_damage(prefix)
    if damage is not None:
        raise UnreadableCheckpointError(prefix, damage)
    return tf.train.load_checkpoint(prefix).get_variable_to_shape_map()


def _escape(name):
    """How TF writes a dict key into a checkpoint key ('/' -> '.S', '.' -> '..')."""
    return name.replace(".", "..").replace("/", ".S")
