"""Losses: Panoptic-DeepLab semantic, center and offset losses, also as Keras losses for `fit`."""

from axial_tf.losses.fit_losses import PanopticCenterLoss
from axial_tf.losses.fit_losses import PanopticOffsetLoss
from axial_tf.losses.fit_losses import PanopticSemanticLoss
from axial_tf.losses.fit_losses import pack_fit_targets
from axial_tf.losses.panoptic_losses import LOSS_NAMES
from axial_tf.losses.panoptic_losses import NonFiniteLossError
from axial_tf.losses.panoptic_losses import PanopticLoss
from axial_tf.losses.panoptic_losses import check_finite
from axial_tf.losses.pixel_losses import average_top_k_loss
from axial_tf.losses.pixel_losses import center_pixel_loss
from axial_tf.losses.pixel_losses import offset_pixel_loss
from axial_tf.losses.pixel_losses import semantic_pixel_loss

__all__ = [
    "LOSS_NAMES",
    "NonFiniteLossError",
    "PanopticCenterLoss",
    "PanopticLoss",
    "PanopticOffsetLoss",
    "PanopticSemanticLoss",
    "average_top_k_loss",
    "center_pixel_loss",
    "check_finite",
    "offset_pixel_loss",
    "pack_fit_targets",
    "semantic_pixel_loss",
]
