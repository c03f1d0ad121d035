"""Channels-last batch normalization whose training step runs as one fused kernel."""

import itertools

import keras
from keras import ops

from axial_tf.layers.replicas import replica_position

# FusedBatchNormV3 raises epsilon to this floor; smaller epsilons take Keras' path.
_FUSED_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="axial_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training step on TensorFlow.

    Keras normalises with separate ops for the moments, the normalisation and each
    of their gradients: about a dozen passes over the activations. TensorFlow's
    `FusedBatchNormV3` (oneDNN's kernel when oneDNN is on) does the forward and the
    backward in one op each, about half the time at the projection shapes of
    axial-attention (docs/performance.md, "Fused batch norms in training"). The fused path is taken in
    training for channels-last, unmasked, non-renorm use on the TensorFlow backend,
    unless statistics are synchronised over several replicas; everything else, and
    inference, is Keras' own code. Same variables, same moving-average update (with
    the biased batch variance, as Keras), results equal to float rounding.

    Args:
        **kwargs: `keras.layers.BatchNormalization` arguments.

    Example:
    >>> norm = FusedBatchNormalization(axis=-1)
    >>> y = norm(keras.random.normal((4, 6, 8)), training=True)  # [4, 6, 8]
    """

    def call(self, inputs, training=None, mask=None):
        if mask is None and self._fuses(training) and self._normalises_last_axis(inputs):
            return self.normalize_channel_groups([inputs])[0]
        return super().call(inputs, training=training, mask=mask)

    def _fuses(self, training):
        return bool(
            training
            and self.trainable
            and keras.backend.backend() == "tensorflow"
            and not self.renorm
            # Synchronised statistics need an all-reduce, unless there is one replica.
            and (not self.synchronized or replica_position()[0] == 1)
            and self.epsilon >= _FUSED_MIN_EPSILON
            and self.scale
            and self.center
        )

    def _normalises_last_axis(self, tensor):
        return self.axis in (-1, len(tensor.shape) - 1)

    def normalize_channel_groups(self, groups, training=True):
        """Normalises tensors whose channels, concatenated in order, are this layer's channels.

        The same as `self(ops.concatenate(groups, axis=-1))` split back into the groups,
        without the concatenation: each group is normalised by the fused kernel with its
        slice of `gamma` and `beta`, and the moving statistics are updated for all
        channels together.

        Args:
            groups: list of `[..., C_i]` tensors with `sum(C_i)` = this layer's channels.
            training: as in `call`.

        Returns:
            The normalised groups, each of its input's shape and `compute_dtype`.
        """
        sizes = [group.shape[-1] for group in groups]
        if not (self._fuses(training) and all(self._normalises_last_axis(group) for group in groups)):
            outputs = self(ops.concatenate(groups, axis=-1), training=training)
            return ops.split(outputs, list(itertools.accumulate(sizes[:-1])), axis=-1) if len(groups) > 1 else [outputs]
        import tensorflow as tf  # the fused kernel is TensorFlow's; other backends never get here

        gammas = tf.split(tf.cast(self.gamma, "float32"), sizes)
        betas = tf.split(tf.cast(self.beta, "float32"), sizes)
        outputs, means, variances = [], [], []
        for group, gamma, beta in zip(groups, gammas, betas):
            # [..., C] -> NHWC [1, 1, M, C]: one "image" row holding every position.
            flat = tf.reshape(tf.cast(group, "float32"), (1, 1, -1, group.shape[-1]))
            normalised, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                flat, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            outputs.append(ops.cast(tf.reshape(normalised, tf.shape(group)), self.compute_dtype))
            # The kernel returns the unbiased variance (n / (n - 1); 0 for n = 1); Keras
            # averages the biased one.
            count = tf.cast(tf.shape(flat)[2], "float32")
            means.append(mean)
            variances.append(variance * (count - 1.0) / count)
        update_moving_statistics(self, tf.concat(means, axis=0), tf.concat(variances, axis=0))
        return outputs


def update_moving_statistics(norm, mean, variance):
    """The moving-average update of `keras.layers.BatchNormalization`, from given batch moments."""
    norm.moving_mean.assign(norm.moving_mean * norm.momentum + mean * (1.0 - norm.momentum))
    norm.moving_variance.assign(norm.moving_variance * norm.momentum + variance * (1.0 - norm.momentum))
