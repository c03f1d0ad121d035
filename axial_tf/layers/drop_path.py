"""Stochastic depth (drop path)."""

import keras
from keras import ops

from axial_tf.layers.replicas import replica_position


@keras.saving.register_keras_serializable(package="axial_tf")
class DropPath(keras.layers.Layer):
    """Drops the whole residual branch of a sample with probability `1 - keep_prob`.

    Kept samples are scaled by `1 / keep_prob` so the expectation is unchanged.
    Identity at inference. Works with an unknown batch size. Under a tf.distribute
    strategy every replica draws its own masks (independent across replicas, as
    on one device), while the random state stays the same on all replicas.

    Args:
        keep_prob: probability of keeping a sample's branch, in (0, 1].
        seed: optional seed for the random draws.
        **kwargs: standard layer arguments.

    Example:
    >>> drop = DropPath(keep_prob=0.8)
    >>> y = drop(keras.ops.ones((4, 2, 2, 3)), training=True)
    """

    def __init__(self, keep_prob=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}.")
        self.keep_prob = float(keep_prob)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if keep_prob < 1.0 else None

    def call(self, inputs, training=None):
        if not training or self.keep_prob == 1.0:
            return inputs
        batch = ops.shape(inputs)[0]
        # Every replica holds the same generator state: each draws the uniforms of all
        # replicas and keeps its own row, so masks differ across replicas.
        num_replicas, replica = replica_position()
        uniform = keras.random.uniform((num_replicas, batch), seed=self.seed_generator)[replica]
        keep = ops.cast(uniform < self.keep_prob, inputs.dtype) / ops.cast(self.keep_prob, inputs.dtype)
        return inputs * ops.reshape(keep, (batch,) + (1,) * (len(inputs.shape) - 1))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "keep_prob": self.keep_prob, "seed": self.seed}
