"""Our layers reproduce DeepLab2's layers and blocks on the shared fixtures."""

import numpy as np
import pytest

from conftest import case_id, fixture_cases
from deeplab2_layer_cases import load_case
from axial_tf.checkpoints import deeplab2_variable_map

CASES = fixture_cases("deeplab2/layers", "*.json")
TOLERANCE = 1e-4


@pytest.mark.parametrize("json_path", CASES, ids=case_id)
@pytest.mark.sweep
def test_outputs_match_deeplab2(json_path):
    spec, arrays, layer, names = load_case(json_path)
    x = arrays["input"]
    inference = np.asarray(layer(x, training=False))
    assert inference.shape == tuple(spec["output_shape"])
    np.testing.assert_allclose(inference, arrays["output_inference"], atol=TOLERANCE, rtol=0)
    training = np.asarray(layer(x, training=True))
    np.testing.assert_allclose(training, arrays["output_training"], atol=TOLERANCE, rtol=0)

    # Moving statistics after the training call. Keras 2.15 fed the *unbiased*
    # variance of convolution BNs (fused kernel) into the update, Keras 3 the biased
    # one (README section 1), so conv BN variances are compared with that factor undone.
    variables = deeplab2_variable_map(layer)
    for name, npz_key in names.items():
        if not name.endswith(("moving_mean", "moving_variance")):
            continue
        ours = np.asarray(variables[name]).reshape(-1)
        expected = arrays["updated/" + npz_key.removeprefix("w/")].reshape(-1)
        if name.endswith("moving_variance") and "batch_norm_" not in name.rsplit("/", 2)[-2]:
            old = arrays[npz_key].reshape(-1)
            count = _conv_bn_count(layer, name, x)
            unbiased = (expected - 0.99 * old) / 0.01
            expected = 0.99 * old + 0.01 * unbiased * (count - 1) / count
        np.testing.assert_allclose(ours, expected, atol=TOLERANCE, rtol=1e-5, err_msg=name)


def _conv_bn_count(layer, name, x):
    """Number of values per channel a convolution BN of `layer` normalised for input x."""
    batch, height, width = x.shape[:3]
    strided = name.startswith(("shortcut", "conv3_bn", "conv2_bn")) or (
        name.startswith("conv1_bn_act") and len(layer.filters_list) == 2
    )
    if strided and layer.strides > 1:
        height, width = -(-height // layer.strides), -(-width // layer.strides)
    return batch * height * width


@pytest.mark.parametrize("json_path", CASES, ids=case_id)
@pytest.mark.sweep
def test_parameter_counts_match_deeplab2(json_path):
    spec, _, layer, _ = load_case(json_path)
    trainable = sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
    non_trainable = sum(int(np.prod(v.shape)) for v in layer.non_trainable_weights)
    assert trainable == spec["num_trainable_params"]
    assert non_trainable == spec["num_non_trainable_params"]
