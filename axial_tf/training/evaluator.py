"""Evaluation: a task's metrics over a dataset split, for one checkpoint or each new one.

The Evaluator needs no optimizer: it builds (or is given) the model, restores weights with
`restore_weights`, runs the task's `eval_step` on every replica and writes `metrics.json`,
TensorBoard summaries and, on request, the task's prediction files. The Trainer owns one for
`train_and_eval`, sharing its model.
"""

import json
import os

import numpy as np
import tensorflow as tf

from axial_tf.experiment.checkpoints import CHECKPOINT_SUBDIR, checkpoint_step, restore_weights
from axial_tf.experiment.tasks import task_for_config
from axial_tf.training.runtime import configure_runtime, is_chief
from axial_tf.utils.files import write_text_atomically, writing


class Evaluator:
    """Evaluates the model of an experiment config on a dataset split.

    Args:
        config: an `ExperimentConfig`.
        model_dir: the training model directory (checkpoints are read from
            `model_dir/checkpoints`; results go to `model_dir/eval` unless
            `evaluate` is given another `output_dir`).
        strategy: a `tf.distribute.Strategy`.
        log: print function for progress lines (None = silent).
        task: the experiment's Task (default: made from `config`).
        model: the model to evaluate (default: built from the config, under
            `strategy`; then restore weights with `restore`).
        step: a callable returning the current training step, when the model
            is being trained (default: the step of the last restored checkpoint).

    Example:
        >>> evaluator = Evaluator(load_config("configs/demo/panoptic_shapes.yaml"), "runs/demo",
        ...                       tf.distribute.get_strategy())
        >>> evaluator.restore("runs/demo")  # the latest checkpoint
        >>> evaluator.evaluate()  # {"pq": ..., "miou": ...}
    """

    def __init__(self, config, model_dir, strategy, log=print, task=None, model=None, step=None):
        self.config = config
        self.model_dir = model_dir
        self.strategy = strategy
        self.log = log or (lambda *args, **kwargs: None)
        self.task = task or task_for_config(config)
        if model is None:
            self.task.prepare_data()  # before seeding, as training does
            configure_runtime(config)
            with strategy.scope():
                model = self.task.build_model()
        self.model = model
        with strategy.scope():
            self.metrics = self.task.make_metrics()
        self._restored_step = 0
        self._step = step or (lambda: self._restored_step)
        self.is_chief = is_chief(strategy)
        self.last_metrics = None

    @property
    def step(self):
        """The training step of the evaluated weights."""
        return self._step()

    def restore(self, source):
        """Restores every model weight from a model directory, checkpoint or `.keras` file.

        Args:
            source: see `restore_weights`.

        Returns:
            The checkpoint prefix or `.keras` path read.

        Raises:
            FileNotFoundError: There is no checkpoint (random weights are never evaluated).
            UnreadableCheckpointError: The checkpoint is truncated or corrupt.
            ValueError: The checkpoint does not hold this model's weights.
        """
        restored = restore_weights(self.model, source, self.config)
        self._restored_step = checkpoint_step(restored)
        return restored

    def continuous(self, timeout=None):
        """Evaluates every new checkpoint of `model_dir` until one of the final step (or the timeout).

        Args:
            timeout: seconds to wait for a new checkpoint (default
                `evaluation.continuous_eval_timeout`; None waits forever).

        Returns:
            The last metrics.
        """
        timeout = self.config.evaluation.continuous_eval_timeout if timeout is None else timeout
        metrics = {}
        directory = os.path.join(self.model_dir, CHECKPOINT_SUBDIR)
        for prefix in tf.train.checkpoints_iterator(directory, timeout=timeout):
            self.restore(prefix)
            metrics = self.evaluate()
            if self.step >= self.config.training.steps:
                break
        else:
            self.log(f"No new checkpoint within {timeout} s; stopping.")
        return metrics

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
            save_predictions: also write the task's prediction files under
                `output_dir/predictions` (default `evaluation.save_predictions`).

        Returns:
            The headline metrics (dict of floats, fractions).

        Raises:
            ModelDirError: `output_dir` cannot be written.
        """
        e = self.config.evaluation
        steps = steps or e.steps
        output_dir = os.fspath(output_dir or os.path.join(self.model_dir, "eval"))
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
            if save_predictions:
                with writing(prediction_dir, "predictions to"):
                    self.task.write_eval_predictions(batch, predictions, prediction_dir)
            if len(examples) < image_summaries:
                examples.append(_first_local(batch, predictions))
        headline, full = self.task.report(self.metrics)
        self.last_metrics = headline
        if not self.is_chief:
            return headline
        _write_metrics(output_dir, {"step": self.step, "batches": done, **headline, "details": full})
        with writing(output_dir, "evaluation summaries to"):
            writer = tf.summary.create_file_writer(output_dir)
            with writer.as_default(step=self.step):
                for name, value in headline.items():
                    tf.summary.scalar(f"metrics/{name}", value)
                for index, (batch, predictions) in enumerate(examples):
                    image = self.task.summary_image(batch, predictions)
                    if image is not None:
                        tf.summary.image(f"predictions/{index}", image, max_outputs=1)
        self.log("Evaluation at step {}: {}".format(self.step, ", ".join(f"{k}={v:.4f}" for k, v in headline.items())))
        return headline


def _write_metrics(output_dir, values):
    path = os.path.join(output_dir, "metrics.json")
    with writing(path, "metrics"):
        tf.io.gfile.makedirs(output_dir)
        write_text_atomically(path, json.dumps(values, indent=2, default=_json_default))


def _first_local(batch, predictions):
    """The first replica's first example of an evaluation batch (for image summaries)."""
    def local(value):
        values = getattr(value, "values", (value,))
        return values[0][:1]

    return (tf.nest.map_structure(local, batch), tf.nest.map_structure(local, predictions))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON.")
