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
@pytest.mark.sweep
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
    ],
    ids=["inference", "tiny-epsilon", "channels-first"],
)
@pytest.mark.sweep
def test_other_uses_are_keras_batch_norm(kwargs, shape, training):
    keras_norm, fused = _twins(shape, **kwargs)
    inputs = np.random.default_rng(3).normal(size=shape).astype("float32")
    assert "FusedBatchNormV3" not in _graph_op_types(fused, shape, training)
    _assert_steps_close(_step(keras_norm, inputs, training), _step(fused, inputs, training), atol=1e-6)


def test_synchronized_with_one_replica_is_fused():
    keras_norm, fused = _twins((16, 6), synchronized=True)
    inputs = np.random.default_rng(5).normal(size=(16, 6)).astype("float32")
    assert "FusedBatchNormV3" in _graph_op_types(fused, (16, 6), True)
    _assert_steps_close(_step(keras_norm, inputs, True), _step(fused, inputs, True))


# Logical CPU devices must be configured before TensorFlow initialises, hence a subprocess.
_TWO_REPLICAS_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from axial_tf.layers import FusedBatchNormalization

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    norms = [cls(synchronized=True, momentum=0.5) for cls in (keras.layers.BatchNormalization, FusedBatchNormalization)]
    for norm in norms:
        norm.build((8, 3))
batches = [np.random.default_rng(i).normal(3.0 * i, 1.0 + i, (8, 3)).astype("float32") for i in range(2)]
inputs = strategy.experimental_distribute_values_from_function(lambda context: batches[context.replica_id_in_sync_group])
results = {}
for name, norm in zip(["keras", "fused"], norms):
    step = tf.function(lambda x: strategy.run(lambda v: norm(v, training=True), args=(x,)))
    outputs = strategy.experimental_local_results(step(inputs))
    results[name] = [np.concatenate([o.numpy() for o in outputs]).tolist(), norm.moving_mean.numpy().tolist()]
print("RESULT", json.dumps(results))
"""


@pytest.mark.full
def test_synchronized_over_two_replicas_uses_global_statistics():
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _TWO_REPLICAS_SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    for keras_value, fused_value in zip(result["keras"], result["fused"]):
        np.testing.assert_allclose(fused_value, keras_value, atol=1e-5)
    # Global statistics: the two replicas' batches (means 0 and 3) are normalised together.
    outputs = np.asarray(result["fused"][0])
    assert outputs[:8].mean() < -0.5 < 0.5 < outputs[8:].mean()


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
