"""Panoptic-DeepLab post-processing.

Two implementations of the same function: `panoptic_postprocess`, TensorFlow ops (inside training,
evaluation and SavedModels; TF Serving safe), and `panoptic_postprocess_numpy` (host.py), NumPy on
the host for runtimes whose exported graphs end at the dense outputs. The options and the NumPy
version import without TensorFlow; the TensorFlow functions, asked for without it, raise the
one-line error naming the install.
"""

from axial_tf.postprocessing.host import panoptic_postprocess_numpy
from axial_tf.postprocessing.options import MERGE_STYLES, PostProcessOptions
from axial_tf.utils.optional_imports import tensorflow_installed, tensorflow_needed

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
    "panoptic_postprocess_numpy",
    "select_centers",
]

if tensorflow_installed():
    from axial_tf.postprocessing.centers import center_nms_heatmap, select_centers
    from axial_tf.postprocessing.grouping import group_instances, nearest_center
    from axial_tf.postprocessing.merge import merge_semantic_and_instance
    from axial_tf.postprocessing.panoptic_postprocess import (
        INSTANCE_CENTER_PRED,
        INSTANCE_PRED,
        INSTANCE_SCORES,
        PANOPTIC_PRED,
        SEMANTIC_PRED,
        PanopticPostProcessor,
        panoptic_postprocess,
    )
else:

    def __getattr__(name):
        if name in __all__:  # the names not imported above
            raise tensorflow_needed(f"axial_tf.postprocessing.{name} (the TensorFlow post-processing)")
        raise AttributeError(f"module 'axial_tf.postprocessing' has no attribute {name!r}")

