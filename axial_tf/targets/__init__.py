"""Training targets: Panoptic-DeepLab centers, offsets and loss weights."""

from axial_tf.targets.panoptic_targets import PanopticTargetGenerator

__all__ = ["PanopticTargetGenerator"]
