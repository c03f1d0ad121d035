"""Builds the model an experiment config describes."""

import dataclasses

from axial_tf.models.axial_deeplab import AxialDeepLab


def build_model(model_config, sync_batch_norm=False):
    """An `AxialDeepLab` or `AxialResNetClassifier` from a `ModelConfig`.

    Args:
        model_config: the `model` section of an `ExperimentConfig`.
        sync_batch_norm: synchronise batch statistics across replicas.
    """
    overrides = dict(model_config.backbone_overrides)
    overrides.update(output_stride=model_config.output_stride, sync_batch_norm=sync_batch_norm)
    if model_config.task == "classification":
        from axial_tf.models.classifier import AxialResNetClassifier

        return AxialResNetClassifier(
            model_config.backbone,
            num_classes=model_config.num_classes,
            backbone_overrides=overrides,
            dropout=model_config.classifier_dropout,
        )
    return AxialDeepLab(
        model_config.backbone,
        num_classes=model_config.num_classes,
        backbone_overrides=overrides,
        semantic_decoder=dataclasses.asdict(model_config.semantic_decoder),
        instance_decoder=dataclasses.asdict(model_config.instance_decoder),
        sync_batch_norm=sync_batch_norm,
    )
