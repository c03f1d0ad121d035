"""From an experiment (config + checkpoint, or a `.keras` model) to a served SavedModel."""

import os

import tensorflow as tf

import axial_tf
from axial_tf.export.classification import ClassificationServingModule
from axial_tf.export.loading import (
    dataset_info_from_config,
    inference_preprocessor_from_config,
    load_model,
    postprocess_options_from_config,
)
from axial_tf.export.panoptic import PanopticServingModule
from axial_tf.export.saved_model import check_output_dir, resolve_export_dir, staged_export, write_saved_model
from axial_tf.export.serving import DEFAULT_MAX_MEGAPIXELS, max_pixels_from_megapixels

DEFAULT_CLASSIFICATION_IMAGE_SIZE = 224


def is_classifier(model):
    """Whether `model` is an `AxialResNetClassifier` (else an `AxialDeepLab`)."""
    from axial_tf.models.classifier import AxialResNetClassifier

    return isinstance(model, AxialResNetClassifier)


def serving_module_from_config(model, config, info=None, top_k=5, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
    """Wraps `model` with the pre- and post-processing its experiment evaluates with.

    Args:
        model: The experiment's `AxialDeepLab` or `AxialResNetClassifier`.
        config: Its `ExperimentConfig`.
        info: Its dataset descriptor (default: read with `dataset_info_from_config`).
        top_k: Classes returned per image (classification).
        max_megapixels: Most pixels (millions) of one request.

    Returns:
        A `PanopticServingModule` or `ClassificationServingModule`.
    """
    info = info or dataset_info_from_config(config)
    if config.model.task == "classification":
        return ClassificationServingModule(
            model, image_size=config.data.crop_size[0], top_k=top_k, class_names=info.class_names,
            max_megapixels=max_megapixels,
        )
    return PanopticServingModule(
        model,
        postprocess_options_from_config(config, info),
        inference_preprocessor_from_config(config),
        scales=config.evaluation.eval_scales,
        flip=config.evaluation.flip,
        max_megapixels=max_megapixels,
    )


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


def label_space_info(module, info=None):
    """What a client needs to read a module's outputs: task, class names, label encoding.

    Args:
        module: A `PanopticServingModule` or `ClassificationServingModule`.
        info: The dataset descriptor (panoptic: required for the class names).

    Returns:
        A JSON-serialisable dict.
    """
    if isinstance(module, ClassificationServingModule):
        return {
            "task": "classification",
            "class_names": list(module.class_names),
            "image_size": module.image_size,
            "top_k": module.top_k,
            "max_megapixels": module.max_megapixels,
        }
    options = module.postprocess_options
    preprocessor = module.preprocessor
    return {
        "task": "panoptic",
        "class_names": list(info.class_names),
        "thing_class_ids": list(options.thing_class_ids),
        "label_divisor": options.label_divisor,
        "void_label": options.void_label,
        "postprocessing": options.to_dict(),
        "input_size": list(preprocessor.size),
        "resize_policy": preprocessor.resize_policy,
        "eval_scales": list(module.scales),
        "flip": module.flip,
        "max_megapixels": module.max_megapixels,
    }


def export_info(module, info=None, source=None):
    """The `axial_tf_export.json` metadata: `label_space_info` plus the signature contract.

    Args:
        module: A `PanopticServingModule` or `ClassificationServingModule`.
        info: The dataset descriptor (panoptic: required for the class names).
        source: What the weights came from (checkpoint or `.keras` path).

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "axial_tf_version": axial_tf.__version__,
        "source": source,
        **label_space_info(module, info),
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
        config: The `ExperimentConfig` (required for panoptic models and for
            checkpoints; optional for a classification `.keras` model).
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
        ValueError: A panoptic model without config, or bad sources.
        FileNotFoundError: A missing model directory, checkpoint or file.
    """
    _check_sources(config, model_dir, checkpoint, keras_model)
    model = load_model(config, model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model)
    if config is not None:
        info = dataset_info_from_config(config)
        module = serving_module_from_config(model, config, info=info, top_k=top_k, max_megapixels=max_megapixels)
        return module, info
    if not is_classifier(model):
        raise ValueError(
            f"The panoptic model {keras_model or checkpoint} needs its experiment config (--config): the dataset's "
            "thing classes, label divisor, input size and post-processing are not stored in a .keras file."
        )
    module = ClassificationServingModule(
        model, image_size=image_size or DEFAULT_CLASSIFICATION_IMAGE_SIZE, top_k=top_k, max_megapixels=max_megapixels
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
