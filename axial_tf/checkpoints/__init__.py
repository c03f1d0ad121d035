"""Checkpoint conversion from DeepLab2 and the PyTorch reference."""

from axial_tf.checkpoints.deeplab2_names import (
    assign_deeplab2_values,
    assign_values,
    deeplab2_variable_map,
    name_from_checkpoint_key,
)

__all__ = ["assign_deeplab2_values", "assign_values", "deeplab2_variable_map", "name_from_checkpoint_key"]
