"""Batch norms folded into their convolutions: the kernel and bias, ConvBN and SeparableConvBN against the
unfolded layers, row bands, training and frozen layers, and the fused kernel grappler makes of it."""

import numpy as np
import pytest

import keras
import tensorflow as tf
from tensorflow.python.eager import context

from conftest import randomize_batch_norms

from axial_tf.layers import ConvBN, SeparableConvBN, runtime, runtime_settings
from axial_tf.layers.batch_norm_folding import folded_kernel_and_bias


def _image(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomize_batch_norms(layer):
    """Non-trivial BN variables (gamma, beta, moving statistics), so that folding is no identity."""
    randomize_batch_norms(layer, seed=1, scale_range=(0.3, 3.0), shift_std=2.0)


def _assert_equal_to_rounding(actual, expected, rtol=1e-5):
    """Equal up to float rounding: within `rtol` of the expected values' largest magnitude."""
    expected = np.asarray(expected, "float32")
    np.testing.assert_allclose(np.asarray(actual, "float32"), expected, rtol=0, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("depthwise,multiplier", [(False, 1), (True, 1), (True, 2)])
def test_folded_kernel_and_bias_equal_convolution_then_batch_norm(depthwise, multiplier):
    """conv(x, W * scale) + (b * scale + shift) == BN(conv(x, W) + b), BN with moving statistics."""
    x = _image((2, 9, 8, 3))
    if depthwise:
        conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=multiplier, padding="same", use_bias=True)
    else:
        conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=True)
    conv.build(x.shape)
    conv.bias.assign(np.random.default_rng(2).normal(size=conv.bias.shape))
    batch_norm = keras.layers.BatchNormalization(epsilon=1e-3)
    batch_norm.build(conv.compute_output_shape(x.shape))
    _randomize_batch_norms(batch_norm)

    kernel, bias = folded_kernel_and_bias(conv.kernel, batch_norm, bias=conv.bias, depthwise=depthwise)
    convolve = keras.ops.depthwise_conv if depthwise else keras.ops.conv
    folded = convolve(x, kernel, padding="same") + bias
    assert tuple(kernel.shape) == tuple(conv.kernel.shape)
    _assert_equal_to_rounding(folded, batch_norm(conv(x), training=False))


CONV_BN_CASES = {
    "3x3_relu": dict(filters=6, kernel_size=3, activation="relu"),
    "3x3_stride2_padded": dict(filters=6, kernel_size=3, strides=2, activation="relu"),
    "3x3_dilated": dict(filters=6, kernel_size=3, dilation_rate=2),
    "1x1_stride2": dict(filters=6, kernel_size=1, strides=2),
    "depthwise_5x5_relu": dict(filters=None, kernel_size=5, depthwise=True, activation="relu"),
    "depthwise_3x3_stride2": dict(filters=None, kernel_size=3, strides=2, depthwise=True),
}


@pytest.mark.parametrize("case", CONV_BN_CASES)
def test_conv_bn_inference_folded_equals_unfolded(case):
    layer = ConvBN(**CONV_BN_CASES[case])
    x = _image((2, 11, 9, 4))
    layer.build(x.shape)
    _randomize_batch_norms(layer)
    with runtime_settings(fold_batch_norms=False):
        expected = layer(x, training=False)
    _assert_equal_to_rounding(layer(x, training=False), expected)
    _assert_equal_to_rounding(tf.function(lambda t: layer(t, training=False))(x), expected)
    # Over the activations the folded graph has one elementwise op, the bias (Keras' BN has a Mul and an AddV2).
    graph = tf.function(lambda t: layer(t, training=False)).get_concrete_function(tf.TensorSpec(x.shape)).graph
    activation_ops = [op.type for op in graph.get_operations() if op.outputs and op.outputs[0].shape == expected.shape]
    assert [op for op in activation_ops if op in ("Mul", "AddV2", "Sub", "BiasAdd")] == ["BiasAdd"]


def test_separable_conv_bn_inference_folded_equals_unfolded():
    layer = SeparableConvBN(6, kernel_size=5)
    x = _image((1, 12, 10, 8))
    layer.build(x.shape)
    _randomize_batch_norms(layer)
    with runtime_settings(fold_batch_norms=False):
        expected = layer(x, training=False)
    _assert_equal_to_rounding(layer(x, training=False), expected)


@pytest.mark.parametrize("case", ["3x3_relu", "3x3_stride2_padded", "3x3_dilated"])
def test_row_bands_convolve_with_the_folded_kernel(case, monkeypatch):
    """On oneDNN's CPU kernels a convolution over the im2col bound runs on row bands, folded as well."""
    monkeypatch.setattr(runtime, "convolutions_on_onednn_cpu", lambda: True)
    band_calls = []
    convolve_bands = ConvBN._convolve_bands
    monkeypatch.setattr(ConvBN, "_convolve_bands", lambda self, *a: band_calls.append(a) or convolve_bands(self, *a))
    layer = ConvBN(**CONV_BN_CASES[case])
    x = _image((2, 11, 9, 4))
    layer.build(x.shape)
    _randomize_batch_norms(layer)
    with runtime_settings(fold_batch_norms=False):
        expected = layer(x, training=False)
    assert not band_calls
    with runtime_settings(max_im2col_elements=1):
        _assert_equal_to_rounding(layer(x, training=False), expected)
    assert band_calls


def test_training_uses_batch_statistics_and_updates_them():
    """Training mode is not folded: the BN normalises with the batch's statistics and updates the moving ones."""
    layer = ConvBN(6, 3, activation="relu")
    x = _image((2, 9, 9, 4))
    layer.build(x.shape)
    _randomize_batch_norms(layer)
    moving_mean = np.asarray(layer.batch_norm.moving_mean)
    expected = keras.ops.relu(layer.batch_norm(layer.conv(x), training=True))
    layer.batch_norm.moving_mean.assign(moving_mean)
    _assert_equal_to_rounding(layer(x, training=True), expected)
    assert not np.allclose(np.asarray(layer.batch_norm.moving_mean), moving_mean)


def test_frozen_layer_folds_in_training_mode():
    """A frozen layer's BN uses its moving statistics even with `training=True`, so it folds, and nothing updates."""
    layer = ConvBN(6, 3, activation="relu")
    x = _image((2, 9, 9, 4))
    layer.build(x.shape)
    _randomize_batch_norms(layer)
    layer.trainable = False
    weights = [np.asarray(w) for w in layer.weights]
    with runtime_settings(fold_batch_norms=False):
        expected = layer(x, training=True)
    _assert_equal_to_rounding(layer(x, training=True), expected)
    _assert_equal_to_rounding(layer(x, training=True), layer(x, training=False), rtol=0)
    for before, variable in zip(weights, layer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), before)


def test_mixed_precision_folded_equals_unfolded():
    layer = ConvBN(6, 3, activation="relu", dtype="mixed_float16")
    x = _image((1, 10, 10, 4))
    layer.build(x.shape)
    _randomize_batch_norms(layer)
    with runtime_settings(fold_batch_norms=False):
        expected = layer(x, training=False)
    folded = layer(x, training=False)
    assert folded.dtype == expected.dtype == tf.float16
    _assert_equal_to_rounding(folded, expected, rtol=4e-3)  # float16 rounding of the kernel and outputs


def _optimized_nodes(function, *args):
    """Nodes of the graph TensorFlow runs (after grappler) for `function`, traced by this first call."""
    ctx = context.context()
    ctx.enable_run_metadata()
    try:
        function(*args)
        metadata = ctx.export_run_metadata()
    finally:
        ctx.disable_run_metadata()
    partitions = [partition for graph in metadata.function_graphs for partition in graph.partition_graphs]
    return [node for partition in partitions for node in partition.node]


_ONEDNN_CPU = pytest.mark.skipif(not runtime.convolutions_on_onednn_cpu(), reason="grappler's oneDNN fusions, on the CPU")


@_ONEDNN_CPU
@pytest.mark.parametrize("case,fused", [("3x3_relu", "_MklNativeFusedConv2D"),
                                        ("3x3_stride2_padded", "_MklNativePadWithFusedConv2D"),
                                        ("depthwise_5x5_relu", "_MklNativeFusedDepthwiseConv2dNative")])
def test_grappler_fuses_convolution_bias_and_relu(case, fused):
    layer = ConvBN(**CONV_BN_CASES[case])
    x = _image((1, 12, 12, 4))
    layer.build(x.shape)
    executed = {node.op for node in _optimized_nodes(tf.function(lambda t: layer(t, training=False)), x)}
    assert fused in executed
    assert "Relu" not in executed  # inside the fused kernel


@_ONEDNN_CPU
def test_grappler_fuses_a_residual_addition_into_the_convolution():
    """The end of a bottleneck, ReLU(conv-BN + conv-BN shortcut): two fused kernels, no separate addition."""
    branch, shortcut = ConvBN(8, 1), ConvBN(8, 1)
    x = _image((1, 12, 12, 4))
    function = tf.function(lambda t: keras.ops.relu(branch(t, training=False) + shortcut(t, training=False)))
    nodes = _optimized_nodes(function, x)
    fused = [tuple(op.decode() for op in node.attr["fused_ops"].list.s) for node in nodes if "Conv2D" in node.op]
    assert sorted(fused) == [("BiasAdd",), ("BiasAdd", "Add", "Relu")]
