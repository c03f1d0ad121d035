"""Convolution + batch norm (+ activation) with DeepLab-aligned padding."""

import keras
from keras import ops

from axial_tf.layers import runtime
from axial_tf.layers.batch_norm_folding import add_bias, folded_kernel_and_bias
from axial_tf.layers.fused_batch_norm import FusedBatchNormalization
from axial_tf.utils.shapes import ceil_div


def effective_kernel_size(kernel_size, dilation_rate):
    """Input extent one output of a dilated kernel reads: `k + (k - 1) * (dilation - 1)`."""
    return kernel_size + (kernel_size - 1) * (dilation_rate - 1)


def same_padding(kernel_size, dilation_rate):
    """(before, after) zero padding that centres a kernel like DeepLab2's Conv2DSame.

    A strided convolution pads `(k_eff - 1) // 2` before and the rest after, where
    `k_eff = k + (k - 1) * (dilation - 1)`; this keeps feature maps aligned across
    output strides (pixel 0 of every stride sits on input pixel 0).
    """
    effective = effective_kernel_size(kernel_size, dilation_rate)
    before = (effective - 1) // 2
    return before, effective - 1 - before


@keras.saving.register_keras_serializable(package="axial_tf")
class ConvBN(keras.layers.Layer):
    """Bias-free 2-D convolution, batch norm and an optional activation.

    Strided convolutions pad explicitly (see `same_padding`) and then use "valid"
    padding, so outputs are `ceil(H / s)` and aligned as in DeepLab2; stride 1
    uses "same" padding, which is identical.

    On TensorFlow with oneDNN on the CPU, a dense convolution whose im2col buffer would
    exceed the runtime setting `max_im2col_elements` runs as one call on a batch of
    overlapping row bands (same result; `runtime.py` says why). Elsewhere (GPU, other
    backends, oneDNN off) it is always one call, and the graph holds nothing else.

    A batch norm that uses its moving statistics (inference, or a frozen layer) is folded
    into the convolution: `conv(x, kernel * scale) + shift`, then the activation
    (`batch_norm_folding.py`; the runtime setting `fold_batch_norms` turns it off). Same
    variables; results equal to float rounding.

    Args:
        filters: output channels (ignored when `depthwise=True`).
        kernel_size: square kernel size.
        strides: convolution stride.
        dilation_rate: atrous rate.
        activation: `None` or a Keras activation name (e.g. "relu").
        depthwise: a depthwise convolution (channel multiplier 1) instead.
        use_batch_norm: apply batch norm (otherwise the conv gets a bias).
        batch_norm_momentum: BN momentum.
        batch_norm_epsilon: BN epsilon.
        sync_batch_norm: synchronised BN across replicas.
        gamma_initializer: BN gamma initializer ("zeros" for the last BN of a
            residual branch, so each block starts as the identity).
        **kwargs: standard layer arguments.

    Example:
    >>> layer = ConvBN(32, kernel_size=3, strides=2, activation="relu")
    >>> y = layer(keras.random.normal((1, 9, 9, 8)))  # [1, 5, 5, 32]
    """

    def __init__(
        self,
        filters,
        kernel_size=1,
        strides=1,
        dilation_rate=1,
        activation=None,
        depthwise=False,
        use_batch_norm=True,
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        sync_batch_norm=False,
        gamma_initializer="ones",
        **kwargs,
    ):
        runtime.drop_retired_arguments(kwargs)
        super().__init__(**kwargs)
        if strides > 1 and dilation_rate > 1:
            raise ValueError(f"{self.name}: strides={strides} and dilation_rate={dilation_rate} cannot both exceed 1.")
        self.filters = filters
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.activation = activation
        self.depthwise = depthwise
        self.use_batch_norm = use_batch_norm
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.sync_batch_norm = sync_batch_norm
        self.gamma_initializer = gamma_initializer
        self.explicit_padding = self.strides > 1 and self.kernel_size > 1
        conv_args = dict(
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            padding="valid" if self.explicit_padding else "same",
            use_bias=not use_batch_norm,
            # DeepLab2's sub-layer names, so its checkpoints map by name.
            name="depthwise_conv" if depthwise else "conv",
            dtype=self.dtype_policy,
        )
        if depthwise:
            self.conv = keras.layers.DepthwiseConv2D(depthwise_initializer="he_normal", **conv_args)
        else:
            self.conv = keras.layers.Conv2D(filters, kernel_initializer="he_normal", **conv_args)
        self.batch_norm = (
            FusedBatchNormalization(
                momentum=batch_norm_momentum,
                epsilon=batch_norm_epsilon,
                synchronized=sync_batch_norm,
                gamma_initializer=gamma_initializer,
                name="batch_norm",
                dtype=self.dtype_policy,
            )
            if use_batch_norm
            else None
        )
        self.activation_fn = keras.activations.get(activation)

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.batch_norm is not None:
            self.batch_norm.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        if self._folds_batch_norm(training):
            kernel, bias = folded_kernel_and_bias(self.conv.kernel, self.batch_norm, depthwise=self.depthwise)
            return self.activation_fn(self._convolve(inputs, kernel, bias))
        x = self._convolve(inputs, self.conv.kernel, self.conv.bias)
        if self.batch_norm is not None:
            x = self.batch_norm(x, training=training)
        return self.activation_fn(x)

    def _folds_batch_norm(self, training):
        """Whether the BN uses its moving statistics (inference or frozen) and folds into the convolution."""
        return (
            self.batch_norm is not None
            and not (training and self.batch_norm.trainable)
            and runtime.get_runtime_settings().fold_batch_norms
        )

    def _convolve(self, inputs, kernel, bias):
        """`conv(inputs, kernel) + bias` (no bias if `bias` is None): one call, or row bands on oneDNN."""
        kernel = ops.cast(kernel, self.compute_dtype)
        bias = None if bias is None else ops.cast(bias, self.compute_dtype)

        def whole():  # one convolution call
            if self.explicit_padding:
                return self._convolution(self._pad(inputs), kernel, bias, padding="valid")
            return self._convolution(inputs, kernel, bias, padding="same")

        bound = runtime.get_runtime_settings().max_im2col_elements
        # Depthwise and 1x1 convolutions have no im2col buffer; only oneDNN's CPU kernels need the bound.
        if self.depthwise or self.kernel_size == 1 or bound is None or not runtime.convolutions_on_onednn_cpu():
            return whole()
        out_rows, out_cols = (ceil_div(size, self.strides) for size in ops.shape(inputs)[1:3])
        band = bound // (inputs.shape[-1] * self.kernel_size**2 * out_cols)
        band = max(band, 1) if isinstance(band, int) else ops.maximum(band, 1)  # output rows per band

        def banded():
            return self._convolve_bands(self._pad(inputs), out_rows, band, kernel, bias)

        if isinstance(out_rows, int) and isinstance(band, int):  # static shape: decided now
            return whole() if band >= out_rows else banded()
        return ops.cond(band >= out_rows, whole, banded)

    def _convolution(self, x, kernel, bias, padding):
        """`conv(x, kernel) + bias` with this layer's strides and dilation; `kernel` and `bias` in compute dtype."""
        convolve = ops.depthwise_conv if self.depthwise else ops.conv
        y = convolve(x, kernel, strides=self.strides, padding=padding, dilation_rate=self.dilation_rate)
        return y if bias is None else add_bias(y, bias)

    def _pad(self, x):
        """Explicit DeepLab2 padding; then the convolution is "valid" (stride 1: same as "same")."""
        before, after = same_padding(self.kernel_size, self.dilation_rate)
        return ops.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))

    def _convolve_bands(self, x, out_rows, band, kernel, bias):
        """The "valid" convolution of padded `x` as one call on a batch of overlapping row bands."""
        batch, _, cols, channels = ops.shape(x)
        effective = effective_kernel_size(self.kernel_size, self.dilation_rate)
        num_bands = ceil_div(out_rows, band)
        in_rows = (band - 1) * self.strides + effective  # input rows one band of outputs reads
        needed = (num_bands * band - 1) * self.strides + effective
        x = ops.pad(x, ((0, 0), (0, ops.maximum(needed - ops.shape(x)[1], 0)), (0, 0), (0, 0)))
        rows = ops.arange(num_bands)[:, None] * (band * self.strides) + ops.arange(in_rows)[None, :]
        bands = ops.take(x, rows, axis=1)  # [B, bands, in_rows, W, C]
        bands = ops.reshape(bands, (batch * num_bands, in_rows, cols, channels))
        y = self._convolution(bands, kernel, bias, padding="valid")  # [B * bands, band, W', O]
        y = ops.reshape(y, (batch, num_bands * band, ops.shape(y)[2], ops.shape(y)[3]))  # [B, rows, W', O]
        return y[:, :out_rows]

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else ceil_div(size, self.strides)

        channels = input_shape[-1] if self.depthwise else self.filters
        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), channels)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "activation": self.activation,
            "depthwise": self.depthwise,
            "use_batch_norm": self.use_batch_norm,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            "sync_batch_norm": self.sync_batch_norm,
            "gamma_initializer": self.gamma_initializer,
        }
