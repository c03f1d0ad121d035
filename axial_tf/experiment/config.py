"""Typed experiment configuration: schema, loading (YAML/gin), overrides, saving.

An experiment is an `ExperimentConfig` with six sections: `model`, `data`,
`losses`, `optimizer`, `training` and `evaluation`. Defaults mirror DeepLab2's
Cityscapes Axial-DeepLab experiments (e.g. `axial_swidernet_1_1_1_os16`):
ASPP reduced to its 1x1 projection, semantic decoder 256 with low-level
projections 64/32, instance decoder 128 with 32/16, Adam at 1e-4 with a poly
schedule for 60k steps, top-20% semantic loss, center/offset weights 200/0.01.

Files
    `load_config("exp.yaml")` or `load_config("exp.gin")` (see
    `config_sources` for both syntaxes and `base:`/`include`), then
    `--override key.sub=value` strings, then validation. Any problem raises one
    `ConfigError` listing every bad key as "file:line: key.path: problem".

Example:
    config = load_config("configs/demo/panoptic_shapes.yaml",
                         overrides=["training.steps=100", "data.crop_size=[65, 65]"])
    save_config(config, model_dir)  # writes model_dir/config.yaml
"""

import copy
import dataclasses
import datetime
import os
from typing import Any, Literal, Optional

import tensorflow as tf

from axial_tf.experiment import config_sources
from axial_tf.experiment.config_validation import (  # noqa: F401  (ConfigError is public here)
    ConfigError,
    ConfigIssue,
    IssueCollector,
    build_dataclass,
    schema_key_paths,
)
from axial_tf.experiment.tasks import TASKS
from axial_tf.models.axial_deeplab import INSTANCE_DECODER_DEFAULTS, SEMANTIC_DECODER_DEFAULTS
from axial_tf.presets.catalogue import lookup as lookup_preset
from axial_tf.utils.files import write_text_atomically, writing

CONFIG_FILENAME = "config.yaml"
CONFIG_HISTORY_FILENAME = "config_history.yaml"  # earlier config.yaml contents, oldest first
# The values `model.task` and `evaluation.metrics` accept: those of the registered tasks.
TASK_NAMES = tuple(TASKS)
METRIC_NAMES = tuple(dict.fromkeys(name for task in TASKS.values() for name in task.metric_names))


def _field(default, **constraints):
    """A dataclass field with a (copied, if mutable) default and range/length limits.

    Args:
        default: The default value; lists, dicts and dataclass instances are
            copied for every new config so configs never share them.
        **constraints: `ge`/`gt`/`le`/`lt`/`length`/`min_length` limits checked
            when a config is loaded (see `config_validation`).

    Returns:
        A `dataclasses.field`.
    """
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(
            default_factory=lambda: copy.deepcopy(default), metadata=constraints)
    return dataclasses.field(default=default, metadata=constraints)


@dataclasses.dataclass
class DecoderConfig:
    """One Panoptic-DeepLab decoder branch (ASPP + low-level fusion + head width).

    Attributes:
        feature_key: Backbone endpoint fed to the ASPP, e.g. "res5".
        aspp_channels: Filters of the ASPP convolutions.
        aspp_use_only_1x1_proj: Keep only the ASPP's 1x1 projection (as the
            Axial-DeepLab configs do); otherwise full ASPP with atrous rates
            and image pooling.
        atrous_rates: ASPP atrous rates (used only by the full ASPP).
        decoder_channels: Filters of the fusion 5x5 depthwise-separable convs.
        low_level_feature_keys: Endpoints fused after the ASPP, from lower to
            higher resolution.
        low_level_channels: 1x1 projection filters of each low-level feature.
        head_channels: Filters of the prediction heads' 5x5 conv (semantic head
            for the semantic branch; center and offset heads for the instance one).

    Example:
        DecoderConfig(decoder_channels=128, low_level_channels=[32, 16], head_channels=32)
    """

    feature_key: str = SEMANTIC_DECODER_DEFAULTS["feature_key"]
    aspp_channels: int = _field(SEMANTIC_DECODER_DEFAULTS["aspp_channels"], ge=1)
    aspp_use_only_1x1_proj: bool = SEMANTIC_DECODER_DEFAULTS["aspp_use_only_1x1_proj"]
    atrous_rates: list[int] = _field(list(SEMANTIC_DECODER_DEFAULTS["atrous_rates"]), ge=1)
    decoder_channels: int = _field(SEMANTIC_DECODER_DEFAULTS["decoder_channels"], ge=1)
    low_level_feature_keys: list[str] = _field(list(SEMANTIC_DECODER_DEFAULTS["low_level_feature_keys"]))
    low_level_channels: list[int] = _field(list(SEMANTIC_DECODER_DEFAULTS["low_level_channels"]), ge=1)
    head_channels: int = _field(SEMANTIC_DECODER_DEFAULTS["head_channels"], ge=1)


def _decoder_config(defaults):
    """A `DecoderConfig` of the model's decoder defaults (the one source of them, `axial_deeplab.py`)."""
    return DecoderConfig(**{key: list(value) if isinstance(value, tuple) else value
                            for key, value in defaults.items()})


@dataclasses.dataclass
class ModelConfig:
    """Which network to build.

    Attributes:
        task: A registered task (`axial_tf.experiment.tasks.TASKS`): "panoptic"
            (Axial-DeepLab), "semantic" (Axial backbone + semantic decoder) or
            "classification" (Axial-ResNet classifier).
        backbone: Registered backbone name, e.g. "axial_deeplab_s", "axial_resnet_s".
        backbone_overrides: Extra keyword arguments for the backbone builder
            (e.g. drop_path_keep_prob, width multipliers); checked by the builder.
        output_stride: Backbone output stride.
        num_classes: Semantic classes (panoptic) or image classes (classification).
        semantic_decoder: Semantic branch decoder (panoptic and semantic tasks).
        instance_decoder: Instance (center/offset) branch decoder (panoptic task).
        classifier_dropout: Dropout rate before the classification dense layer.

    Example:
        ModelConfig(task="classification", backbone="axial_resnet_s",
                    output_stride=32, num_classes=1000)
    """

    task: Literal[TASK_NAMES] = "panoptic"
    backbone: str = "axial_deeplab_s"
    backbone_overrides: dict[str, Any] = _field({})
    output_stride: Literal[8, 16, 32] = 16
    num_classes: int = _field(19, ge=1)
    semantic_decoder: DecoderConfig = _field(_decoder_config(SEMANTIC_DECODER_DEFAULTS))
    instance_decoder: DecoderConfig = _field(_decoder_config(INSTANCE_DECODER_DEFAULTS))
    classifier_dropout: float = _field(0.0, ge=0.0, lt=1.0)


@dataclasses.dataclass
class AugmentationConfig:
    """Training augmentation switches.

    Attributes:
        min_scale: Smallest random resize factor.
        max_scale: Largest random resize factor.
        scale_step: Step between scale factors (0 = continuous).
        horizontal_flip: Random left-right flips.
        photometric: Random brightness/contrast/saturation/hue.
        autoaugment: Light AutoAugment-style policy (DeepLab2's
            simple_classification_policy_magnitude_scale_0.2).

    Example:
        AugmentationConfig(min_scale=0.75, max_scale=1.25, photometric=False)
    """

    min_scale: float = _field(0.5, gt=0.0)
    max_scale: float = _field(2.0, gt=0.0)
    scale_step: float = _field(0.1, ge=0.0)
    horizontal_flip: bool = True
    photometric: bool = True
    autoaugment: bool = False


@dataclasses.dataclass
class DataConfig:
    """Which data to read and how to prepare it.

    Attributes:
        dataset: TFDS builder name, e.g. "panoptic_shapes", "cityscapes_panoptic",
            "coco_panoptic_folder", "imagenet2012".
        data_dir: TFDS data directory (None = TFDS default).
        manual_dir: Folder with manually downloaded or user data (Cityscapes,
            ImageNet, a COCO-panoptic or image folder).
        builder_options: Extra keyword arguments for the dataset builder
            (e.g. image size or example count of panoptic_shapes).
        train_split: Split used for training.
        eval_split: Split used for evaluation.
        crop_size: Training crop [height, width]; evaluation pads to it too.
        augmentation: Training augmentation.
        shuffle_buffer_size: Examples in the training shuffle buffer.
        cache: Keep decoded training examples in memory after the first epoch
            (for small datasets such as panoptic_shapes).
        label_divisor: Panoptic label divisor (None = the dataset's own).
        ignore_label: Void label (None = the dataset's own, usually 255).

    Example:
        DataConfig(dataset="panoptic_shapes", crop_size=[129, 129])
    """

    dataset: str = "cityscapes_panoptic"
    data_dir: Optional[str] = None
    manual_dir: Optional[str] = None
    builder_options: dict[str, Any] = _field({})
    train_split: str = "train"
    eval_split: str = "validation"
    crop_size: list[int] = _field([1025, 2049], length=2, ge=1)
    augmentation: AugmentationConfig = _field(AugmentationConfig())
    shuffle_buffer_size: int = _field(1000, ge=1)
    cache: bool = False
    label_divisor: Optional[int] = _field(None, ge=1)
    ignore_label: Optional[int] = _field(None, ge=0)


@dataclasses.dataclass
class LossConfig:
    """Loss weights and target options.

    Attributes:
        semantic_weight: Weight of the semantic cross-entropy.
        semantic_top_k_percent: Fraction of hardest pixels kept (1.0 = all).
        center_weight: Weight of the center heatmap MSE.
        offset_weight: Weight of the offset L1.
        center_sigma: Gaussian sigma (pixels) of the center targets.
        small_instance_area: Instances with fewer pixels get `small_instance_weight`.
        small_instance_weight: Semantic loss weight of small-instance pixels.
        label_smoothing: Label smoothing of the classification cross-entropy.

    Example:
        LossConfig(center_weight=100.0)
    """

    semantic_weight: float = _field(1.0, ge=0.0)
    semantic_top_k_percent: float = _field(0.2, gt=0.0, le=1.0)
    center_weight: float = _field(200.0, ge=0.0)
    offset_weight: float = _field(0.01, ge=0.0)
    center_sigma: float = _field(8.0, gt=0.0)
    small_instance_area: int = _field(4096, ge=0)
    small_instance_weight: float = _field(3.0, ge=0.0)
    label_smoothing: float = _field(0.0, ge=0.0, lt=1.0)


@dataclasses.dataclass
class OptimizerConfig:
    """Optimizer and learning-rate schedule.

    Attributes:
        name: "adam", "sgd" (with momentum) or "adamw".
        learning_rate: Peak (base) learning rate.
        schedule: "poly", "cosine", "step" or "constant", over all `training.steps`.
        warmup_steps: Linear warm-up from 0 to `learning_rate` over these steps;
            afterwards the schedule is read at the raw step, as in DeepLab2 (it
            does not restart when the warm-up ends).
        poly_power: Exponent of the poly schedule.
        end_learning_rate: Final learning rate of the poly and cosine schedules.
        step_boundaries: Steps at which the step schedule multiplies the rate
            by `step_decay_factor`.
        step_decay_factor: Factor applied at each step boundary.
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD.
        weight_decay: Decoupled decay for adamw; L2 penalty added to the loss
            for adam and sgd.
        clip_gradient_norm: Global-norm gradient clipping (None = off).
        backbone_lr_multiplier: Learning-rate multiplier of backbone variables.

    Example:
        OptimizerConfig(name="sgd", learning_rate=0.1, schedule="cosine", warmup_steps=500)
    """

    name: Literal["adam", "sgd", "adamw"] = "adam"
    learning_rate: float = _field(1e-4, gt=0.0)
    schedule: Literal["poly", "cosine", "step", "constant"] = "poly"
    warmup_steps: int = _field(0, ge=0)
    poly_power: float = _field(0.9, gt=0.0)
    end_learning_rate: float = _field(0.0, ge=0.0)
    step_boundaries: list[int] = _field([], ge=1)
    step_decay_factor: float = _field(0.1, gt=0.0, le=1.0)
    momentum: float = _field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = _field(0.0, ge=0.0)
    clip_gradient_norm: Optional[float] = _field(None, gt=0.0)
    backbone_lr_multiplier: float = _field(1.0, ge=0.0)


@dataclasses.dataclass
class TrainingConfig:
    """The training run.

    Attributes:
        steps: Total optimizer steps.
        batch_size: Global batch size (split evenly across replicas).
        checkpoint_interval: Steps between checkpoints.
        keep_checkpoints: Checkpoints kept by the CheckpointManager.
        summary_interval: Steps between TensorBoard scalar summaries.
        mixed_precision: Keras dtype policy.
        jit_compile: Compile the train step with XLA.
        remat: Recompute activations in the backward pass to save memory.
        seed: Seed of weights, data order and augmentation.
        deterministic: Deterministic TF ops, and gradient sums in a fixed order
            (Grappler's memory optimizer off for the train step); needed for
            bit-exact runs and resumes.
        strategy: tf.distribute strategy.
        sync_batch_norm: Synchronise batch-norm statistics across replicas.
        init_checkpoint: Checkpoint to initialise from (partial restore) when
            the model directory has no checkpoint yet: a `.keras` file, an axial_tf or
            DeepLab2 checkpoint, or `preset:NAME` (`python -m axial_tf.presets list`).

    Example:
        TrainingConfig(steps=2000, batch_size=8, mixed_precision="mixed_bfloat16")
    """

    steps: int = _field(60000, ge=1)
    batch_size: int = _field(32, ge=1)
    checkpoint_interval: int = _field(1000, ge=1)
    keep_checkpoints: int = _field(5, ge=1)
    summary_interval: int = _field(100, ge=1)
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit_compile: bool = False
    remat: bool = False
    seed: int = _field(0, ge=0)
    deterministic: bool = True
    strategy: Literal["default", "mirrored", "multi_worker_mirrored", "tpu"] = "default"
    sync_batch_norm: bool = True
    init_checkpoint: Optional[str] = None


@dataclasses.dataclass
class PostProcessingConfig:
    """Panoptic post-processing (also baked into exported models).

    Attributes:
        center_threshold: Minimum center heatmap score of a kept center.
        nms_kernel: Max-pooling window of the center NMS (odd).
        keep_k_centers: Maximum number of centers kept per image.
        stuff_area_limit: Stuff segments with at most this many pixels become void.
        merge_style: Which DeepLab2 semantic/instance merge to reproduce:
            "merge_op" (its compiled merge op) or "tf_merge" (its pure-TF merge).

    Example:
        PostProcessingConfig(nms_kernel=7, stuff_area_limit=64)
    """

    center_threshold: float = _field(0.1, ge=0.0)
    nms_kernel: int = _field(13, ge=1)
    keep_k_centers: int = _field(200, ge=1)
    stuff_area_limit: int = _field(2048, ge=0)
    merge_style: Literal["merge_op", "tf_merge"] = "merge_op"


@dataclasses.dataclass
class EvaluationConfig:
    """Evaluation schedule, metrics and inference options.

    Attributes:
        interval: Training steps between evaluations in train_and_eval mode.
        steps: Evaluation batches per evaluation (None = the whole split).
        batch_size: Global evaluation batch size.
        metrics: Metrics to compute, among the task's (panoptic: pq, miou, ap;
            semantic: miou; classification: top1, top5); an empty list means the
            task's defaults (panoptic: pq, miou; semantic: miou; classification:
            top1, top5).
        postprocessing: Panoptic post-processing options.
        eval_scales: Input scales of multi-scale inference ([1.0] = single scale).
        flip: Also average predictions of the horizontally flipped input.
        save_predictions: Write prediction PNGs next to the metrics.
        continuous_eval_timeout: Seconds to wait for a new checkpoint in
            continuous_eval mode (None = wait forever).

    Example:
        EvaluationConfig(interval=500, metrics=["pq", "miou", "ap"])
    """

    interval: int = _field(5000, ge=1)
    steps: Optional[int] = _field(None, ge=1)
    batch_size: int = _field(1, ge=1)
    metrics: list[Literal[METRIC_NAMES]] = _field([])
    postprocessing: PostProcessingConfig = _field(PostProcessingConfig())
    eval_scales: list[float] = _field([1.0], min_length=1, gt=0.0)
    flip: bool = False
    save_predictions: bool = False
    continuous_eval_timeout: Optional[float] = _field(None, ge=0.0)


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment: model, data, losses, optimizer, training, evaluation.

    Empty `evaluation.metrics` are replaced by the task's default metrics at
    construction, so a saved config always lists the metrics it computes.

    Example:
        config = ExperimentConfig(
            model=ModelConfig(backbone="axial_resnet_s", num_classes=7),
            data=DataConfig(dataset="panoptic_shapes", crop_size=[129, 129]))
        config.evaluation.metrics  # ["pq", "miou"]
    """

    model: ModelConfig = _field(ModelConfig())
    data: DataConfig = _field(DataConfig())
    losses: LossConfig = _field(LossConfig())
    optimizer: OptimizerConfig = _field(OptimizerConfig())
    training: TrainingConfig = _field(TrainingConfig())
    evaluation: EvaluationConfig = _field(EvaluationConfig())

    def __post_init__(self):
        if not self.evaluation.metrics and self.model.task in TASKS:
            self.evaluation = dataclasses.replace(
                self.evaluation, metrics=list(TASKS[self.model.task].default_metrics))


def load_config(path, overrides=()):
    """Loads, overrides and validates an experiment file.

    Args:
        path: A `.yaml`/`.yml` or `.gin` experiment file.
        overrides: "key.sub=value" strings applied after the file (later wins);
            values are parsed as YAML (`3`, `1e-4`, `true`, `[65, 65]`).

    Returns:
        The validated ExperimentConfig.

    Raises:
        ConfigError: Unreadable file, unknown keys, wrong types or values; the
            message names the file (and line) and the key path of each problem.
    """
    raw = config_sources.read_config_file(path)
    config_sources.apply_overrides(raw, overrides)
    return _build(raw)


def experiment_config_for(config_path=None, model_dir=None, overrides=()):
    """The experiment config of an export or prediction run.

    Args:
        config_path: A `.yaml`/`.gin` experiment file; when None, the
            `config.yaml` the trainer saved in `model_dir` is used if present.
        model_dir: The training model directory, if any.
        overrides: "key.sub=value" overrides (e.g. "data.crop_size=[1025,2049]").

    Returns:
        An `ExperimentConfig`, or None when there is neither a file nor a saved config.
    """
    if config_path is None and model_dir is not None:
        saved = os.path.join(os.fspath(model_dir), CONFIG_FILENAME)
        config_path = saved if tf.io.gfile.exists(saved) else None
    if config_path is None:
        if overrides:
            raise ValueError(f"--override {list(overrides)} needs a config (--config).")
        return None
    return load_config(config_path, overrides=overrides)


def shipped_config(relative_path):
    """Path of an experiment config that ships with axial_tf, e.g. "demo/panoptic_shapes.yaml".

    A checkout reads the repository's configs/ folder; a wheel installs the same files as
    axial_tf/configs/ (see setup.py).

    Raises:
        ConfigError: No shipped config has that name.
    """
    package = os.path.dirname(os.path.abspath(__file__ + "/.."))
    folders = (os.path.join(package, "configs"), os.path.join(os.path.dirname(package), "configs"))
    for folder in folders:
        if os.path.isfile(os.path.join(folder, relative_path)):
            return os.path.join(folder, relative_path)
    raise ConfigError(f"No shipped config {relative_path!r} in {' or '.join(folders)}.")


def config_from_dict(values, source="<dict>", overrides=()):
    """Builds and validates an ExperimentConfig from a plain nested mapping.

    Args:
        values: Mapping of sections, as a YAML file would hold (keys absent keep
            their defaults).
        source: Name used for this mapping in error messages.
        overrides: "key.sub=value" strings applied on top.

    Returns:
        The validated ExperimentConfig.

    Raises:
        ConfigError: On any invalid key or value.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(values).__name__}")
    raw = config_sources.RawConfig(origin=source)
    for key, value in values.items():
        raw.set((key,), value, source)
    config_sources.apply_overrides(raw, overrides)
    return _build(raw)


def config_to_dict(config):
    """Converts a config (or one of its sections) to plain nested dicts and lists.

    Args:
        config: ExperimentConfig or any section dataclass.

    Returns:
        A dict that `config_from_dict` turns back into an equal config.
    """
    return dataclasses.asdict(config)


def apply_overrides(config, overrides):
    """Returns a validated copy of `config` with "key.sub=value" overrides applied.

    Args:
        config: ExperimentConfig.
        overrides: Override strings, as for `load_config`.

    Returns:
        The new ExperimentConfig.
    """
    return config_from_dict(config_to_dict(config), "<ExperimentConfig>", overrides)


def validate_config(config):
    """Checks a config built in code by the same rules as a loaded one.

    Args:
        config: ExperimentConfig.

    Returns:
        An equal, validated ExperimentConfig (float fields given as ints become floats).

    Raises:
        ConfigError: On any invalid value.
    """
    return config_from_dict(config_to_dict(config), "<ExperimentConfig>")


def save_config(config, model_dir):
    """Validates `config` and writes it as `config.yaml` in `model_dir`, keeping any older one.

    `config.yaml` is never silently replaced: when it exists with other content, that content is
    first appended to `config_history.yaml` (one YAML document per replaced config, headed by the
    time it was replaced). Each file is written through a temporary file and a rename, so a failed
    write (full disk) leaves the previous file whole.

    Args:
        config: ExperimentConfig.
        model_dir: Model directory (created if missing; any tf.io.gfile path).

    Returns:
        Path of the written file; `load_config` of it gives an equal config.

    Raises:
        ConfigError: The config is invalid.
        ModelDirError: A file cannot be written (read-only directory, full disk).
    """
    config = validate_config(config)
    path = os.path.join(model_dir, CONFIG_FILENAME)
    header = "# Resolved experiment config written by axial_tf; load with load_config().\n"
    text = header + config_sources.dump_yaml(config_to_dict(config))
    with writing(path, "the config"):
        tf.io.gfile.makedirs(model_dir)
        previous = _read_if_exists(path)
    if previous == text:
        return path
    if previous is not None:
        _append_to_history(model_dir, previous)
    with writing(path, "the config"):
        write_text_atomically(path, text)
    return path


def _read_if_exists(path):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as stream:
        return stream.read()


def _append_to_history(model_dir, replaced_text):
    """Adds a replaced `config.yaml` to `config_history.yaml` as one more YAML document."""
    history_path = os.path.join(model_dir, CONFIG_HISTORY_FILENAME)
    replaced_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    entry = f"--- # {CONFIG_FILENAME} until {replaced_at}\n{replaced_text}"
    with writing(history_path, "the config history"):
        write_text_atomically(history_path, (_read_if_exists(history_path) or "") + entry)


def _build(raw):
    """Types and validates a RawConfig into an ExperimentConfig."""
    collector = IssueCollector(raw.source_of, schema_key_paths(ExperimentConfig))
    config = build_dataclass(ExperimentConfig, raw.values, collector)
    collector.raise_if_any()
    _check_consistency(config, collector)
    collector.raise_if_any()
    return config


def _check_consistency(config, collector):
    """Checks rules that involve several keys (after each key is valid alone)."""
    for branch in ("semantic_decoder", "instance_decoder"):
        decoder = getattr(config.model, branch)
        if len(decoder.low_level_feature_keys) != len(decoder.low_level_channels):
            collector.add(
                ("model", branch, "low_level_channels"),
                f"has {len(decoder.low_level_channels)} entries but low_level_feature_keys has "
                f"{len(decoder.low_level_feature_keys)} ({decoder.low_level_feature_keys}); "
                "give one projection width per low-level feature")
    if "output_stride" in config.model.backbone_overrides:
        collector.add(("model", "backbone_overrides", "output_stride"),
                      "set model.output_stride instead")

    init = config.training.init_checkpoint or ""
    if init.startswith("preset:"):
        try:
            lookup_preset(init[len("preset:"):])
        except ValueError as error:
            collector.add(("training", "init_checkpoint"), str(error).rstrip("."))
    for key_path, problem in TASKS[config.model.task].config_problems(config):
        collector.add(key_path, problem)

    augmentation = config.data.augmentation
    if augmentation.min_scale > augmentation.max_scale:
        collector.add(("data", "augmentation", "min_scale"),
                      f"{augmentation.min_scale} is larger than max_scale {augmentation.max_scale}")

    optimizer = config.optimizer
    steps = config.training.steps
    if optimizer.schedule == "step" and not optimizer.step_boundaries:
        collector.add(("optimizer", "step_boundaries"),
                      "the 'step' schedule needs at least one boundary")
    boundaries = optimizer.step_boundaries
    if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:])):
        collector.add(("optimizer", "step_boundaries"),
                      f"must be strictly increasing, got {boundaries}")
    if any(boundary >= steps for boundary in boundaries):
        collector.add(("optimizer", "step_boundaries"),
                      f"every boundary must be below training.steps ({steps}), got {boundaries}")
    if optimizer.warmup_steps >= steps:
        collector.add(("optimizer", "warmup_steps"),
                      f"must be below training.steps ({steps}), got {optimizer.warmup_steps}")

    allowed_metrics = TASKS[config.model.task].metric_names
    for index, metric in enumerate(config.evaluation.metrics):
        if metric not in allowed_metrics:
            collector.add(("evaluation", "metrics", index),
                          f"{metric!r} is not a {config.model.task} metric; allowed: "
                          f"{', '.join(allowed_metrics)}")
    nms_kernel = config.evaluation.postprocessing.nms_kernel
    if nms_kernel % 2 == 0:
        collector.add(("evaluation", "postprocessing", "nms_kernel"),
                      f"must be odd so the window is centred, got {nms_kernel}")
