"""What export and prediction need from an experiment: the model, its pre- and post-processing.

Evaluation (`axial_tf.training.tasks.PanopticTask`) derives the same three
things from the same config; the functions here build them without preparing
the dataset, so a model can be exported on a machine that has no data.
"""

import contextlib
import dataclasses
import os
import re
import zipfile

import keras
import tensorflow as tf

from axial_tf import data
from axial_tf.postprocessing import PostProcessOptions

CHECKPOINT_SUBDIR = "checkpoints"


def builder_from_config(config):
    """The (unprepared) TFDS builder of an experiment's dataset (`data.dataset`, `data.builder_options`)."""
    options = dict(config.data.builder_options)
    return data.get_builder(
        config.data.dataset, data_dir=config.data.data_dir, config=options.pop("config", None), **options
    )


def dataset_info_from_config(config):
    """The label space of an experiment's dataset, with the config's label overrides.

    Args:
        config: An `ExperimentConfig`.

    Returns:
        A `PanopticDatasetInfo` (with `data.label_divisor` / `data.ignore_label`
        applied when set) or a `ClassificationDatasetInfo`.
    """
    info = data.dataset_info_from_builder(builder_from_config(config), manual_dir=config.data.manual_dir)
    if config.model.task == "classification":
        return info
    overrides = {
        key: value
        for key, value in (("label_divisor", config.data.label_divisor), ("ignore_label", config.data.ignore_label))
        if value is not None
    }
    return dataclasses.replace(info, **overrides) if overrides else info


def postprocess_options_from_config(config, info):
    """The panoptic post-processing of evaluation: `evaluation.postprocessing` + the label space.

    Args:
        config: An `ExperimentConfig` of a panoptic experiment.
        info: Its `PanopticDatasetInfo` (see `dataset_info_from_config`).

    Returns:
        A `PostProcessOptions`.
    """
    post = config.evaluation.postprocessing
    return PostProcessOptions.with_merge_style(
        post.merge_style,
        thing_class_ids=tuple(info.thing_class_ids),
        label_divisor=info.label_divisor,
        void_label=info.ignore_label,
        center_threshold=post.center_threshold,
        nms_kernel=post.nms_kernel,
        keep_k_centers=post.keep_k_centers,
        stuff_area_limit=post.stuff_area_limit,
    )


def inference_preprocessor_from_config(config):
    """The resize/pad of panoptic evaluation: images go to `data.crop_size` ("shrink" policy).

    Args:
        config: An `ExperimentConfig` of a panoptic experiment.

    Returns:
        An `InferencePreprocessor`.
    """
    height, width = config.data.crop_size
    return data.InferencePreprocessor(height=height, width=width)


def resolve_checkpoint(path):
    """The checkpoint prefix named by a model directory, a checkpoint directory or a prefix.

    Args:
        path: `MODEL_DIR` (latest of `MODEL_DIR/checkpoints`), a directory of
            checkpoints (its latest), or a prefix such as `.../ckpt-3000`.

    Returns:
        The checkpoint prefix.

    Raises:
        FileNotFoundError: If no checkpoint is found there, or `path` does not exist at all.
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path) and not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"{path} does not exist: it is neither a model directory nor a checkpoint prefix "
                                f"(there is no {path}.index either).")
    if tf.io.gfile.isdir(path):
        prefix = tf.train.latest_checkpoint(os.path.join(path, CHECKPOINT_SUBDIR)) or tf.train.latest_checkpoint(path)
        if prefix is None:
            raise FileNotFoundError(
                f"No checkpoint in {path} or {os.path.join(path, CHECKPOINT_SUBDIR)} (looked for a 'checkpoint' "
                "index file written by tf.train.CheckpointManager)."
            )
        return prefix
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"Checkpoint {path!r} not found: {path}.index does not exist.")
    return path


@contextlib.contextmanager
def _global_dtype_policy(name):
    """Builds layers under the Keras dtype policy `name`, then restores the previous one."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def load_keras_model(path):
    """Loads an axial_tf `.keras` model with `safe_mode=True` (no lambdas, no pickles).

    Args:
        path: A `.keras` file written by `model.save` or `tools/convert_checkpoint.py`.

    Returns:
        The Keras model, uncompiled.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: The file is no `.keras` archive (e.g. truncated), or it refers to code that
            safe mode does not load (a Python lambda, an unregistered function or class); one line
            naming the file and the culprit.
    """
    # Importing the model modules registers their classes for deserialisation.
    from axial_tf.models import axial_deeplab, classifier  # noqa: F401

    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Keras model {path!r} not found.")
    with tf.io.gfile.GFile(path, "rb") as stream:
        if not zipfile.is_zipfile(stream):
            raise ValueError(f"{path} is not a .keras archive (a zip file written by model.save); it may be truncated.")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        reason = _keras_load_reason(error)
    raise ValueError(f"Cannot load {path} safely: {reason}.")


def _keras_load_reason(error):
    """The innermost cause of a Keras deserialisation error, on one line.

    Keras nests the error of each enclosing layer and model, and prints their configs, into one
    message; the last "Exception encountered:" part is the actual culprit.
    """
    text = str(error).split("Exception encountered:")[-1].strip()
    if "Lambda" in text and "safe_mode" in text:
        return ("it holds a Lambda layer with a Python lambda, which safe mode refuses to deserialise "
                "(it could run arbitrary code)")
    function = re.search(r"Could not locate (function|class) '([^']+)'", text)
    if function:
        return (f"it refers to the {function.group(1)} {function.group(2)!r}, which is not one of axial_tf's "
                "or Keras's registered objects; safe mode loads no other code")
    return text.splitlines()[0].split(". ")[0] if text else type(error).__name__


def load_model(config=None, model_dir=None, checkpoint=None, keras_model=None):
    """The model of an experiment, from a training checkpoint or a `.keras` file.

    A checkpoint restores only the model's weights (the trainer's checkpoint
    also holds the optimizer state) into the model the config
    describes, built under the config's `training.mixed_precision` policy as
    evaluation builds it. Every model variable must be found in the checkpoint.

    Args:
        config: The `ExperimentConfig` (required with a checkpoint; with a
            `.keras` model it is used to check the task and class count).
        model_dir: A training model directory (latest checkpoint).
        checkpoint: A checkpoint prefix or directory (a `.keras` path counts
            as `keras_model`).
        keras_model: A `.keras` file.

    Returns:
        An `AxialDeepLab` or `AxialResNetClassifier`.

    Raises:
        ValueError: Not exactly one source, a checkpoint without config, or a
            model that does not match the config.
        FileNotFoundError: The source does not exist.
    """
    sources = {"model_dir": model_dir, "checkpoint": checkpoint, "keras_model": keras_model}
    given = [name for name, value in sources.items() if value]
    if len(given) != 1:
        raise ValueError(f"Give exactly one of model_dir, checkpoint and keras_model; got {given or 'none'}.")
    if checkpoint and os.fspath(checkpoint).endswith(".keras"):  # as tools/evaluate.py accepts it
        checkpoint, keras_model = None, checkpoint
    if keras_model:
        model = load_keras_model(keras_model)
        if config is not None:
            _check_model_matches_config(model, config, keras_model)
        return model
    if config is None:
        raise ValueError(f"Restoring {given[0]} {sources[given[0]]!r} needs the experiment config that built it.")
    from axial_tf.models.factory import build_model

    with _global_dtype_policy(config.training.mixed_precision):
        model = build_model(config.model)
    restore_weights(model, model_dir or checkpoint, config=config)
    return model


def restore_weights(model, source, config=None, extra_items=None):
    """Restores every weight of a built `model` from a training checkpoint or a `.keras` file.

    Args:
        model: The model to fill (e.g. the trainer's, built under its strategy).
        source: A `.keras` file, a model directory, a checkpoint directory or a
            checkpoint prefix (see `resolve_checkpoint`).
        config: The `ExperimentConfig` that built `model`, named in errors.
        extra_items: Further `tf.train.Checkpoint` items to restore from a
            training checkpoint (e.g. the optimizer, which holds the step);
            a `.keras` file has none, so they keep their values.

    Returns:
        The checkpoint prefix or `.keras` path that was read.

    Raises:
        ValueError: The source does not hold every weight of `model` with its shape, or a
            `.keras` file cannot be loaded safely.
        UnreadableCheckpointError: The checkpoint is truncated or corrupt (a `ValueError`;
            the message names ckpt-N).
        FileNotFoundError: The source does not exist.
    """
    from axial_tf.training.checkpoints import restore_checkpoint
    from axial_tf.training.trainer import model_checkpoint_items

    source = os.fspath(source)
    described = (
        f" (backbone {config.model.backbone!r}, {config.model.num_classes} classes)" if config is not None else ""
    )
    if source.endswith(".keras"):
        weights = load_keras_model(source).weights
        if len(weights) != len(model.weights):
            raise ValueError(
                f"{source} has {len(weights)} weights; the model the config describes{described} has "
                f"{len(model.weights)}."
            )
        for target, value in zip(model.weights, weights):
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(
                    f"{source}: {value.path} has shape {tuple(value.shape)}; the model the config "
                    f"describes{described} has {tuple(target.shape)} there."
                )
            target.assign(value)
        return source
    prefix = resolve_checkpoint(source)
    # The trainer's layout: every variable under its Keras path.
    checkpoint = tf.train.Checkpoint(**model_checkpoint_items(model), **(extra_items or {}))
    restore_checkpoint(checkpoint, prefix, partial=True, described=described)
    return prefix


def _check_model_matches_config(model, config, source):
    from axial_tf.models.classifier import AxialResNetClassifier

    task = "classification" if isinstance(model, AxialResNetClassifier) else "panoptic"
    if task != config.model.task:
        raise ValueError(f"{source} is a {task} model but the config's model.task is {config.model.task!r}.")
    if model.num_classes != config.model.num_classes:
        raise ValueError(
            f"{source} has {model.num_classes} classes but the config's model.num_classes is "
            f"{config.model.num_classes}."
        )


def experiment_config_for(config_path=None, model_dir=None, overrides=()):
    """The experiment config of an export or prediction run.

    Args:
        config_path: A `.yaml`/`.gin` experiment file; when None, the
            `config.yaml` the trainer saved in `model_dir` is used if present.
        model_dir: The training model directory, if any.
        overrides: "key.sub=value" overrides (e.g. "data.crop_size=[1025,2049]").

    Returns:
        An `ExperimentConfig`, or None when there is neither a file nor a saved config.
    """
    from axial_tf.training.config import CONFIG_FILENAME, load_config

    if config_path is None and model_dir is not None:
        saved = os.path.join(os.fspath(model_dir), CONFIG_FILENAME)
        config_path = saved if tf.io.gfile.exists(saved) else None
    if config_path is None:
        if overrides:
            raise ValueError(f"--override {list(overrides)} needs a config (--config).")
        return None
    return load_config(config_path, overrides=overrides)
