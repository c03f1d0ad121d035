"""AxialResNetClassifier: shapes, training, saving, input normalisation and the ImageNet configs."""

import numpy as np
import pytest

import keras
from conftest import REPO_ROOT
from axial_tf.models import get_backbone
from axial_tf.models.classifier import AxialResNetClassifier, InputNormalization
from axial_tf.experiment.tasks import build_model
from axial_tf.experiment.config import load_config

NUM_CLASSES = 7
# A tiny Axial-ResNet-S: stage widths 4..32, blocks [1, 1, 2, 1], 2 heads.
TINY = dict(width_multiplier=0.0625, stem_width_multiplier=0.125, backbone_layer_multiplier=0.34,
            output_stride=32, attention={"num_heads": 2})
IMAGENET_CONFIGS = sorted((REPO_ROOT / "configs" / "imagenet").glob("axial_resnet_*.yaml"))


def _tiny_classifier(**kwargs):
    return AxialResNetClassifier("axial_resnet_s", NUM_CLASSES, backbone_overrides=TINY, **kwargs)


def _images(batch, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(batch, size, size, 3)).astype("float32")


def test_logits_shape_at_several_sizes():
    model = _tiny_classifier(dropout=0.2)
    assert model(_images(2, 32)).shape == (2, NUM_CLASSES)
    assert model(_images(1, 45)).shape == (1, NUM_CLASSES)
    assert model.get_layer("logits").kernel.shape == (model.backbone.output["res5"].shape[-1], NUM_CLASSES)


def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _tiny_classifier()
    assert keras.backend.standardize_dtype(model(_images(1, 32)).dtype) == "float32"


@pytest.mark.full
def test_trains_a_few_steps_and_reports_top1_top5():
    keras.utils.set_random_seed(0)
    model = _tiny_classifier()
    # Eager: tracing the train step costs more on CPU than these six steps.
    model.compile(optimizer=keras.optimizers.Adam(3e-3), run_eagerly=True)
    images, labels = _images(16, 32), np.arange(16) % NUM_CLASSES
    history = model.fit(images, labels, batch_size=8, epochs=3, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert {"top1", "top5"} <= set(history.history)
    results = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert 0.0 <= results["top1"] <= results["top5"] <= 1.0


@pytest.mark.full
def test_compile_defaults_to_cross_entropy_and_top1_top5():
    model = _tiny_classifier()
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.optimizer.nesterov
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert model.loss.get_config()["from_logits"]
    results = model.evaluate(_images(2, 32), np.array([0, 1]), verbose=0, return_dict=True)
    assert {"top1", "top5"} <= set(results)


@pytest.mark.full
def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = _tiny_classifier(dropout=0.1, input_normalization="imagenet")
    images = _images(2, 33)
    expected = np.asarray(model(images))
    path = tmp_path / "classifier.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, AxialResNetClassifier)
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(np.asarray(restored(images)), expected, atol=1e-6)


def test_accepts_a_backbone_instance_and_other_endpoints():
    backbone = get_backbone("axial_resnet_s", **TINY)
    model = AxialResNetClassifier(backbone, 3, feature_key="res4", input_normalization=None)
    assert model.backbone is backbone
    assert model.get_layer("logits").kernel.shape[0] == backbone.output["res4"].shape[-1]
    assert model(_images(1, 32)).shape == (1, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(feature_key="res9"), "feature_key 'res9' is not a backbone endpoint"),
        (dict(input_normalization="caffe"), "input_normalization must be one of"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
@pytest.mark.sweep
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny_classifier(**kwargs)


def test_overrides_need_a_registry_name():
    with pytest.raises(ValueError, match="backbone_overrides apply only"):
        AxialResNetClassifier(get_backbone("axial_resnet_s", **TINY), 3, backbone_overrides={"remat": True})


def test_input_normalization_modes():
    images = np.array([[[[0.0, 127.5, 255.0]]]], "float32")  # [1, 1, 1, 3]
    np.testing.assert_allclose(np.asarray(InputNormalization("symmetric")(images)), [[[[-1.0, 0.0, 1.0]]]])
    imagenet = np.asarray(InputNormalization("imagenet")(images))
    expected = (np.array([0.0, 0.5, 1.0]) - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(imagenet[0, 0, 0], expected, rtol=1e-6)


def test_imagenet_configs_exist_for_s_m_l():
    assert [path.name for path in IMAGENET_CONFIGS] == [
        "axial_resnet_l.yaml", "axial_resnet_m.yaml", "axial_resnet_s.yaml"]


@pytest.mark.parametrize("path", IMAGENET_CONFIGS, ids=lambda path: path.stem)
@pytest.mark.full
def test_imagenet_config_loads_and_builds(path):
    config = load_config(path)
    assert config.model.task == "classification"
    assert config.model.backbone == path.stem
    assert config.model.num_classes == 1000 and config.model.output_stride == 32
    assert config.data.dataset == "imagenet2012" and config.data.crop_size == [224, 224]
    assert config.evaluation.metrics == ["top1", "top5"]
    # The same config with a tiny width builds the classifier the trainer would build.
    tiny = load_config(path, overrides=[
        "model.backbone_overrides.width_multiplier=0.0625",
        "model.backbone_overrides.stem_width_multiplier=0.125",
        "model.backbone_overrides.backbone_layer_multiplier=0.34",
        "model.backbone_overrides.attention={num_heads: 2}",
    ])
    model = build_model(tiny, sync_batch_norm=False)
    assert isinstance(model, AxialResNetClassifier)
    assert model.backbone.backbone_config["stem_max_pool"] is True  # the paper's ImageNet stem
    assert model(_images(1, 32)).shape == (1, 1000)
