"""AxialAttention against a numpy oracle, plus length, span and precision behaviour."""

import numpy as np
import pytest

import keras
from axial_tf.layers import AxialAttention, RelativePositionalEncoding
from axial_tf.layers.axial_attention import sequence_chunks
from numpy_attention_oracle import attention_1d

HEADS, KEY_DEPTH, VALUE_DEPTH, CHANNELS = 2, 8, 12, 6


def _randomise(layer, seed):
    """Random weights with non-trivial BN statistics (so the BNs matter)."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        shape = variable.shape
        if variable.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif variable.path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif variable.path.endswith("embeddings"):
            value = rng.normal(0, 0.5, shape)
        else:
            value = rng.normal(0, 0.3, shape)
        variable.assign(value.astype("float32"))


def _oracle_weights(layer):
    def bn(b):
        return {n: np.asarray(getattr(b, n), np.float64) for n in ("gamma", "beta", "moving_mean", "moving_variance")}

    return {
        "qkv_kernel": np.asarray(layer.qkv_kernel, np.float64),
        "bn_qkv": bn(layer.batch_norm_qkv),
        "bn_similarity": bn(layer.batch_norm_similarity),
        "bn_output": bn(layer.batch_norm_retrieved_output),
        "rq": np.asarray(layer.query_rpe.embeddings, np.float64),
        "rk": np.asarray(layer.key_rpe.embeddings, np.float64),
        "rv": np.asarray(layer.value_rpe.embeddings, np.float64),
    }


def _layer(span=None, seed=0, max_span=8, **kwargs):
    layer = AxialAttention(KEY_DEPTH, VALUE_DEPTH, HEADS, span=span, max_span=max_span, **kwargs)
    layer.build((None, None, CHANNELS))
    _randomise(layer, seed)
    return layer


def _input(length, batch=3, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, length, CHANNELS)).astype("float32")


# Lengths beyond max_span (8) exercise the clipped table rows.
@pytest.mark.parametrize("span,length,block", [(None, 7, None), (None, 11, None), (3, 9, None), (5, 13, 4), (7, 6, 2)])
@pytest.mark.parametrize("training", [False, True])
def test_matches_numpy_oracle(span, length, block, training):
    layer = _layer(span, query_block_size=block)
    x = _input(length)
    ours = np.asarray(layer(x, training=training))
    expected = attention_1d(x.astype(np.float64), _oracle_weights(layer) if not training else _oracle_weights_before(layer, x), HEADS, span, training=training)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def _oracle_weights_before(layer, x):
    """Weights as they were before a training call updated the moving statistics."""
    fresh = _layer(layer.span, query_block_size=layer.query_block_size)
    return _oracle_weights(fresh)


def test_local_span_covering_axis_equals_global():
    length = 7
    x = _input(length)
    global_layer = _layer(None)
    local_layer = _layer(2 * length - 1)
    for training in (False, True):
        np.testing.assert_allclose(
            np.asarray(local_layer(x, training=training)), np.asarray(global_layer(x, training=training)), atol=1e-5
        )


def test_query_block_size_does_not_change_result():
    x = _input(17)
    reference = np.asarray(_layer(5, query_block_size=1)(x))
    for block in (2, 5, 8, 17, 40):
        np.testing.assert_allclose(np.asarray(_layer(5, query_block_size=block)(x)), reference, atol=1e-5)


def _forward_and_gradients(layer, x, training, function=False):
    """Outputs, gradients w.r.t. input and weights, and the moving statistics afterwards."""
    import tensorflow as tf

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.cos(y))
        return y, tape.gradient(loss, [x] + layer.trainable_variables)

    if function:  # unknown batch and length: the chunk count is a tensor
        step = tf.function(step, input_signature=[tf.TensorSpec([None] * (x.ndim - 1) + [CHANNELS], tf.float32)])
    y, gradients = step(tf.constant(x))
    moving = [np.asarray(v) for v in layer.non_trainable_variables]
    return [np.asarray(y)] + [np.asarray(tf.convert_to_tensor(g)) for g in gradients] + moving


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("function", [False, True])
def test_chunked_global_attention_gives_the_one_pass_result(training, function):
    x = _input(7, batch=5)
    logits_per_sequence = HEADS * 7 * 7
    reference = _forward_and_gradients(_layer(None), x, training)
    # Chunks of 1 sequence, of 2 (the last one padded) and one chunk holding all 5.
    for chunk in (1, 2, 5):
        layer = _layer(None, max_chunk_logits=chunk * logits_per_sequence + logits_per_sequence // 2)
        results = _forward_and_gradients(layer, x, training, function)
        for expected, actual in zip(reference, results, strict=True):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def _as_columns(x4):
    """`[N, L, X, C]` -> `[N * X, L, C]`: one sequence per column."""
    n, length, x, c = x4.shape
    return np.ascontiguousarray(x4.transpose(0, 2, 1, 3).reshape(n * x, length, c))


@pytest.mark.parametrize(
    "span, max_chunk_logits, function",
    [
        (None, None, False),  # in place
        (None, None, True),  # unknown shape: as sequences
        (None, HEADS * 7 * 7 * 3, False),  # logits beyond one chunk: as sequences, in chunks
        (5, None, False),  # local: as sequences
    ],
)
@pytest.mark.parametrize("training", [False, True])
def test_attends_along_axis_1_of_4d_inputs(span, max_chunk_logits, function, training):
    """`[N, L, X, C]` gives what its `N * X` columns give as `[N * X, L, C]` sequences."""
    x4 = np.random.default_rng(3).normal(size=(2, 7, 4, CHANNELS)).astype("float32")
    chunk_args = {} if max_chunk_logits is None else {"max_chunk_logits": max_chunk_logits}
    reference = _forward_and_gradients(_layer(span, **chunk_args), _as_columns(x4), training)
    results = _forward_and_gradients(_layer(span, **chunk_args), x4, training, function)
    results[:2] = [_as_columns(t) for t in results[:2]]  # outputs, input gradient
    # Rows are summed in another order (weight gradients reach |50|): float32 rounding.
    for expected, actual in zip(reference, results, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("count, per_sequence, bound, expected", [
    (5, 98, 2 * 98 + 49, (3, 2)),  # 2 sequences fit: 3 chunks of 2 (one padding sequence)
    (7, 10, 30, (3, 3)),  # 3 fit: 3 chunks of 3 (two padding sequences)
    (5, 64, 2**26, (1, 5)),  # all fit: one chunk of exactly the sequences, no padding
    (4, 1000, 10, (4, 1)),  # not even one fits: one sequence per chunk
])
def test_sequence_chunks_bound_the_logits_and_the_padding(count, per_sequence, bound, expected):
    import tensorflow as tf

    assert sequence_chunks(count, per_sequence, bound) == expected
    as_tensors = sequence_chunks(tf.constant(count), tf.constant(per_sequence), bound)  # dynamic shapes
    assert tuple(int(v) for v in as_tensors) == expected


def test_max_chunk_logits_must_be_positive():
    with pytest.raises(ValueError, match="max_chunk_logits"):
        AxialAttention(KEY_DEPTH, VALUE_DEPTH, HEADS, max_chunk_logits=0)


@pytest.mark.parametrize("span", [None, 5])
def test_length_change_after_build_is_correct(span):
    layer = _layer(span)
    layer(_input(12))  # first call fixes nothing about the length
    short = _input(5, seed=7)
    fresh = _layer(span)  # same seed -> same weights, first called at length 5
    np.testing.assert_allclose(np.asarray(layer(short)), np.asarray(fresh(short)), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(layer(short)), attention_1d(short.astype(np.float64), _oracle_weights(layer), HEADS, span), atol=1e-5
    )


def test_relative_positional_encoding_indexing_and_clipping():
    rpe = RelativePositionalEncoding(depth=2, max_span=3)  # offsets -2..2
    rpe.build()
    rpe.embeddings.assign(np.arange(10, dtype="float32").reshape(5, 2))
    table = np.asarray(rpe.table(2, 6))
    rows = table[..., 0] / 2  # row index of each (query, key) pair
    expected = np.clip(np.arange(6)[None, :] - np.arange(2)[:, None], -2, 2) + 2
    np.testing.assert_array_equal(rows, expected)
    shifted = np.asarray(rpe.table(2, 3, key_start=-1))[..., 0] / 2
    np.testing.assert_array_equal(shifted, np.clip(np.arange(3)[None] - 1 - np.arange(2)[:, None], -2, 2) + 2)


@pytest.mark.parametrize(
    "switches",
    [
        dict(use_content_similarity=False),
        dict(use_query_rpe_similarity=False, use_key_rpe_similarity=False),
        dict(retrieve_value_rpe=False),
        dict(retrieve_value_content=False),
    ],
)
def test_term_switches_change_bn_channels(switches):
    layer = AxialAttention(KEY_DEPTH, VALUE_DEPTH, HEADS, **switches)
    y = layer(_input(5))
    assert y.shape == (3, 5, VALUE_DEPTH)
    assert layer.batch_norm_similarity.gamma.shape[0] == layer.num_similarity_terms * HEADS
    assert layer.batch_norm_retrieved_output.gamma.shape[0] == layer.num_retrieval_terms * VALUE_DEPTH
    assert (layer.query_rpe is None) == (not switches.get("use_query_rpe_similarity", True))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(span=4), "odd"),
        (dict(num_heads=3), "divide"),
        (dict(use_content_similarity=False, use_query_rpe_similarity=False, use_key_rpe_similarity=False), "similarity"),
        (dict(retrieve_value_content=False, retrieve_value_rpe=False), "retrieve"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = dict(total_key_depth=KEY_DEPTH, total_value_depth=VALUE_DEPTH, num_heads=HEADS)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AxialAttention(**args)


@pytest.mark.parametrize("shape", [(3, CHANNELS), (1, 2, 3, 4, CHANNELS)])
def test_inputs_of_another_rank_are_named(shape):
    with pytest.raises(ValueError, match=r"\[N, L, C\] or \[N, L, X, C\], got shape \(" + ", ".join(map(str, shape))):
        _layer()(np.zeros(shape, "float32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("span", [None, 3])
def test_mixed_precision_close_to_float32(policy, span):
    x = _input(9)
    reference_inference = np.asarray(_layer(span)(x))
    reference_training = np.asarray(_layer(span)(x, training=True))
    keras.mixed_precision.set_global_policy(policy)
    layer = _layer(span)
    assert layer.batch_norm_similarity.compute_dtype == "float32"
    tolerance = 0.05 if policy == "mixed_float16" else 0.3
    for training, reference in ((False, reference_inference), (True, reference_training)):
        y = layer(x, training=training)
        assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
        np.testing.assert_allclose(np.asarray(y, np.float32), reference, atol=tolerance)


def test_defaults_follow_deeplab2_signature():
    # DeepLab2's AxialAttention(): 512 key, 1024 value channels, 8 heads.
    layer = AxialAttention()
    assert (layer.total_key_depth, layer.total_value_depth, layer.num_heads) == (512, 1024, 8)
    x = np.zeros((2, 5, 32), "float32")  # [N, L, C]
    assert layer(x).shape == (2, 5, 1024)
    clone = AxialAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)), atol=1e-6)
