"""AxialAttention's fast paths against a plain, literal implementation of the same math.

The layer folds the similarity batch norm into per-head scales of q and k, takes
the global-attention batch statistics from second-moment matrices (or from the
products themselves), drops BN shifts that cancel in the softmax and runs its qkv
and output batch norms as fused kernels. The plain path here does none of that: it
materialises the three similarity products, normalises them with the layer's
similarity BN sublayer, sums, and runs Keras' unfused batch norm (with the layer's
variables) on qkv and the output. Outputs, gradients (input and every weight) and
the moving statistics after a training step must agree.
"""

import numpy as np
import pytest

import keras
import tensorflow as tf
from keras import ops

from axial_tf.layers import AxialAttention, axial_attention

HEADS, KEY_DEPTH, VALUE_DEPTH, CHANNELS, LENGTH = 2, 8, 12, 6, 9


def _keras_batch_norm(norm, inputs, training):
    """Keras' own (unfused) batch norm with the variables of `norm`, on rows of channels."""
    rows = ops.reshape(inputs, (-1, inputs.shape[-1]))
    return ops.reshape(keras.layers.BatchNormalization.call(norm, rows, training=training), inputs.shape)


def _plain_attention(layer, inputs, training):
    """Literal position-sensitive attention with full [L, L] logits (band mask for a local span)."""
    batch, length = inputs.shape[0], inputs.shape[1]
    qkv = _keras_batch_norm(layer.batch_norm_qkv, ops.matmul(inputs, layer.qkv_kernel), training)
    dk, heads = layer.total_key_depth, layer.num_heads
    query = ops.reshape(qkv[..., :dk], (batch, length, heads, -1))
    key = ops.reshape(qkv[..., dk : 2 * dk], (batch, length, heads, -1))
    value = ops.reshape(qkv[..., 2 * dk :], (batch, length, heads, -1))
    logits = []
    if layer.use_content_similarity:
        logits.append(ops.einsum("nlhd,nmhd->nhlm", query, key))
    if layer.use_query_rpe_similarity:
        logits.append(ops.einsum("nlhd,lmd->nhlm", query, layer.query_rpe.table(length, length)))
    if layer.use_key_rpe_similarity:
        logits.append(ops.einsum("nmhd,lmd->nhlm", key, layer.key_rpe.table(length, length)))
    logits = ops.concatenate(logits, axis=1)[:, :, None]  # [N, terms * heads, 1, L, L]
    offsets = np.arange(length)[None, :] - np.arange(length)[:, None]
    valid = None if layer.span is None else np.abs(offsets) <= (layer.span - 1) // 2  # [L, L]
    mask = None if valid is None else valid[None, None, None]
    logits = layer.batch_norm_similarity(logits, training=training, mask=mask)
    logits = ops.sum(ops.reshape(logits, (batch, -1, heads, length, length)), axis=1)  # [N, heads, L, L]
    if valid is not None:
        logits = ops.where(valid, logits, -1e9)
    weights = ops.softmax(logits, axis=-1)
    retrieved = []
    if layer.retrieve_value_content:
        retrieved.append(ops.einsum("nhlm,nmhd->nlhd", weights, value))
    if layer.retrieve_value_rpe:
        retrieved.append(ops.einsum("nhlm,lmd->nlhd", weights, layer.value_rpe.table(length, length)))
    retrieved = ops.reshape(ops.stack(retrieved, axis=2), (batch, length, -1))
    retrieved = _keras_batch_norm(layer.batch_norm_retrieved_output, retrieved, training)
    return ops.sum(ops.reshape(retrieved, (batch, length, layer.num_retrieval_terms, -1)), axis=2)


def _twin_layers(span, seed=0, **switches):
    """Two layers with identical random weights (non-trivial BN statistics)."""
    rng = np.random.default_rng(seed)
    layers = [
        AxialAttention(KEY_DEPTH, VALUE_DEPTH, HEADS, span=span, max_span=6, query_block_size=4, **switches)
        for _ in range(2)
    ]
    for layer in layers:
        layer.build((None, None, CHANNELS))
        layer(np.zeros((1, LENGTH, CHANNELS), "float32"))  # creates lazily built sublayer weights
    values = []
    for variable in layers[0].weights:
        if variable.path.endswith(("moving_variance", "gamma")):
            values.append(rng.uniform(0.5, 1.5, variable.shape))
        else:
            values.append(rng.normal(0, 0.4, variable.shape))
    for layer in layers:
        for variable, value in zip(layer.weights, values):
            variable.assign(value.astype("float32"))
    return layers


def _outputs_and_gradients(layer, call, inputs, training):
    inputs = tf.convert_to_tensor(inputs)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = call(layer, inputs, training)
        loss = ops.sum(ops.square(outputs) * ops.linspace(0.5, 1.5, VALUE_DEPTH))
    gradients = tape.gradient(loss, [inputs] + layer.trainable_weights)
    return np.asarray(outputs), [np.asarray(tf.convert_to_tensor(g)) for g in gradients]


def _fast(layer, inputs, training):
    return layer(inputs, training=training)


# Global attention takes training statistics from moment matrices or from the products,
# depending on dk^2 / L: both ways are forced here (the threshold only picks the faster).
@pytest.mark.parametrize(
    "span, moment_threshold",
    [(None, 10**9), (None, 0), (5, None)],
    ids=["global-moment-matrices", "global-product-statistics", "local"],
)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "switches",
    [{}, dict(use_content_similarity=False), dict(use_key_rpe_similarity=False, retrieve_value_rpe=False)],
)
def test_fast_path_matches_plain_path(span, moment_threshold, training, switches, monkeypatch):
    if moment_threshold is not None:
        monkeypatch.setattr(axial_attention, "MOMENT_MATRICES_MAX_DEPTH_SQUARED_PER_POSITION", moment_threshold)
    fast, plain = _twin_layers(span, **switches)
    inputs = np.random.default_rng(1).normal(size=(3, LENGTH, CHANNELS)).astype("float32")
    fast_out, fast_grads = _outputs_and_gradients(fast, _fast, inputs, training)
    plain_out, plain_grads = _outputs_and_gradients(plain, _plain_attention, inputs, training)
    np.testing.assert_allclose(fast_out, plain_out, atol=2e-5)
    for variable, fast_grad, plain_grad in zip(["input"] + fast.trainable_weights, fast_grads, plain_grads):
        scale = max(1.0, np.abs(plain_grad).max())
        name = str(getattr(variable, "path", variable))
        np.testing.assert_allclose(fast_grad, plain_grad, atol=1e-4 * scale, err_msg=name)
    for fast_variable, plain_variable in zip(fast.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(
            np.asarray(fast_variable), np.asarray(plain_variable), atol=1e-5, err_msg=fast_variable.path
        )


def test_frozen_similarity_norm_uses_moving_statistics_in_training():
    fast, plain = _twin_layers(None)
    fast.batch_norm_similarity.trainable = False
    plain.batch_norm_similarity.trainable = False
    inputs = np.random.default_rng(2).normal(size=(2, LENGTH, CHANNELS)).astype("float32")
    before = np.asarray(fast.batch_norm_similarity.moving_variance)
    np.testing.assert_allclose(
        np.asarray(fast(inputs, training=True)), np.asarray(_plain_attention(plain, inputs, True)), atol=2e-5
    )
    np.testing.assert_array_equal(np.asarray(fast.batch_norm_similarity.moving_variance), before)


def test_every_trainable_weight_gets_a_gradient():
    """The similarity BN offset cancels in the softmax; it still gets a (zero) gradient, never None."""
    (layer, _) = _twin_layers(None)
    inputs = tf.random.normal((2, LENGTH, CHANNELS), seed=3)
    with tf.GradientTape() as tape:
        loss = ops.sum(layer(inputs, training=True))
    gradients = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None for g in gradients)
    beta_gradient = gradients[[w.path for w in layer.trainable_weights].index(layer.batch_norm_similarity.beta.path)]
    np.testing.assert_array_equal(np.asarray(beta_gradient), 0.0)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_fast_path_under_mixed_precision_close_to_plain_float32(policy):
    inputs = np.random.default_rng(4).normal(size=(2, LENGTH, CHANNELS)).astype("float32")
    _, plain = _twin_layers(None)
    expected = np.asarray(_plain_attention(plain, inputs, True))
    keras.mixed_precision.set_global_policy(policy)
    try:
        fast, _ = _twin_layers(None)
        outputs = np.asarray(fast(inputs, training=True), np.float32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(outputs, expected, atol=0.05 if policy == "mixed_float16" else 0.3)


# Logical CPU devices must be configured before TensorFlow initialises, hence a subprocess.
_TWO_REPLICAS_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras import ops
from axial_tf.layers import AxialAttention, axial_attention

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
batches = [np.random.default_rng(i).normal(i, 1.0 + i, (3, 9, 6)).astype("float32") for i in range(2)]
results = {}
for name, span, threshold in [("product-statistics", None, 0), ("moment-matrices", None, 10**9), ("local", 5, 0)]:
    axial_attention.MOMENT_MATRICES_MAX_DEPTH_SQUARED_PER_POSITION = threshold
    make = lambda: AxialAttention(8, 12, 2, span=span, max_span=6, query_block_size=4, sync_batch_norm=True)
    with strategy.scope():
        mirrored = make()
        mirrored(np.zeros((1, 9, 6), "float32"))
    single = make()
    single(np.zeros((1, 9, 6), "float32"))
    single.set_weights(mirrored.get_weights())

    def loss_and_gradients(layer, inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
            loss = ops.sum(ops.square(outputs) * ops.linspace(0.5, 1.5, 12))
        return [outputs] + tape.gradient(loss, [inputs] + layer.trainable_weights)

    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: batches[context.replica_id_in_sync_group])
    step = tf.function(lambda x: strategy.run(lambda v: loss_and_gradients(mirrored, v), args=(x,)))
    per_replica = [strategy.experimental_local_results(t) for t in step(inputs)]
    replicas = {
        "outputs": np.concatenate([t.numpy() for t in per_replica[0]]),
        "input_gradient": np.concatenate([t.numpy() for t in per_replica[1]]),
        "weight_gradients": [sum(tf.convert_to_tensor(t).numpy() for t in g) for g in per_replica[2:]],
        "moving": [np.asarray(w) for w in mirrored.non_trainable_weights],
    }
    outputs, input_gradient, *weight_gradients = loss_and_gradients(single, tf.constant(np.concatenate(batches)))
    one = {
        "outputs": outputs.numpy(), "input_gradient": input_gradient.numpy(),
        "weight_gradients": [tf.convert_to_tensor(g).numpy() for g in weight_gradients],
        "moving": [np.asarray(w) for w in single.non_trainable_weights],
    }
    pairs = lambda key: zip(replicas[key], one[key]) if isinstance(one[key], list) else [(replicas[key], one[key])]
    relative_error = lambda a, b: float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))
    results[name] = {key: max(relative_error(a, b) for a, b in pairs(key)) for key in one}
print("RESULT", json.dumps(results))
"""


def test_synchronized_statistics_over_two_replicas_match_one_device():
    """Two replicas with sync_batch_norm train as one device on the whole batch (gradients through
    the written-out similarity BN gradient included: its scale depends on both replicas' logits)."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _TWO_REPLICAS_SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    assert set(result) == {"product-statistics", "moment-matrices", "local"}
    for path, errors in result.items():
        for key, relative_error in errors.items():
            assert relative_error < 1e-4, (path, key, relative_error)
