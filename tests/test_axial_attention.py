"""AxialAttention's behaviour: lengths, spans, switches, arguments, precision and config.

Its numbers are held against the reference implementation in test_attention_fast_paths.py,
and the reference against DeepLab2 and a numpy oracle in test_attention_reference.py.
"""

import numpy as np
import pytest

import keras
from axial_tf.layers import AxialAttention, AxialAttention2D, AxialBlock, RelativePositionalEncoding
from axial_tf.layers.attention_layouts import sequence_chunks

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


def _layer(span=None, seed=0, max_span=8, **kwargs):
    layer = AxialAttention(KEY_DEPTH, VALUE_DEPTH, HEADS, span=span, max_span=max_span, **kwargs)
    layer.build((None, None, CHANNELS))
    _randomise(layer, seed)
    return layer


def _input(length, batch=3, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, length, CHANNELS)).astype("float32")


@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_local_span_covering_axis_equals_global(implementation):
    length = 7
    x = _input(length)
    global_layer = _layer(None, implementation=implementation)
    local_layer = _layer(2 * length - 1, implementation=implementation)
    for training in (False, True):
        np.testing.assert_allclose(
            np.asarray(local_layer(x, training=training)), np.asarray(global_layer(x, training=training)), atol=1e-5
        )


def test_query_block_size_does_not_change_result():
    x = _input(17)
    reference = np.asarray(_layer(5, query_block_size=1)(x))
    for block in (2, 5, 8, 17, 40):
        np.testing.assert_allclose(np.asarray(_layer(5, query_block_size=block)(x)), reference, atol=1e-5)


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


@pytest.mark.parametrize("span", [None, 5])
def test_length_change_after_build_is_correct(span):
    layer = _layer(span)
    layer(_input(12))  # first call fixes nothing about the length
    short = _input(5, seed=7)
    fresh = _layer(span)  # same seed -> same weights, first called at length 5
    np.testing.assert_allclose(np.asarray(layer(short)), np.asarray(fresh(short)), atol=1e-6)
    reference = _layer(span, implementation="reference")
    np.testing.assert_allclose(np.asarray(layer(short)), np.asarray(reference(short)), atol=1e-5)


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
@pytest.mark.parametrize("implementation", ["fast", "reference"])
@pytest.mark.sweep
def test_mixed_precision_close_to_float32(policy, span, implementation):
    x = _input(9)
    reference_inference = np.asarray(_layer(span, implementation=implementation)(x))
    reference_training = np.asarray(_layer(span, implementation=implementation)(x, training=True))
    keras.mixed_precision.set_global_policy(policy)
    layer = _layer(span, implementation=implementation)
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


def test_implementation_is_checked_and_saved():
    with pytest.raises(ValueError, match="implementation must be one of"):
        AxialAttention(KEY_DEPTH, VALUE_DEPTH, HEADS, implementation="slow")
    layer = _layer(implementation="reference")
    assert layer.get_config()["implementation"] == "reference"
    assert AxialAttention.from_config(layer.get_config()).implementation == "reference"
    assert AxialAttention(KEY_DEPTH, VALUE_DEPTH, HEADS).implementation == "fast"


@pytest.mark.parametrize("training", [False, True])
def test_implementations_share_weights_in_blocks(training):
    """`implementation` reaches both passes of an AxialBlock's 2-D layer; the weights carry over."""
    blocks = [AxialBlock([8, 4, 8], strides=2, attention={"num_heads": 2, "implementation": impl}) for impl in
              ("fast", "reference")]
    x = np.random.default_rng(5).normal(size=(2, 7, 5, 8)).astype("float32")
    for block in blocks:
        block(x)
    _randomise(blocks[0], seed=6)
    blocks[1].set_weights(blocks[0].get_weights())
    attention = blocks[1].attention_layer
    assert attention.height_axis.implementation == attention.width_axis.implementation == "reference"
    assert AxialAttention2D.from_config(attention.get_config()).width_axis.implementation == "reference"
    fast, reference = (np.asarray(block(x, training=training)) for block in blocks)
    np.testing.assert_allclose(fast, reference, atol=1e-4)
