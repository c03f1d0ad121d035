"""Reads DeepLab2 Panoptic-DeepLab checkpoints and experiment files into axial_tf.

DeepLab2 is not a dependency: checkpoints are read with `tf.train.load_checkpoint`
(object-based layout of DeepLab2's trainer) and experiment textprotos with a
small text-format reader. Only variables under the model items are taken;
optimizer slots, step counters and the object graph are ignored. An experiment
field the file omits takes DeepLab2's proto default (`DEEPLAB2_DEFAULTS`); a field
DeepLab2's protos do not have (`DEEPLAB2_FIELDS`) is an error, as in DeepLab2.
Options the axial_tf config cannot express, and DeepLab2 fields it does not use,
are named in the conversion's notes, so nothing in the file is silently dropped.
"""

import collections
import difflib
import math
import os
import warnings

import numpy as np

from axial_tf.checkpoints.deeplab2_names import assign_values, deeplab2_variable_map, name_from_checkpoint_key
from axial_tf.checkpoints.textproto import read_textproto
from axial_tf.utils.errors import error_line
from axial_tf.utils.optional_imports import require_tensorflow

tf = require_tensorflow("Reading DeepLab2 checkpoints")

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
    except tf.errors.NotFoundError as error:
        raise FileNotFoundError(f"Cannot read checkpoint {prefix}: {error_line(error)}") from None
    except (tf.errors.OpError, ValueError) as error:  # a damaged index
        raise ValueError(f"Checkpoint {prefix} is unreadable: {error_line(error)}") from None
    values = {}
    for key in reader.get_variable_to_shape_map():
        if key.split("/")[0] in items and key.endswith(_VALUE_SUFFIX) and ".OPTIMIZER_SLOT" not in key:
            try:
                values[name_from_checkpoint_key(key)] = reader.get_tensor(key)
            except (tf.errors.OpError, IndexError) as error:  # a truncated or corrupt data file
                raise ValueError(f"Checkpoint {prefix} is unreadable at {key}: {error_line(error)}") from None
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


# ------------------------------------------------------------------ experiment files


class Repeated(collections.namedtuple("Repeated", "item_type")):
    """A repeated scalar field of `item_type` (DeepLab2's default: no values)."""


def _fields(scalars, **messages):
    """One message's fields: `scalars` (names separated by spaces) hold values; `messages` name their type."""
    return {**dict.fromkeys(scalars.split()), **messages}


# Every field of every message a DeepLab2 experiment can hold, in proto order: a field
# name maps to the message type it holds (None: a value or a list of values). Read off
# google-research/deeplab2's config.proto, model.proto, trainer.proto, dataset.proto and
# evaluator.proto (commit 64bc1c1, 2023-04-17); nested messages go by their short name.
# A field missing here is rejected as unknown, as DeepLab2's own text-format parser does.
DEEPLAB2_FIELDS = {
    # config.proto
    "ExperimentOptions": _fields(
        "experiment_name", model_options="ModelOptions", trainer_options="TrainerOptions",
        train_dataset_options="DatasetOptions", evaluator_options="EvaluatorOptions",
        eval_dataset_options="DatasetOptions"),
    # model.proto; the meta-architectures other than panoptic_deeplab are known so that
    # their experiments are named as unsupported, not as misspelled.
    "ModelOptions": _fields(
        "initial_checkpoint restore_semantic_last_layer_from_initial_checkpoint "
        "restore_instance_last_layer_from_initial_checkpoint",
        backbone="BackboneOptions", decoder="DecoderOptions", deeplab_v3="DeeplabV3Options",
        deeplab_v3_plus="DeeplabV3PlusOptions", panoptic_deeplab="PanopticDeeplabOptions",
        motion_deeplab="MotionDeepLabOptions", max_deeplab="MaXDeepLabOptions",
        vip_deeplab="PanopticDeeplabOptions"),
    "BackboneOptions": _fields(
        "name output_stride pretrained_weights use_squeeze_and_excite drop_path_keep_prob drop_path_schedule "
        "stem_width_multiplier backbone_width_multiplier backbone_layer_multiplier use_sac_beyond_stride"),
    "DecoderOptions": _fields(
        "feature_key decoder_channels decoder_conv_type aspp_channels atrous_rates aspp_use_only_1x1_proj_conv"),
    "LowLevelOptions": _fields("feature_key channels_project"),
    "HeadOptions": _fields(
        "output_channels head_channels head_conv_type max_value_after_activation min_value_after_activation"),
    "InstanceOptions": _fields(
        "enable", low_level_override="LowLevelOptions", instance_decoder_override="DecoderOptions",
        center_head="HeadOptions", regression_head="HeadOptions", next_regression_head="HeadOptions"),
    "DeeplabV3Options": _fields("num_classes"),
    "DeeplabV3PlusOptions": _fields("num_classes", low_level="LowLevelOptions"),
    "PanopticDeeplabOptions": _fields(
        "", low_level="LowLevelOptions", instance="InstanceOptions", semantic_head="HeadOptions",
        depth_head="HeadOptions"),
    "MotionDeepLabOptions": _fields(
        "", low_level="LowLevelOptions", instance="InstanceOptions", semantic_head="HeadOptions",
        motion_head="HeadOptions"),
    # (transformer_decoder_drop_path_keep_prob is not in the public proto, but DeepLab2's own
    # configs/ade20k/kmax_deeplab/kmax_meta_convnext_large_os32.textproto gives it.)
    "MaXDeepLabOptions": _fields(
        "instance_discrimination_sample_k instance_discrimination_sample_temperature semantic_sample_k "
        "semantic_sample_temperature transformer_decoder_drop_path_keep_prob",
        pixel_space_head="HeadOptions", auxiliary_low_level="LowLevelOptions", auxiliary_semantic_head="HeadOptions"),
    # trainer.proto
    "TrainerOptions": _fields(
        "num_checkpoints_to_keep save_checkpoints_steps save_summaries_steps steps_per_loop",
        loss_options="LossOptions", solver_options="SolverOptions"),
    "SolverOptions": _fields(
        "use_sync_batchnorm batchnorm_momentum batchnorm_epsilon learning_policy base_learning_rate "
        "poly_learning_power poly_end_learning_rate warmup_steps optimizer weight_decay adamw_weight_decay "
        "use_gradient_clipping clip_gradient_norm training_number_of_steps backbone_learning_rate_multiplier"),
    "LossOptions": dict.fromkeys(
        ("semantic_loss", "center_loss", "regression_loss", "motion_loss", "next_regression_loss", "pq_style_loss",
         "mask_id_cross_entropy_loss", "instance_discrimination_loss", "depth_loss"), "SingleLossOptions"),
    "SingleLossOptions": _fields("name weight top_k_percent"),
    # dataset.proto
    "DatasetOptions": _fields(
        "dataset file_pattern batch_size crop_size min_resize_value max_resize_value resize_factor sigma "
        "increase_small_instance_weights small_instance_threshold small_instance_weight use_two_frames "
        "decode_groundtruth_label thing_id_mask_annotations max_thing_id use_next_frame cameras_to_use",
        augmentations="AugmentationOptions"),
    "AugmentationOptions": _fields(
        "min_scale_factor max_scale_factor scale_factor_step_size autoaugment_policy_name",
        panoptic_copy_paste="PanopticCopyPasteOptions"),
    "PanopticCopyPasteOptions": _fields(
        "panoptic_copy_paste_scale panoptic_copy_paste_thing_option panoptic_copy_paste_stuff_option "
        "panoptic_copy_paste_void_option"),
    # evaluator.proto
    "EvaluatorOptions": _fields(
        "eval_steps eval_interval continuous_eval_timeout use_tf_function stuff_area_limit thing_area_limit "
        "transformer_class_confidence_threshold pixel_confidence_threshold transformer_post_processing "
        "center_score_threshold nms_kernel keep_k_centers save_predictions override_save_dir num_vis_samples "
        "save_raw_predictions raw_panoptic_format convert_raw_to_eval_ids add_flipped_images eval_scales "
        "merge_semantic_and_instance_with_tf_op detailed_ap_metrics",
        maskwise_postprocessing="MaskwisePostProcessingOptions"),
    "MaskwisePostProcessingOptions": _fields(
        "transformer_class_confidence_threshold_thing transformer_class_confidence_threshold_stuff "
        "overlapping_threshold reorder_class_weight reorder_mask_weight"),
}

# DeepLab2's default of every experiment field this converter reads, per proto
# message (the protos of `DEEPLAB2_FIELDS`): the `[default = ...]` of the field, or
# the proto2 zero value ("", 0, 0.0, false, no values) of a field declared without
# one. Fields whose zero value DeepLab2 cannot build with (a feature key, a head
# width) are read with `_Message.required`, which names them when absent.
DEEPLAB2_DEFAULTS = {
    # model.proto
    "BackboneOptions": {
        "name": "resnet50",
        "output_stride": 32,
        "use_squeeze_and_excite": False,
        "drop_path_keep_prob": 1.0,
        "drop_path_schedule": "constant",
        "stem_width_multiplier": 1.0,
        "backbone_width_multiplier": 1.0,
        "backbone_layer_multiplier": 1.0,
        "use_sac_beyond_stride": -1,
    },
    "DecoderOptions": {
        "feature_key": "",
        "decoder_channels": 256,
        "decoder_conv_type": "depthwise_separable_conv",
        "aspp_channels": 256,
        "atrous_rates": Repeated(int),
        "aspp_use_only_1x1_proj_conv": False,
    },
    "LowLevelOptions": {"feature_key": "", "channels_project": 0},
    "HeadOptions": {"output_channels": 0, "head_channels": 0, "head_conv_type": "depthwise_separable_conv"},
    "InstanceOptions": {"enable": True},
    # trainer.proto
    "TrainerOptions": {"num_checkpoints_to_keep": 5, "save_checkpoints_steps": 1000, "save_summaries_steps": 1000},
    "SingleLossOptions": {"name": "", "weight": 1.0, "top_k_percent": 1.0},
    "SolverOptions": {
        "use_sync_batchnorm": True,
        "batchnorm_momentum": 0.99,
        "batchnorm_epsilon": 0.001,
        "learning_policy": "poly",
        "base_learning_rate": 1e-3,
        "poly_learning_power": 0.9,
        "poly_end_learning_rate": 0.0,
        "warmup_steps": 0,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "adamw_weight_decay": 0.0,
        "use_gradient_clipping": False,
        "clip_gradient_norm": 10.0,
        "training_number_of_steps": 60000,
        "backbone_learning_rate_multiplier": 1.0,
    },
    # dataset.proto (the training and the evaluation set)
    "DatasetOptions": {
        "dataset": "",
        "batch_size": 32,
        "crop_size": Repeated(int),
        "sigma": 8.0,
        "increase_small_instance_weights": False,
        "small_instance_threshold": 4096,
        "small_instance_weight": 3.0,
    },
    "AugmentationOptions": {
        "min_scale_factor": 1.0,
        "max_scale_factor": 1.0,
        "scale_factor_step_size": 0.25,
        "autoaugment_policy_name": "",
    },
    # evaluator.proto
    "EvaluatorOptions": {
        "eval_steps": -1,
        "eval_interval": 5000,
        "continuous_eval_timeout": -1,
        "stuff_area_limit": 0,
        "center_score_threshold": 0.1,
        "nms_kernel": 3,
        "keep_k_centers": 400,
        "add_flipped_images": False,
        "eval_scales": Repeated(float),
        "merge_semantic_and_instance_with_tf_op": True,
    },
}

# String fields DeepLab2's code reads as enumerations, with the values it accepts
# (trainer/trainer.py, model/loss/loss_builder.py, model/layers/drop_path.py,
# data/preprocessing/autoaugment_policy.py and the conv-type comments of model.proto).
DEEPLAB2_CHOICES = {
    ("BackboneOptions", "drop_path_schedule"): ("constant", "linear"),
    ("DecoderOptions", "decoder_conv_type"): ("depthwise_separable_conv", "standard_conv"),
    ("HeadOptions", "head_conv_type"): ("depthwise_separable_conv", "standard_conv"),
    ("SingleLossOptions", "name"): ("softmax_cross_entropy", "l1", "mse", "depth_loss"),
    ("SolverOptions", "learning_policy"): ("poly", "cosine"),
    ("SolverOptions", "optimizer"): ("adam", "sgd", "adamw"),
    ("AugmentationOptions", "autoaugment_policy_name"): (
        "", "simple_classification_policy_magnitude_scale_0.2", "simple_classification_policy"),
}

# DeepLab2 dataset names with an axial_tf reader of another name; others are kept as they are.
_DATASET_NAMES = {"coco_panoptic": "coco2017_panoptic"}
# Batch-norm settings of every axial_tf model (not configurable).
_AXIAL_TF_BATCH_NORM = {"batchnorm_momentum": 0.99, "batchnorm_epsilon": 0.001}
# The DeepLab2 autoaugment policy that axial_tf's `data.augmentation.autoaugment` stands for.
_AXIAL_TF_AUTOAUGMENT = "simple_classification_policy_magnitude_scale_0.2"
# DeepLab2's losses whose function axial_tf fixes: (field, its name there, our weight key).
_LOSSES = (
    ("semantic_loss", "softmax_cross_entropy", "semantic_weight"),
    ("center_loss", "mse", "center_weight"),
    ("regression_loss", "l1", "offset_weight"),
)
# ModelOptions' meta-architectures other than Panoptic-DeepLab (one oneof in model.proto).
_OTHER_META_ARCHITECTURES = {
    "deeplab_v3": "DeepLabV3",
    "deeplab_v3_plus": "DeepLabV3+",
    "motion_deeplab": "Motion-DeepLab",
    "max_deeplab": "MaX-DeepLab (and kMaX-DeepLab)",
    "vip_deeplab": "ViP-DeepLab",
}
_SCALAR_TYPES = {bool: "a bool", int: "an integer", float: "a number", str: "a string"}
# Spellings of a bool that text format accepts besides true/false (which the parser reads).
_BOOL_SPELLINGS = {1: True, 0: False, "t": True, "f": False}


class DeepLab2OptionWarning(UserWarning):
    """A DeepLab2 experiment option that the converted axial_tf config cannot express."""


class ExperimentConversion(collections.namedtuple("ExperimentConversion", "config notes")):
    """`config`: nested dict for `config_from_dict`; `notes`: one line per option it cannot express."""


class _Message:
    """One DeepLab2 message of a parsed experiment; absent fields read as DeepLab2's defaults.

    Every field the conversion reads is recorded, so that the fields it never read can be named.

    Args:
        fields: `{name: [values]}` from `parse_textproto`; None when the message is absent.
        kind: the message's key in `DEEPLAB2_FIELDS` (its proto message name).
        path: dotted path of the message in the experiment (for errors and notes).
        source: the experiment's file name (for errors and notes).
        reads: the set of field paths read so far, shared by all messages of the experiment.
    """

    def __init__(self, fields, kind, path, source, reads):
        self.fields = fields or {}
        self.present = fields is not None
        self.kind = kind
        self.path = path
        self.source = source
        self.reads = reads

    @classmethod
    def experiment(cls, fields, source):
        """The root `ExperimentOptions` message of a parsed experiment."""
        return cls(fields, "ExperimentOptions", "", source, set())

    def has(self, name):
        """Whether the file gives the field (a repeated one: at least one value)."""
        self.reads.add(self.field_path(name))
        return bool(self.fields.get(name))

    def get(self, name):
        """The field's value, or DeepLab2's default when absent (type and enumeration checked)."""
        self.reads.add(self.field_path(name))
        default = DEEPLAB2_DEFAULTS[self.kind][name]
        values = self.fields.get(name, [])
        if isinstance(default, Repeated):
            return [self._checked(name, value, default.item_type) for value in values]
        if len(values) > 1:
            raise self.error(name, f"is given {len(values)} times but is not a repeated field")
        return self._checked(name, values[0], type(default)) if values else default

    def required(self, name):
        """A field without a usable DeepLab2 default: its absence is an error."""
        if not self.has(name):
            raise self.error(name, "is missing (DeepLab2 has no default for it)")
        return self.get(name)

    def child(self, name):
        """The sub-message `name` (absent: every field reads as its default)."""
        messages = self.children(name)
        if len(messages) > 1:
            raise self.error(name, f"is given {len(messages)} times but is not a repeated field")
        return messages[0] if messages else _Message(None, self._kind_of(name), self.field_path(name), self.source,
                                                     self.reads)

    def children(self, name):
        """The messages of a repeated message field, in file order."""
        self.reads.add(self.field_path(name))
        return self._submessages(name)

    def check_field_names(self):
        """Raises on the first field, here or in a sub-message, that DeepLab2's proto does not have.

        Raises:
            ValueError: one line naming file and field path, with the closest known field name.
        """
        known = DEEPLAB2_FIELDS[self.kind]
        for name, values in self.fields.items():
            if name not in known:
                raise self.error(name, f"unknown field of DeepLab2's {self.kind}{_closest_name(name, known)}")
            for value in values:
                if isinstance(value, dict) != (known[name] is not None):
                    expected = f"a {known[name]} message {{...}}" if known[name] else "a value, not a message"
                    raise self.error(name, f"expected {expected}, got {_shown(value)}")
            for message in self._submessages(name):
                message.check_field_names()

    def unread_fields(self):
        """Paths of the fields the file gives that the conversion never read (an unread message: its path)."""
        unread = []
        for name in self.fields:
            if self.field_path(name) not in self.reads:
                unread.append(self.field_path(name))
            else:
                for message in self._submessages(name):
                    unread.extend(message.unread_fields())
        return unread

    def field_path(self, name):
        return f"{self.path}.{name}" if self.path else name

    def note(self, name, text):
        return f"{self.source}: {self.field_path(name)}: {text}"

    def error(self, name, problem):
        return ValueError(self.note(name, problem))

    def _kind_of(self, name):
        return DEEPLAB2_FIELDS[self.kind][name]

    def _submessages(self, name):
        """The messages a field holds (none for a value field), without recording a read."""
        kind = self._kind_of(name)
        values = self.fields.get(name, []) if kind else []
        path = self.field_path(name)
        if len(values) == 1:
            return [_Message(values[0], kind, path, self.source, self.reads)]
        return [_Message(v, kind, f"{path}[{i}]", self.source, self.reads) for i, v in enumerate(values)]

    def _checked(self, name, value, expected_type):
        if expected_type is bool and not isinstance(value, bool):
            value = _BOOL_SPELLINGS.get(value if isinstance(value, (int, str)) else None, value)
        if not _is_of_type(value, expected_type):
            raise self.error(name, f"expected {_SCALAR_TYPES[expected_type]}, got {value!r}")
        choices = DEEPLAB2_CHOICES.get((self.kind, name))
        if choices and value not in choices:
            accepted = ", ".join(choice or '""' for choice in choices)
            raise self.error(name, f"{value!r} is not a value DeepLab2 accepts ({accepted})")
        return float(value) if expected_type is float else value


def _closest_name(name, known):
    """`; did you mean 'x'?` with the known field name closest to `name`, else the list of known names."""
    closest = difflib.get_close_matches(name, known, n=1)
    if closest:
        return f"; did you mean {closest[0]!r}?"
    return f" (its fields: {', '.join(known)})"


def _shown(value):
    """A parsed value for an error: messages abbreviated, so that the error stays one short line."""
    return "a message {...}" if isinstance(value, dict) else repr(value)


def _is_of_type(value, expected_type):
    """Type check of a parsed scalar (bools are not numbers; integers are valid floats)."""
    if expected_type is bool or isinstance(value, bool):
        return expected_type is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if expected_type is float else expected_type)


def _reject_unless(message, name, supported, reason):
    """Raises when a field's value (default included) is not one axial_tf can build.

    Args:
        message: the `_Message` holding the field.
        name: the field.
        supported: the values axial_tf can build.
        reason: why others are not supported, for the error.
    """
    value = message.get(name)
    if value not in supported:
        raise message.error(name, f"{value!r} is not supported: {reason}")


def _backbone_settings(backbone):
    """`backbone`, `output_stride` and `backbone_overrides` of our model section."""
    _reject_unless(backbone, "use_squeeze_and_excite", (False,), "axial_tf's backbones have no squeeze-and-excite")
    if backbone.get("use_sac_beyond_stride") > 0:
        raise backbone.error("use_sac_beyond_stride", "switchable atrous convolution is not supported by axial_tf")
    # DeepLab2 passes these proto values, defaults included, over the backbone
    # instance's own settings: an unset width multiplier means 1.0, whatever the instance says.
    overrides = {
        "width_multiplier": backbone.get("backbone_width_multiplier"),
        "stem_width_multiplier": backbone.get("stem_width_multiplier"),
        "backbone_layer_multiplier": backbone.get("backbone_layer_multiplier"),
        "drop_path_keep_prob": backbone.get("drop_path_keep_prob"),
        "drop_path_schedule": backbone.get("drop_path_schedule"),
    }
    return {"backbone": backbone.get("name"), "output_stride": backbone.get("output_stride"),
            "backbone_overrides": overrides}


def _decoder_settings(options):
    """ASPP and fusion settings of one branch from a `DecoderOptions` message."""
    _reject_unless(options, "decoder_conv_type", ("depthwise_separable_conv",),
                   "axial_tf's decoders fuse with depthwise-separable convolutions")
    only_1x1 = options.get("aspp_use_only_1x1_proj_conv")
    rates = options.get("atrous_rates")
    if not only_1x1 and len(rates) != 3:
        raise options.error("atrous_rates", f"the full ASPP (aspp_use_only_1x1_proj_conv false) needs exactly "
                                            f"3 atrous rates, got {rates}")
    return {
        "feature_key": options.required("feature_key"),
        "decoder_channels": options.get("decoder_channels"),
        "aspp_channels": options.get("aspp_channels"),
        "aspp_use_only_1x1_proj": only_1x1,
        "atrous_rates": rates,
    }


def _low_level_settings(messages):
    """Low-level feature keys and projection widths from `LowLevelOptions` messages."""
    return {
        "low_level_feature_keys": [m.required("feature_key") for m in messages],
        "low_level_channels": [m.required("channels_project") for m in messages],
    }


def _head_channels(head, output_channels=None):
    """A head's 5x5-conv width, checking what axial_tf's head can build.

    Args:
        head: a `HeadOptions` message.
        output_channels: the fixed output width of axial_tf's head (None: any).
    """
    _reject_unless(head, "head_conv_type", ("depthwise_separable_conv",),
                   "axial_tf's heads use depthwise-separable convolutions")
    if output_channels is not None and head.required("output_channels") != output_channels:
        raise head.error("output_channels", f"{head.get('output_channels')} is not supported: this axial_tf "
                                            f"head predicts {output_channels} channel(s)")
    return head.required("head_channels")


def _model_settings(model):
    """Our `model` section from DeepLab2's `ModelOptions`."""
    for field, title in _OTHER_META_ARCHITECTURES.items():
        if model.has(field):
            raise model.error(field, f"{title} is not supported; axial_tf converts Panoptic-DeepLab "
                                     "(panoptic_deeplab) experiments only")
    panoptic = model.child("panoptic_deeplab")
    if not panoptic.present:
        raise model.error("panoptic_deeplab", "is missing; only Panoptic-DeepLab experiments are supported")
    instance_options = panoptic.child("instance")
    _reject_unless(instance_options, "enable", (True,), "axial_tf's Panoptic-DeepLab always has an instance branch")
    semantic_options = model.child("decoder")
    low_level = panoptic.children("low_level")
    semantic_head = panoptic.child("semantic_head")
    semantic = {**_decoder_settings(semantic_options), **_low_level_settings(low_level),
                "head_channels": _head_channels(semantic_head)}
    # DeepLab2 takes the whole override message when it is given (its absent fields are
    # proto defaults, not the semantic branch's values), else the semantic branch's options.
    override = instance_options.child("instance_decoder_override")
    instance_low_level = instance_options.children("low_level_override") or low_level
    center = _head_channels(instance_options.child("center_head"), output_channels=1)
    regression = _head_channels(instance_options.child("regression_head"), output_channels=2)
    if center != regression:
        raise instance_options.error(
            "center_head.head_channels", f"{center} differs from regression_head.head_channels ({regression}); "
            "axial_tf's instance heads share one head_channels")
    instance = {**_decoder_settings(override if override.present else semantic_options),
                **_low_level_settings(instance_low_level), "head_channels": center}
    return {
        "task": "panoptic",
        **_backbone_settings(model.child("backbone")),
        "num_classes": semantic_head.required("output_channels"),
        "semantic_decoder": semantic,
        "instance_decoder": instance,
    }


def _loss_settings(losses, notes):
    """Loss weights and top-k of our `losses` section.

    Args:
        losses: the `LossOptions` message.
        notes: list receiving a line per loss option axial_tf cannot express.
    """
    settings = {}
    for field, function, weight_key in _LOSSES:
        loss = losses.child(field)
        # DeepLab2 builds only the losses whose message is present.
        settings[weight_key] = loss.get("weight") if loss.present else 0.0
        if loss.present and loss.required("name") != function:
            notes.append(loss.note("name", f"{loss.get('name')!r} cannot be expressed: axial_tf's loss here is "
                                           f"{function!r}"))
        if field == "semantic_loss":
            settings["semantic_top_k_percent"] = loss.get("top_k_percent")
        elif loss.get("top_k_percent") != 1.0:
            notes.append(loss.note("top_k_percent", f"{loss.get('top_k_percent')} cannot be expressed: axial_tf "
                                                    "averages this loss over all pixels"))
    ours = {field for field, _, _ in _LOSSES}
    for field in DEEPLAB2_FIELDS["LossOptions"]:
        if field not in ours and losses.has(field):
            notes.append(losses.note(field, "cannot be expressed: axial_tf's Panoptic-DeepLab has no such loss"))
    return settings


def _target_settings(train_data):
    """Target options of our `losses` section from the training set's `DatasetOptions`."""
    # DeepLab2's sample generator weights small instances only when asked to.
    increase = train_data.get("increase_small_instance_weights")
    return {
        "center_sigma": train_data.get("sigma"),
        "small_instance_area": train_data.get("small_instance_threshold"),
        "small_instance_weight": train_data.get("small_instance_weight") if increase else 1.0,
    }


def _weight_decay(solver, notes):
    """Our `weight_decay`: decoupled for adamw, an L2 penalty for adam and sgd.

    Args:
        solver: the `SolverOptions` message.
        notes: list receiving a line where DeepLab2's decay differs from ours.
    """
    l2 = solver.get("weight_decay")
    if solver.get("optimizer") != "adamw":
        if l2:
            notes.append(solver.note("weight_decay", "DeepLab2 applies it to the encoder's weights only; "
                                                     "axial_tf's L2 penalty also covers the decoders and heads"))
        return l2
    if l2:
        notes.append(solver.note("weight_decay", f"{l2} cannot be expressed: with adamw, axial_tf has only the "
                                                 "decoupled decay (adamw_weight_decay), no L2 penalty"))
    decoupled = solver.get("adamw_weight_decay")
    if decoupled:
        notes.append(solver.note("adamw_weight_decay", "DeepLab2 decays only kernels; axial_tf also decays the "
                                                       "positional embeddings"))
    return decoupled


def _clip_gradient_norm(solver, notes):
    """Our `clip_gradient_norm` (None: off), on when DeepLab2's trainer clips.

    Args:
        solver: the `SolverOptions` message.
        notes: list receiving a line on where DeepLab2 clips.
    """
    norm = solver.get("clip_gradient_norm")
    if not (solver.get("use_gradient_clipping") and norm > 0.0):
        return None
    notes.append(solver.note("use_gradient_clipping", "DeepLab2 clips each replica's gradient before summing "
                                                      "them; axial_tf clips the sum (the same on one device)"))
    return norm


def _schedule_notes(solver):
    """Notes on schedule and batch-norm options our optimizer section cannot express."""
    notes = []
    poly = solver.get("learning_policy") == "poly"
    if not poly and solver.has("poly_end_learning_rate"):
        notes.append(solver.note("poly_end_learning_rate", "has no effect with the cosine policy: DeepLab2's "
                                                           "cosine decays to 0"))
    if poly and solver.get("poly_end_learning_rate") and solver.get("backbone_learning_rate_multiplier") != 1.0:
        notes.append(solver.note("backbone_learning_rate_multiplier", "DeepLab2 does not scale "
                                 "poly_end_learning_rate for the backbone; axial_tf scales both rates"))
    for name, ours in _AXIAL_TF_BATCH_NORM.items():
        if not math.isclose(solver.get(name), ours, rel_tol=1e-6):
            notes.append(solver.note(name, f"{solver.get(name)} cannot be expressed: axial_tf's batch norms "
                                           f"use {ours}"))
    return notes


def _optimizer_settings(solver, notes):
    """Our `optimizer` section.

    Args:
        solver: the `SolverOptions` message.
        notes: list receiving a line per solver option axial_tf cannot express.
    """
    notes.extend(_schedule_notes(solver))
    policy = solver.get("learning_policy")
    return {
        "name": solver.get("optimizer"),
        "learning_rate": solver.get("base_learning_rate"),
        "schedule": policy,
        "warmup_steps": solver.get("warmup_steps"),
        "poly_power": solver.get("poly_learning_power"),
        "end_learning_rate": solver.get("poly_end_learning_rate") if policy == "poly" else 0.0,
        "momentum": 0.9,  # DeepLab2's SGD has a fixed momentum of 0.9, without Nesterov
        "nesterov": False,
        "weight_decay": _weight_decay(solver, notes),
        "clip_gradient_norm": _clip_gradient_norm(solver, notes),
        "backbone_lr_multiplier": solver.get("backbone_learning_rate_multiplier"),
    }


def _training_settings(trainer, solver, train_data):
    """Our `training` section from `TrainerOptions`, `SolverOptions` and the training set's options."""
    return {
        "steps": solver.get("training_number_of_steps"),
        "batch_size": train_data.get("batch_size"),
        "sync_batch_norm": solver.get("use_sync_batchnorm"),
        "checkpoint_interval": trainer.get("save_checkpoints_steps"),
        "keep_checkpoints": trainer.get("num_checkpoints_to_keep"),
        "summary_interval": trainer.get("save_summaries_steps"),
    }


def _scale_spacing(low, high, step):
    """The spacing of DeepLab2's random scale factors, as our `data.augmentation.scale_step`.

    DeepLab2 draws from `linspace(low, high, int((high - low) / step + 1))` of the float32
    proto values, so its factors are `step` apart only when `step` divides the range
    exactly in float32: its 0.5 to 2.0 by 0.1 draws 15 factors 1.5 / 14 apart (0.1 in
    float32 is a little above 0.1), not 16 factors 0.1 apart. Our grid, `low` plus
    multiples of `scale_step` up to `high`, is then the same set of factors.

    Args:
        low: DeepLab2's `min_scale_factor`.
        high: DeepLab2's `max_scale_factor` (at least `low`).
        step: DeepLab2's `scale_factor_step_size` (0: a continuous factor).
    """
    low32, high32, step32 = (float(np.float32(value)) for value in (low, high, step))
    count = int((high32 - low32) / step32 + 1) if step32 > 0 else 0
    return (high - low) / (count - 1) if count > 1 else step


def _augmentation_settings(augmentations, notes):
    """Our `data.augmentation` from the training set's `AugmentationOptions`.

    DeepLab2 always flips training crops left-right (with probability 0.5) and has no
    photometric jitter besides its autoaugment policy, so our switches are set to match.

    Args:
        augmentations: the `AugmentationOptions` message.
        notes: list receiving a line for an autoaugment policy axial_tf does not implement.
    """
    low, high = augmentations.get("min_scale_factor"), augmentations.get("max_scale_factor")
    if low > high:
        raise augmentations.error("min_scale_factor", f"{low} is larger than max_scale_factor {high} "
                                                      "(DeepLab2 rejects it)")
    policy = augmentations.get("autoaugment_policy_name")
    if policy not in ("", _AXIAL_TF_AUTOAUGMENT):
        notes.append(augmentations.note("autoaugment_policy_name", f"{policy!r} cannot be expressed: axial_tf "
                                        f"implements only {_AXIAL_TF_AUTOAUGMENT!r}; converted without autoaugment"))
    return {
        "min_scale": low,
        "max_scale": high,
        "scale_step": _scale_spacing(low, high, augmentations.get("scale_factor_step_size")),
        "horizontal_flip": True,
        "photometric": False,
        "autoaugment": policy == _AXIAL_TF_AUTOAUGMENT,
    }


def _data_settings(train_data, notes):
    """Our `data` section from the training set's `DatasetOptions`.

    Args:
        train_data: the `train_dataset_options` message.
        notes: list receiving a line per option axial_tf cannot express.
    """
    dataset = train_data.required("dataset")
    return {
        "dataset": _DATASET_NAMES.get(dataset, dataset),
        "crop_size": train_data.required("crop_size"),
        "augmentation": _augmentation_settings(train_data.child("augmentations"), notes),
    }


def _eval_data_notes(eval_data, train_data):
    """Notes where DeepLab2's evaluation set differs from what our evaluation reads.

    axial_tf evaluates `data.eval_split` of the training dataset, padded to the training crop.

    Args:
        eval_data: the `eval_dataset_options` message.
        train_data: the `train_dataset_options` message.
    """
    notes = []
    if eval_data.has("dataset") and eval_data.get("dataset") != train_data.get("dataset"):
        notes.append(eval_data.note("dataset", f"{eval_data.get('dataset')!r} cannot be expressed: axial_tf "
                                               f"evaluates the training dataset ({train_data.get('dataset')!r})"))
    crop_size = eval_data.get("crop_size")
    if crop_size and crop_size != train_data.get("crop_size"):
        notes.append(eval_data.note("crop_size", f"{crop_size} cannot be expressed: axial_tf pads evaluation "
                                                 f"images to the training crop {train_data.get('crop_size')}"))
    return notes


def _evaluation_settings(evaluator, eval_data):
    """Our `evaluation` section from DeepLab2's `EvaluatorOptions` and evaluation set's `DatasetOptions`."""
    keep_k_centers = evaluator.get("keep_k_centers")
    if keep_k_centers <= 0:
        raise evaluator.error("keep_k_centers", f"{keep_k_centers} (keep every center) is not supported; "
                                                "give the number of centers to keep")
    eval_steps = evaluator.get("eval_steps")
    timeout = evaluator.get("continuous_eval_timeout")
    return {
        "interval": evaluator.get("eval_interval"),
        "steps": None if eval_steps == -1 else eval_steps,  # -1: the whole split
        "batch_size": eval_data.get("batch_size"),
        "eval_scales": evaluator.get("eval_scales") or [1.0],  # DeepLab2 reads no scales as [1.0]
        "flip": evaluator.get("add_flipped_images"),
        "continuous_eval_timeout": None if timeout == -1 else timeout,  # -1: wait forever
        "postprocessing": {
            "center_threshold": evaluator.get("center_score_threshold"),
            "nms_kernel": evaluator.get("nms_kernel"),
            "keep_k_centers": keep_k_centers,
            "stuff_area_limit": evaluator.get("stuff_area_limit"),
            "merge_style": "merge_op" if evaluator.get("merge_semantic_and_instance_with_tf_op") else "tf_merge",
        },
    }


def convert_experiment(experiment, source="DeepLab2 experiment"):
    """Our experiment settings from a DeepLab2 `ExperimentOptions`, and what they cannot express.

    A field absent from the experiment takes DeepLab2's default (`DEEPLAB2_DEFAULTS`),
    with DeepLab2's own fallbacks (an instance branch without overrides reuses
    the semantic decoder; no eval scales means [1.0]; an absent loss is off).

    Args:
        experiment: parsed textproto (see `read_textproto`).
        source: file name for messages.

    Returns:
        `ExperimentConversion(config, notes)`: `config` is a nested dict for
        `config_from_dict`; `notes` has one line for each DeepLab2 option the
        config cannot express (e.g. a batch-norm momentum other than 0.99), and
        a last line naming the DeepLab2 fields given that axial_tf does not use
        (e.g. `file_pattern`), if any.

    Raises:
        ValueError: one line naming the field: a field DeepLab2's protos do not
            have (with the closest name), a value of the wrong type or not
            accepted by DeepLab2, a missing field DeepLab2 has no default for,
            or a model axial_tf cannot build (e.g. another meta-architecture).
    """
    root = _Message.experiment(experiment, source)
    root.check_field_names()
    trainer = root.child("trainer_options")
    solver = trainer.child("solver_options")
    train_data = root.child("train_dataset_options")
    eval_data = root.child("eval_dataset_options")
    notes = []
    config = {
        "model": _model_settings(root.child("model_options")),
        "data": _data_settings(train_data, notes),
        "losses": {**_loss_settings(trainer.child("loss_options"), notes),
                   **_target_settings(train_data)},
        "optimizer": _optimizer_settings(solver, notes),
        "training": _training_settings(trainer, solver, train_data),
        "evaluation": _evaluation_settings(root.child("evaluator_options"), eval_data),
    }
    notes.extend(_eval_data_notes(eval_data, train_data))
    unread = root.unread_fields()
    if unread:
        notes.append(f"{source}: not used by axial_tf: {', '.join(unread)}")
    return ExperimentConversion(config, notes)


def experiment_to_config(experiment, source="DeepLab2 experiment"):
    """`convert_experiment`'s config; each of its notes is issued as a `DeepLab2OptionWarning`.

    Args:
        experiment: parsed textproto (see `read_textproto`).
        source: file name for messages.
    """
    conversion = convert_experiment(experiment, source)
    for note in conversion.notes:
        warnings.warn(note, DeepLab2OptionWarning, stacklevel=2)
    return conversion.config


def read_deeplab2_experiment(path):
    """`experiment_to_config` of a DeepLab2 experiment textproto file.

    Args:
        path: the experiment's `.textproto` file.
    """
    return experiment_to_config(read_textproto(path), source=str(path))
