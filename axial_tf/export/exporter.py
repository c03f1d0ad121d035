"""From an experiment (config + checkpoint, or a `.keras` model) to a served SavedModel."""

import os

import tensorflow as tf

import axial_tf
from axial_tf.experiment.checkpoints import load_model
from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS, max_pixels_from_megapixels
from axial_tf.experiment.tasks import task_class, task_for_config, task_of_model
from axial_tf.export.saved_model import check_output_dir, resolve_export_dir, staged_export, write_saved_model


def signature_contract(module):
    """Input and output names, dtypes and shapes (None = any) of each serving signature.

    Args:
        module: A serving module.

    Returns:
        `{signature: {"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}}`.
    """

    def describe(specs):
        return {name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()} for name, spec in sorted(specs.items())}

    contract = {}
    for name, function in module.signatures().items():
        inputs = {spec.name: spec for spec in function.structured_input_signature[0]}
        outputs = {key: value for key, value in function.structured_outputs.items()}
        contract[name] = {"inputs": describe(inputs), "outputs": describe(outputs)}
    return contract


def export_info(module, info=None, source=None):
    """The `axial_tf_export.json` metadata: `label_space_info` plus the signature contract.

    Args:
        module: A serving module of a task (`Task.serving_module`).
        info: The dataset descriptor (dense tasks: required for the class names).
        source: What the weights came from (checkpoint or `.keras` path).

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "axial_tf_version": axial_tf.__version__,
        "source": source,
        **module.label_space(info),
        "signatures": signature_contract(module),
    }


def check_model_source(model_dir=None, checkpoint=None, keras_model=None):
    """Fails early, naming it, when the model directory or `.keras` file to load does not exist.

    (A missing checkpoint is reported by `resolve_checkpoint`.)

    Args:
        model_dir, checkpoint, keras_model: As for `build_serving_module`.

    Raises:
        FileNotFoundError: If the model directory or `.keras` file does not exist.
    """
    if model_dir and not tf.io.gfile.isdir(os.fspath(model_dir)):
        raise FileNotFoundError(f"--model_dir {model_dir} does not exist (or is not a folder).")
    keras_file = keras_model or (checkpoint if os.fspath(checkpoint or "").endswith(".keras") else None)
    if keras_file and not tf.io.gfile.exists(os.fspath(keras_file)):
        raise FileNotFoundError(f"Keras model {keras_file} does not exist.")


def _check_sources(config, model_dir, checkpoint, keras_model):
    """The model source exists, and a checkpoint comes with the config that describes its model."""
    check_model_source(model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model)
    if config is not None or keras_model or os.fspath(checkpoint or "").endswith(".keras"):
        return
    if model_dir:
        raise ValueError(f"--model_dir {model_dir} has no config.yaml (saved by training); pass --config.")
    if checkpoint:
        raise ValueError(f"--checkpoint {checkpoint} needs the experiment config that trained it; pass --config.")


def build_serving_module(
    config=None, model_dir=None, checkpoint=None, keras_model=None, top_k=5, image_size=None,
    max_megapixels=DEFAULT_MAX_MEGAPIXELS,
):
    """Loads a trained model and wraps it in its serving module.

    Args:
        config: The `ExperimentConfig` (required for checkpoints and for the
            dense tasks; optional for a classification `.keras` model).
        model_dir: Training model directory (its latest checkpoint).
        checkpoint: Checkpoint prefix or directory (or a `.keras` file).
        keras_model: A `.keras` file.
        top_k: Classes returned per image (classification).
        image_size: Classification input side when there is no config
            (default 224).
        max_megapixels: Most pixels (millions) of one request.

    Returns:
        A tuple `(module, info)`: the serving module and the dataset
        descriptor (None for a classifier exported without config).

    Raises:
        ValueError: A dense model without config, or bad sources.
        FileNotFoundError: A missing model directory, checkpoint or file.
    """
    _check_sources(config, model_dir, checkpoint, keras_model)
    model = load_model(config, model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model)
    if config is not None:
        task = task_for_config(config)
        return task.serving_module(model, top_k=top_k, max_megapixels=max_megapixels), task.info
    module = task_class(task_of_model(model)).serving_module_without_config(
        model, top_k=top_k, image_size=image_size, max_megapixels=max_megapixels
    )
    return module, None


def export_model(
    output_dir,
    config=None,
    model_dir=None,
    checkpoint=None,
    keras_model=None,
    top_k=5,
    image_size=None,
    overwrite=False,
    max_megapixels=DEFAULT_MAX_MEGAPIXELS,
):
    """Exports a trained model as a SavedModel for TF Serving (what `tools/export.py` runs).

    The export is atomic (`staged_export`); `resolve_export_dir` says where it
    goes: a serving base folder such as `exports/NAME` gets its next version.

    Args:
        output_dir: SavedModel directory to write, or a serving base folder.
        config, model_dir, checkpoint, keras_model, top_k, image_size,
            max_megapixels: As for `build_serving_module`.
        overwrite: Replace an earlier export at `output_dir`.

    Returns:
        A tuple `(module, saved_model_dir)`: the serving module and where it was saved.

    Raises:
        FileExistsError: If the target holds files that may not be replaced.
        OSError: If the target's parent folder cannot be written.
    """
    saved_model_dir = resolve_export_dir(output_dir)
    # Everything that can be checked before spending time on the model.
    check_output_dir(saved_model_dir, overwrite)
    _check_sources(config, model_dir, checkpoint, keras_model)
    max_pixels_from_megapixels(max_megapixels)
    with staged_export(saved_model_dir, overwrite) as staging:  # creating it checks the folder is writable
        module, info = build_serving_module(
            config, model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model, top_k=top_k,
            image_size=image_size, max_megapixels=max_megapixels,
        )
        source = str(model_dir or checkpoint or keras_model)
        write_saved_model(module, staging, export_info(module, info, source=source))
    return module, saved_model_dir
