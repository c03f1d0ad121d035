"""Learned relative positional encodings for 1-D attention."""

import keras
from keras import ops

# DeepLab2's MAX_SPAN: tables have 2 * 255 - 1 = 509 rows, so its checkpoints load as they are.
DEEPLAB2_MAX_SPAN = 255


def relative_offsets(query_length, key_length, key_start=0):
    """Returns `key_pos - query_pos` for every (query, key) pair.

    Args:
        query_length: number of query positions (int or scalar tensor).
        key_length: number of key positions (int or scalar tensor).
        key_start: position of key 0 relative to query 0. Blocked local attention
            uses a negative start (keys begin `flange` positions before the block).

    Returns:
        int32 tensor `[query_length, key_length]`.
    """
    query_positions = ops.arange(query_length, dtype="int32")
    key_positions = ops.arange(key_length, dtype="int32") + key_start
    return key_positions[None, :] - query_positions[:, None]


@keras.saving.register_keras_serializable(package="axial_tf")
class RelativePositionalEncoding(keras.layers.Layer):
    """A table of learned embeddings indexed by relative offset.

    The table has `2 * max_span - 1` rows; row `max_span - 1` is offset 0 and row
    `max_span - 1 + d` is the offset `d = key_pos - query_pos`. Offsets beyond
    `+-(max_span - 1)` reuse the last row on that side, so the layer works for any
    sequence length, including lengths longer than the table.

    Args:
        depth: channels of each embedding.
        max_span: the table covers offsets `-(max_span - 1) ... max_span - 1`.
        initializer_stddev: stddev of the truncated-normal initial values.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> rpe = RelativePositionalEncoding(depth=16)
    >>> table = rpe.table(query_length=7, key_length=9, key_start=-1)  # [7, 9, 16]
    """

    def __init__(self, depth, max_span=DEEPLAB2_MAX_SPAN, initializer_stddev=1.0, **kwargs):
        super().__init__(**kwargs)
        if depth < 1 or max_span < 1:
            raise ValueError(f"depth and max_span must be positive, got depth={depth}, max_span={max_span}.")
        self.depth = int(depth)
        self.max_span = int(max_span)
        self.initializer_stddev = float(initializer_stddev)

    def build(self, input_shape=None):
        # Created in build (not __init__) so the variable path carries the parents' names.
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(2 * self.max_span - 1, self.depth),
            initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_stddev),
        )
        self.built = True

    def rows_for(self, offsets):
        """Table rows for integer offsets (any shape), clipped to the table."""
        return ops.clip(offsets, 1 - self.max_span, self.max_span - 1) + (self.max_span - 1)

    def table(self, query_length, key_length, key_start=0):
        """Returns the `[query_length, key_length, depth]` embeddings of `key - query`.

        Lengths may be Python ints or scalar tensors (dynamic shapes). The result is
        in the layer's compute dtype, so it mixes with float16 activations.
        """
        if not self.built:
            self.build()
        rows = self.rows_for(relative_offsets(query_length, key_length, key_start))
        return ops.take(ops.cast(self.embeddings, self.compute_dtype), rows, axis=0)

    def call(self, query_length, key_length=None, key_start=0):
        """Same as `table`; `key_length` defaults to `query_length`."""
        return self.table(query_length, query_length if key_length is None else key_length, key_start)

    def get_config(self):
        return {
            **super().get_config(),
            "depth": self.depth,
            "max_span": self.max_span,
            "initializer_stddev": self.initializer_stddev,
        }
