"""Backbones and task models."""

from axial_tf.models.axial_resnet import (
    AxialResNet,
    BlockGroup,
    InceptionStem,
    SymmetricMaxPool2D,
    endpoint_strides,
    stage_plan,
)
from axial_tf.models.backbone_registry import backbone_config, get_backbone, list_backbones

__all__ = [
    "AxialResNet",
    "BlockGroup",
    "InceptionStem",
    "SymmetricMaxPool2D",
    "backbone_config",
    "endpoint_strides",
    "get_backbone",
    "list_backbones",
    "stage_plan",
]
