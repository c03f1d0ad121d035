"""Keras layers: position-sensitive axial-attention and the blocks built from it."""

from axial_tf.layers.axial_attention import AxialAttention
from axial_tf.layers.axial_attention_2d import AxialAttention2D
from axial_tf.layers.axial_block import AxialBlock
from axial_tf.layers.conv_bn import ConvBN, same_padding
from axial_tf.layers.drop_path import DropPath
from axial_tf.layers.masked_batch_norm import MaskedBatchNormalization
from axial_tf.layers.relative_positional_encoding import RelativePositionalEncoding

__all__ = [
    "AxialAttention",
    "AxialAttention2D",
    "AxialBlock",
    "ConvBN",
    "DropPath",
    "MaskedBatchNormalization",
    "RelativePositionalEncoding",
    "same_padding",
]
