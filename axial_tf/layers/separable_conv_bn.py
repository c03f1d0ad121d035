"""Depthwise-separable convolution with batch norm and ReLU after each part."""

import keras

from axial_tf.layers.conv_bn import ConvBN


@keras.saving.register_keras_serializable(package="axial_tf")
class SeparableConvBN(keras.layers.Layer):
    """`k x k` depthwise conv-BN-ReLU followed by a 1x1 conv-BN-ReLU.

    The Panoptic-DeepLab decoder fuses features and builds its heads with it
    (DeepLab2's `depthwise` / `pointwise` sub-layers, so checkpoints map by name).

    Args:
        filters: output channels of the pointwise convolution.
        kernel_size: depthwise kernel size (5 in Panoptic-DeepLab).
        batch_norm_momentum: BN momentum.
        batch_norm_epsilon: BN epsilon.
        sync_batch_norm: synchronised BN across replicas.
        **kwargs: standard layer arguments.

    Example:
    >>> layer = SeparableConvBN(32, kernel_size=5)
    >>> y = layer(keras.random.normal((1, 17, 17, 48)))  # [1, 17, 17, 32]
    """

    def __init__(self, filters, kernel_size=5, batch_norm_momentum=0.99, batch_norm_epsilon=1e-3,
                 sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.sync_batch_norm = sync_batch_norm
        bn = dict(batch_norm_momentum=batch_norm_momentum, batch_norm_epsilon=batch_norm_epsilon,
                  sync_batch_norm=sync_batch_norm, activation="relu", dtype=self.dtype_policy)
        self.depthwise = ConvBN(None, kernel_size, depthwise=True, name="depthwise", **bn)
        self.pointwise = ConvBN(filters, 1, name="pointwise", **bn)

    def build(self, input_shape):
        self.depthwise.build(input_shape)
        self.pointwise.build(input_shape)

    def deeplab2_children(self):
        return [self.depthwise, self.pointwise]

    def call(self, inputs, training=None):
        return self.pointwise(self.depthwise(inputs, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            "sync_batch_norm": self.sync_batch_norm,
        }
