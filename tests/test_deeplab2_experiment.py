"""Tests of the DeepLab2 experiment converter (axial_tf.checkpoints.deeplab2_converter).

Every expected default below is read off DeepLab2's protos by hand (google-research/
deeplab2: model.proto, trainer.proto, dataset.proto, evaluator.proto) or its Python
fallbacks (trainer/trainer.py, model/decoder/panoptic_deeplab.py, model/loss/
loss_builder.py, trainer/runner_utils.py, model/deeplab.py, data/preprocessing/
preprocess_utils.py), never the converter's own table.
"""

import copy
import inspect
import re
import warnings

import numpy as np
import pytest

from conftest import REPO_ROOT
from axial_tf.checkpoints.deeplab2_converter import (
    DEEPLAB2_CHOICES,
    DEEPLAB2_DEFAULTS,
    DEEPLAB2_FIELDS,
    DeepLab2OptionWarning,
    convert_experiment,
    experiment_to_config,
)
from axial_tf.checkpoints.textproto import TextProtoError, parse_textproto
from axial_tf.data.augment import random_scale
from axial_tf.models.axial_resnet import AxialResNet
from axial_tf.models.backbone_registry import backbone_config
from axial_tf.experiment.tasks import build_model
from axial_tf.experiment.config import config_from_dict, load_config

# Every field the converter reads, set to a value other than DeepLab2's default where
# the converter can express one (so that removing it shows), else to the default.
FULL_EXPERIMENT = """
model_options {
  backbone {
    name: "axial_deeplab_s"
    output_stride: 8
    use_squeeze_and_excite: false
    drop_path_keep_prob: 0.8
    drop_path_schedule: "linear"
    stem_width_multiplier: 0.25
    backbone_width_multiplier: 0.125
    backbone_layer_multiplier: 0.34
    use_sac_beyond_stride: -1
  }
  decoder {
    feature_key: "res5"
    decoder_channels: 32
    decoder_conv_type: "depthwise_separable_conv"
    aspp_channels: 24
    atrous_rates: [3, 6, 9]
    aspp_use_only_1x1_proj_conv: true
  }
  panoptic_deeplab {
    low_level { feature_key: "res3" channels_project: 16 }
    low_level { feature_key: "res2" channels_project: 8 }
    instance {
      enable: true
      low_level_override { feature_key: "res3" channels_project: 12 }
      low_level_override { feature_key: "res2" channels_project: 4 }
      instance_decoder_override {
        feature_key: "res4"
        decoder_channels: 16
        decoder_conv_type: "depthwise_separable_conv"
        aspp_channels: 20
        atrous_rates: [2, 4, 6]
        aspp_use_only_1x1_proj_conv: true
      }
      center_head { output_channels: 1 head_channels: 8 head_conv_type: "depthwise_separable_conv" }
      regression_head { output_channels: 2 head_channels: 8 head_conv_type: "depthwise_separable_conv" }
    }
    semantic_head { output_channels: 5 head_channels: 32 head_conv_type: "depthwise_separable_conv" }
  }
}
trainer_options {
  num_checkpoints_to_keep: 3
  save_checkpoints_steps: 500
  save_summaries_steps: 50
  loss_options {
    semantic_loss { name: "softmax_cross_entropy" weight: 2.0 top_k_percent: 0.2 }
    center_loss { name: "mse" weight: 200.0 top_k_percent: 1.0 }
    regression_loss { name: "l1" weight: 0.01 top_k_percent: 1.0 }
  }
  solver_options {
    use_sync_batchnorm: false
    batchnorm_momentum: 0.99
    batchnorm_epsilon: 0.001
    learning_policy: "poly"
    base_learning_rate: 0.0005
    poly_learning_power: 2.0
    poly_end_learning_rate: 0.00001
    warmup_steps: 100
    optimizer: "sgd"
    weight_decay: 0.0001
    adamw_weight_decay: 0.05
    use_gradient_clipping: true
    clip_gradient_norm: 5.0
    training_number_of_steps: 1000
    backbone_learning_rate_multiplier: 0.1
  }
}
train_dataset_options {
  dataset: "coco_panoptic"
  batch_size: 4
  crop_size: 65
  crop_size: 97
  sigma: 4.0
  increase_small_instance_weights: true
  small_instance_threshold: 1024
  small_instance_weight: 2.0
  augmentations {
    min_scale_factor: 0.5
    max_scale_factor: 1.5
    scale_factor_step_size: 0.5
    autoaugment_policy_name: "simple_classification_policy_magnitude_scale_0.2"
  }
}
eval_dataset_options {
  dataset: "coco_panoptic"
  batch_size: 2
  crop_size: [65, 97]
}
evaluator_options {
  eval_steps: 10
  eval_interval: 200
  continuous_eval_timeout: 60
  stuff_area_limit: 300
  center_score_threshold: 0.3
  nms_kernel: 13
  keep_k_centers: 100
  add_flipped_images: true
  eval_scales: [0.75, 1.0]
  merge_semantic_and_instance_with_tf_op: false
}
"""

MODEL = "model_options"
BACKBONE = "model_options.backbone"
DECODER = "model_options.decoder"
PANOPTIC = "model_options.panoptic_deeplab"
INSTANCE = "model_options.panoptic_deeplab.instance"
OVERRIDE = "model_options.panoptic_deeplab.instance.instance_decoder_override"
LOSSES = "trainer_options.loss_options"
SOLVER = "trainer_options.solver_options"
TRAINER = "trainer_options"
TRAIN_DATA = "train_dataset_options"
AUGMENTATIONS = "train_dataset_options.augmentations"
EVAL_DATA = "eval_dataset_options"
EVALUATOR = "evaluator_options"

# (DeepLab2 field removed, our config key, the value DeepLab2 then uses, other edits made first).
DEFAULT_CASES = [
    # model.proto BackboneOptions; DeepLab2 passes them over the backbone instance's own settings.
    (f"{BACKBONE}.name", "model.backbone", "resnet50", {}),
    (f"{BACKBONE}.output_stride", "model.output_stride", 32, {}),
    (f"{BACKBONE}.drop_path_keep_prob", "model.backbone_overrides.drop_path_keep_prob", 1.0, {}),
    (f"{BACKBONE}.drop_path_schedule", "model.backbone_overrides.drop_path_schedule", "constant", {}),
    (f"{BACKBONE}.stem_width_multiplier", "model.backbone_overrides.stem_width_multiplier", 1.0, {}),
    (f"{BACKBONE}.backbone_width_multiplier", "model.backbone_overrides.width_multiplier", 1.0, {}),
    (f"{BACKBONE}.backbone_layer_multiplier", "model.backbone_overrides.backbone_layer_multiplier", 1.0, {}),
    (f"{BACKBONE}.use_squeeze_and_excite", None, False, {}),  # false: accepted, nothing changes
    (f"{BACKBONE}.use_sac_beyond_stride", None, -1, {}),
    # model.proto DecoderOptions of the semantic branch.
    (f"{DECODER}.decoder_channels", "model.semantic_decoder.decoder_channels", 256, {}),
    (f"{DECODER}.aspp_channels", "model.semantic_decoder.aspp_channels", 256, {}),
    (f"{DECODER}.aspp_use_only_1x1_proj_conv", "model.semantic_decoder.aspp_use_only_1x1_proj", False, {}),
    (f"{DECODER}.atrous_rates", "model.semantic_decoder.atrous_rates", [], {}),
    (f"{DECODER}.decoder_conv_type", None, "depthwise_separable_conv", {}),
    # A given instance_decoder_override takes proto defaults, not the semantic branch's values.
    (f"{OVERRIDE}.decoder_channels", "model.instance_decoder.decoder_channels", 256, {}),
    (f"{OVERRIDE}.aspp_channels", "model.instance_decoder.aspp_channels", 256, {}),
    (f"{OVERRIDE}.aspp_use_only_1x1_proj_conv", "model.instance_decoder.aspp_use_only_1x1_proj", False, {}),
    (f"{OVERRIDE}.atrous_rates", "model.instance_decoder.atrous_rates", [], {}),
    (f"{OVERRIDE}.decoder_conv_type", None, "depthwise_separable_conv", {}),
    (f"{INSTANCE}.enable", None, True, {}),
    (f"{PANOPTIC}.semantic_head.head_conv_type", None, "depthwise_separable_conv", {}),
    (f"{INSTANCE}.center_head.head_conv_type", None, "depthwise_separable_conv", {}),
    (f"{INSTANCE}.regression_head.head_conv_type", None, "depthwise_separable_conv", {}),
    # trainer.proto SingleLossOptions (a present loss message), TrainerOptions.
    (f"{LOSSES}.semantic_loss.weight", "losses.semantic_weight", 1.0, {}),
    (f"{LOSSES}.semantic_loss.top_k_percent", "losses.semantic_top_k_percent", 1.0, {}),
    (f"{LOSSES}.center_loss.weight", "losses.center_weight", 1.0, {}),
    (f"{LOSSES}.center_loss.top_k_percent", None, 1.0, {}),
    (f"{LOSSES}.regression_loss.weight", "losses.offset_weight", 1.0, {}),
    (f"{LOSSES}.regression_loss.top_k_percent", None, 1.0, {}),
    (f"{TRAINER}.num_checkpoints_to_keep", "training.keep_checkpoints", 5, {}),
    (f"{TRAINER}.save_checkpoints_steps", "training.checkpoint_interval", 1000, {}),
    (f"{TRAINER}.save_summaries_steps", "training.summary_interval", 1000, {}),
    # trainer.proto SolverOptions.
    (f"{SOLVER}.use_sync_batchnorm", "training.sync_batch_norm", True, {}),
    (f"{SOLVER}.batchnorm_momentum", None, 0.99, {}),
    (f"{SOLVER}.batchnorm_epsilon", None, 0.001, {}),
    (f"{SOLVER}.learning_policy", "optimizer.schedule", "poly", {f"{SOLVER}.learning_policy": "cosine"}),
    (f"{SOLVER}.base_learning_rate", "optimizer.learning_rate", 1e-3, {}),
    (f"{SOLVER}.poly_learning_power", "optimizer.poly_power", 0.9, {}),
    (f"{SOLVER}.poly_end_learning_rate", "optimizer.end_learning_rate", 0.0, {}),
    (f"{SOLVER}.warmup_steps", "optimizer.warmup_steps", 0, {}),
    (f"{SOLVER}.optimizer", "optimizer.name", "adam", {}),
    (f"{SOLVER}.weight_decay", "optimizer.weight_decay", 0.0, {}),
    (f"{SOLVER}.adamw_weight_decay", "optimizer.weight_decay", 0.0, {f"{SOLVER}.optimizer": "adamw",
                                                                     f"{SOLVER}.weight_decay": 0.0}),
    (f"{SOLVER}.use_gradient_clipping", "optimizer.clip_gradient_norm", None, {}),
    (f"{SOLVER}.clip_gradient_norm", "optimizer.clip_gradient_norm", 10.0, {}),
    (f"{SOLVER}.training_number_of_steps", "training.steps", 60000, {}),
    (f"{SOLVER}.backbone_learning_rate_multiplier", "optimizer.backbone_lr_multiplier", 1.0, {}),
    # dataset.proto DatasetOptions (small-instance weights apply only when increased).
    (f"{TRAIN_DATA}.batch_size", "training.batch_size", 32, {}),
    (f"{TRAIN_DATA}.sigma", "losses.center_sigma", 8.0, {}),
    (f"{TRAIN_DATA}.increase_small_instance_weights", "losses.small_instance_weight", 1.0, {}),
    (f"{TRAIN_DATA}.small_instance_threshold", "losses.small_instance_area", 4096, {}),
    (f"{TRAIN_DATA}.small_instance_weight", "losses.small_instance_weight", 3.0, {}),
    # dataset.proto AugmentationOptions (the scale step is the spacing of DeepLab2's factors,
    # here the step itself, as it divides the range).
    (f"{AUGMENTATIONS}.min_scale_factor", "data.augmentation.min_scale", 1.0, {}),
    (f"{AUGMENTATIONS}.max_scale_factor", "data.augmentation.max_scale", 1.0, {}),
    (f"{AUGMENTATIONS}.scale_factor_step_size", "data.augmentation.scale_step", 0.25, {}),
    (f"{AUGMENTATIONS}.autoaugment_policy_name", "data.augmentation.autoaugment", False, {}),
    # dataset.proto DatasetOptions of the evaluation set; our evaluation reads the training
    # set's dataset and crop, so removing those changes nothing (no note either).
    (f"{EVAL_DATA}.batch_size", "evaluation.batch_size", 32, {}),
    (f"{EVAL_DATA}.dataset", None, "", {}),
    (f"{EVAL_DATA}.crop_size", None, [], {}),
    # evaluator.proto EvaluatorOptions (-1 eval steps: the whole split; no scales: [1.0]).
    (f"{EVALUATOR}.eval_steps", "evaluation.steps", None, {}),
    (f"{EVALUATOR}.eval_interval", "evaluation.interval", 5000, {}),
    (f"{EVALUATOR}.continuous_eval_timeout", "evaluation.continuous_eval_timeout", None, {}),  # -1: forever
    (f"{EVALUATOR}.stuff_area_limit", "evaluation.postprocessing.stuff_area_limit", 0, {}),
    (f"{EVALUATOR}.center_score_threshold", "evaluation.postprocessing.center_threshold", 0.1, {}),
    (f"{EVALUATOR}.nms_kernel", "evaluation.postprocessing.nms_kernel", 3, {}),
    (f"{EVALUATOR}.keep_k_centers", "evaluation.postprocessing.keep_k_centers", 400, {}),
    (f"{EVALUATOR}.add_flipped_images", "evaluation.flip", False, {}),
    (f"{EVALUATOR}.eval_scales", "evaluation.eval_scales", [1.0], {}),
    (f"{EVALUATOR}.merge_semantic_and_instance_with_tf_op", "evaluation.postprocessing.merge_style", "merge_op",
     {}),
]

# Fields whose zero value DeepLab2 cannot build with: removing them is an error naming them.
REQUIRED_FIELDS = [
    f"{DECODER}.feature_key",
    f"{OVERRIDE}.feature_key",
    f"{PANOPTIC}.low_level[0].feature_key",
    f"{PANOPTIC}.low_level[1].channels_project",
    f"{INSTANCE}.low_level_override[0].channels_project",
    f"{INSTANCE}.low_level_override[1].feature_key",
    f"{PANOPTIC}.semantic_head.output_channels",
    f"{PANOPTIC}.semantic_head.head_channels",
    f"{INSTANCE}.center_head.output_channels",
    f"{INSTANCE}.center_head.head_channels",
    f"{INSTANCE}.regression_head.output_channels",
    f"{INSTANCE}.regression_head.head_channels",
    f"{LOSSES}.semantic_loss.name",
    f"{LOSSES}.center_loss.name",
    f"{LOSSES}.regression_loss.name",
    f"{TRAIN_DATA}.dataset",
    f"{TRAIN_DATA}.crop_size",
]


def _parsed():
    return parse_textproto(FULL_EXPERIMENT, "full.textproto")


def _split(path):
    """`a.b[1].c` -> [("a", 0), ("b", 1), ("c", 0)]."""
    parts = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        parts.append((name, int(index.rstrip("]")) if index else 0))
    return parts


def _parent(experiment, path):
    message = experiment
    for name, index in _split(path)[:-1]:
        message = message[name][index]
    return message, _split(path)[-1][0]


def _remove(experiment, path):
    message, name = _parent(experiment, path)
    assert name in message, f"{path} is not in FULL_EXPERIMENT"
    del message[name]


def _set(experiment, path, value):
    """Sets a field to `value` (a list: the values of a repeated field)."""
    message, name = _parent(experiment, path)
    message[name] = value if isinstance(value, list) else [value]


def _lookup(config, key):
    for name in key.split("."):
        config = config[name]
    return config


def _converted(experiment):
    return convert_experiment(experiment, "full.textproto")


def test_full_experiment_converts_to_its_values():
    conversion = _converted(_parsed())
    config = conversion.config
    assert config["model"]["backbone"] == "axial_deeplab_s" and config["model"]["output_stride"] == 8
    assert config["model"]["instance_decoder"]["feature_key"] == "res4"
    assert config["model"]["instance_decoder"]["low_level_channels"] == [12, 4]
    assert config["data"] == {"dataset": "coco2017_panoptic", "crop_size": [65, 97], "augmentation": {
        "min_scale": 0.5, "max_scale": 1.5, "scale_step": 0.5, "autoaugment": True,
        "horizontal_flip": True, "photometric": False}}  # DeepLab2 always flips, has no colour jitter
    assert config["optimizer"]["clip_gradient_norm"] == 5.0
    assert config["losses"]["small_instance_weight"] == 2.0
    assert config["evaluation"]["eval_scales"] == [0.75, 1.0]
    assert config["evaluation"]["batch_size"] == 2 and config["evaluation"]["continuous_eval_timeout"] == 60
    config_from_dict(config, source="full.textproto")  # a valid axial_tf config


@pytest.mark.parametrize("field, key, default, edits", DEFAULT_CASES, ids=[c[0] for c in DEFAULT_CASES])
@pytest.mark.full
def test_an_omitted_field_takes_deeplab2s_default(field, key, default, edits):
    experiment = _parsed()
    for path, value in edits.items():
        _set(experiment, path, value)
    before = _converted(experiment).config
    _remove(experiment, field)
    after = _converted(experiment).config
    if key is None:  # only DeepLab2's default is accepted, so the file already gave it
        assert after == before
    elif isinstance(default, float):  # the file's decimal text vs a proto float default
        assert _lookup(after, key) == pytest.approx(default)
    else:
        assert _lookup(after, key) == default
    config_from_dict(after, source=field)


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
@pytest.mark.sweep
def test_an_omitted_field_without_a_usable_default_is_named(field):
    experiment = _parsed()
    _remove(experiment, field)
    with pytest.raises(ValueError, match=r"full\.textproto: " + _pattern(field) + r": is missing"):
        _converted(experiment)


def _pattern(path):
    return path.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")


TESTED_FIELDS = [case[0] for case in DEFAULT_CASES] + REQUIRED_FIELDS


def _without_indices(path):
    return ".".join(name for name, _ in _split(path))


def _message_and_field(path):
    """(DeepLab2 message, field) of an experiment field path, following the message types."""
    kind = "ExperimentOptions"
    for name, _ in _split(path)[:-1]:
        kind = DEEPLAB2_FIELDS[kind][name]
    return kind, _split(path)[-1][0]


def _leaf_paths(message, path=""):
    """Paths (without indices) of the value fields of a parsed message."""
    for name, values in message.items():
        field_path = f"{path}.{name}" if path else name
        if isinstance(values[0], dict):
            for value in values:
                yield from _leaf_paths(value, field_path)
        else:
            yield field_path


def test_every_field_of_the_defaults_table_is_tested():
    tested = {_message_and_field(path) for path in TESTED_FIELDS}
    table = {(kind, name) for kind, fields in DEEPLAB2_DEFAULTS.items() for name in fields}
    assert table - tested == set()


def test_every_field_of_the_full_experiment_is_tested():
    tested = {_without_indices(path) for path in TESTED_FIELDS}
    assert set(_leaf_paths(_parsed())) - tested == set()


def test_the_tables_name_only_deeplab2_fields_and_messages():
    for kind, fields in DEEPLAB2_DEFAULTS.items():
        assert set(fields) <= set(DEEPLAB2_FIELDS[kind]), kind
    for kind, field in DEEPLAB2_CHOICES:
        assert field in DEEPLAB2_DEFAULTS[kind], (kind, field)
    referenced = {message for fields in DEEPLAB2_FIELDS.values() for message in fields.values() if message}
    assert referenced | {"ExperimentOptions"} == set(DEEPLAB2_FIELDS)


def _fallback_experiment():
    experiment = _parsed()
    for path in (OVERRIDE, f"{INSTANCE}.low_level_override"):
        _remove(experiment, path)
    return experiment


def test_an_instance_branch_without_overrides_reuses_the_semantic_decoder():
    config = _converted(_fallback_experiment()).config["model"]
    semantic, instance = config["semantic_decoder"], config["instance_decoder"]
    for key in ("feature_key", "decoder_channels", "aspp_channels", "aspp_use_only_1x1_proj", "atrous_rates",
                "low_level_feature_keys", "low_level_channels"):
        assert instance[key] == semantic[key], key
    assert instance["head_channels"] == 8  # the instance heads' own width


@pytest.mark.parametrize("loss, key", [("semantic_loss", "semantic_weight"), ("center_loss", "center_weight"),
                                       ("regression_loss", "offset_weight")])
def test_an_absent_loss_message_turns_that_loss_off(loss, key):
    experiment = _parsed()
    _remove(experiment, f"{LOSSES}.{loss}")
    assert _converted(experiment).config["losses"][key] == 0.0


def test_absent_sections_take_deeplab2s_defaults():
    experiment = _parsed()
    for section in (TRAINER, EVALUATOR):
        _remove(experiment, section)
    config = _converted(experiment).config
    assert config["optimizer"]["learning_rate"] == pytest.approx(1e-3)
    assert config["training"]["steps"] == 60000
    assert config["losses"]["semantic_weight"] == 0.0  # no loss_options: no loss built
    assert config["evaluation"]["postprocessing"]["nms_kernel"] == 3


# ------------------------------------------------------------ the ASPP default

def _small_model_experiment(**decoder_edits):
    experiment = _parsed()
    _remove(experiment, OVERRIDE)  # the instance branch reuses the semantic decoder
    _remove(experiment, f"{DECODER}.aspp_use_only_1x1_proj_conv")
    for name, value in decoder_edits.items():
        _set(experiment, f"{DECODER}.{name}", value)
    return experiment


def _trainable(layer):
    return sum(int(np.prod(v.shape)) for v in layer.trainable_weights)


def test_omitting_aspp_use_only_1x1_proj_conv_builds_the_full_aspp():
    config = config_from_dict(_converted(_small_model_experiment()).config)
    assert config.model.semantic_decoder.aspp_use_only_1x1_proj is False
    model = build_model(config, sync_batch_norm=False)
    reduced = build_model(config_from_dict(_converted(
        _small_model_experiment(aspp_use_only_1x1_proj_conv=True)).config), sync_batch_norm=False)
    c_in = reduced.semantic_decoder.aspp.proj_conv_bn_act.conv.kernel.shape[-2]  # res5 channels
    c = 24  # aspp_channels
    # Conv + BN (gamma, beta) per branch, convs without bias: the 1x1 branch, three 3x3
    # atrous branches and the image-pooling 1x1, projected from 5 * c channels.
    full_aspp = (c_in * c + 2 * c) + 3 * (9 * c_in * c + 2 * c) + (c_in * c + 2 * c) + (5 * c * c + 2 * c)
    projection_only = c_in * c + 2 * c
    assert _trainable(model.semantic_decoder.aspp) == full_aspp
    assert _trainable(model.semantic_decoder) - _trainable(reduced.semantic_decoder) == full_aspp - projection_only
    assert _trainable(model.instance_decoder.aspp) == full_aspp


def test_full_aspp_needs_three_atrous_rates():
    experiment = _small_model_experiment()
    _remove(experiment, f"{DECODER}.atrous_rates")
    with pytest.raises(ValueError, match=r"model_options\.decoder\.atrous_rates: .*exactly 3 atrous rates, got \[\]"):
        _converted(experiment)


# ------------------------------------------------------------ solver options

def test_coco_warmup_and_solver_options_are_kept():
    experiment = parse_textproto("""
        model_options { backbone { name: "resnet50" output_stride: 16 }
          decoder { feature_key: "res5" atrous_rates: [6, 12, 18] }
          panoptic_deeplab {
            low_level { feature_key: "res3" channels_project: 64 }
            low_level { feature_key: "res2" channels_project: 32 }
            instance { center_head { output_channels: 1 head_channels: 32 }
                       regression_head { output_channels: 2 head_channels: 32 } }
            semantic_head { output_channels: 134 head_channels: 256 } } }
        trainer_options { solver_options { base_learning_rate: 0.0005 training_number_of_steps: 200000
                                           warmup_steps: 2000 } }
        train_dataset_options { dataset: "coco_panoptic" crop_size: [641, 641] batch_size: 64 }
    """)
    conversion = convert_experiment(experiment, "coco.textproto")
    optimizer = conversion.config["optimizer"]
    assert optimizer["warmup_steps"] == 2000 and optimizer["schedule"] == "poly"
    assert optimizer["learning_rate"] == 5e-4 and optimizer["poly_power"] == pytest.approx(0.9)
    assert optimizer["name"] == "adam" and optimizer["end_learning_rate"] == 0.0
    assert conversion.notes == []
    config = config_from_dict(conversion.config)
    assert config.model.semantic_decoder.aspp_use_only_1x1_proj is False


# DeepLab2's configs/coco/panoptic_deeplab/resnet50_os16.textproto (comments left out); every
# other field takes DeepLab2's default.
DEEPLAB2_COCO_RESNET50_OS16 = """
experiment_name: "${EXPERIMENT_NAME}"
model_options {
  initial_checkpoint: "${INIT_CHECKPOINT}"
  backbone { name: "resnet50" output_stride: 16 }
  decoder { feature_key: "res5" decoder_channels: 256 aspp_channels: 256 atrous_rates: [6, 12, 18] }
  panoptic_deeplab {
    low_level { feature_key: "res3" channels_project: 64 }
    low_level { feature_key: "res2" channels_project: 32 }
    instance {
      low_level_override { feature_key: "res3" channels_project: 32 }
      low_level_override { feature_key: "res2" channels_project: 16 }
      instance_decoder_override { feature_key: "res5" decoder_channels: 128 atrous_rates: [6, 12, 18] }
      center_head { output_channels: 1 head_channels: 32 }
      regression_head { output_channels: 2 head_channels: 32 }
    }
    semantic_head { output_channels: 134 head_channels: 256 }
  }
}
trainer_options {
  save_checkpoints_steps: 1000
  save_summaries_steps: 100
  steps_per_loop: 100
  loss_options {
    semantic_loss { name: "softmax_cross_entropy" weight: 1.0 top_k_percent: 0.2 }
    center_loss { name: "mse" weight: 200 }
    regression_loss { name: "l1" weight: 0.01 }
  }
  solver_options { base_learning_rate: 0.0005 training_number_of_steps: 200000 warmup_steps: 2000 }
}
train_dataset_options {
  dataset: "coco_panoptic"
  file_pattern: "${TRAIN_SET}"
  batch_size: 64
  crop_size: [641, 641]
  min_resize_value: 641
  max_resize_value: 641
  augmentations {
    min_scale_factor: 0.5
    max_scale_factor: 1.5
    scale_factor_step_size: 0.1
    autoaugment_policy_name: "simple_classification_policy_magnitude_scale_0.2"
  }
  increase_small_instance_weights: true
  small_instance_weight: 3.0
}
eval_dataset_options {
  dataset: "coco_panoptic"
  file_pattern: "${VAL_SET}"
  batch_size: 1
  crop_size: [641, 641]
  min_resize_value: 641
  max_resize_value: 641
  increase_small_instance_weights: true
  small_instance_weight: 3.0
}
evaluator_options {
  continuous_eval_timeout: -1
  stuff_area_limit: 4096
  center_score_threshold: 0.1
  nms_kernel: 41
  save_predictions: true
  save_raw_predictions: false
  merge_semantic_and_instance_with_tf_op: false
}
"""


def _backbone_arguments(model_config):
    """Every `AxialResNet` argument of a model config's backbone, defaults included."""
    defaults = {name: parameter.default for name, parameter in inspect.signature(AxialResNet).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    return {**defaults, **backbone_config(model_config.backbone, **model_config.backbone_overrides)}


def test_deeplab2s_coco_resnet50_converts_to_our_coco_config():
    conversion = convert_experiment(parse_textproto(DEEPLAB2_COCO_RESNET50_OS16), "resnet50_os16.textproto")
    assert conversion.notes == ["resnet50_os16.textproto: not used by axial_tf: experiment_name, "
                                "model_options.initial_checkpoint, trainer_options.steps_per_loop, "
                                "train_dataset_options.file_pattern, train_dataset_options.min_resize_value, "
                                "train_dataset_options.max_resize_value, eval_dataset_options.file_pattern, "
                                "eval_dataset_options.min_resize_value, eval_dataset_options.max_resize_value, "
                                "eval_dataset_options.increase_small_instance_weights, "
                                "eval_dataset_options.small_instance_weight, evaluator_options.save_predictions, "
                                "evaluator_options.save_raw_predictions"]
    converted = config_from_dict(conversion.config)
    ours = load_config(REPO_ROOT / "configs" / "coco" / "resnet50_os16.yaml")
    # The full ASPP (omitted aspp_use_only_1x1_proj_conv) and the 2000 warm-up steps survive.
    assert converted.model.semantic_decoder == ours.model.semantic_decoder
    assert converted.model.instance_decoder == ours.model.instance_decoder
    assert _backbone_arguments(converted.model) == _backbone_arguments(ours.model)
    assert converted.optimizer == ours.optimizer
    assert converted.losses == ours.losses
    assert converted.evaluation.postprocessing == ours.evaluation.postprocessing
    for key in ("steps", "batch_size", "sync_batch_norm", "checkpoint_interval", "summary_interval"):
        assert getattr(converted.training, key) == getattr(ours.training, key), key
    assert (converted.data.dataset, converted.data.crop_size) == (ours.data.dataset, ours.data.crop_size)
    assert converted.data.augmentation == ours.data.augmentation
    assert converted.evaluation.batch_size == ours.evaluation.batch_size
    # DeepLab2's COCO label map has 134 semantic outputs (class 0 is its ignore label), ours 133.
    assert (converted.model.num_classes, ours.model.num_classes) == (134, 133)


def test_sgd_adamw_and_cosine_map_to_our_optimizer():
    experiment = _parsed()
    _set(experiment, f"{SOLVER}.learning_policy", "cosine")
    optimizer = _converted(experiment).config["optimizer"]
    assert optimizer["schedule"] == "cosine" and optimizer["end_learning_rate"] == 0.0  # DeepLab2: alpha 0
    assert optimizer["name"] == "sgd" and optimizer["momentum"] == 0.9 and optimizer["nesterov"] is False
    assert optimizer["weight_decay"] == pytest.approx(1e-4)
    _set(experiment, f"{SOLVER}.optimizer", "adamw")
    assert _converted(experiment).config["optimizer"]["weight_decay"] == pytest.approx(0.05)


@pytest.mark.parametrize("edits, named", [
    ({f"{SOLVER}.batchnorm_momentum": 0.9}, f"{SOLVER}.batchnorm_momentum: 0.9 cannot be expressed"),
    ({f"{SOLVER}.batchnorm_epsilon": 1e-5}, f"{SOLVER}.batchnorm_epsilon: 1e-05 cannot be expressed"),
    ({f"{SOLVER}.optimizer": "adamw"}, f"{SOLVER}.weight_decay: 0.0001 cannot be expressed"),
    ({f"{SOLVER}.learning_policy": "cosine"}, f"{SOLVER}.poly_end_learning_rate: has no effect"),
    ({f"{AUGMENTATIONS}.autoaugment_policy_name": "simple_classification_policy"},
     f"{AUGMENTATIONS}.autoaugment_policy_name: 'simple_classification_policy' cannot be expressed"),
    ({f"{EVAL_DATA}.dataset": "cityscapes_panoptic"}, f"{EVAL_DATA}.dataset: 'cityscapes_panoptic' cannot be "
                                                      "expressed: axial_tf evaluates the training dataset"),
    ({f"{EVAL_DATA}.crop_size": [65, 65]}, f"{EVAL_DATA}.crop_size: [65, 65] cannot be expressed"),
    ({f"{LOSSES}.center_loss.top_k_percent": 0.5}, f"{LOSSES}.center_loss.top_k_percent: 0.5 cannot be expressed"),
    ({f"{LOSSES}.center_loss.name": "l1"}, f"{LOSSES}.center_loss.name: 'l1' cannot be expressed"),
    ({f"{LOSSES}.motion_loss": {"name": ["l1"]}}, f"{LOSSES}.motion_loss: cannot be expressed"),
])
@pytest.mark.sweep
def test_options_we_cannot_express_are_named(edits, named):
    experiment = _parsed()
    for path, value in edits.items():
        _set(experiment, path, value)
    notes = _converted(experiment).notes
    assert any(note.startswith(f"full.textproto: {named}") for note in notes), notes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment_to_config(experiment, "full.textproto")
    assert [str(w.message) for w in caught if w.category is DeepLab2OptionWarning] == notes


def test_the_full_experiment_notes_only_what_axial_tf_does_differently():
    notes = _converted(_parsed()).notes
    assert [note.split(": ")[1] for note in notes] == [
        f"{SOLVER}.backbone_learning_rate_multiplier",  # with an end rate
        f"{SOLVER}.weight_decay",                       # encoder only in DeepLab2
        f"{SOLVER}.use_gradient_clipping",              # per replica in DeepLab2
        "not used by axial_tf",                         # adamw_weight_decay: DeepLab2's sgd ignores it too
    ]
    assert notes[-1] == f"full.textproto: not used by axial_tf: {SOLVER}.adamw_weight_decay"


# ------------------------------------------------------------ bad input

@pytest.mark.parametrize("path, value, message", [
    (f"{SOLVER}.learning_policy", "step", "'step' is not a value DeepLab2 accepts (poly, cosine)"),
    (f"{SOLVER}.optimizer", "rmsprop", "'rmsprop' is not a value DeepLab2 accepts (adam, sgd, adamw)"),
    (f"{BACKBONE}.drop_path_schedule", "cubic", "'cubic' is not a value DeepLab2 accepts (constant, linear)"),
    (f"{LOSSES}.semantic_loss.name", "focal", "'focal' is not a value DeepLab2 accepts"),
    (f"{AUGMENTATIONS}.autoaugment_policy_name", "randaugment", "'randaugment' is not a value DeepLab2 accepts "
     '("", simple_classification_policy_magnitude_scale_0.2, simple_classification_policy)'),
    (f"{DECODER}.decoder_channels", "wide", "expected an integer, got 'wide'"),
    (f"{SOLVER}.warmup_steps", 1.5, "expected an integer, got 1.5"),
    (f"{DECODER}.aspp_use_only_1x1_proj_conv", 2, "expected a bool, got 2"),
    (f"{SOLVER}.base_learning_rate", True, "expected a number, got True"),
    (f"{DECODER}.decoder_conv_type", "standard_conv", "'standard_conv' is not supported"),
    (f"{BACKBONE}.use_squeeze_and_excite", True, "True is not supported"),
    (f"{BACKBONE}.use_sac_beyond_stride", 16, "switchable atrous convolution is not supported"),
    (f"{INSTANCE}.enable", False, "False is not supported"),
    (f"{INSTANCE}.center_head.output_channels", 3, "3 is not supported"),
    (f"{EVALUATOR}.keep_k_centers", -1, "-1 (keep every center) is not supported"),
])
@pytest.mark.sweep
def test_bad_values_give_one_line_naming_field_and_value(path, value, message):
    experiment = _parsed()
    _set(experiment, path, value)
    with pytest.raises(ValueError) as error:
        _converted(experiment)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"full.textproto: {path}: ") and message in text, text


@pytest.mark.parametrize("text, only_1x1, drop_path_keep_prob", [
    ("aspp_use_only_1x1_proj_conv: t", True, None), ("aspp_use_only_1x1_proj_conv: 0", False, None),
    ("aspp_use_only_1x1_proj_conv: True", True, "0.5f"),
])
def test_text_format_spellings_of_bools_and_floats(text, only_1x1, drop_path_keep_prob):
    source = FULL_EXPERIMENT.replace("aspp_use_only_1x1_proj_conv: true", text, 1)
    if drop_path_keep_prob:
        source = source.replace("drop_path_keep_prob: 0.8", f"drop_path_keep_prob: {drop_path_keep_prob}")
    model = convert_experiment(parse_textproto(source), "full.textproto").config["model"]
    assert model["semantic_decoder"]["aspp_use_only_1x1_proj"] is only_1x1
    assert model["backbone_overrides"]["drop_path_keep_prob"] == (0.5 if drop_path_keep_prob else 0.8)


def test_a_singular_field_given_twice_is_named():
    experiment = _parsed()
    message, _ = _parent(experiment, f"{SOLVER}.warmup_steps")
    message["warmup_steps"] = [10, 20]
    with pytest.raises(ValueError, match=_pattern(f"{SOLVER}.warmup_steps") + ": is given 2 times"):
        _converted(experiment)


def test_no_meta_architecture_is_named():
    experiment = _parsed()
    _remove(experiment, PANOPTIC)
    with pytest.raises(ValueError, match=r"model_options\.panoptic_deeplab: is missing"):
        _converted(experiment)


# Other DeepLab2 meta-architectures, with fields of their own messages (model.proto; the kMaX
# field is given by DeepLab2's ADE20K kmax_meta_convnext_large_os32.textproto).
OTHER_META_ARCHITECTURES = [
    ("deeplab_v3", "deeplab_v3 { num_classes: 19 }"),
    ("deeplab_v3_plus", 'deeplab_v3_plus { low_level { feature_key: "res2" channels_project: 48 } num_classes: 19 }'),
    ("motion_deeplab", "motion_deeplab { motion_head { output_channels: 2 head_channels: 32 } }"),
    ("max_deeplab", "max_deeplab { pixel_space_head { output_channels: 128 } semantic_sample_k: 4096 "
                    "transformer_decoder_drop_path_keep_prob: 1.0 }"),
    ("vip_deeplab", "vip_deeplab { instance { next_regression_head { output_channels: 2 } } "
                    "depth_head { max_value_after_activation: 88 } }"),
]


@pytest.mark.parametrize("field, text", OTHER_META_ARCHITECTURES, ids=[case[0] for case in OTHER_META_ARCHITECTURES])
def test_other_meta_architectures_are_named_as_not_supported(field, text):
    experiment = _parsed()
    _remove(experiment, PANOPTIC)
    _set(experiment, f"{MODEL}.{field}", parse_textproto(text)[field][0])
    with pytest.raises(ValueError, match=rf"^full\.textproto: model_options\.{field}: .* is not supported"):
        _converted(experiment)


# ------------------------------------------------------------ field names

# (a field DeepLab2's proto lacks, its value, the message it is in, the field suggested):
# misspellings at several depths.
MISSPELLED_FIELDS = [
    ("experiment_nam", "x", "ExperimentOptions", "experiment_name"),
    (f"{BACKBONE}.output_strid", 16, "BackboneOptions", "output_stride"),
    (f"{INSTANCE}.center_head.head_channel", 8, "HeadOptions", "head_channels"),
    (f"{PANOPTIC}.low_level[1].feature_keys", "res2", "LowLevelOptions", "feature_key"),
    (f"{SOLVER}.warmup_type", "linear", "SolverOptions", "warmup_steps"),
    (f"{AUGMENTATIONS}.min_scale", 0.5, "AugmentationOptions", "min_scale_factor"),
    (f"{LOSSES}.semantic_los", {"name": ["l1"]}, "LossOptions", "semantic_loss"),
    (f"{EVAL_DATA}.batchsize", 1, "DatasetOptions", "batch_size"),
]


@pytest.mark.parametrize("path, value, message, suggestion", MISSPELLED_FIELDS,
                         ids=[case[0] for case in MISSPELLED_FIELDS])
@pytest.mark.sweep
def test_a_field_deeplab2_does_not_have_is_an_error_with_a_suggestion(path, value, message, suggestion):
    experiment = _parsed()
    _set(experiment, path, value)
    with pytest.raises(ValueError) as error:
        _converted(experiment)
    assert str(error.value) == (f"full.textproto: {path}: unknown field of DeepLab2's {message}; "
                                f"did you mean {suggestion!r}?")


def test_the_misspelled_output_stride_of_issue_28_is_no_longer_ignored():
    text = FULL_EXPERIMENT.replace("output_stride: 8", "output_strid: 16")
    with pytest.raises(ValueError, match=r"model_options\.backbone\.output_strid: .*did you mean 'output_stride'"):
        convert_experiment(parse_textproto(text, "full.textproto"), "full.textproto")


def test_an_unknown_field_without_a_close_name_lists_the_messages_fields():
    experiment = _parsed()
    _set(experiment, f"{LOSSES}.semantic_loss.zzz", 1)
    with pytest.raises(ValueError, match=re.escape(
            f"full.textproto: {LOSSES}.semantic_loss.zzz: unknown field of DeepLab2's SingleLossOptions "
            "(its fields: name, weight, top_k_percent)")):
        _converted(experiment)


@pytest.mark.parametrize("path, value, message", [
    (BACKBONE, 16, "expected a BackboneOptions message {...}, got 16"),
    (f"{BACKBONE}.output_stride", {"value": [16]}, "expected a value, not a message, got a message {...}"),
])
def test_a_message_and_a_value_are_not_mistaken_for_each_other(path, value, message):
    experiment = _parsed()
    _set(experiment, path, value)
    with pytest.raises(ValueError, match=re.escape(f"full.textproto: {path}: {message}")):
        _converted(experiment)


# DeepLab2 fields the converter has no use for: each is named, none is an error.
UNUSED_FIELDS = [
    ("experiment_name", "my_experiment"),
    (f"{MODEL}.initial_checkpoint", "/ckpt/imagenet"),
    (f"{TRAINER}.steps_per_loop", 100),
    (f"{TRAIN_DATA}.file_pattern", "train*.tfrecord"),
    (f"{TRAIN_DATA}.thing_id_mask_annotations", True),
    (f"{AUGMENTATIONS}.panoptic_copy_paste", {"panoptic_copy_paste_scale": [0.5]}),
    (f"{EVAL_DATA}.increase_small_instance_weights", True),
    (f"{PANOPTIC}.depth_head", {"output_channels": [1]}),
    (f"{INSTANCE}.next_regression_head", {"output_channels": [2]}),
    (f"{EVALUATOR}.save_raw_predictions", True),
    (f"{EVALUATOR}.maskwise_postprocessing", {"overlapping_threshold": [0.8]}),
]


@pytest.mark.parametrize("path, value", UNUSED_FIELDS, ids=[case[0] for case in UNUSED_FIELDS])
@pytest.mark.sweep
def test_a_deeplab2_field_axial_tf_does_not_use_is_named(path, value):
    experiment = _parsed()
    _remove(experiment, f"{SOLVER}.adamw_weight_decay")  # unused with sgd
    before = _converted(experiment)
    _set(experiment, path, value)
    after = _converted(experiment)
    assert after.config == before.config
    assert after.notes == before.notes + [f"full.textproto: not used by axial_tf: {path}"]


def test_unused_fields_are_named_in_one_note_in_file_order():
    experiment = _parsed()
    for path, value in UNUSED_FIELDS[:4]:
        _set(experiment, path, value)
    note = _converted(experiment).notes[-1]
    assert note == ("full.textproto: not used by axial_tf: "
                    f"{MODEL}.initial_checkpoint, {SOLVER}.adamw_weight_decay, {TRAINER}.steps_per_loop, "
                    f"{TRAIN_DATA}.file_pattern, experiment_name")  # fields added last come last


# ------------------------------------------------------------ augmentation scales

def _deeplab2_scale_factors(low, high, step):
    """DeepLab2's `get_random_scale` grid (data/preprocessing/preprocess_utils.py) of float32 proto values."""
    low, high, step = (float(np.float32(value)) for value in (low, high, step))
    return np.linspace(low, high, int((high - low) / step + 1))


def _our_scale_factors(augmentation, draws=300):
    """The factors `random_scale` draws with our converted settings (read off the resized length)."""
    length = 100000
    label = np.zeros([length, 1], np.int32)
    image = np.zeros([length, 1, 3], np.float32)
    lengths = {int(random_scale(image, label, np.array([seed, 0]), augmentation["min_scale"],
                                augmentation["max_scale"], augmentation["scale_step"])[1].shape[0])
               for seed in range(draws)}
    return np.array(sorted(lengths)) / length


@pytest.mark.parametrize("low, high, step, count", [
    (0.5, 2.0, 0.1, 15),   # DeepLab2's Cityscapes configs: 15 factors 1.5 / 14 apart, not 0.1
    (0.5, 1.5, 0.1, 10),   # its COCO configs: 10 factors 1 / 9 apart
    (0.5, 1.5, 0.25, 5),   # a step that divides the range in float32
    (0.5, 2.0, 0.4, 4),    # a step that does not divide it: DeepLab2 spreads the factors
])
@pytest.mark.sweep
def test_the_scale_factors_are_deeplab2s(low, high, step, count):
    experiment = _parsed()
    for name, value in (("min_scale_factor", low), ("max_scale_factor", high), ("scale_factor_step_size", step)):
        _set(experiment, f"{AUGMENTATIONS}.{name}", value)
    augmentation = _converted(experiment).config["data"]["augmentation"]
    deeplab2 = _deeplab2_scale_factors(low, high, step)
    assert len(deeplab2) == count
    np.testing.assert_allclose(_our_scale_factors(augmentation), deeplab2, atol=1e-4)


def test_a_min_scale_above_the_max_scale_is_named():
    experiment = _parsed()
    _set(experiment, f"{AUGMENTATIONS}.min_scale_factor", 1.75)
    with pytest.raises(ValueError, match=_pattern(f"{AUGMENTATIONS}.min_scale_factor") + ": 1.75 is larger"):
        _converted(experiment)


def test_an_unterminated_list_is_a_parse_error():
    with pytest.raises(TextProtoError, match=r"x\.textproto:2: the list of field 'atrous_rates'"):
        parse_textproto("decoder {\n  atrous_rates: [6, 12\n", "x.textproto")


def test_the_input_experiment_is_not_modified():
    experiment = _parsed()
    snapshot = copy.deepcopy(experiment)
    _converted(experiment)
    assert experiment == snapshot
