"""Training targets: Panoptic-DeepLab centers, offsets and loss weights."""

from axial_tf.utils.optional_imports import tensorflow_installed, tensorflow_needed

if not tensorflow_installed():
    raise tensorflow_needed("axial_tf.targets (the panoptic training targets)")

from axial_tf.targets.panoptic_targets import PanopticTargetGenerator

__all__ = ["PanopticTargetGenerator"]
