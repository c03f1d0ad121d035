"""Keras layers: position-sensitive axial-attention and the blocks built from it."""

from axial_tf.layers.axial_attention import AxialAttention, MaskedBatchNormalization
from axial_tf.layers.axial_attention_2d import AxialAttention2D
from axial_tf.layers.axial_block import AxialBlock
from axial_tf.layers.conv_bn import ConvBN, same_padding
from axial_tf.layers.drop_path import DropPath
from axial_tf.layers.fused_batch_norm import FusedBatchNormalization
from axial_tf.layers.relative_positional_encoding import RelativePositionalEncoding
from axial_tf.layers.resize import resize_bilinear_align_corners
from axial_tf.layers.resized_fuse import ResizedFuse
from axial_tf.layers.runtime import RuntimeSettings, get_runtime_settings, runtime_settings
from axial_tf.layers.separable_conv_bn import SeparableConvBN

__all__ = [
    "AxialAttention",
    "AxialAttention2D",
    "AxialBlock",
    "ConvBN",
    "DropPath",
    "FusedBatchNormalization",
    "MaskedBatchNormalization",
    "RelativePositionalEncoding",
    "ResizedFuse",
    "RuntimeSettings",
    "SeparableConvBN",
    "get_runtime_settings",
    "resize_bilinear_align_corners",
    "runtime_settings",
    "same_padding",
]
