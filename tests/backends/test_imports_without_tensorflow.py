"""The model and inference half of axial_tf works in an environment without TensorFlow.

This tier runs in .venv-backends, made from tests/backends/requirements.txt plus the package with its
own declared dependencies: TensorFlow missing there also proves `pip install axial_tf` does not pull it.
Imports are checked in fresh interpreters, so no other test's imports can hide a TensorFlow import.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np

from conftest import REPO_ROOT

INSTALL_LINE = "needs TensorFlow: pip install 'axial_tf[tensorflow]'"

# What works without TensorFlow, by import name.
TENSORFLOW_FREE = (
    "axial_tf",
    "axial_tf.layers",
    "axial_tf.models",
    "axial_tf.models.inference",
    "axial_tf.losses",
    "axial_tf.postprocessing",  # the options and the NumPy post-processing
    "axial_tf.presets",
    "axial_tf.checkpoints",
    "axial_tf.checkpoints.pytorch_converter",
    "axial_tf.utils.visualization",
)
# What needs it, with the feature its one-line error names.
NEEDS_TENSORFLOW = {
    "axial_tf.data": "axial_tf.data (the tf.data pipelines and TFDS builders)",
    "axial_tf.targets": "axial_tf.targets (the panoptic training targets)",
    "axial_tf.metrics": "axial_tf.metrics (the evaluation metrics)",
    "axial_tf.experiment.config": "axial_tf.experiment (configs, tasks and serving modules)",
    "axial_tf.training.trainer": "axial_tf.training (the Trainer and Evaluator)",
    "axial_tf.export": "axial_tf.export (SavedModel, ONNX, OpenVINO and LiteRT export)",
    "axial_tf.checkpoints.deeplab2_converter": "Reading DeepLab2 checkpoints",
    "axial_tf.utils.files": "axial_tf.utils.files (model-directory files through tf.io.gfile)",
}


def _python(*args):
    """Runs `python *args` in a fresh interpreter of this environment and backend."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                          env={**os.environ, "KERAS_BACKEND": keras.backend.backend()})


def test_this_environment_has_no_tensorflow():
    assert importlib.util.find_spec("tensorflow") is None, "the backend tier must run without TensorFlow"


def test_the_model_half_imports_without_tensorflow_and_the_rest_says_what_is_missing():
    """One interpreter (each start costs seconds): the TensorFlow-free modules load and load no
    TensorFlow; each module that needs it raises the one-line error naming its feature."""
    code = "\n".join([f"import {name}" for name in TENSORFLOW_FREE] + [
        "import sys",
        "from axial_tf.models.inference import predict_dense",
        "loaded = sorted(name for name in sys.modules if name.split('.')[0] == 'tensorflow')",
        "assert not loaded, loaded",
        "try:",
        "    from axial_tf.postprocessing import panoptic_postprocess",
        "except ModuleNotFoundError as error:",
        "    print('axial_tf.postprocessing.panoptic_postprocess', '|', error)",
        f"for module in {sorted(NEEDS_TENSORFLOW)!r}:",
        "    try:",
        "        __import__(module)",
        "    except ModuleNotFoundError as error:",
        "        print(module, '|', error)",
    ])
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = dict(line.split(" | ", 1) for line in result.stdout.strip().splitlines())
    expected = {**NEEDS_TENSORFLOW, "axial_tf.postprocessing.panoptic_postprocess":
                "axial_tf.postprocessing.panoptic_postprocess (the TensorFlow post-processing)"}
    assert errors == {module: f"{feature} {INSTALL_LINE}" for module, feature in expected.items()}


def test_a_tool_exits_with_the_line_and_no_traceback():
    result = _python("-m", "axial_tf.tools.train")
    assert result.returncode == 1
    assert result.stderr.strip() == f"The axial_tf tools {INSTALL_LINE}"


def test_the_preset_catalogue_lists_without_tensorflow():
    result = _python("-m", "axial_tf.presets", "list")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "axial_swidernet_1_1_1_os16_cityscapes" in result.stdout


def test_predict_dense_runs_with_scales_and_flip():
    """`predict_dense` (the inference shared with evaluation and export) on this backend."""
    from axial_tf.models.inference import predict_dense

    inputs = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    model = keras.Model(inputs, {
        "semantic_logits": keras.layers.Conv2D(3, 1)(features),  # [B, H, W, 3]
        "center_heatmap": keras.layers.Conv2D(1, 1)(features)[..., 0],  # [B, H, W]
        "offset_map": keras.layers.Conv2D(2, 1)(features),  # [B, H, W, 2]
    })
    images = np.random.default_rng(0).uniform(0, 255, (2, 9, 9, 3)).astype("float32")
    single = predict_dense(model, images)
    averaged = predict_dense(model, images, scales=(0.75, 1.0), flip=True)
    for maps in (single, averaged):
        assert {name: tuple(value.shape) for name, value in maps.items()} == {
            "semantic_probs": (2, 9, 9, 3), "center_heatmap": (2, 9, 9), "offset_map": (2, 9, 9, 2)}
    np.testing.assert_allclose(keras.ops.convert_to_numpy(single["semantic_probs"]).sum(-1), 1.0, rtol=1e-5)
