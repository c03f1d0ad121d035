"""A batch norm with moving statistics folded into the convolution before it (inference, frozen BNs).

A BN that uses its moving statistics is a per-channel affine map, BN(y) = y * scale + shift with
scale = gamma / sqrt(moving_variance + eps) and shift = beta - moving_mean * scale. After a
convolution it folds away: BN(conv(x, W) + b) = conv(x, W * scale) + (b * scale + shift). Keras
runs an inference BN as its own elementwise passes over the activations, which grappler does not
merge into the convolution; the folded form is a convolution and a bias, which grappler's remapper
fuses, with a following ReLU, into one oneDNN kernel (`_MklNativeFusedConv2D`,
`_MklNativeFusedDepthwiseConv2dNative`), and with a residual addition too when the bias is a
`BiasAdd` (`add_bias`). The MaX-S-backbone Axial-DeepLab at 513 x 513 (2 threads, batch 1) runs
1.075-1.093x faster as a `tf.function` and 1.075-1.095x as a SavedModel (docs/performance.md,
"Batch norms folded into convolutions").
"""

import keras
from keras import ops

from axial_tf.layers.attention_inference_folding import moving_affine


def folded_kernel_and_bias(kernel, batch_norm, bias=None, depthwise=False):
    """The kernel and bias of `batch_norm(conv(x, kernel) + bias)` as one convolution, BN using moving statistics.

    Args:
        kernel: `[k, k, C_in, C_out]` convolution kernel, or `[k, k, C_in, multiplier]` for a
            depthwise one (output channel `c * multiplier + m`, Keras' order).
        batch_norm: the `keras.layers.BatchNormalization` over the convolution's output channels
            (with `scale` and `center`).
        bias: the convolution's `[C_out]` bias, or `None` if it has none.
        depthwise: whether `kernel` is a depthwise kernel.

    Returns:
        `(kernel * scale, bias * scale + shift)`: the scaled kernel, of `kernel`'s shape, and a
        `[C_out]` bias, both in the BN's variable dtype (float32 under mixed precision).
    """
    scale, shift = moving_affine(batch_norm)  # [C_out] each
    dtype = batch_norm.variable_dtype
    kernel = ops.cast(kernel, dtype)
    if depthwise:
        channel_scale = ops.reshape(scale, kernel.shape[2:])  # [C_in, multiplier]
    else:
        channel_scale = scale  # [C_out], the kernel's last axis
    folded_bias = shift if bias is None else ops.cast(bias, dtype) * scale + shift
    return kernel * channel_scale, folded_bias


def add_bias(outputs, bias):
    """`outputs + bias`, the bias `[C]` over the last axis, as an op grappler fuses into the convolution before it.

    On TensorFlow this is a `BiasAdd`. An `AddV2` bias whose output meets a residual addition is
    merged into that addition (`AddN`) by grappler's arithmetic optimiser before its remapper runs,
    which left 20 of the 59 convolutions of the MaX-S-backbone Axial-DeepLab unfused; a `BiasAdd`
    it leaves alone, and the remapper fuses convolution, bias, residual addition and ReLU into one
    kernel: the model 1.027-1.029x faster (two interleaved runs). Other backends: `outputs + bias`.

    Args:
        outputs: `[..., C]` convolution outputs.
        bias: `[C]`, of `outputs`' dtype.

    Returns:
        `outputs + bias`, of `outputs`' shape and dtype.
    """
    if keras.backend.backend() != "tensorflow":
        return outputs + bias
    import tensorflow as tf  # the op grappler fuses; other backends never get here

    return tf.nn.bias_add(outputs, bias)
