"""`.keras` files saved by an earlier axial_tf still load and compute what they computed then.

The files (tests/fixtures/legacy, see its README) were written before the CPU tuning settings
left the layer configs; their extra keys are accepted and ignored.
"""

import warnings

import numpy as np
import pytest

from conftest import REPO_ROOT

from axial_tf.experiment.checkpoints import load_keras_model
from axial_tf.experiment.tasks import task_of_model

LEGACY = REPO_ROOT / "tests" / "fixtures" / "legacy"
CASES = [
    # (file, input in outputs.npz, output name in the model's result or None, stored output, task)
    ("axial_deeplab_tiny.keras", "images", "semantic_logits", "panoptic/semantic_logits", "panoptic"),
    ("axial_deeplab_tiny.keras", "images", "offset_map", "panoptic/offset_map", "panoptic"),
    ("axial_resnet_classifier_tiny.keras", "images", None, "classification/logits", "classification"),
    ("layers_model.keras", "images", None, "layers/logits", None),
    ("attention_model.keras", "sequences", None, "attention/outputs", None),
]


@pytest.fixture(scope="module")
def stored():
    return dict(np.load(LEGACY / "outputs.npz"))


@pytest.mark.parametrize("file_name, input_key, output_name, stored_key, task", CASES)
@pytest.mark.sweep
def test_legacy_keras_file_loads_and_computes_the_same(stored, file_name, input_key, output_name, stored_key, task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the note about ignored tuning keys
        model = load_keras_model(LEGACY / file_name)
    outputs = model(stored[input_key], training=False)
    actual = np.asarray(outputs[output_name] if output_name else outputs)
    np.testing.assert_allclose(actual, stored[stored_key], rtol=1e-4, atol=1e-4)
    if task is not None:
        assert task_of_model(model) == task
