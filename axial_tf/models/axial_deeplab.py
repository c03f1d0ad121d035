"""Axial-DeepLab: an Axial-ResNet backbone with Panoptic-DeepLab's dual decoder and heads."""

import keras
from keras import ops

from axial_tf.layers import resize_bilinear_align_corners
from axial_tf.models.backbone_registry import resolve_backbone
from axial_tf.models.panoptic_decoder import PanopticDecoderBranch, PredictionHead
from axial_tf.models.presets import PresetMixin

SEMANTIC_DECODER_DEFAULTS = dict(
    feature_key="res5",
    aspp_channels=256,
    aspp_use_only_1x1_proj=True,
    atrous_rates=(6, 12, 18),
    decoder_channels=256,
    low_level_feature_keys=("res3", "res2"),
    low_level_channels=(64, 32),
    head_channels=256,
)
INSTANCE_DECODER_DEFAULTS = dict(
    SEMANTIC_DECODER_DEFAULTS, decoder_channels=128, low_level_channels=(32, 16), head_channels=32
)
OUTPUT_KEYS = ("semantic_logits", "center_heatmap", "offset_map")


@keras.saving.register_keras_serializable(package="axial_tf")
class ImageNormalization(keras.layers.Layer):
    """Maps images in [0, 255] to [-1, 1] (`x / 127.5 - 1`), as DeepLab2 does inside its model."""

    def call(self, images):
        return ops.cast(images, self.compute_dtype) / 127.5 - 1.0


@keras.saving.register_keras_serializable(package="axial_tf")
class ResizeToInput(keras.layers.Layer):
    """Resizes stride-4 predictions to the image size, rescaling offsets to pixels.

    Bilinear with aligned corners; an offset measured in feature pixels becomes
    `offset * (H_in - 1) / (H_feat - 1)` image pixels (dy) and likewise for dx.
    """

    def call(self, images, semantic, center, offset):
        size = ops.shape(images)[1:3]
        feature_size = ops.shape(offset)[1:3]
        scale = [
            ops.cast(size[i] - 1, "float32") / ops.cast(ops.maximum(feature_size[i] - 1, 1), "float32")
            for i in (0, 1)
        ]
        semantic = resize_bilinear_align_corners(ops.cast(semantic, "float32"), size)
        center = resize_bilinear_align_corners(ops.cast(center, "float32"), size)
        offset = resize_bilinear_align_corners(ops.cast(offset, "float32"), size) * ops.stack(scale)
        return {"semantic_logits": semantic, "center_heatmap": center[..., 0], "offset_map": offset}


def decoder_settings(overrides, defaults):
    """`defaults` updated by `overrides`, checked: known keys only, one low-level width per feature."""
    settings = {**defaults, **(overrides or {})}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f"Unknown decoder setting(s) {unknown}; accepted: {sorted(defaults)}.")
    if len(settings["low_level_feature_keys"]) != len(settings["low_level_channels"]):
        raise ValueError(
            f"low_level_feature_keys {settings['low_level_feature_keys']} and low_level_channels "
            f"{settings['low_level_channels']} must have the same length."
        )
    return settings


def decoder_branch(settings, name, **batch_norm):
    """The `PanopticDecoderBranch` of checked decoder settings (see `decoder_settings`)."""
    return PanopticDecoderBranch(
        aspp_channels=settings["aspp_channels"],
        decoder_channels=settings["decoder_channels"],
        low_level_channels=settings["low_level_channels"],
        atrous_rates=settings["atrous_rates"],
        aspp_use_only_1x1_proj=settings["aspp_use_only_1x1_proj"],
        name=name,
        **batch_norm,
    )


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialDeepLab(PresetMixin, keras.Model):
    """Panoptic-DeepLab with an (Axial-)ResNet backbone, as a functional Keras model.

    Takes float images in [0, 255] of any size (normalised inside the model) and
    returns, at the input resolution: `semantic_logits` [B, H, W, classes],
    `center_heatmap` [B, H, W] (no sigmoid) and `offset_map` [B, H, W, 2] (dy, dx
    in pixels, pointing from a pixel to its instance center). Predictions are
    float32 under mixed precision too.

    Args:
        backbone: an `AxialResNet`, or a registry name (see `list_backbones()`).
        num_classes: semantic classes.
        backbone_overrides: `AxialResNet` settings when `backbone` is a name.
        semantic_decoder: overrides of `SEMANTIC_DECODER_DEFAULTS` (feature_key,
            aspp_channels, aspp_use_only_1x1_proj, atrous_rates, decoder_channels,
            low_level_feature_keys, low_level_channels, head_channels).
        instance_decoder: overrides of `INSTANCE_DECODER_DEFAULTS`.
        batch_norm_momentum: decoder BN momentum.
        batch_norm_epsilon: decoder BN epsilon.
        sync_batch_norm: synchronised decoder BN across replicas.
        **kwargs: `keras.Model` arguments (e.g. `name`).

    Example:
    >>> model = AxialDeepLab("axial_deeplab_s", num_classes=7,
    ...                      backbone_overrides={"width_multiplier": 0.125})
    >>> outputs = model(keras.ops.zeros((1, 65, 65, 3)))
    >>> outputs["semantic_logits"].shape  # (1, 65, 65, 7)
    """

    def __init__(
        self,
        backbone,
        num_classes,
        backbone_overrides=None,
        semantic_decoder=None,
        instance_decoder=None,
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        sync_batch_norm=False,
        **kwargs,
    ):
        backbone = resolve_backbone(backbone, backbone_overrides)
        semantic = decoder_settings(semantic_decoder, SEMANTIC_DECODER_DEFAULTS)
        instance = decoder_settings(instance_decoder, INSTANCE_DECODER_DEFAULTS)
        bn = dict(batch_norm_momentum=batch_norm_momentum, batch_norm_epsilon=batch_norm_epsilon,
                  sync_batch_norm=sync_batch_norm)

        images = keras.Input((None, None, 3), name="images")
        endpoints = backbone(ImageNormalization(name="normalization")(images))
        missing = sorted({semantic["feature_key"], instance["feature_key"], *semantic["low_level_feature_keys"],
                          *instance["low_level_feature_keys"]} - set(endpoints))
        if missing:
            raise ValueError(f"Decoder features {missing} are not backbone endpoints {sorted(endpoints)}.")

        def features(settings):
            return [endpoints[settings["feature_key"]]] + [endpoints[k] for k in settings["low_level_feature_keys"]]

        semantic_decoder_layer = decoder_branch(semantic, "semantic_decoder", **bn)
        instance_decoder_layer = decoder_branch(instance, "instance_decoder", **bn)
        semantic_features = semantic_decoder_layer(features(semantic))
        instance_features = instance_decoder_layer(features(instance))
        semantic_head = PredictionHead(num_classes, semantic["head_channels"], name="semantic_head", **bn)
        center_head = PredictionHead(1, instance["head_channels"], name="instance_center_head", **bn)
        offset_head = PredictionHead(2, instance["head_channels"], name="instance_regression_head", **bn)
        outputs = ResizeToInput(name="resize_to_input", dtype="float32")(
            images,
            semantic_head(semantic_features),
            center_head(instance_features),
            offset_head(instance_features),
        )
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.semantic_decoder_settings = semantic
        self.instance_decoder_settings = instance
        self.batch_norm_settings = bn
        self.semantic_decoder = semantic_decoder_layer
        self.instance_decoder = instance_decoder_layer
        self.semantic_head = semantic_head
        self.center_head = center_head
        self.offset_head = offset_head

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "semantic_decoder": jsonable_settings(self.semantic_decoder_settings),
            "instance_decoder": jsonable_settings(self.instance_decoder_settings),
            **self.batch_norm_settings,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def jsonable_settings(settings):
    """Decoder settings for `get_config`: tuples as lists, as JSON round-trips them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
