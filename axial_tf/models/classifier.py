"""Image classification with an (Axial-)ResNet backbone: pooling, dropout, dense logits."""

import keras
from keras import ops

from axial_tf.models.backbone_registry import resolve_backbone
from axial_tf.models.presets import PresetMixin

# torchvision's ImageNet statistics, used by the PyTorch reference (csrhddlam/axial-deeplab).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
INPUT_NORMALIZATIONS = ("symmetric", "imagenet", None)


@keras.saving.register_keras_serializable(package="axial_tf")
class InputNormalization(keras.layers.Layer):
    """Maps images in [0, 255] to the range a backbone was trained on.

    Modes:
      * "symmetric": `x / 127.5 - 1` (DeepLab2 and the panoptic models here).
      * "imagenet": `(x / 255 - mean) / std` with torchvision's ImageNet
        statistics, as the PyTorch reference normalises its inputs.

    Args:
        mode: "symmetric" or "imagenet".
        **kwargs: standard layer arguments.
    """

    def __init__(self, mode="symmetric", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("symmetric", "imagenet"):
            raise ValueError(f"InputNormalization mode must be 'symmetric' or 'imagenet', got {mode!r}.")
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)  # [B, H, W, 3] in [0, 255]
        if self.mode == "symmetric":
            return images / 127.5 - 1.0
        mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, self.compute_dtype)
        stddev = ops.convert_to_tensor(IMAGENET_STDDEV_RGB, self.compute_dtype)
        return (images / 255.0 - mean) / stddev

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def classification_metrics(top_k=5):
    """Top-1 and top-k accuracy on integer labels, named `top1` and `top{k}`."""
    return [
        keras.metrics.SparseCategoricalAccuracy(name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=top_k, name=f"top{top_k}"),
    ]


@keras.saving.register_keras_serializable(package="axial_tf")
class AxialResNetClassifier(PresetMixin, keras.Model):
    """An image classifier: backbone, global average pooling, dropout, dense logits.

    A functional model built in `__init__` on `(None, None, 3)` inputs, so it
    classifies images of any size. It takes float images in [0, 255] and
    normalises them inside (see `InputNormalization`); `input_normalization=None`
    feeds the images to the backbone unchanged. The output is unnormalised
    logits `[B, num_classes]`, in float32 under mixed precision too.
    `compile()` defaults to a from-logits sparse cross-entropy and top-1/top-5
    accuracy.

    Args:
        backbone: an `AxialResNet`, or a registry name (see `list_backbones()`).
        num_classes: number of classes.
        backbone_overrides: `AxialResNet` settings when `backbone` is a name
            (e.g. `{"output_stride": 32}`).
        dropout: dropout rate before the dense layer (0 disables it).
        feature_key: backbone endpoint that is pooled (`backbone_output`: the
            stacked decoder's output if the backbone has one, else `res5`).
        input_normalization: "symmetric", "imagenet" or None (see above).
        **kwargs: `keras.Model` arguments (e.g. `name`).

    Example:
    >>> model = AxialResNetClassifier("axial_resnet_s", num_classes=10,
    ...                               backbone_overrides={"output_stride": 32})
    >>> logits = model(keras.ops.zeros((2, 64, 64, 3)))  # [2, 10]
    """

    def __init__(
        self,
        backbone,
        num_classes,
        backbone_overrides=None,
        dropout=0.0,
        feature_key="backbone_output",
        input_normalization="symmetric",
        **kwargs,
    ):
        backbone = resolve_backbone(backbone, backbone_overrides)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if input_normalization not in INPUT_NORMALIZATIONS:
            raise ValueError(
                f"input_normalization must be one of {INPUT_NORMALIZATIONS}, got {input_normalization!r}."
            )
        endpoints = backbone.output
        if feature_key not in endpoints:
            raise ValueError(f"feature_key {feature_key!r} is not a backbone endpoint: {sorted(endpoints)}.")

        kwargs.setdefault("name", "axial_resnet_classifier")
        images = keras.Input((None, None, backbone.backbone_config["input_channels"]), name="images")
        x = images
        if input_normalization is not None:
            x = InputNormalization(input_normalization, name="normalization")(x)
        features = backbone(x)[feature_key]  # [B, h, w, C]
        pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(features)  # [B, C]
        if dropout > 0:
            pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
        # float32 logits keep the softmax cross-entropy stable under mixed precision.
        logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(pooled)  # [B, classes]
        super().__init__(inputs=images, outputs=logits, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.feature_key = feature_key
        self.input_normalization = input_normalization

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """`keras.Model.compile` with classification defaults.

        Args:
            optimizer: "auto" is SGD with Nesterov momentum 0.9 at 0.1 (the
                ImageNet rate per 256 images); a trainer passes its own.
            loss: "auto" is `SparseCategoricalCrossentropy(from_logits=True)`.
            metrics: "auto" is top-1 and top-5 accuracy (`classification_metrics()`).
            **kwargs: other `keras.Model.compile` arguments.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics == "auto":
            metrics = classification_metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "feature_key": self.feature_key,
            "input_normalization": self.input_normalization,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["backbone"], dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)

