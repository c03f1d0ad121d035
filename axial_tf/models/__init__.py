"""Backbones and task models."""

from axial_tf.models.axial_resnet import (
    AxialResNet,
    BlockGroup,
    InceptionStem,
    SymmetricMaxPool2D,
    endpoint_strides,
    stage_plan,
)
from axial_tf.models.axial_deeplab import AxialDeepLab
from axial_tf.models.backbone_registry import backbone_config, get_backbone, list_backbones
from axial_tf.models.classifier import AxialResNetClassifier
from axial_tf.models.semantic_deeplab import AxialSemanticDeepLab

__all__ = [
    "AxialDeepLab",
    "AxialResNet",
    "AxialResNetClassifier",
    "AxialSemanticDeepLab",
    "BlockGroup",
    "InceptionStem",
    "SymmetricMaxPool2D",
    "backbone_config",
    "endpoint_strides",
    "get_backbone",
    "list_backbones",
    "stage_plan",
]
