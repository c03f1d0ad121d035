"""Panoptic metrics: streaming PQ / SQ / RQ, mIoU and (optional) COCO instance AP."""

from axial_tf.utils.optional_imports import tensorflow_installed, tensorflow_needed

if not tensorflow_installed():
    raise tensorflow_needed("axial_tf.metrics (the evaluation metrics)")

from axial_tf.metrics.instance_ap import COCO_STAT_KEYS, PanopticInstanceAP
from axial_tf.metrics.mean_iou import SemanticMeanIoU
from axial_tf.metrics.panoptic_evaluator import PanopticEvaluator
from axial_tf.metrics.panoptic_quality import PanopticQuality
from axial_tf.metrics.segment_matching import panoptic_segment_statistics
from axial_tf.metrics.summaries import mean_iou_summary, panoptic_quality_summary

__all__ = [
    "COCO_STAT_KEYS",
    "PanopticEvaluator",
    "PanopticInstanceAP",
    "PanopticQuality",
    "SemanticMeanIoU",
    "mean_iou_summary",
    "panoptic_quality_summary",
    "panoptic_segment_statistics",
]
