"""Shipped configs: every YAML has a gin twin resolving to the same config, and names a registered backbone."""

import re

import pytest
import yaml

from conftest import REPO_ROOT
from axial_tf.experiment.config import load_config
from axial_tf.models import backbone_config, list_backbones

CONFIGS = REPO_ROOT / "configs"
YAML_FILES = sorted(CONFIGS.rglob("*.yaml"))
# Backbone scale belongs in the name (e.g. axial_swidernet_1_1_3); only the demo shrinks its backbone.
MULTIPLIERS = ("width_multiplier", "stem_width_multiplier", "backbone_layer_multiplier")


def _id(path):
    return str(path.relative_to(CONFIGS))


def test_every_config_folder_is_found():
    assert {path.parent.name for path in YAML_FILES} >= {"cityscapes", "coco", "demo", "imagenet"}


@pytest.mark.parametrize("path", YAML_FILES, ids=_id)
@pytest.mark.sweep
def test_gin_twin_resolves_to_the_yaml_config(path):
    twin = path.with_suffix(".gin")
    assert twin.is_file(), f"{_id(path)} has no gin twin {_id(twin)}"
    assert load_config(twin) == load_config(path)


@pytest.mark.parametrize("path", YAML_FILES, ids=_id)
@pytest.mark.sweep
def test_gin_twin_includes_the_twins_of_the_yaml_bases(path):
    """A YAML's `base:` files are, in its gin twin, the gin twins of those files (gin stays all gin)."""
    values = yaml.safe_load(path.read_text())
    bases = values.get("base", values.get("include", []))
    bases = [bases] if isinstance(bases, str) else bases
    includes = re.findall(r"^include\s+['\"]([^'\"]+)['\"]", path.with_suffix(".gin").read_text(), re.MULTILINE)
    assert includes == [re.sub(r"\.yaml$", ".gin", base) for base in bases]


def test_every_gin_config_has_a_yaml_twin():
    orphans = [_id(path) for path in CONFIGS.rglob("*.gin") if not path.with_suffix(".yaml").is_file()]
    assert not orphans


@pytest.mark.parametrize("path", YAML_FILES, ids=_id)
@pytest.mark.sweep
def test_backbone_is_a_registered_name(path):
    model = load_config(path).model
    assert model.backbone in list_backbones()
    backbone_config(model.backbone, **model.backbone_overrides)  # the overrides are AxialResNet arguments
    if path.parent.name != "demo":
        assert not set(MULTIPLIERS) & set(model.backbone_overrides), "name the scaled backbone instead"
