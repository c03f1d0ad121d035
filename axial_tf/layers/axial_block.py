"""Residual blocks of Axial-ResNet: axial bottleneck, conv bottleneck and basic block."""

import keras
from keras import ops

from axial_tf.layers.axial_attention_2d import AxialAttention2D
from axial_tf.layers.conv_bn import ConvBN
from axial_tf.layers.drop_path import DropPath
from axial_tf.layers.runtime import drop_retired_arguments


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialBlock(keras.layers.Layer):
    """A residual block that takes a non-activated input and returns a non-activated output.

    As in DeepLab2 the block applies ReLU to its input first (the shortcut is built
    from that activated tensor) and returns `branch + shortcut` without a final
    activation, so DeepLab2 weights load and give the same outputs.

    The branch depends on `filters_list` and `attention`:
      * 3 filters with `attention` (axial bottleneck): 1x1 conv-BN-ReLU ->
        `AxialAttention2D(filters_list[1])` carrying the stride -> ReLU -> 1x1 conv-BN.
      * 3 filters without attention (conv bottleneck): 1x1 -> 3x3 (stride,
        dilation) -> 1x1, each conv-BN, ReLU between.
      * 2 filters (basic block): 3x3 conv-BN-ReLU (stride) -> 3x3 conv-BN.
    The last BN of the branch has zero-initialised gamma, so a new block starts as
    its shortcut. The shortcut is a strided 1x1 conv-BN when the channel count
    changes, otherwise the (subsampled) input.

    Args:
        filters_list: 2 or 3 channel counts, the last being the output width.
        strides: block stride (1 or 2).
        dilation_rate: atrous rate of the 3x3 convolutions (past the output stride).
        second_dilation_rate: atrous rate of the basic block's second 3x3 conv
            (default `dilation_rate`). When the block's stride is replaced by
            atrous convolution, that conv works at the doubled rate.
        attention: `None` for convolutional blocks, or a dict of `AxialAttention2D`
            arguments (e.g. `{"num_heads": 8, "span": None}`, or with
            `"implementation": "reference"`) for axial blocks.
        drop_path_keep_prob: stochastic-depth keep probability of the branch.
        batch_norm_momentum: BN momentum.
        batch_norm_epsilon: BN epsilon.
        sync_batch_norm: synchronised BN across replicas.
        **kwargs: standard layer arguments.

    Example:
    >>> block = AxialBlock([16, 8, 32], strides=2, attention={"num_heads": 2})
    >>> y = block(keras.random.normal((2, 9, 11, 16)))  # [2, 5, 6, 32]
    """

    def __init__(
        self,
        filters_list,
        strides=1,
        dilation_rate=1,
        second_dilation_rate=None,
        attention=None,
        drop_path_keep_prob=1.0,
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        sync_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        filters_list = [int(f) for f in filters_list]
        if len(filters_list) not in (2, 3):
            raise ValueError(f"{self.name}: filters_list must have 2 or 3 entries, got {filters_list}.")
        if attention is not None and len(filters_list) != 3:
            raise ValueError(f"{self.name}: axial attention needs a 3-entry filters_list, got {filters_list}.")
        self.filters_list = filters_list
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.second_dilation_rate = int(second_dilation_rate or dilation_rate)
        self.attention = dict(attention) if attention is not None else None
        if self.attention is not None:
            drop_retired_arguments(self.attention)
        self.drop_path_keep_prob = float(drop_path_keep_prob)
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.sync_batch_norm = sync_batch_norm

        def conv(name, filters, kernel_size=1, strides=1, dilation_rate=1, relu=False, last=False):
            return ConvBN(
                filters,
                kernel_size=kernel_size,
                strides=strides,
                dilation_rate=dilation_rate,
                activation="relu" if relu else None,
                batch_norm_momentum=batch_norm_momentum,
                batch_norm_epsilon=batch_norm_epsilon,
                sync_batch_norm=sync_batch_norm,
                gamma_initializer="zeros" if last else "ones",
                name=name,
                dtype=self.dtype_policy,
            )

        self.attention_layer = None
        self.conv2_bn_act = None
        self.conv3_bn = None
        self.conv2_bn = None
        if len(filters_list) == 3:
            self.conv1_bn_act = conv("conv1_bn_act", filters_list[0], relu=True)
            if attention is not None:
                attention_args = {"num_heads": 8, **self.attention}
                self.attention_layer = AxialAttention2D(
                    filters_list[1],
                    strides=self.strides,
                    batch_norm_momentum=batch_norm_momentum,
                    batch_norm_epsilon=batch_norm_epsilon,
                    sync_batch_norm=sync_batch_norm,
                    name="attention",
                    dtype=self.dtype_policy,
                    **attention_args,
                )
            else:
                self.conv2_bn_act = conv(
                    "conv2_bn_act", filters_list[1], 3, self.strides, self.dilation_rate, relu=True
                )
            self.conv3_bn = conv("conv3_bn", filters_list[2], last=True)
        else:
            self.conv1_bn_act = conv("conv1_bn_act", filters_list[0], 3, self.strides, self.dilation_rate, relu=True)
            self.conv2_bn = conv("conv2_bn", filters_list[1], 3, 1, self.second_dilation_rate, last=True)
        self.shortcut = None
        self.drop_path = DropPath(drop_path_keep_prob, name="drop_path", dtype=self.dtype_policy)

    def build(self, input_shape):
        if input_shape[-1] != self.filters_list[-1]:
            self.shortcut = ConvBN(
                self.filters_list[-1],
                strides=self.strides,
                batch_norm_momentum=self.batch_norm_momentum,
                batch_norm_epsilon=self.batch_norm_epsilon,
                sync_batch_norm=self.sync_batch_norm,
                name="shortcut",
                dtype=self.dtype_policy,
            )
            self.shortcut.build(input_shape)
        shape = input_shape
        for layer in self.branch_layers():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def branch_layers(self):
        """The layers of the residual branch, in call order."""
        candidates = (self.conv1_bn_act, self.attention_layer, self.conv2_bn_act, self.conv2_bn, self.conv3_bn)
        return [layer for layer in candidates if layer is not None]

    def call(self, inputs, training=None):
        x = ops.relu(inputs)
        if self.shortcut is not None:
            shortcut = self.shortcut(x, training=training)
        else:
            shortcut = x[:, :: self.strides, :: self.strides]
        branch = x
        for layer in self.branch_layers():
            branch = layer(branch, training=training)
            if layer is self.attention_layer:
                branch = ops.relu(branch)
        return self.drop_path(branch, training=training) + shortcut

    def compute_output_shape(self, input_shape):
        if self.attention_layer is not None:
            _, height, width, _ = self.attention_layer.compute_output_shape(input_shape)
        else:
            height, width = [None if s is None else -(-s // self.strides) for s in input_shape[1:3]]
        return (input_shape[0], height, width, self.filters_list[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "filters_list": self.filters_list,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "second_dilation_rate": self.second_dilation_rate,
            "attention": self.attention,
            "drop_path_keep_prob": self.drop_path_keep_prob,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            "sync_batch_norm": self.sync_batch_norm,
        }
