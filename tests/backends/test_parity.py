"""Numerical parity with TensorFlow: a `.keras` model TensorFlow saved gives TensorFlow's numbers here.

`tf_reference.py` builds each case under the TensorFlow interpreter and records its outputs in
inference and training mode, its batch-norm moving statistics after one training-mode call and
the gradients of sum(outputs * fixed cotangents) in training mode; this backend loads the model
and measures the same (`backend_gradients.measure`).

Each array must match within TOLERANCE relative to its scale: max |ours - TensorFlow's| <=
TOLERANCE * max(1, scale). The scale of an output, statistic or input gradient is its own max
|value|; the variable gradients share one scale, the largest of them all, because several are
zero up to round-off (the height pass's output beta feeds the width pass's batch norm, which
removes any shift), so their own scale would measure TensorFlow's round-off against itself.
By this measure TensorFlow with oneDNN off differs from TensorFlow with it on by up to 1e-6 on
the layer cases and 7e-6 on the AxialDeepLab (its training-mode outputs): float32 round-off
through some fifty layers. Larger batch-norm gammas than `tf_reference.randomize_batch_norms`
sets, or a 65x65 input, make that round-off alone exceed the tolerance.
"""

import pathlib

import keras
import numpy as np
import pytest

from backend_gradients import measure, relative_error
from tf_reference import CASES

TOLERANCE = 1e-5
TF_REFERENCE = pathlib.Path(__file__).with_name("tf_reference.py")


@pytest.fixture(scope="module")
def tf_reference(tmp_path_factory, run_script):
    """The folder of TensorFlow's cases: <case>.keras and <case>.npz (see tf_reference.py)."""
    folder = tmp_path_factory.mktemp("tf_reference")
    run_script(TF_REFERENCE, "cases", folder, backend="tensorflow")
    return folder


def load_case(folder, case):
    """(model, inputs, cotangents, reference record) of a case TensorFlow wrote."""
    model = keras.models.load_model(folder / f"{case}.keras", safe_mode=True)
    reference = dict(np.load(folder / f"{case}.npz"))
    inputs = reference.pop("input")
    cotangents = {
        key.removeprefix("cotangent/"): reference.pop(key) for key in list(reference) if key.startswith("cotangent/")
    }
    return model, inputs, cotangents, reference


def parity_errors(record, reference):
    """{key: relative error of record[key]}, with the scales of the module docstring."""
    variable_gradients = [key for key in reference if key.startswith("grad/") and key != "grad/input"]
    gradient_scale = max(np.max(np.abs(reference[key])) for key in variable_gradients)
    return {
        key: relative_error(record[key], reference[key], gradient_scale if key in variable_gradients else None)
        for key in reference
    }


@pytest.mark.parametrize("case", list(CASES))
def test_matches_tensorflow(tf_reference, case):
    model, inputs, cotangents, reference = load_case(tf_reference, case)

    record = measure(model, inputs, cotangents)

    # The same outputs, moving statistics and trainable variables, by path.
    assert sorted(record) == sorted(reference)
    errors = parity_errors(record, reference)
    worst = sorted(errors, key=errors.get, reverse=True)[:3]
    assert errors[worst[0]] <= TOLERANCE, "worst: " + ", ".join(f"{key} {errors[key]:.1e}" for key in worst)


def test_mixed_bfloat16_forward_and_gradient(tf_reference):
    """Under mixed_bfloat16 the block computes in bfloat16 and keeps float32 variables and gradients.

    Built under the policy with the weights TensorFlow saved, it stays near TensorFlow's float32
    numbers: bfloat16 keeps 8 significant bits, and its outputs and statistics came within 1.1e-2
    of them, its gradients within 4.7e-2 (both backends). A computation gone wrong (an overflow, a
    lost term) is off by order one.
    """
    reference_model, inputs, cotangents, reference = load_case(tf_reference, "axial_block")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = CASES["axial_block"].build()
    model.set_weights(reference_model.get_weights())

    record = measure(model, inputs, cotangents)

    dtypes = {key: keras.backend.standardize_dtype(value.dtype) for key, value in record.items()}
    assert dtypes.pop("inference/output") == dtypes.pop("training/output") == "bfloat16"
    assert set(dtypes.values()) == {"float32"}  # statistics, input and variable gradients
    assert all(np.isfinite(value.astype("float32")).all() for value in record.values())
    errors = parity_errors(record, reference)
    for key, error in errors.items():
        assert error <= (0.15 if key.startswith("grad/") else 0.05), f"{key}: {error:.1e}"
