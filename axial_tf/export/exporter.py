"""From an experiment (config + checkpoint, or a `.keras` model) to a served SavedModel."""

import axial_tf
from axial_tf.export.classification import ClassificationServingModule
from axial_tf.export.loading import (
    dataset_info_from_config,
    inference_preprocessor_from_config,
    load_model,
    postprocess_options_from_config,
)
from axial_tf.export.panoptic import PanopticServingModule
from axial_tf.export.saved_model import check_output_dir, save_serving_module

DEFAULT_CLASSIFICATION_IMAGE_SIZE = 224


def is_classifier(model):
    """Whether `model` is an `AxialResNetClassifier` (else an `AxialDeepLab`)."""
    from axial_tf.models.classifier import AxialResNetClassifier

    return isinstance(model, AxialResNetClassifier)


def serving_module_from_config(model, config, info=None, top_k=5):
    """Wraps `model` with the pre- and post-processing its experiment evaluates with.

    Args:
        model: The experiment's `AxialDeepLab` or `AxialResNetClassifier`.
        config: Its `ExperimentConfig`.
        info: Its dataset descriptor (default: read with `dataset_info_from_config`).
        top_k: Classes returned per image (classification).

    Returns:
        A `PanopticServingModule` or `ClassificationServingModule`.
    """
    info = info or dataset_info_from_config(config)
    if config.model.task == "classification":
        return ClassificationServingModule(
            model, image_size=config.data.crop_size[0], top_k=top_k, class_names=info.class_names
        )
    return PanopticServingModule(
        model,
        postprocess_options_from_config(config, info),
        inference_preprocessor_from_config(config),
        scales=config.evaluation.eval_scales,
        flip=config.evaluation.flip,
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


def build_serving_module(
    config=None, model_dir=None, checkpoint=None, keras_model=None, top_k=5, image_size=None
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

    Returns:
        A tuple `(module, info)`: the serving module and the dataset
        descriptor (None for a classifier exported without config).

    Raises:
        ValueError: A panoptic model without config, or bad sources.
    """
    model = load_model(config, model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model)
    if config is not None:
        info = dataset_info_from_config(config)
        return serving_module_from_config(model, config, info=info, top_k=top_k), info
    if not is_classifier(model):
        raise ValueError(
            f"The panoptic model {keras_model or checkpoint} needs its experiment config (--config): the dataset's "
            "thing classes, label divisor, input size and post-processing are not stored in a .keras file."
        )
    module = ClassificationServingModule(model, image_size=image_size or DEFAULT_CLASSIFICATION_IMAGE_SIZE, top_k=top_k)
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
):
    """Exports a trained model as a SavedModel for TF Serving (what `tools/export.py` runs).

    Args:
        output_dir: SavedModel directory to write.
        config, model_dir, checkpoint, keras_model, top_k, image_size: As for
            `build_serving_module`.
        overwrite: Replace an existing non-empty `output_dir`.

    Returns:
        The serving module that was saved.
    """
    check_output_dir(output_dir, overwrite)  # before spending time on the model
    module, info = build_serving_module(
        config, model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model, top_k=top_k, image_size=image_size
    )
    source = str(model_dir or checkpoint or keras_model)
    save_serving_module(module, output_dir, export_info(module, info, source=source), overwrite=overwrite)
    return module
