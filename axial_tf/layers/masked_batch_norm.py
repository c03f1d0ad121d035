"""Batch normalization whose training statistics can skip masked-out elements."""

import keras
from keras import ops

from axial_tf.layers.replicas import all_reduce_sum


@keras.saving.register_keras_serializable(package="axial_tf")
class MaskedBatchNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization` whose batch statistics may be restricted by a mask.

    Keras' own `mask` argument must have one dimension less than the input and
    assumes channels-last. Blocked local attention needs statistics over the valid
    (query, key) pairs of a `[N, C, blocks, queries, keys]` logit tensor, so here
    `mask` is any boolean tensor broadcastable to the input. Without a mask the
    layer is exactly `keras.layers.BatchNormalization` (same variables, same math).

    Args:
        **kwargs: `keras.layers.BatchNormalization` arguments.
    """

    def call(self, inputs, training=None, mask=None):
        # The parent's call computes moments through `_moments`; the mask reaches it
        # through this attribute because the parent validates `mask` for its own layout.
        self._statistics_mask = mask
        try:
            return super().call(inputs, training=training)
        finally:
            self._statistics_mask = None

    def _moments(self, inputs, mask):
        stats_mask = getattr(self, "_statistics_mask", None)
        if stats_mask is None:
            return super()._moments(inputs, mask)
        weights = ops.broadcast_to(ops.cast(stats_mask, inputs.dtype), ops.shape(inputs))
        axes = self._reduction_axes
        if self.synchronized:
            count, total, squares = all_reduce_sum(
                [ops.sum(weights, axes), ops.sum(inputs * weights, axes), ops.sum(ops.square(inputs) * weights, axes)]
            )
            mean = total / count
            return mean, ops.maximum(squares / count - ops.square(mean), 0.0)
        count = ops.sum(weights, axes)
        mean = ops.sum(inputs * weights, axes) / count
        centred = (inputs - ops.reshape(mean, self._broadcast_shape(inputs))) * weights
        return mean, ops.sum(ops.square(centred), axes) / count

    def _broadcast_shape(self, inputs):
        shape = [1] * len(inputs.shape)
        for axis in self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]:
            shape[axis] = inputs.shape[axis]
        return shape
