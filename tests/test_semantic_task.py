"""The semantic-segmentation task: model, loss, inference, metrics, and the tools end to end."""

import json

import keras
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from training_helpers import run_tool, run_training

from axial_tf.experiment.config import load_config
from axial_tf.experiment.tasks import SemanticTask, task_for_config
from axial_tf.export import read_export_info, resolve_saved_model
from axial_tf.losses import PanopticLoss
from axial_tf.models import AxialDeepLab, AxialSemanticDeepLab
from axial_tf.models.inference import predict_dense, predict_semantic

TINY_SEMANTIC = REPO_ROOT / "tests" / "configs" / "tiny_semantic.yaml"
TINY_BACKBONE = {"width_multiplier": 0.0625, "stem_width_multiplier": 0.125, "backbone_layer_multiplier": 0.34,
                 "attention": {"num_heads": 2}}
TINY_DECODER = {"aspp_channels": 8, "decoder_channels": 8, "low_level_channels": [8, 8], "head_channels": 8}


def _tiny_model(num_classes=5):
    return AxialSemanticDeepLab("axial_deeplab_s", num_classes=num_classes, backbone_overrides=TINY_BACKBONE,
                                semantic_decoder=TINY_DECODER)


def test_model_predicts_logits_at_the_input_size_and_round_trips_keras(tmp_path):
    model = _tiny_model()
    images = np.random.RandomState(0).uniform(0, 255, (2, 33, 47, 3)).astype("float32")
    logits = model(images, training=False)["semantic_logits"]
    assert tuple(logits.shape) == (2, 33, 47, 5) and logits.dtype == "float32"
    model.save(tmp_path / "semantic.keras")
    restored = keras.models.load_model(tmp_path / "semantic.keras", safe_mode=True)
    assert isinstance(restored, AxialSemanticDeepLab)
    np.testing.assert_allclose(restored(images, training=False)["semantic_logits"], logits, rtol=1e-5, atol=1e-5)


def test_model_rejects_unknown_decoder_features():
    with pytest.raises(ValueError, match="not backbone endpoints"):
        AxialSemanticDeepLab("axial_deeplab_s", 3, backbone_overrides=TINY_BACKBONE,
                             semantic_decoder={**TINY_DECODER, "low_level_feature_keys": ["res3", "res9"]})


def test_semantic_weights_match_the_panoptic_semantic_branch():
    """Built with the same seed, the semantic model holds the panoptic model's backbone and semantic branch."""
    keras.utils.set_random_seed(4)
    semantic = _tiny_model()
    keras.utils.set_random_seed(4)
    panoptic = AxialDeepLab("axial_deeplab_s", num_classes=5, backbone_overrides=TINY_BACKBONE,
                            semantic_decoder=TINY_DECODER, instance_decoder=TINY_DECODER)
    panoptic_paths = {variable.path for variable in panoptic.weights}
    assert {variable.path for variable in semantic.weights} <= panoptic_paths


def test_predict_semantic_is_the_arg_max_of_the_averaged_probabilities():
    model = _tiny_model(num_classes=4)
    images = np.random.RandomState(1).uniform(0, 255, (1, 29, 35, 3)).astype("float32")
    predictions = predict_semantic(model, images, scales=(0.75, 1.0), flip=True)
    dense = predict_dense(model, images, scales=(0.75, 1.0), flip=True)
    assert set(dense) == {"semantic_probs"}  # no instance maps from a semantic model
    np.testing.assert_allclose(predictions["semantic_probs"], dense["semantic_probs"])
    np.testing.assert_array_equal(predictions["semantic_pred"], np.argmax(dense["semantic_probs"], axis=-1))
    np.testing.assert_allclose(np.sum(predictions["semantic_probs"], axis=-1), 1.0, rtol=1e-5)


def test_loss_is_the_panoptic_semantic_loss(tmp_path):
    """Top-k hard-pixel cross-entropy with DeepLab2's averaging, as the panoptic task's semantic term."""
    task = task_for_config(load_config(TINY_SEMANTIC, ["losses.semantic_top_k_percent=0.3",
                                                       "losses.semantic_weight=2.0"]))
    random = np.random.RandomState(2)
    logits = random.normal(size=(2, 8, 9, 7)).astype("float32")
    batch = {
        "image": np.zeros((2, 8, 9, 3), "float32"),
        "semantic_label": random.randint(0, 7, (2, 8, 9)).astype("int32"),
        "semantic_weights": random.choice([0.0, 1.0, 3.0], (2, 8, 9)).astype("float32"),
    }
    batch["semantic_label"][0, :2] = 255  # void

    def model(images, training):
        del images, training
        return {"semantic_logits": tf.constant(logits)}

    losses = task.losses(model, batch)
    zeros = np.zeros((2, 8, 9), "float32")
    expected = PanopticLoss(semantic_weight=2.0, top_k_percent=0.3, ignore_label=255)(
        {**batch, "center_heatmap": zeros, "center_weights": zeros, "offset_map": np.zeros((2, 8, 9, 2), "float32"),
         "offset_weights": zeros},
        {"semantic_logits": logits, "center_heatmap": zeros, "offset_map": np.zeros((2, 8, 9, 2), "float32")},
    )
    np.testing.assert_allclose(losses["total_loss"], expected["semantic_loss"], rtol=1e-6)
    assert set(losses) == {"semantic_loss", "total_loss"}


def test_evaluation_compares_class_maps_with_the_panoptic_labels_classes():
    task = task_for_config(load_config(TINY_SEMANTIC))
    metrics = task.make_metrics()
    label = np.array([[[1000, 2001, 255000, 3000]]], "int32")  # classes 1, 2, void, 3
    perfect = {"semantic_pred": np.array([[[1, 2, 6, 3]]], "int32")}
    task.predict = lambda model, images: perfect
    task.eval_step(None, {"image": np.zeros((1, 1, 4, 3), "float32"), "panoptic_label": label}, metrics)
    headline, full = task.report(metrics)
    assert headline == {"miou": 1.0} and full["num_valid_classes"] == 3


def test_semantic_configs_reject_panoptic_metrics():
    from axial_tf.experiment.config import ConfigError

    with pytest.raises(ConfigError, match="'pq' is not a semantic metric; allowed: miou"):
        load_config(TINY_SEMANTIC, ["evaluation.metrics=[pq]"])
    assert load_config(TINY_SEMANTIC).evaluation.metrics == ["miou"]
    assert task_for_config(load_config(TINY_SEMANTIC)).name == SemanticTask.name == "semantic"


@pytest.mark.full
def test_train_evaluate_export_and_predict_with_the_tools(tmp_path):
    """The semantic task end to end through the command-line tools, as a user runs it."""
    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    run_training(TINY_SEMANTIC, run_dir, extra=["--mode", "train_and_eval"])
    trained = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert trained["step"] == 2 and 0.0 <= trained["miou"] <= 1.0 and "per_class" in trained["details"]

    result = run_tool("evaluate", "--config", TINY_SEMANTIC, "--model_dir", run_dir, "--output_dir",
                      tmp_path / "eval", "--save_predictions")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["miou"] == pytest.approx(trained["miou"], abs=1e-6) and evaluated["step"] == 2
    pngs = sorted((tmp_path / "eval" / "predictions").glob("*.png"))
    assert pngs and np.asarray(PIL.Image.open(pngs[0])).ndim == 2  # 8-bit class maps

    result = run_tool("export", "--model_dir", run_dir, "--output", export_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    info = read_export_info(resolve_saved_model(export_dir))
    assert info["task"] == "semantic" and info["void_label"] == 255 and len(info["class_names"]) == 7
    assert set(info["signatures"]["serving_default"]["outputs"]) == {"semantic_pred", "semantic_probs"}

    inputs = tmp_path / "images"
    inputs.mkdir()
    image = np.random.RandomState(5).randint(0, 256, (40, 52, 3), np.uint8)
    PIL.Image.fromarray(image).save(inputs / "photo.png")
    for source, output in ((["--saved_model", export_dir], "from_export"),
                           (["--config", TINY_SEMANTIC, "--model_dir", run_dir], "from_checkpoint")):
        result = run_tool("predict", *source, "--input", inputs, "--output", tmp_path / output, "--overlay")
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(path.name for path in (tmp_path / output).iterdir()) == ["photo_overlay.png",
                                                                                 "photo_semantic.png"]
    exported, live = (np.asarray(PIL.Image.open(tmp_path / name / "photo_semantic.png"))
                      for name in ("from_export", "from_checkpoint"))
    assert exported.shape == (40, 52)
    np.testing.assert_array_equal(exported, live)
