"""Config-to-object builders shared by every task: the dataset, its label space, pre- and post-processing.

They build without preparing the dataset, so a model can be exported or served on a machine
that has no data. The Task classes (`axial_tf.experiment.tasks`) combine them.
"""

import dataclasses

from axial_tf import data
from axial_tf.postprocessing import PostProcessOptions


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
    if not isinstance(info, data.PanopticDatasetInfo):
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
    """The resize/pad of dense evaluation: images go to `data.crop_size` ("shrink" policy).

    Args:
        config: An `ExperimentConfig` of a panoptic or semantic experiment.

    Returns:
        An `InferencePreprocessor`.
    """
    height, width = config.data.crop_size
    return data.InferencePreprocessor(height=height, width=width)


def augmentation_from_config(augmentation):
    """The training `AugmentationOptions` of a `data.augmentation` section."""
    photometric = {} if augmentation.photometric else dict(
        brightness_delta=0.0, contrast_range=(1.0, 1.0), saturation_range=(1.0, 1.0), hue_delta=0.0
    )
    return data.AugmentationOptions(
        min_scale=augmentation.min_scale,
        max_scale=augmentation.max_scale,
        scale_step=augmentation.scale_step,
        flip_probability=0.5 if augmentation.horizontal_flip else 0.0,
        autoaugment_probability=0.2 if augmentation.autoaugment else 0.0,
        **photometric,
    )


def backbone_overrides_from_config(model_config, sync_batch_norm=False):
    """The `AxialResNet` settings of a `model` section: its overrides, output stride and BN sync."""
    overrides = dict(model_config.backbone_overrides)
    overrides.update(output_stride=model_config.output_stride, sync_batch_norm=sync_batch_norm)
    return overrides
