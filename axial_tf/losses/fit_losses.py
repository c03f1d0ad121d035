"""Panoptic-DeepLab losses for Keras `compile` / `fit`: one `keras.losses.Loss` per model output.

Keras hands each loss the target of one model output, so every target travels with its per-pixel
weights packed on its last axis, in float32 (`pack_fit_targets`, also `PanopticLoss.fit_targets`):

    model output (y_pred)                  packed target (y_true)   channels
    semantic_logits [B, H, W, C]           [B, H, W, 2]             semantic_label, semantic_weights
    center_heatmap  [B, H, W] or [..., 1]  [B, H, W, 2]             center_heatmap, center_weights
    offset_map      [B, H, W, 2]           [B, H, W, 3]             dy, dx, offset_weights

Labels are integers below 2**24, exact in float32. Each loss returns the per-image loss times its
weight, float32 [B]; Keras' default reduction ("sum_over_batch_size") averages it over the batch,
so the three values equal the `semantic_loss`, `center_loss` and `offset_loss` of
`PanopticLoss()(targets, predictions)`, and the `loss` that Keras reports is its `total_loss` (plus
the model's own regularisation losses, if any).
"""

import keras
from keras import ops

from axial_tf.losses.pixel_losses import (
    average_top_k_loss,
    center_pixel_loss,
    check_top_k_percent,
    get_tensor,
    offset_pixel_loss,
    semantic_pixel_loss,
)


def pack_fit_targets(targets):
    """Packs Panoptic-DeepLab targets for `model.fit`, keyed by the model outputs.

    Works on numpy arrays and backend tensors, batched ([B, H, W]) or single images ([H, W]); on
    the TensorFlow backend also inside a `tf.data` `map`.

    Args:
        targets: Dict from `axial_tf.targets.PanopticTargetGenerator` with `semantic_label`,
            `semantic_weights`, `center_heatmap`, `center_weights`, `offset_weights` [B, H, W] and
            `offset_map` [B, H, W, 2].

    Returns:
        Dict of float32 tensors: `semantic_logits` [B, H, W, 2] (label, weight), `center_heatmap`
        [B, H, W, 2] (heatmap, weight) and `offset_map` [B, H, W, 3] (dy, dx, weight).

    Raises:
        ValueError: If a key is missing.

    Example:
        >>> model.fit(images, pack_fit_targets(targets), batch_size=8)
    """

    def target(key):
        return ops.cast(get_tensor(targets, key, "targets"), "float32")

    return {
        "semantic_logits": ops.stack(
            [target("semantic_label"), target("semantic_weights")], axis=-1
        ),  # [B, H, W, 2]
        "center_heatmap": ops.stack(
            [target("center_heatmap"), target("center_weights")], axis=-1
        ),  # [B, H, W, 2]
        "offset_map": ops.concatenate(
            [target("offset_map"), ops.expand_dims(target("offset_weights"), axis=-1)], axis=-1
        ),  # [B, H, W, 3]
    }


class _PanopticTermLoss(keras.losses.Loss):
    """One weighted, top-k averaged Panoptic-DeepLab term; subclasses define `per_image`.

    `output_key` names the model output the loss belongs to, `channels` the packed target's
    last axis (values first, then the weight).
    """

    output_key = None
    channels = None

    def __init__(self, weight, top_k_percent, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight = float(weight)
        self.top_k_percent = check_top_k_percent("top_k_percent", top_k_percent)

    def call(self, y_true, y_pred):
        if ops.ndim(y_true) != 4 or y_true.shape[-1] not in (None, self.channels):
            raise ValueError(
                f"The '{self.output_key}' target must be [B, H, W, {self.channels}] as "
                f"PanopticLoss.fit_targets packs it, got shape {tuple(y_true.shape)}."
            )
        # The label or heatmap [B, H, W], or the offsets [B, H, W, 2]; then the weights [B, H, W].
        values = y_true[..., 0] if self.channels == 2 else y_true[..., :-1]
        return self.per_image(values, y_true[..., -1], y_pred)  # [B]

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "top_k_percent": self.top_k_percent}


@keras.saving.register_keras_serializable(package="axial_tf")
class PanopticSemanticLoss(_PanopticTermLoss):
    """Top-k weighted softmax cross-entropy per image, for the `semantic_logits` output.

    Args:
        weight: Loss weight (DeepLab2: 1.0).
        top_k_percent: Fraction of the hardest pixels of each image that count (DeepLab2: 0.2).
        ignore_label: Semantic label excluded from the loss.
        name: Name of the loss.
        **kwargs: Other `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Example:
        >>> loss = PanopticSemanticLoss(top_k_percent=0.2)
        >>> loss(pack_fit_targets(targets)["semantic_logits"], outputs["semantic_logits"])
    """

    output_key = "semantic_logits"
    channels = 2

    def __init__(self, weight=1.0, top_k_percent=0.2, ignore_label=255, name="semantic_loss",
                 **kwargs):
        super().__init__(weight, top_k_percent, name, **kwargs)
        self.ignore_label = int(ignore_label)

    def per_image(self, semantic_label, semantic_weights, semantic_logits):
        """Weighted semantic loss of every image from unpacked tensors.

        Args:
            semantic_label: int [B, H, W]; `ignore_label` marks void.
            semantic_weights: float [B, H, W].
            semantic_logits: float [B, H, W, C].

        Returns:
            float32 [B].
        """
        pixel_loss = semantic_pixel_loss(
            semantic_label, semantic_logits, semantic_weights, self.ignore_label
        )  # [B, H, W]
        return self.weight * average_top_k_loss(pixel_loss, self.top_k_percent)

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package="axial_tf")
class PanopticCenterLoss(_PanopticTermLoss):
    """Weighted squared error of the center heatmap per image, for the `center_heatmap` output.

    Args:
        weight: Loss weight (DeepLab2: 200.0).
        top_k_percent: Fraction of the pixels of each image that count (DeepLab2: 1.0, all).
        name: Name of the loss.
        **kwargs: Other `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Example:
        >>> loss = PanopticCenterLoss()
        >>> loss(pack_fit_targets(targets)["center_heatmap"], outputs["center_heatmap"])
    """

    output_key = "center_heatmap"
    channels = 2

    def __init__(self, weight=200.0, top_k_percent=1.0, name="center_loss", **kwargs):
        super().__init__(weight, top_k_percent, name, **kwargs)

    def per_image(self, center_heatmap, center_weights, center_prediction):
        """Weighted center loss of every image from unpacked tensors.

        Args:
            center_heatmap: float [B, H, W], the target heatmap.
            center_weights: float [B, H, W].
            center_prediction: float [B, H, W] or [B, H, W, 1].

        Returns:
            float32 [B].
        """
        pixel_loss = center_pixel_loss(center_heatmap, center_prediction, center_weights)
        return self.weight * average_top_k_loss(pixel_loss, self.top_k_percent)


@keras.saving.register_keras_serializable(package="axial_tf")
class PanopticOffsetLoss(_PanopticTermLoss):
    """Weighted absolute error of the offsets per image, for the `offset_map` output.

    Args:
        weight: Loss weight (DeepLab2: 0.01).
        top_k_percent: Fraction of the pixels of each image that count (DeepLab2: 1.0, all).
        name: Name of the loss.
        **kwargs: Other `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Example:
        >>> loss = PanopticOffsetLoss()
        >>> loss(pack_fit_targets(targets)["offset_map"], outputs["offset_map"])
    """

    output_key = "offset_map"
    channels = 3

    def __init__(self, weight=0.01, top_k_percent=1.0, name="offset_loss", **kwargs):
        super().__init__(weight, top_k_percent, name, **kwargs)

    def per_image(self, offset_map, offset_weights, offset_prediction):
        """Weighted offset loss of every image from unpacked tensors.

        Args:
            offset_map: float [B, H, W, 2], the target (dy, dx).
            offset_weights: float [B, H, W].
            offset_prediction: float [B, H, W, 2].

        Returns:
            float32 [B].
        """
        pixel_loss = offset_pixel_loss(offset_map, offset_prediction, offset_weights)
        return self.weight * average_top_k_loss(pixel_loss, self.top_k_percent)
