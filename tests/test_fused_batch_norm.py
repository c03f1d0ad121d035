"""FusedBatchNormalization against Keras' BatchNormalization with the same variables."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from axial_tf.layers import FusedBatchNormalization


def _twins(shape, **kwargs):
    """A Keras BN and a fused BN with equal, non-trivial variables."""
    rng = np.random.default_rng(0)
    layers = [keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)]
    for layer in layers:
        layer.build(shape)
    for variables in zip(*(layer.weights for layer in layers)):
        value = rng.uniform(0.5, 1.5, variables[0].shape).astype("float32")
        for variable in variables:
            variable.assign(value)
    return layers


def _step(layer, inputs, training, call=None):
    """Outputs, gradients (inputs, gamma, beta) and moving statistics after one call."""
    inputs = tf.convert_to_tensor(inputs)
    upstream = tf.random.stateless_normal(inputs.shape, (1, 2))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = (call or layer)(inputs, training=training)
        loss = tf.reduce_sum(tf.cast(outputs, "float32") * upstream)
    gradients = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
    return [outputs, *gradients, layer.moving_mean.value, layer.moving_variance.value]


def _assert_steps_close(expected, actual, atol=2e-5):
    names = ["outputs", "d inputs", "d gamma", "d beta", "moving_mean", "moving_variance"]
    for name, want, got in zip(names, expected, actual):
        want = np.asarray(want, "float32")
        np.testing.assert_allclose(np.asarray(got, "float32"), want, atol=atol * max(1.0, np.abs(want).max()), err_msg=name)


@pytest.mark.parametrize("shape", [(64, 12), (2, 5, 7, 12)])
@pytest.mark.parametrize("graph", [False, True])
def test_training_step_matches_keras(shape, graph):
    keras_norm, fused = _twins(shape, momentum=0.9)
    inputs = np.random.default_rng(1).normal(2.0, 3.0, shape).astype("float32")
    wrap = tf.function if graph else (lambda f: f)
    expected = wrap(lambda: _step(keras_norm, inputs, True))()
    actual = wrap(lambda: _step(fused, inputs, True))()
    _assert_steps_close(expected, actual)


def _graph_op_types(layer, shape, training):
    function = tf.function(lambda x: layer(x, training=training))
    return {op.type for op in function.get_concrete_function(tf.TensorSpec(shape)).graph.get_operations()}


def test_training_graph_uses_the_fused_kernel():
    (_, fused) = _twins((8, 4))
    assert "FusedBatchNormV3" in _graph_op_types(fused, (8, 4), True)


def test_channel_groups_match_one_call_on_the_concatenation():
    keras_norm, fused = _twins((3, 10, 10))
    inputs = np.random.default_rng(2).normal(size=(3, 10, 10)).astype("float32")
    expected = _step(keras_norm, inputs, True)
    groups = lambda x, training: tf.concat(  # noqa: E731
        fused.normalize_channel_groups([x[..., :3], x[..., 3:]], training=training), axis=-1
    )
    _assert_steps_close(expected, _step(fused, inputs, True, call=groups))


@pytest.mark.parametrize(
    "kwargs, shape, training",
    [
        (dict(), (16, 6), False),
        (dict(epsilon=1e-6), (16, 6), True),  # below the fused kernel's epsilon floor
        (dict(axis=1), (4, 6, 3), True),  # channels not last
        (dict(synchronized=True), (16, 6), True),
    ],
    ids=["inference", "tiny-epsilon", "channels-first", "synchronized"],
)
def test_other_uses_are_keras_batch_norm(kwargs, shape, training):
    keras_norm, fused = _twins(shape, **kwargs)
    inputs = np.random.default_rng(3).normal(size=shape).astype("float32")
    assert "FusedBatchNormV3" not in _graph_op_types(fused, shape, training)
    _assert_steps_close(_step(keras_norm, inputs, training), _step(fused, inputs, training), atol=1e-6)


def test_mixed_precision_keeps_compute_dtype():
    keras_norm, fused = _twins((32, 8), dtype="mixed_float16")
    inputs = np.random.default_rng(4).normal(size=(32, 8)).astype("float16")
    actual = _step(fused, inputs, True)
    assert actual[0].dtype == tf.float16
    _assert_steps_close(_step(keras_norm, inputs, True), actual, atol=2e-3)


def test_serialization_round_trip():
    (_, fused) = _twins((4, 3), momentum=0.8, epsilon=1e-2)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused))
    assert isinstance(clone, FusedBatchNormalization)
    assert (clone.momentum, clone.epsilon) == (0.8, 1e-2)
