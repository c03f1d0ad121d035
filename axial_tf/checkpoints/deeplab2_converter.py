"""Reads DeepLab2 Panoptic-DeepLab checkpoints and experiment files into axial_tf.

DeepLab2 is not a dependency: checkpoints are read with `tf.train.load_checkpoint`
(object-based layout of DeepLab2's trainer) and experiment textprotos with a
small text-format reader. Only variables under the model items are taken;
optimizer slots, step counters and the object graph are ignored.
"""

import os

import tensorflow as tf

from axial_tf.checkpoints.deeplab2_names import assign_values, deeplab2_variable_map, name_from_checkpoint_key
from axial_tf.checkpoints.textproto import first, read_textproto

MODEL_ITEMS = (
    "encoder",
    "semantic_decoder",
    "semantic_head_without_last_layer",
    "semantic_last_layer",
    "instance_decoder",
    "instance_center_head_without_last_layer",
    "instance_center_head_last_layer",
    "instance_regression_head_without_last_layer",
    "instance_regression_head_last_layer",
)
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def panoptic_variable_map(model):
    """DeepLab2 names (checkpoint keys without underscores) of an `AxialDeepLab`'s variables."""
    names = deeplab2_variable_map(model.backbone, "encoder/")
    names.update(deeplab2_variable_map(model.semantic_decoder, "semantic_decoder/"))
    names.update(deeplab2_variable_map(model.instance_decoder, "instance_decoder/"))
    heads = (
        ("semantic_head", "semantic_last_layer", model.semantic_head),
        ("instance_center_head", "instance_center_head_last_layer", model.center_head),
        ("instance_regression_head", "instance_regression_head_last_layer", model.offset_head),
    )
    for item, last_item, head in heads:
        names.update(deeplab2_variable_map(head.conv1_bn_act, f"{item}_without_last_layer/conv1_bn_act/"))
        names.update(deeplab2_variable_map(head.final_conv, f"{last_item}/"))
    return names


def read_deeplab2_checkpoint(path, items=MODEL_ITEMS):
    """Model variables of a DeepLab2 checkpoint, keyed by DeepLab2 name.

    Args:
        path: a checkpoint prefix (`.../ckpt-1000`) or a directory holding a
            `checkpoint` state file (its latest checkpoint is read).
        items: top-level checkpoint items to read.

    Returns:
        dict `{"encoder/stage2/block1/...": numpy array}`.
    """
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if prefix is None:
        raise FileNotFoundError(f"No checkpoint found in directory {path} (no 'checkpoint' state file).")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as error:
        raise FileNotFoundError(f"Cannot read checkpoint {prefix}: {error}") from None
    values = {}
    for key in reader.get_variable_to_shape_map():
        if key.split("/")[0] in items and key.endswith(_VALUE_SUFFIX) and ".OPTIMIZER_SLOT" not in key:
            values[name_from_checkpoint_key(key)] = reader.get_tensor(key)
    if not values:
        raise ValueError(f"Checkpoint {prefix} has no variables under the DeepLab2 model items {list(items)}.")
    return values


def load_deeplab2_checkpoint(model, path, strict=True):
    """Loads a DeepLab2 Panoptic-DeepLab checkpoint into an `AxialDeepLab`.

    Args:
        model: the `AxialDeepLab` built with the matching architecture.
        path: checkpoint prefix or directory.
        strict: every model variable must be in the checkpoint; with False,
            missing ones keep their values (partial restore, e.g. a new head).

    Returns:
        dict with `restored` (count), `unused` (checkpoint names the model does not
        take) and `missing` (model names the checkpoint lacks, non-strict only).
    """
    values = read_deeplab2_checkpoint(path)
    targets = panoptic_variable_map(model)
    unused, missing = assign_values(targets, values, source=f"checkpoint {path}", strict=strict)
    return {"restored": len(set(targets) & set(values)), "unused": unused, "missing": missing}


def _decoder(options, fallback=None):
    """Our decoder settings from a DeepLab2 `DecoderOptions` message (`fallback` fills gaps)."""
    fallback = fallback or {}
    settings = dict(fallback)
    for ours, theirs in (
        ("feature_key", "feature_key"),
        ("decoder_channels", "decoder_channels"),
        ("aspp_channels", "aspp_channels"),
        ("aspp_use_only_1x1_proj", "aspp_use_only_1x1_proj_conv"),
    ):
        value = first(options, theirs)
        if value is not None:
            settings[ours] = value
    if options and options.get("atrous_rates"):
        settings["atrous_rates"] = list(options["atrous_rates"])
    return settings


def _low_level(messages):
    return {
        "low_level_feature_keys": [first(m, "feature_key") for m in messages],
        "low_level_channels": [first(m, "channels_project") for m in messages],
    }


def experiment_to_config(experiment, source="DeepLab2 experiment"):
    """Our experiment settings (a nested dict for `config_from_dict`) from a DeepLab2 `ExperimentOptions`.

    Args:
        experiment: parsed textproto (see `read_textproto`).
        source: file name for error messages.

    Raises:
        ValueError: the experiment is not a Panoptic-DeepLab model this
            converter can express (the message says which field).
    """
    model = first(experiment, "model_options")
    panoptic = first(model, "panoptic_deeplab")
    if panoptic is None:
        raise ValueError(f"{source}: model_options.panoptic_deeplab is missing; only Panoptic-DeepLab is supported.")
    backbone = first(model, "backbone")
    # DeepLab2 passes the proto's width multiplier over the instance's own (unset = 1.0).
    overrides = {
        "width_multiplier": first(backbone, "backbone_width_multiplier", default=1.0),
        "stem_width_multiplier": first(backbone, "stem_width_multiplier", default=1.0),
        "backbone_layer_multiplier": first(backbone, "backbone_layer_multiplier", default=1.0),
        "drop_path_keep_prob": first(backbone, "drop_path_keep_prob", default=1.0),
        "drop_path_schedule": first(backbone, "drop_path_schedule", default="constant"),
    }
    semantic = _decoder(first(model, "decoder"))
    semantic.update(_low_level(panoptic.get("low_level", [])))
    semantic["head_channels"] = first(panoptic, "semantic_head", "head_channels")
    instance_options = first(panoptic, "instance")
    instance = _decoder(first(instance_options, "instance_decoder_override"), fallback=semantic)
    if instance_options.get("low_level_override"):
        instance.update(_low_level(instance_options["low_level_override"]))
    center_channels = first(instance_options, "center_head", "head_channels")
    regression_channels = first(instance_options, "regression_head", "head_channels")
    if center_channels != regression_channels:
        raise ValueError(
            f"{source}: center_head.head_channels ({center_channels}) differs from regression_head.head_channels "
            f"({regression_channels}); axial_tf's instance heads share one head_channels."
        )
    instance["head_channels"] = center_channels
    losses = first(experiment, "trainer_options", "loss_options")
    evaluator = first(experiment, "evaluator_options")
    train_data = first(experiment, "train_dataset_options")
    crop = (train_data or {}).get("crop_size") or [1025, 2049]
    return {
        "model": {
            "task": "panoptic",
            "backbone": first(backbone, "name"),
            "backbone_overrides": overrides,
            "output_stride": first(backbone, "output_stride", default=32),
            "num_classes": first(panoptic, "semantic_head", "output_channels"),
            "semantic_decoder": semantic,
            "instance_decoder": instance,
        },
        "data": {"dataset": first(train_data, "dataset", default="cityscapes_panoptic"), "crop_size": list(crop)},
        "losses": {
            "semantic_weight": first(losses, "semantic_loss", "weight", default=1.0),
            "semantic_top_k_percent": first(losses, "semantic_loss", "top_k_percent", default=1.0),
            "center_weight": first(losses, "center_loss", "weight", default=200.0),
            "offset_weight": first(losses, "regression_loss", "weight", default=0.01),
            "small_instance_weight": first(train_data, "small_instance_weight", default=1.0),
        },
        "optimizer": {
            "learning_rate": first(experiment, "trainer_options", "solver_options", "base_learning_rate",
                                   default=1e-4),
        },
        "training": {
            "steps": first(experiment, "trainer_options", "solver_options", "training_number_of_steps",
                           default=60000),
            "batch_size": first(train_data, "batch_size", default=32),
        },
        "evaluation": {
            "postprocessing": {
                "center_threshold": first(evaluator, "center_score_threshold", default=0.1),
                "nms_kernel": first(evaluator, "nms_kernel", default=3),
                "keep_k_centers": first(evaluator, "keep_k_centers", default=400),
                "stuff_area_limit": first(evaluator, "stuff_area_limit", default=0),
                "merge_style": (
                    "merge_op" if first(evaluator, "merge_semantic_and_instance_with_tf_op", default=True)
                    else "tf_merge"
                ),
            },
        },
    }


def read_deeplab2_experiment(path):
    """`experiment_to_config` of a DeepLab2 experiment textproto file."""
    return experiment_to_config(read_textproto(path), source=str(path))
