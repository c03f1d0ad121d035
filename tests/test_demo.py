"""The README's main command: tools/demo.py trains, evaluates and exports end to end."""

import json

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from training_helpers import run_tool

from axial_tf.data.shapes_renderer import CLASS_NAMES
from axial_tf.utils.visualization import class_palette, prediction_grid

DEMO_CONFIG = REPO_ROOT / "configs" / "demo" / "panoptic_shapes.yaml"
# axial_tf/tools/demo.py's PICTURE_EXAMPLES and PICTURE_SCALE (importing it would define its absl flags here).
PICTURE_EXAMPLES, PICTURE_SCALE = 4, 3


def test_demo_config_is_what_the_notes_describe():
    from axial_tf.experiment.config import load_config

    config = load_config(DEMO_CONFIG)
    assert config.data.dataset == "panoptic_shapes" and config.model.task == "panoptic"
    # Predictions at stride 2: the semantic decoder fuses the stem features.
    assert config.model.semantic_decoder.low_level_feature_keys[-1] == "res1"
    assert config.evaluation.flip and len(config.evaluation.eval_scales) > 1


@pytest.mark.full
def test_demo_runs_end_to_end(tmp_path):
    """The demo's own model and evaluation protocol, shortened to 2 steps on the tiny split."""
    model_dir = tmp_path / "demo"
    overrides = ["training.steps=2", "optimizer.warmup_steps=0", "training.checkpoint_interval=2",
                 "evaluation.steps=1", "evaluation.interval=2", "data.builder_options={config: tiny}"]
    result = run_tool("demo", "--model_dir", model_dir, overrides=overrides, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Demo finished: pq=" in result.stdout
    summary = json.loads((model_dir / "demo_summary.json").read_text())
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou"):
        assert 0.0 <= summary[key] <= 1.0
    loaded = tf.saved_model.load(summary["saved_model"])
    outputs = loaded.signatures["serving_default"](tf.zeros((1, 64, 64, 3), tf.uint8))
    assert outputs["panoptic_pred"].shape == (1, 64, 64)
    picture = model_dir / "predictions.png"
    assert f"Predictions: {picture}" in result.stdout
    with PIL.Image.open(picture) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        size = image.size  # (width, height)
    blank = np.zeros((PICTURE_EXAMPLES, 64, 64), np.int32)  # [N, H, W]
    expected = prediction_grid(np.zeros(blank.shape + (3,), np.uint8), blank, blank, 1000,
                               class_palette(len(CLASS_NAMES)), CLASS_NAMES, scale=PICTURE_SCALE)
    assert size == (expected.shape[1], expected.shape[0])


@pytest.mark.full
def test_demo_reports_config_errors_without_traceback(tmp_path):
    result = run_tool("demo", "--model_dir", tmp_path, overrides=["training.stepz=3"], timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "training.stepz" in result.stderr and "did you mean 'steps'" in result.stderr
