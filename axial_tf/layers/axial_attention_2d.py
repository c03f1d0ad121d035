"""2-D axial-attention: a height pass followed by a width pass."""

import keras
from keras import ops

from axial_tf.layers.axial_attention import AxialAttention
from axial_tf.layers.runtime import drop_retired_arguments


def _pair(value, name):
    if value is None or isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"{name} must be an int, None or a pair (height, width), got {value!r}.")
    return tuple(value)


def _subsample(sequences, strides):
    """Every `strides`-th position along axis 1 (no op at stride 1: a slice's gradient is a full copy)."""
    return sequences if strides == 1 else sequences[:, ::strides]


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialAttention2D(keras.layers.Layer):
    """Factorised 2-D self-attention on `[B, H, W, C]` inputs.

    The height pass attends along H (every column independently), the width pass
    along W (every row independently); there is no normalisation between them.
    With `strides > 1` the rows are subsampled after the height pass and the
    columns after the width pass (rows/columns `0, s, 2s, ...`), so the output is
    `[B, ceil(H/s), ceil(W/s), filters * value_expansion]` (DeepLab2). With
    `stride_mode="average_pool"` the passes run unstrided and an `s x s` average
    pool follows (the PyTorch reference), giving `floor(H/s) x floor(W/s)`.

    The defaults are DeepLab2's (`filters=512`, 8 heads, `key_expansion=1`,
    `value_expansion=2`, stride 1: a 1024-channel output), so code written
    against DeepLab2's keyword arguments runs unchanged. DeepLab2's
    `query_shape` / `memory_flange` are not taken: DeepLab2 only attends
    globally (an axis longer than `query_shape` is an error there), and here
    `span` and `query_block_size` choose global or local attention.

    Args:
        filters: base width (default 512); keys get `round(filters * key_expansion)`
            channels and values (and the output) `round(filters * value_expansion)`.
        num_heads: attention heads of each pass (default 8).
        key_expansion: key width relative to `filters` (default 1).
        value_expansion: value width relative to `filters` (default 2).
        span: `None` (global, the default) or an odd local window, or a (height,
            width) pair.
        strides: output stride (subsampling after each pass; default 1).
        stride_mode: "subsample" (DeepLab2) or "average_pool" (PyTorch reference).
        **kwargs: further `AxialAttention` arguments (e.g. `max_span`,
            `sync_batch_norm`, `query_block_size`, `implementation`) shared by both
            passes, and standard layer arguments (`name`, `dtype`).

    Example:
    >>> layer = AxialAttention2D(filters=16, num_heads=4, strides=2)
    >>> y = layer(keras.random.normal((2, 9, 11, 8)))  # [2, 5, 6, 32]
    """

    def __init__(
        self,
        filters=512,
        num_heads=8,
        key_expansion=1,
        value_expansion=2,
        span=None,
        strides=1,
        stride_mode="subsample",
        **kwargs,
    ):
        drop_retired_arguments(kwargs)
        layer_kwargs = {k: kwargs.pop(k) for k in ("name", "dtype", "trainable") if k in kwargs}
        super().__init__(**layer_kwargs)
        if strides < 1:
            raise ValueError(f"strides must be >= 1, got {strides}.")
        if stride_mode not in ("subsample", "average_pool"):
            raise ValueError(f"stride_mode must be 'subsample' or 'average_pool', got {stride_mode!r}.")
        self.stride_mode = stride_mode
        self.filters = int(filters)
        self.num_heads = int(num_heads)
        self.key_expansion = key_expansion
        self.value_expansion = value_expansion
        self.span = span
        self.strides = int(strides)
        self.attention_kwargs = dict(kwargs)
        self.total_key_depth = int(round(filters * key_expansion))
        self.total_value_depth = int(round(filters * value_expansion))
        height_span, width_span = _pair(span, "span")
        axis_args = dict(
            total_key_depth=self.total_key_depth,
            total_value_depth=self.total_value_depth,
            num_heads=self.num_heads,
            dtype=self.dtype_policy,
            **kwargs,
        )
        self.height_axis = AxialAttention(span=height_span, name="height_axis", **axis_args)
        self.width_axis = AxialAttention(span=width_span, name="width_axis", **axis_args)

    def build(self, input_shape):
        self.height_axis.build((None, None, input_shape[-1]))
        self.width_axis.build((None, None, self.total_value_depth))

    def call(self, inputs, training=None):
        if self.stride_mode == "average_pool":
            outputs = self._attend(inputs, 1, training)
            if self.strides == 1:
                return outputs
            return ops.average_pool(outputs, self.strides, self.strides, padding="valid")
        return self._attend(inputs, self.strides, training)

    def _attend(self, inputs, strides, training):
        """Height pass then width pass, subsampling by `strides` after each."""
        batch, width = ops.shape(inputs)[0], ops.shape(inputs)[2]
        # Height pass: attends along axis 1, every column a sequence (no transpose of the
        # image: see attention_layouts.attends_in_place).
        columns = _subsample(self.height_axis(inputs, training=training), strides)  # [B, H', W, Dv]
        height = ops.shape(columns)[1]
        # Width pass: every row is a sequence along W.
        rows = ops.reshape(columns, (batch * height, width, self.total_value_depth))
        rows = _subsample(self.width_axis(rows, training=training), strides)  # [B*H', W', Dv]
        return ops.reshape(rows, (batch, height, ops.shape(rows)[1], self.total_value_depth))

    def compute_output_shape(self, input_shape):
        def strided(size):
            if size is None:
                return None
            return size // self.strides if self.stride_mode == "average_pool" else -(-size // self.strides)

        return (input_shape[0], strided(input_shape[1]), strided(input_shape[2]), self.total_value_depth)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "num_heads": self.num_heads,
            "key_expansion": self.key_expansion,
            "value_expansion": self.value_expansion,
            "span": self.span,
            "strides": self.strides,
            "stride_mode": self.stride_mode,
            **self.attention_kwargs,
        }
