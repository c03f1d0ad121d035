"""The one preprocessing of evaluation, prediction and export.

Evaluation (`pipeline.build_panoptic_eval_dataset`), `tools/predict.py` and the
exported SavedModel all call `InferencePreprocessor` (and, for
classification, `classification_eval_image`), so their inputs, and hence
their outputs, agree. Only stock TF ops are used, so the functions also run in
a SavedModel graph served by TF Serving. Normalisation happens inside the
model: images leave here as float32 in [0, 255].
"""

import dataclasses

import tensorflow as tf

RESIZE_POLICIES = ("pad", "shrink", "fit")
_RESTORE_KINDS = ("label", "logits", "offsets")


@dataclasses.dataclass(frozen=True)
class InferencePreprocessor:
    """Resizes and pads images to the model's fixed input size, and back.

    The image is resized (keeping its aspect ratio, bilinear) according to
    `resize_policy`, then padded at the bottom/right with `pad_value` to
    `height` x `width`:
      - "pad": never resize; an image larger than the input size is an error.
      - "shrink": downscale only images that do not fit.
      - "fit": scale every image so that it just fits.
    A size-preserving resize is the identity, so an image of exactly the
    input size passes through unchanged.

    Attributes:
        height: Model input height.
        width: Model input width.
        resize_policy: One of RESIZE_POLICIES.
        pad_value: Image fill value (DeepLab2 pads with the mean pixel 127.5).

    Example:
        >>> preprocessor = InferencePreprocessor(height=1025, width=2049)
        >>> image, meta = preprocessor.preprocess_image(raw_image)  # uint8 [H, W, 3]
        >>> outputs = model(image[tf.newaxis])
        >>> panoptic = preprocessor.restore(outputs_panoptic[0], meta, kind="label")
    """

    height: int
    width: int
    resize_policy: str = "shrink"
    pad_value: float = 127.5

    def __post_init__(self):
        if self.resize_policy not in RESIZE_POLICIES:
            raise ValueError(
                f"resize_policy must be one of {RESIZE_POLICIES}, got {self.resize_policy!r}."
            )
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"Input size must be positive, got {self.height}x{self.width}.")

    @property
    def size(self):
        """The model input size (height, width)."""
        return (self.height, self.width)

    def preprocess_image(self, image):
        """Resizes and pads one image, or a batch of same-sized images.

        Args:
            image: uint8 or float [H, W, 3] or [B, H, W, 3], values in [0, 255].

        Returns:
            A tuple `(image, meta)`: float32 [height, width, 3] (or
            [B, height, width, 3]) and a dict with `original_size` and
            `valid_size`, int32 [2] each (the size before, and the size of the
            image content after resizing; the rest is padding).
        """
        image = tf.cast(image, tf.float32)
        original_size = tf.shape(image)[-3:-1]
        valid_size = self._resized_size(original_size)
        image = tf.image.resize(image, valid_size, method="bilinear")
        image = self._pad(image, valid_size, self.pad_value)
        return image, {"original_size": original_size, "valid_size": valid_size}

    def preprocess_label(self, panoptic_label, meta, void_label):
        """Applies `preprocess_image`'s resize and pad to a label map.

        Args:
            panoptic_label: int32 [H, W] or [B, H, W].
            meta: The `meta` returned for the matching image.
            void_label: Fill value of the padding (ignore_label * label_divisor).

        Returns:
            int32 [height, width] (or [B, height, width]).
        """
        label = tf.image.resize(
            panoptic_label[..., tf.newaxis], meta["valid_size"], method="nearest"
        )
        return self._pad(label, meta["valid_size"], void_label)[..., 0]

    def restore(self, prediction, meta, kind="label"):
        """Maps one prediction at the input size back to the original image.

        Args:
            prediction: [height, width] or [height, width, C] for one image.
            meta: The `meta` of that image (int32 [2] entries).
            kind: "label" (nearest; panoptic/semantic maps), "logits" (bilinear)
                or "offsets" (bilinear, and the (dy, dx) vectors rescaled).

        Returns:
            The prediction at the original size, same rank and dtype.
        """
        if kind not in _RESTORE_KINDS:
            raise ValueError(f"kind must be one of {_RESTORE_KINDS}, got {kind!r}.")
        valid_size, original_size = meta["valid_size"], meta["original_size"]
        has_channels = prediction.shape.rank == 3
        restored = prediction if has_channels else prediction[..., tf.newaxis]
        restored = restored[: valid_size[0], : valid_size[1]]
        method = "nearest" if kind == "label" else "bilinear"
        restored = tf.cast(
            tf.image.resize(restored, original_size, method=method), prediction.dtype
        )
        if kind == "offsets":
            ratio = tf.cast(original_size, tf.float32) / tf.cast(valid_size, tf.float32)  # (y, x)
            restored = restored * tf.cast(ratio, restored.dtype)
        return restored if has_channels else restored[..., 0]

    def _resized_size(self, original_size):
        """Content size after the resize policy, int32 [2]."""
        target = tf.constant(self.size, tf.int32)
        if self.resize_policy == "pad":
            with tf.control_dependencies(
                [
                    tf.debugging.assert_less_equal(
                        original_size,
                        target,
                        message=(
                            f"Image larger than the model input {self.height}x{self.width} "
                            "with resize_policy='pad'"
                        ),
                    )
                ]
            ):
                return tf.identity(original_size)
        ratio = tf.cast(target, tf.float32) / tf.cast(original_size, tf.float32)
        scale = tf.reduce_min(ratio)
        if self.resize_policy == "shrink":
            scale = tf.minimum(scale, 1.0)
        resized = tf.cast(tf.round(tf.cast(original_size, tf.float32) * scale), tf.int32)
        return tf.clip_by_value(resized, 1, target)

    def _pad(self, tensor, valid_size, value):
        """Pads [..., h, w, C] at the bottom/right to [..., height, width, C]."""
        paddings = [[0, self.height - valid_size[0]], [0, self.width - valid_size[1]], [0, 0]]
        if tensor.shape.rank == 4:
            paddings = [[0, 0]] + paddings
        padded = tf.pad(tensor, paddings, constant_values=tf.cast(value, tensor.dtype))
        return tf.ensure_shape(
            padded, [None] * (tensor.shape.rank - 3) + [self.height, self.width, None]
        )


def classification_eval_image(image, image_size, crop_fraction=0.875):
    """Center crop and resize: the classification eval/predict/export preprocessing.

    Args:
        image: uint8 or float [H, W, 3] in [0, 255].
        image_size: Output side length.
        crop_fraction: Side of the central square crop relative to the
            shorter image side (0.875 is the usual 224/256).

    Returns:
        float32 [image_size, image_size, 3] in [0, 255].
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    side = tf.cast(tf.cast(tf.minimum(shape[0], shape[1]), tf.float32) * crop_fraction, tf.int32)
    side = tf.maximum(side, 1)
    top = (shape[0] - side) // 2
    left = (shape[1] - side) // 2
    crop = image[top : top + side, left : left + side]
    return tf.ensure_shape(
        tf.image.resize(crop, [image_size, image_size], method="bilinear"),
        [image_size, image_size, 3],
    )
