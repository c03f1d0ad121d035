"""The preset catalogue: every entry names a shipped config and a registered backbone, lookups help."""

import pytest

from axial_tf.checkpoints.pytorch_converter import REFERENCE_MODELS
from axial_tf.experiment.config import load_config, shipped_config
from axial_tf.models.backbone_registry import BACKBONES
from axial_tf.presets import PRESETS, lookup
from axial_tf.presets.__main__ import main
from axial_tf.presets.catalogue import (
    BACKBONE,
    CLASSIFICATION,
    DEEPLAB2_TAR_GZ,
    PANOPTIC,
    PYTORCH_PTH,
)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda preset: preset.name)
def test_entry_builds_from_a_shipped_config_and_a_registered_backbone(preset):
    assert preset.task in (PANOPTIC, CLASSIFICATION, BACKBONE)
    assert preset.url.startswith(("https://", "http://")) and preset.source and preset.license
    assert preset.citations, preset.name
    if preset.archive == DEEPLAB2_TAR_GZ:
        assert preset.archive_filename.endswith(".tar.gz")
        assert preset.backbone in BACKBONES, preset.backbone
    else:
        assert preset.archive == PYTORCH_PTH and preset.archive_filename.endswith(".pth")
        assert preset.pytorch_arch in REFERENCE_MODELS
    if preset.config is not None:
        model = load_config(shipped_config(preset.config)).model
        assert model.backbone == preset.backbone
        assert preset.task != PANOPTIC or model.task == "panoptic"
    else:
        assert preset.task != PANOPTIC, "a whole-model preset needs the config that builds it"
    for metric in preset.metrics:
        float(metric.value)
        assert preset.source in metric.table


def test_names_and_urls_are_unique():
    assert len({preset.name for preset in PRESETS}) == len(PRESETS)
    assert len({preset.url for preset in PRESETS}) == len(PRESETS)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="Did you mean .*axial_swidernet_1_1_1_os16_cityscapes") as raised:
        lookup("axial_swidernet_1_1_1_cityscapes")
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="Unknown preset 'zzz'") as raised:
        lookup("zzz")
    assert "Did you mean" not in str(raised.value)


def test_list_prints_every_entry_with_its_source_and_metrics(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    for preset in PRESETS:
        line = next(line for line in printed.splitlines() if line.startswith(preset.name + " "))
        assert preset.url in line and preset.task in line
        assert all(f"{metric.name} {metric.value}" in line for metric in preset.metrics)
    assert "SWideRNet-SAC" in printed  # the published checkpoints the builder cannot express
