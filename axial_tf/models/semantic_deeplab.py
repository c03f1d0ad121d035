"""Semantic segmentation: an Axial-ResNet backbone with Panoptic-DeepLab's semantic decoder and head."""

import keras
from keras import ops

from axial_tf.layers import resize_bilinear_align_corners
from axial_tf.models.axial_deeplab import (
    SEMANTIC_DECODER_DEFAULTS,
    ImageNormalization,
    decoder_branch,
    decoder_settings,
    jsonable_settings,
)
from axial_tf.models.backbone_registry import resolve_backbone
from axial_tf.models.panoptic_decoder import PredictionHead


@keras.saving.register_keras_serializable(package="axial_tf")
class ResizeLogitsToInput(keras.layers.Layer):
    """Resizes stride-4 logits to the image size (bilinear, aligned corners), in float32."""

    def call(self, images, logits):
        return resize_bilinear_align_corners(ops.cast(logits, "float32"), ops.shape(images)[1:3])


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialSemanticDeepLab(keras.Model):
    """DeepLab-style semantic segmentation with an (Axial-)ResNet backbone, as a functional Keras model.

    The semantic branch of `AxialDeepLab` alone: the backbone, an ASPP (or its 1x1
    projection) fused with low-level features, and a 5x5 separable head. Takes float images
    in [0, 255] of any size and returns `{"semantic_logits": [B, H, W, classes]}` at the input
    resolution (float32 under mixed precision too).

    Args:
        backbone: an `AxialResNet`, or a registry name (see `list_backbones()`).
        num_classes: semantic classes.
        backbone_overrides: `AxialResNet` settings when `backbone` is a name.
        semantic_decoder: overrides of `SEMANTIC_DECODER_DEFAULTS`.
        batch_norm_momentum: decoder BN momentum.
        batch_norm_epsilon: decoder BN epsilon.
        sync_batch_norm: synchronised decoder BN across replicas.
        **kwargs: `keras.Model` arguments (e.g. `name`).

    Example:
    >>> model = AxialSemanticDeepLab("axial_deeplab_s", num_classes=7,
    ...                              backbone_overrides={"width_multiplier": 0.125})
    >>> model(keras.ops.zeros((1, 65, 65, 3)))["semantic_logits"].shape  # (1, 65, 65, 7)
    """

    def __init__(self, backbone, num_classes, backbone_overrides=None, semantic_decoder=None,
                 batch_norm_momentum=0.99, batch_norm_epsilon=1e-3, sync_batch_norm=False, **kwargs):
        backbone = resolve_backbone(backbone, backbone_overrides)
        settings = decoder_settings(semantic_decoder, SEMANTIC_DECODER_DEFAULTS)
        bn = dict(batch_norm_momentum=batch_norm_momentum, batch_norm_epsilon=batch_norm_epsilon,
                  sync_batch_norm=sync_batch_norm)

        images = keras.Input((None, None, 3), name="images")
        endpoints = backbone(ImageNormalization(name="normalization")(images))
        keys = [settings["feature_key"], *settings["low_level_feature_keys"]]
        missing = sorted(set(keys) - set(endpoints))
        if missing:
            raise ValueError(f"Decoder features {missing} are not backbone endpoints {sorted(endpoints)}.")
        decoder = decoder_branch(settings, "semantic_decoder", **bn)
        head = PredictionHead(num_classes, settings["head_channels"], name="semantic_head", **bn)
        logits = head(decoder([endpoints[key] for key in keys]))  # [B, H/4, W/4, classes]
        outputs = {"semantic_logits": ResizeLogitsToInput(name="resize_to_input", dtype="float32")(images, logits)}
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.semantic_decoder_settings = settings
        self.batch_norm_settings = bn
        self.semantic_decoder = decoder
        self.semantic_head = head

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "semantic_decoder": jsonable_settings(self.semantic_decoder_settings),
            **self.batch_norm_settings,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
