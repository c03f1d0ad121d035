"""The Task: everything that differs between panoptic segmentation, semantic segmentation and classification.

A task turns an experiment config into its model, its training input and losses, its metrics,
its inference function, its serving module and the files prediction writes. Training,
evaluation, export and the tools call these methods and never test which task they hold.
"""

import os
import pathlib

import tensorflow as tf

from axial_tf import data
from axial_tf.experiment import builders
from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS


class Task:
    """Base of the tasks; subclasses set the class attributes and implement the methods.

    Attributes:
        name: The task's `model.task` value in configs and in export metadata.
        model_class: The Keras model class it builds (a `.keras` file of this class is this task's).
        metric_names: The `evaluation.metrics` it can compute.
        default_metrics: The metrics a config without `evaluation.metrics` gets.
        draws_overlays: Whether `write_prediction` draws `--overlay` pictures.
        result_formats: The official result formats `write_prediction` can write
            (`tools/predict.py --format`, see `experiment/serving/result_formats.py`).

    Args:
        config: An `ExperimentConfig`.

    Example:
        >>> task = task_for_config(load_config("configs/demo/panoptic_shapes.yaml"))
        >>> model = task.build_model()
        >>> losses = task.losses(model, batch)  # {"total_loss": ..., ...}
    """

    name = None
    model_class = None
    metric_names = ()
    default_metrics = ()
    draws_overlays = False
    result_formats = ()

    def __init__(self, config):
        self.config = config
        self._info = None
        self._builder = None

    @classmethod
    def config_problems(cls, config):
        """Rules of this task on a config: a list of `(key_path, problem)`; empty when it is fine."""
        del config
        return []

    # ---------------------------------------------------------------- data

    @property
    def info(self):
        """The dataset's label space (`dataset_info_from_config`); checked against `model.num_classes`."""
        if self._info is None:
            info = builders.dataset_info_from_config(self.config)
            if self.config.model.num_classes != info.num_classes:
                raise ValueError(
                    f"model.num_classes is {self.config.model.num_classes} but dataset {self.config.data.dataset!r} "
                    f"has {info.num_classes} classes ({', '.join(info.class_names)})."
                )
            self._info = info
        return self._info

    @property
    def builder(self):
        """The dataset builder, prepared (its records built offline) on first use."""
        if self._builder is None:
            config = self.config.data
            self._builder = data.prepare(builders.builder_from_config(self.config), manual_dir=config.manual_dir)
        return self._builder

    def prepare_data(self):
        """Checks the label space against `model.num_classes`, then builds the dataset's records if needed."""
        _ = self.info
        _ = self.builder

    def train_dataset_fn(self, global_batch_size):
        """A `dataset_fn(input_context, start_example=0)` of training batches."""
        raise NotImplementedError

    def eval_dataset_fn(self, global_batch_size, split=None):
        """A `dataset_fn(input_context)` of evaluation batches of `split` (default `data.eval_split`)."""
        raise NotImplementedError

    # --------------------------------------------------------------- model

    def build_model(self, sync_batch_norm=None):
        """The model the config describes (`sync_batch_norm` default: `training.sync_batch_norm`)."""
        raise NotImplementedError

    def _sync_batch_norm(self, requested):
        """`requested`, or the config's `training.sync_batch_norm` when it is None."""
        return self.config.training.sync_batch_norm if requested is None else requested

    def losses(self, model, batch, training=True):
        """Per-replica mean losses of a batch: a dict with `total_loss`."""
        raise NotImplementedError

    # ---------------------------------------------------------- evaluation

    def make_metrics(self):
        """A fresh metrics accumulator with `update_state`, `reset_state` and `report`."""
        raise NotImplementedError

    def predict(self, model, images):
        """Evaluation's predictions of float [B, H, W, 3] images (the serving module computes the same)."""
        raise NotImplementedError

    def eval_step(self, model, batch, metrics):
        """Predicts a batch and adds it to `metrics`; returns the predictions."""
        raise NotImplementedError

    def report(self, metrics):
        """`(headline, full)`: the metrics logged and summarised, and everything for metrics.json."""
        report = metrics.report()
        return report, report

    def write_eval_predictions(self, batch, predictions, directory):
        """Writes a batch's predictions as files under `directory` (evaluation's `save_predictions`)."""
        del batch, predictions, directory  # a task without per-image maps writes none

    def summary_image(self, batch, predictions):
        """uint8 [1, H, W', 3] picture of one example's prediction for TensorBoard, or None."""
        del batch, predictions
        return None

    # ------------------------------------------------------------- serving

    def serving_module(self, model, top_k=5, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
        """`model` wrapped with the pre- and post-processing evaluation uses, as a serving `tf.Module`."""
        raise NotImplementedError

    @classmethod
    def serving_module_without_config(cls, model, top_k=5, image_size=None, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
        """The serving module of a `.keras` model exported without its experiment config.

        Raises:
            ValueError: The task needs facts that a `.keras` file does not hold.
        """
        del model, top_k, image_size, max_megapixels
        raise ValueError(
            f"A {cls.name} model needs its experiment config (--config): the dataset's label space, input size and "
            "post-processing are not stored in a .keras file."
        )

    @classmethod
    def write_prediction(cls, outputs, image, output_base, info, source, file_format="png", overlay=False,
                         alpha=0.5):
        """Writes one image's prediction files (prediction tool).

        Args:
            outputs: The image's `serving_default` outputs (NumPy, no batch dim).
            image: The uint8 [H, W, 3] input image.
            output_base: Path prefix of the files to write.
            info: The export's `label_space` dict.
            source: The input file's path.
            file_format: "png" or "npy" for label maps.
            overlay: Also write a colourised overlay.
            alpha: Opacity of the overlay colours.

        Returns:
            A JSON-ready record for `predictions.json`, or None when the files say it all.
        """
        raise NotImplementedError


def prediction_png_path(directory, file_name):
    """`directory/<file name without suffix>.png`, keeping the record's sub-folders.

    Records of one split may share a base name in different sub-folders (`day/frame.png`,
    `night/frame.png`), so the relative path is kept; parts that would leave `directory`
    (absolute paths, `..`) are dropped.
    """
    parts = [part for part in pathlib.PurePosixPath(file_name.replace("\\", "/")).parts
             if part not in ("/", ".", "..")]
    return os.path.join(directory, *parts[:-1], os.path.splitext(parts[-1])[0] + ".png")


def write_label_pngs(batch, maps, directory, encode):
    """Writes each example's label map `encode(map)` (uint8 [H, W, C]) as `prediction_png_path` (all replicas)."""
    names = getattr(batch["file_name"], "values", (batch["file_name"],))
    replica_maps = getattr(maps, "values", (maps,))
    for replica_names, replica_values in zip(names, replica_maps):
        for name, value in zip(replica_names.numpy(), replica_values):
            path = prediction_png_path(directory, name.decode())
            tf.io.gfile.makedirs(os.path.dirname(path))
            tf.io.write_file(path, tf.io.encode_png(encode(value)))
