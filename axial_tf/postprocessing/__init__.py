"""Panoptic-DeepLab post-processing in pure TensorFlow (SavedModel / TF Serving safe)."""

from axial_tf.postprocessing.centers import center_nms_heatmap, select_centers
from axial_tf.postprocessing.grouping import group_instances, nearest_center
from axial_tf.postprocessing.merge import merge_semantic_and_instance
from axial_tf.postprocessing.options import MERGE_STYLES, PostProcessOptions
from axial_tf.postprocessing.panoptic_postprocess import (
    INSTANCE_CENTER_PRED,
    INSTANCE_PRED,
    INSTANCE_SCORES,
    PANOPTIC_PRED,
    SEMANTIC_PRED,
    PanopticPostProcessor,
    panoptic_postprocess,
)

__all__ = [
    "INSTANCE_CENTER_PRED",
    "INSTANCE_PRED",
    "INSTANCE_SCORES",
    "MERGE_STYLES",
    "PANOPTIC_PRED",
    "SEMANTIC_PRED",
    "PanopticPostProcessor",
    "PostProcessOptions",
    "center_nms_heatmap",
    "group_instances",
    "merge_semantic_and_instance",
    "nearest_center",
    "panoptic_postprocess",
    "select_centers",
]
