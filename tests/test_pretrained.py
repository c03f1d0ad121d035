"""Presets as ready models: a DeepLab2 release archive in, `from_preset` models out (no network).

The archive is built here in the release layout from the DeepLab2 fixture checkpoint (a small
Axial-DeepLab-S with DeepLab2's outputs on an image) and placed where a user would put a
hand-downloaded copy, so the whole path runs offline: verify, extract, convert, cache, load.
"""

import dataclasses
import io
import json
import os
import tarfile

import numpy as np
import pytest

from conftest import fixture_cases, fixture_files

import axial_tf  # noqa: F401  (registers the preset loader of from_preset)
from axial_tf.checkpoints.deeplab2_converter import read_deeplab2_experiment
from axial_tf.experiment import pretrained
from axial_tf.experiment.checkpoints import initialize_from
from axial_tf.experiment.config import config_from_dict, load_config, save_config
from axial_tf.experiment.tasks import build_model
from axial_tf.models import AxialDeepLab, AxialResNet, AxialResNetClassifier
from axial_tf.presets import archive_path, catalogue, converted_path, lookup

CASE = next(path.parent for path in fixture_cases("deeplab2/panoptic", "*/config.textproto"))
TOLERANCE = 1e-4  # the converter's parity tolerance (test_deeplab2_panoptic_parity.py)


@pytest.fixture(scope="module")
def release_archive(tmp_path_factory):
    """The fixture checkpoint as DeepLab2 releases checkpoints: a .tar.gz of one folder with ckpt-N files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted((CASE / "checkpoint").glob("ckpt-*")):
            archive.add(path, arcname=f"fixture_axial_deeplab_s/{path.name}")
    folder = tmp_path_factory.mktemp("release")
    config_path = save_config(config_from_dict(read_deeplab2_experiment(CASE / "config.textproto")), folder)
    return buffer.getvalue(), config_path


@pytest.fixture
def fixture_presets(tmp_path, monkeypatch, release_archive):
    """Two catalogue entries on the fixture archive (the whole model and its encoder), placed by hand."""
    monkeypatch.setenv("AXIAL_TF_HOME", str(tmp_path / "home"))
    data, config_path = release_archive
    template = lookup("axial_swidernet_1_1_1_os16_cityscapes")
    entries = {
        "fixture_panoptic": dataclasses.replace(template, name="fixture_panoptic", config=config_path,
                                                url="https://unreachable.invalid/fixture.tar.gz"),
        "fixture_backbone": dataclasses.replace(template, name="fixture_backbone", config=config_path,
                                                task=catalogue.BACKBONE, url="https://unreachable.invalid/b.tar.gz"),
    }
    for name, entry in entries.items():
        monkeypatch.setitem(catalogue._BY_NAME, name, entry)
        destination = archive_path(entry)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with open(destination, "wb") as stream:
            stream.write(data)
    return entries


def test_from_preset_reproduces_deeplab2_and_converts_once(fixture_presets, monkeypatch):
    model = AxialDeepLab.from_preset("fixture_panoptic")
    io_arrays = np.load(CASE / "io.npz")
    outputs = model(io_arrays["image"][None].astype("float32"), training=False)
    np.testing.assert_allclose(np.asarray(outputs["semantic_logits"]), io_arrays["semantic_logits"], atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(outputs["center_heatmap"]), io_arrays["center_heatmap"], atol=TOLERANCE)
    assert converted_path("fixture_panoptic") is not None

    def no_second_conversion(*args):
        raise AssertionError("the cached conversion was not used")

    monkeypatch.setattr(pretrained, "_convert", no_second_conversion)
    again = AxialDeepLab.from_preset("fixture_panoptic")
    for a, b in zip(again.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_backbone_presets_give_the_encoder_and_other_classes_are_refused(fixture_presets):
    encoder = AxialResNet.from_preset("fixture_backbone")
    whole = AxialDeepLab.from_preset("fixture_panoptic")
    assert isinstance(encoder, AxialResNet)
    for a, b in zip(encoder.weights, whole.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="holds an AxialDeepLab, not an AxialResNetClassifier"):
        AxialResNetClassifier.from_preset("fixture_panoptic")
    with pytest.raises(ValueError, match="Unknown preset|did you mean|Did you mean"):
        AxialDeepLab.from_preset("axial_swidernet_1_1_1_os16_cityscape")


def test_init_checkpoint_preset_restores_the_checkpoint(fixture_presets):
    source = pretrained.init_checkpoint_source("preset:fixture_panoptic")
    assert source.endswith("ckpt-1000")
    assert pretrained.init_checkpoint_source("runs/x") == "runs/x"
    model = build_model(load_config(fixture_presets["fixture_panoptic"].config), sync_batch_norm=False)
    report = initialize_from(model, source)
    assert report["restored"] > 0 and report["missing"] == []
    reference = AxialDeepLab.from_preset("fixture_panoptic")
    for a, b in zip(model.trainable_weights, reference.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_preset_experiment_gives_the_tools_a_config_and_a_model_file(fixture_presets):
    config, keras_path = pretrained.preset_experiment("fixture_panoptic")
    assert config == load_config(fixture_presets["fixture_panoptic"].config)
    assert keras_path == converted_path("fixture_panoptic") and keras_path.endswith("converted.keras")


@pytest.mark.full
def test_tools_take_a_preset_name(tmp_path, release_archive):
    """predict, export and evaluate with --preset, from a cache that holds the preset's converted model."""
    import PIL.Image

    from training_helpers import assert_one_line_error, run_tool

    from axial_tf.presets import store_converted

    # The fixture's architecture on a dataset the tools know (panoptic_shapes' 7 classes).
    fixture_config = load_config(release_archive[1], ["data.dataset=panoptic_shapes", "model.num_classes=7",
                                                      "data.builder_options={config: tiny}"])
    config_path = save_config(fixture_config, tmp_path / "config")
    home = tmp_path / "home"
    name = "axial_swidernet_1_1_1_os16_cityscapes"  # a real entry; its cached model is the fixture's here
    os.environ["AXIAL_TF_HOME"] = str(home)
    try:
        model = build_model(load_config(config_path), sync_batch_norm=False)
        store_converted(name, model.save)
    finally:
        del os.environ["AXIAL_TF_HOME"]
    env = {"AXIAL_TF_HOME": str(home)}
    (tmp_path / "photos").mkdir()
    PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 52, 3), np.uint8)).save(
        tmp_path / "photos" / "street.png")
    result = run_tool("predict", "--preset", name, "--config", config_path, "--input", tmp_path / "photos",
                      "--output", tmp_path / "predictions", "--overlay", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {path.name for path in (tmp_path / "predictions").iterdir()} == {
        "street_panoptic.png", "street_semantic.png", "street_overlay.png"}
    result = run_tool("export", "--preset", name, "--config", config_path, "--output", tmp_path / "export", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "export" / "saved_model.pb").exists() or list((tmp_path / "export").glob("*/saved_model.pb"))
    # evaluate: the preset's model on the config's evaluation data (the tiny generated dataset here).
    result = run_tool("evaluate", "--preset", name, "--config", config_path, "--output_dir", tmp_path / "eval",
                      "--steps", "1", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"pq", "sq", "rq", "miou"} <= set(metrics), sorted(metrics)
    result = run_tool("predict", "--preset", "axial_swidernet_1_1_1_os16_cityscape", "--input", tmp_path / "photos",
                      "--output", tmp_path / "more", env=env)
    assert_one_line_error(result, "axial_swidernet_1_1_1_os16_cityscapes")


def test_configs_name_presets_for_fine_tuning():
    from axial_tf.experiment.config import ConfigError

    config = load_config(_shipped("demo/panoptic_shapes.yaml"),
                         ["training.init_checkpoint=preset:max_deeplab_s_backbone_imagenet1k"])
    assert config.training.init_checkpoint == "preset:max_deeplab_s_backbone_imagenet1k"
    with pytest.raises(ConfigError, match="training.init_checkpoint: .*max_deeplab_s_backbone_imagenet1k"):
        load_config(_shipped("demo/panoptic_shapes.yaml"), ["training.init_checkpoint=preset:max_deeplab_s_backbone"])


def _shipped(relative):
    from axial_tf.experiment.config import shipped_config

    return shipped_config(relative)


# DeepLab2 instance (name, backbone_layer_multiplier) whose trainable parameter count a golden
# (tests/fixtures/reference/deeplab2/param_counts.json) checks, for each preset backbone.
COUNTED_INSTANCE = {
    "axial_swidernet_1_1_1": ("axial_swidernet", 1), "axial_swidernet_1_1_3": ("axial_swidernet", 3),
    "axial_swidernet_1_1_4.5": ("axial_swidernet", 4.5), "max_deeplab_s_backbone": ("max_deeplab_s_backbone", 1),
    "max_deeplab_l_backbone": ("max_deeplab_l_backbone", 1), "resnet50": ("resnet50", 1),
    "resnet50_beta": ("resnet50_beta", 1), "swidernet": ("swidernet", 1),
}


def _settings(name, **overrides):
    """A backbone's settings with the width and depth multipliers spelled out (1.0 when unset)."""
    from axial_tf.models import backbone_config

    multipliers = dict(stem_width_multiplier=1.0, width_multiplier=1.0, backbone_layer_multiplier=1.0)
    return {**multipliers, **backbone_config(name, **overrides)}


@pytest.mark.parametrize("preset", [p for p in catalogue.PRESETS if p.backbone], ids=lambda p: p.name)
def test_every_deeplab2_preset_builds_a_backbone_deeplab2_counted(preset):
    """Each preset's backbone is a DeepLab2 instance whose parameter count a golden checks, and its config names it."""
    goldens = {(g["name"], g["backbone_layer_multiplier"]): g for path in fixture_files("deeplab2/param_counts.json")
               for g in json.loads(path.read_text())["results"]}
    instance, layers = COUNTED_INSTANCE[preset.backbone]
    assert goldens[(instance, layers)]["matches_golden"]
    assert _settings(preset.backbone) == _settings(instance, backbone_layer_multiplier=float(layers))
    if preset.config is not None:
        assert load_config(_shipped(preset.config)).model.backbone == preset.backbone
