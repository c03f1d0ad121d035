"""Losses: Panoptic-DeepLab semantic, center and offset losses."""

from axial_tf.losses.panoptic_losses import LOSS_NAMES
from axial_tf.losses.panoptic_losses import NonFiniteLossError
from axial_tf.losses.panoptic_losses import PanopticLoss
from axial_tf.losses.panoptic_losses import average_top_k_loss
from axial_tf.losses.panoptic_losses import check_finite
from axial_tf.losses.panoptic_losses import semantic_pixel_loss

__all__ = [
    "LOSS_NAMES",
    "NonFiniteLossError",
    "PanopticLoss",
    "average_top_k_loss",
    "check_finite",
    "semantic_pixel_loss",
]
