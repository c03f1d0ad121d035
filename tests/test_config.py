"""Tests of the typed experiment config: YAML/gin loading, overrides, errors, saving."""

import dataclasses
import textwrap

import pytest
from conftest import REPO_ROOT

from axial_tf.experiment import config as config_lib
from axial_tf.experiment.config import ConfigError

# One experiment, written three ways: YAML with a base file, and gin (with an include).
BASE_YAML = """
model:
  backbone: axial_resnet_s
  backbone_overrides:
    drop_path_keep_prob: 0.8
training:
  steps: 200
  seed: 3
optimizer:
  learning_rate: 1e-3
"""

EXPERIMENT_YAML = """
base: base.yaml
model:
  num_classes: 7
  output_stride: 32
  backbone_overrides: {stem_width_multiplier: 0.5}
  instance_decoder:
    head_channels: 16
data:
  dataset: panoptic_shapes
  crop_size: [65, 97]
  augmentation:
    photometric: false
optimizer:
  schedule: step
  step_boundaries: [100, 150]
  clip_gradient_norm: 10
evaluation:
  postprocessing:
    stuff_area_limit: 64
"""

BASE_GIN = """
model.backbone = "axial_resnet_s"
model.backbone_overrides = {"drop_path_keep_prob": 0.8}
training.steps = 200
training.seed = 3
optimizer.learning_rate = 1e-3
"""

EXPERIMENT_GIN = """
# The same experiment as EXPERIMENT_YAML.
include 'base.gin'

NUM_CLASSES = 7

model:
    num_classes = %NUM_CLASSES
    output_stride = 32
model.backbone_overrides = {"stem_width_multiplier": 0.5}
model.instance_decoder.head_channels = 16
data.dataset = "panoptic_shapes"
data.crop_size = (65, 97)
data.augmentation.photometric = False
optimizer.schedule = "step"
optimizer.step_boundaries = [100, 150]
optimizer.clip_gradient_norm = 10
evaluation.postprocessing.stuff_area_limit = 64
"""


def _write(folder, name, text):
    """Writes a dedented config file and returns its path as a string."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def experiment_yaml(tmp_path):
    _write(tmp_path, "base.yaml", BASE_YAML)
    return _write(tmp_path, "experiment.yaml", EXPERIMENT_YAML)


@pytest.fixture
def experiment_gin(tmp_path):
    _write(tmp_path, "base.gin", BASE_GIN)
    return _write(tmp_path, "experiment.gin", EXPERIMENT_GIN)


def _load_error(path, overrides=()):
    """Loads `path` expecting a ConfigError and returns it."""
    with pytest.raises(ConfigError) as info:
        config_lib.load_config(path, overrides)
    return info.value


def test_yaml_load_applies_values_base_and_defaults(experiment_yaml):
    config = config_lib.load_config(experiment_yaml)
    assert config.model.backbone == "axial_resnet_s"  # from the base file
    assert config.model.backbone_overrides == {"drop_path_keep_prob": 0.8, "stem_width_multiplier": 0.5}
    assert config.model.num_classes == 7
    assert config.model.output_stride == 32
    assert config.data.crop_size == [65, 97]
    assert config.data.augmentation.photometric is False
    assert config.data.augmentation.horizontal_flip is True  # default kept
    assert config.optimizer.learning_rate == 1e-3  # "1e-3" is a float, not a string
    assert config.optimizer.clip_gradient_norm == 10.0
    assert isinstance(config.optimizer.clip_gradient_norm, float)
    assert config.training.steps == 200
    # A partially given section keeps its own defaults, not the class defaults.
    assert config.model.instance_decoder.head_channels == 16
    assert config.model.instance_decoder.decoder_channels == 128
    assert config.model.instance_decoder.low_level_channels == [32, 16]
    assert config.model.semantic_decoder.low_level_channels == [64, 32]
    assert config.evaluation.postprocessing.stuff_area_limit == 64
    assert config.evaluation.postprocessing.nms_kernel == 13
    assert config.evaluation.metrics == ["pq", "miou"]


def test_defaults_mirror_deeplab2_axial_deeplab():
    config = config_lib.ExperimentConfig()
    semantic, instance = config.model.semantic_decoder, config.model.instance_decoder
    assert semantic.aspp_use_only_1x1_proj is True
    assert (semantic.decoder_channels, semantic.low_level_channels, semantic.head_channels) == (256, [64, 32], 256)
    assert (instance.decoder_channels, instance.low_level_channels, instance.head_channels) == (128, [32, 16], 32)
    losses = config.losses
    assert losses.semantic_top_k_percent == 0.2
    assert (losses.semantic_weight, losses.center_weight, losses.offset_weight) == (1.0, 200.0, 0.01)
    assert (losses.small_instance_area, losses.small_instance_weight) == (4096, 3.0)
    postprocessing = config.evaluation.postprocessing
    assert (postprocessing.center_threshold, postprocessing.nms_kernel) == (0.1, 13)
    assert postprocessing.keep_k_centers == 200
    # Mutable defaults are not shared between configs.
    other = config_lib.ExperimentConfig()
    other.data.crop_size[0] = 1
    other.model.backbone_overrides["x"] = 1
    assert config.data.crop_size == [1025, 2049]
    assert config.model.backbone_overrides == {}


def test_gin_file_gives_the_same_config_as_yaml(experiment_yaml, experiment_gin):
    from_yaml = config_lib.load_config(experiment_yaml)
    from_gin = config_lib.load_config(experiment_gin)
    assert from_gin == from_yaml
    assert from_gin != config_lib.ExperimentConfig()


def test_shipped_gin_demo_is_the_yaml_demo():
    demo = REPO_ROOT / "configs" / "demo" / "panoptic_shapes"
    from_gin = config_lib.load_config(str(demo.with_suffix(".gin")))
    assert from_gin == config_lib.load_config(str(demo.with_suffix(".yaml")))
    assert from_gin.model.backbone_overrides["attention"] == {"num_heads": 4}


def test_gin_and_yaml_give_the_same_config_after_the_same_overrides(experiment_yaml, experiment_gin):
    overrides = ["training.steps=300", "model.backbone_overrides.drop_path_keep_prob=0.9"]
    assert config_lib.load_config(experiment_gin, overrides) == config_lib.load_config(experiment_yaml, overrides)


def test_overrides_nested_lists_bools_null_and_order(experiment_yaml):
    config = config_lib.load_config(experiment_yaml, [
        "training.steps=1000",
        "data.crop_size=[33, 49]",
        "data.augmentation.horizontal_flip=false",
        "training.jit_compile=true",
        "model.semantic_decoder.atrous_rates=[3, 6, 9]",
        "model.backbone_overrides.drop_path_schedule=linear",
        "optimizer.learning_rate=5e-4",
        "optimizer.clip_gradient_norm=null",
        "evaluation.eval_scales=[0.5, 1, 1.5]",
        "training.seed=5",
        "training.seed=6",  # the later override wins
    ])
    assert config.training.steps == 1000
    assert config.data.crop_size == [33, 49]
    assert config.data.augmentation.horizontal_flip is False
    assert config.training.jit_compile is True
    assert config.model.semantic_decoder.atrous_rates == [3, 6, 9]
    # Overriding one entry of a free-form mapping keeps its other entries.
    assert config.model.backbone_overrides == {
        "drop_path_keep_prob": 0.8, "stem_width_multiplier": 0.5, "drop_path_schedule": "linear"}
    assert config.optimizer.learning_rate == 5e-4
    assert config.optimizer.clip_gradient_norm is None
    assert config.evaluation.eval_scales == [0.5, 1.0, 1.5]
    assert config.training.seed == 6


def test_override_of_task_picks_that_tasks_default_metrics(experiment_yaml):
    config = config_lib.load_config(experiment_yaml, ["model.task=classification", "data.crop_size=[64, 64]"])
    assert config.evaluation.metrics == ["top1", "top5"]


def test_apply_overrides_to_a_config_object():
    config = config_lib.apply_overrides(config_lib.ExperimentConfig(), ["training.batch_size=8"])
    assert config.training.batch_size == 8
    assert config.model == config_lib.ExperimentConfig().model


@pytest.mark.parametrize("override, expected", [
    ("training.steps", "expected KEY.PATH=VALUE"),
    ("=3", "expected KEY.PATH=VALUE"),
    ("training..steps=3", "empty part in key path"),
    ("data.crop_size=[1, 2", "cannot parse value"),
    ("training.steps.value=3", "'training.steps' is 200, not a mapping"),
])
def test_malformed_override_names_the_override(experiment_yaml, override, expected):
    error = _load_error(experiment_yaml, [override])
    assert f"--override {override!r}" in str(error)
    assert expected in str(error)


def test_unknown_key_names_file_line_key_path_and_suggestion(tmp_path):
    path = _write(tmp_path, "typo.yaml", """
        model:
          backbone: axial_resnet_s
          backbone_overide:
            drop_path_keep_prob: 0.8
        """)
    error = _load_error(path)
    assert f"{path}:4: model.backbone_overide: unknown key 'backbone_overide' in model" in str(error)
    assert "did you mean 'backbone_overrides'?" in str(error)
    assert [issue.key_path for issue in error.issues] == ["model.backbone_overide"]


@pytest.mark.parametrize("yaml_text, key_path, suggestion", [
    ("trainng:\n  steps: 3\n", "trainng", "did you mean 'training'?"),
    ("model:\n  seed: 3\n", "model.seed", "did you mean 'training.seed'?"),
    ("evaluation:\n  postprocessing:\n    nms_kernal: 7\n", "evaluation.postprocessing.nms_kernal",
     "did you mean 'nms_kernel'?"),
    ("model:\n  batch_size: 3\n", "model.batch_size",
     "did you mean 'training.batch_size' or 'evaluation.batch_size'?"),
    ("data:\n  zzz: 1\n", "data.zzz", "valid keys: dataset, data_dir"),
])
def test_unknown_key_suggestions(tmp_path, yaml_text, key_path, suggestion):
    path = _write(tmp_path, "experiment.yaml", yaml_text)
    message = str(_load_error(path))
    assert f": {key_path}: unknown key" in message
    assert suggestion in message


def test_override_with_unknown_key_names_the_override(experiment_yaml):
    error = _load_error(experiment_yaml, ["data.crop_sise=[65, 65]"])
    assert ("--override 'data.crop_sise=[65, 65]': data.crop_sise: unknown key 'crop_sise' in data; "
            "did you mean 'crop_size'?") in str(error)


@pytest.mark.parametrize("override, key_path, expected", [
    ("training.steps=abc", "training.steps", "expected an integer, got the string 'abc'"),
    ("training.steps=2.5", "training.steps", "expected an integer, got the number 2.5"),
    ("training.steps=true", "training.steps", "expected an integer, got the boolean true"),
    ("training.remat=1", "training.remat", "expected true or false, got the integer 1"),
    ("model.backbone=3", "model.backbone", "expected a string, got the integer 3"),
    ("data.crop_size=[65, 65, 3]", "data.crop_size", "expected a list of exactly 2 items, got 3"),
    ("data.crop_size=65", "data.crop_size", "expected a list of integers, got the integer 65"),
    ("data.crop_size=[65, x]", "data.crop_size[1]", "expected an integer, got the string 'x'"),
    ("model.num_classes=null", "model.num_classes", "expected an integer, got null"),
    ("model.semantic_decoder=3", "model.semantic_decoder", "expected a mapping of DecoderConfig options"),
    ("model.backbone_overrides=[1]", "model.backbone_overrides", "expected a mapping, got the list [1]"),
])
@pytest.mark.sweep
def test_wrong_types_name_the_key_path(experiment_yaml, override, key_path, expected):
    error = _load_error(experiment_yaml, [override])
    assert f"--override {override!r}: {key_path}: {expected}" in str(error)


@pytest.mark.parametrize("override, key_path, expected", [
    ("model.task=panoptik", "model.task",
     "invalid value 'panoptik'; allowed values: 'panoptic', 'classification', 'semantic'; did you mean 'panoptic'?"),
    ("training.mixed_precision=float16", "training.mixed_precision",
     "allowed values: 'float32', 'mixed_float16', 'mixed_bfloat16'"),
    ("optimizer.name=rmsprop", "optimizer.name", "allowed values: 'adam', 'sgd', 'adamw'"),
    ("evaluation.postprocessing.merge_style=cuda", "evaluation.postprocessing.merge_style",
     "allowed values: 'merge_op', 'tf_merge'"),
    ("optimizer.schedule=linear", "optimizer.schedule", "allowed values: 'poly', 'cosine', 'step', 'constant'"),
    ("training.strategy=mirror", "training.strategy", "did you mean 'mirrored'?"),
    ("model.output_stride=12", "model.output_stride", "invalid value 12; allowed values: 8, 16, 32"),
    ("evaluation.metrics=[pq, iou]", "evaluation.metrics[1]", "invalid value 'iou'"),
])
@pytest.mark.sweep
def test_bad_enum_values_list_the_allowed_ones(experiment_yaml, override, key_path, expected):
    error = _load_error(experiment_yaml, [override])
    assert f"{key_path}: " in str(error)
    assert expected in str(error)


@pytest.mark.parametrize("override, key_path, expected", [
    ("optimizer.learning_rate=0", "optimizer.learning_rate", "must be > 0.0, got 0.0"),
    ("losses.semantic_top_k_percent=1.5", "losses.semantic_top_k_percent", "must be <= 1.0, got 1.5"),
    ("model.classifier_dropout=1", "model.classifier_dropout", "must be < 1.0, got 1.0"),
    ("data.crop_size=[65, 0]", "data.crop_size[1]", "must be >= 1, got 0"),
    ("training.batch_size=-2", "training.batch_size", "must be >= 1, got -2"),
    ("evaluation.eval_scales=[]", "evaluation.eval_scales", "expected a list of at least 1 item(s), got []"),
])
def test_out_of_range_numbers(experiment_yaml, override, key_path, expected):
    error = _load_error(experiment_yaml, [override])
    assert f"{key_path}: {expected}" in str(error)


@pytest.mark.parametrize("overrides, key_path, expected", [
    (["optimizer.step_boundaries=[]"], "optimizer.step_boundaries", "needs at least one boundary"),
    (["optimizer.step_boundaries=[150, 100]"], "optimizer.step_boundaries", "strictly increasing"),
    (["optimizer.step_boundaries=[100, 250]"], "optimizer.step_boundaries", "below training.steps (200)"),
    (["optimizer.warmup_steps=200"], "optimizer.warmup_steps", "below training.steps (200)"),
    (["model.task=classification", "data.crop_size=[64, 64]", "evaluation.metrics=[pq]"], "evaluation.metrics[0]",
     "'pq' is not a classification metric; allowed: top1, top5"),
    (["evaluation.postprocessing.nms_kernel=12"], "evaluation.postprocessing.nms_kernel", "must be odd"),
    (["model.semantic_decoder.low_level_channels=[64]"], "model.semantic_decoder.low_level_channels",
     "has 1 entries but low_level_feature_keys has 2"),
    (["model.task=classification", "data.crop_size=[224, 192]"], "data.crop_size", "square crops"),
    (["data.augmentation.min_scale=3"], "data.augmentation.min_scale", "larger than max_scale"),
    (["model.backbone_overrides.output_stride=8"], "model.backbone_overrides.output_stride",
     "set model.output_stride instead"),
])
@pytest.mark.sweep
def test_rules_across_keys(experiment_yaml, overrides, key_path, expected):
    error = _load_error(experiment_yaml, overrides)
    assert f"{key_path}: " in str(error)
    assert expected in str(error)


def test_all_problems_are_reported_together_each_with_its_file(tmp_path):
    _write(tmp_path, "base.yaml", """
        training:
          steps: 10
          checkpoint_intervall: 5
        """)
    path = _write(tmp_path, "child.yaml", """
        include: base.yaml
        model:
          task: segmentation
        """)
    error = _load_error(path)
    message = str(error)
    assert message.startswith("Invalid experiment config (2 problems):")
    assert f"{path}:4: model.task: invalid value 'segmentation'" in message
    assert f"{tmp_path / 'base.yaml'}:4: training.checkpoint_intervall: unknown key" in message
    assert {issue.source for issue in error.issues} == {f"{path}:4", f"{tmp_path / 'base.yaml'}:4"}
    # The message is complete by itself: no chained exception to read.
    assert error.__cause__ is None


def test_include_inherits_and_child_wins(tmp_path):
    _write(tmp_path, "common.yaml", """
        training: {steps: 500, batch_size: 16}
        data: {dataset: panoptic_shapes, crop_size: [129, 129]}
        """)
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "base.yaml", """
        base: ../common.yaml
        training: {batch_size: 4}
        """)
    path = _write(tmp_path / "sub", "child.yaml", """
        base: [base.yaml]
        data: {crop_size: [65, 65]}
        """)
    config = config_lib.load_config(path)
    assert config.training.steps == 500
    assert config.training.batch_size == 4
    assert config.data.dataset == "panoptic_shapes"
    assert config.data.crop_size == [65, 65]


@pytest.mark.parametrize("files, load, expected", [
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "a.yaml", "include cycle"),
    ({"a.yaml": "base: missing.yaml\n"}, "a.yaml", "missing.yaml: config file not found"),
    ({"a.yaml": "base: b.yaml\ninclude: c.yaml\n"}, "a.yaml", "use either 'base' or 'include'"),
    ({"a.yaml": "base: 3\n"}, "a.yaml", "a.yaml:1: base: expected a file path"),
    ({"a.yaml": "model:\n  num_classes: 3\n   backbone: x\n"}, "a.yaml", "a.yaml: invalid YAML"),
    ({"a.yaml": "- model\n"}, "a.yaml", "the top level must be a mapping"),
    ({"a.json": "{}"}, "a.json", "unsupported config file type; use one of .yaml, .yml, .gin"),
    ({}, "absent.yaml", "absent.yaml: config file not found"),
])
@pytest.mark.sweep
def test_file_level_errors(tmp_path, files, load, expected):
    for name, text in files.items():
        _write(tmp_path, name, text)
    assert expected in str(_load_error(str(tmp_path / load)))


@pytest.mark.parametrize("gin_text, expected", [
    ('model.num_classes = "seven"\n', 'a.gin:1: model.num_classes: expected an integer'),
    ("model.num_classes = 3\ntraining.stepz = 3\n", "a.gin:2: training.stepz: unknown key 'stepz'"),
    ('train/model.backbone = "x"\n', "a.gin:1: gin scopes (train/...) are not supported"),
    ("model.backbone = @foo\n", "a.gin:1: configurable references (@foo) are not supported"),
    ("import os\n", "a.gin:1: imports are not supported"),
    ("model.num_classes = %N\n", "a.gin:1: undefined gin macro %N"),
    ("steps = 10\n", "a.gin:1: gin macro 'steps' is never used"),
    ("model.backbone = = 3\n", "a.gin:1: invalid gin syntax"),
    ("model.atrous_rates = [1,\n", "invalid gin syntax"),
])
@pytest.mark.sweep
def test_gin_errors_name_file_and_line(tmp_path, gin_text, expected):
    path = _write(tmp_path, "a.gin", gin_text)
    assert expected in str(_load_error(path))


def test_save_and_load_round_trip(tmp_path, experiment_yaml):
    configs = [
        config_lib.ExperimentConfig(),
        config_lib.load_config(experiment_yaml, ["optimizer.learning_rate=1e-10", "data.data_dir='on'"]),
        config_lib.ExperimentConfig(
            model=config_lib.ModelConfig(
                task="classification", output_stride=32, num_classes=1000, classifier_dropout=0.2),
            data=config_lib.DataConfig(dataset="imagenet2012", crop_size=[224, 224])),
    ]
    for index, config in enumerate(configs):
        model_dir = tmp_path / f"model_{index}"
        path = config_lib.save_config(config, str(model_dir))
        assert path == str(model_dir / "config.yaml")
        assert config_lib.load_config(path) == config


def test_config_dict_round_trip_and_validation_of_code_built_configs(tmp_path):
    config = config_lib.ExperimentConfig(training=config_lib.TrainingConfig(steps=10))
    as_dict = config_lib.config_to_dict(config)
    assert as_dict["training"]["steps"] == 10
    assert as_dict["model"]["semantic_decoder"]["low_level_channels"] == [64, 32]
    assert config_lib.config_from_dict(as_dict) == config

    bad = dataclasses.replace(config, data=config_lib.DataConfig(crop_size=[65]))
    with pytest.raises(ConfigError, match=r"<ExperimentConfig>: data.crop_size: expected a list of exactly 2"):
        config_lib.save_config(bad, str(tmp_path / "model_dir"))
    assert not (tmp_path / "model_dir").exists()
