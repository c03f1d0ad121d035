"""The reference implementation of AxialAttention against DeepLab2's layers and a numpy oracle.

`axial_attention_reference.py` is the definition the fast path is tested against
(test_attention_fast_paths.py), so it is checked here against computations that share no
code with it: DeepLab2's own layers (the fixtures: global attention in the 1-D layer, the
2-D layer and the axial block, outputs and updated moving statistics) and, for what DeepLab2
does not have (local spans; lengths beyond the encoding table), the explicit-loop numpy
oracle of numpy_attention_oracle.py.
"""

import json

import numpy as np
import pytest

from conftest import case_id, fixture_cases
from deeplab2_layer_cases import load_case
from numpy_attention_oracle import attention_1d
from axial_tf.checkpoints import deeplab2_variable_map
from axial_tf.layers import AxialAttention

HEADS, KEY_DEPTH, VALUE_DEPTH, CHANNELS = 2, 8, 12, 6


def _attends(json_path):
    """Whether a DeepLab2 layer fixture holds axial-attention (not the convolutional blocks)."""
    spec = json.loads(json_path.read_text())
    return spec["layer_class"] != "AxialBlock" or spec["constructor_kwargs"].get("attention_type") == "axial"


CASES = [case for case in fixture_cases("deeplab2/layers", "*.json") if _attends(case)]


def _use_reference(layer):
    """Switches every AxialAttention inside `layer` to the reference implementation."""
    attention = [sub for sub in layer._flatten_layers(include_self=True) if isinstance(sub, AxialAttention)]
    assert attention, f"{layer.name} holds no AxialAttention"
    for sub in attention:
        sub.implementation = "reference"


@pytest.mark.parametrize("json_path", CASES, ids=case_id)
@pytest.mark.sweep
def test_reference_matches_deeplab2(json_path):
    _, arrays, layer, names = load_case(json_path)
    _use_reference(layer)
    x = arrays["input"]
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), arrays["output_inference"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), arrays["output_training"], atol=1e-4, rtol=0)
    # The attention BNs' moving statistics after the training call (both update them with the
    # biased batch variance; convolution BNs do not depend on the implementation).
    variables = deeplab2_variable_map(layer)
    compared = 0
    for name, npz_key in names.items():
        if name.endswith(("moving_mean", "moving_variance")) and "batch_norm_" in name.rsplit("/", 2)[-2]:
            expected = arrays["updated/" + npz_key.removeprefix("w/")].reshape(-1)
            ours = np.asarray(variables[name]).reshape(-1)
            np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-5, err_msg=name)
            compared += 1
    assert compared >= 3  # qkv, similarity and output BNs of at least one axis


def _reference_layer(span, seed=0):
    """A reference layer with random weights and non-trivial BN statistics; tables cover offsets up to 7."""
    layer = AxialAttention(KEY_DEPTH, VALUE_DEPTH, HEADS, span=span, max_span=8, implementation="reference")
    layer.build((None, None, CHANNELS))
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        if variable.path.endswith(("moving_variance", "gamma")):
            value = rng.uniform(0.5, 1.5, variable.shape)
        else:
            value = rng.normal(0, 0.4, variable.shape)
        variable.assign(value.astype("float32"))
    return layer


def _oracle_weights(layer):
    """The layer's weights as float64 arrays, in the oracle's layout (read before a training call updates them)."""

    def bn(norm):
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return {name: np.asarray(getattr(norm, name), np.float64) for name in names}

    return {
        "qkv_kernel": np.asarray(layer.qkv_kernel, np.float64),
        "bn_qkv": bn(layer.batch_norm_qkv),
        "bn_similarity": bn(layer.batch_norm_similarity),
        "bn_output": bn(layer.batch_norm_retrieved_output),
        "rq": np.asarray(layer.query_rpe.embeddings, np.float64),
        "rk": np.asarray(layer.key_rpe.embeddings, np.float64),
        "rv": np.asarray(layer.value_rpe.embeddings, np.float64),
    }


# Lengths beyond max_span (8) exercise the clipped table rows; local spans at the borders
# attend fewer keys, and a span longer than the sequence attends all of them.
@pytest.mark.parametrize("span, length", [(None, 7), (None, 11), (3, 9), (5, 13), (7, 6), (9, 3)])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.sweep
def test_reference_matches_numpy_oracle(span, length, training):
    layer = _reference_layer(span)
    x = np.random.default_rng(1).normal(size=(3, length, CHANNELS)).astype("float32")
    expected = attention_1d(x.astype(np.float64), _oracle_weights(layer), HEADS, span, training=training)
    np.testing.assert_allclose(np.asarray(layer(x, training=training)), expected, atol=1e-5, rtol=0)
