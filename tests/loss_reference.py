"""A slow float64 numpy reference of the Panoptic-DeepLab losses, and a model to `fit` them on.

No TensorFlow: the TensorFlow suite (tests/test_losses.py) and the backend suite
(tests/backends/test_losses_backends.py) both check `axial_tf.losses` against it. The reference
follows DeepLab2's averaging as `axial_tf/losses/panoptic_losses.py` documents it: per image, the
weighted pixel losses, the `top_k_percent` largest of them, their sum divided by the number of
non-zero kept values.
"""

import keras
import numpy as np

from axial_tf.losses import LOSS_NAMES


def reference_average(pixel_losses, top_k_percent):
    """DeepLab2's per-image average of one image's weighted losses, in float64."""
    flat = np.asarray(pixel_losses, np.float64).reshape(-1)
    k = int(np.round(np.float32(top_k_percent) * np.float32(flat.size)))
    kept = np.sort(flat)[::-1][:k]
    num_non_zero = np.count_nonzero(kept)
    return kept.sum() / num_non_zero if num_non_zero else 0.0


def reference_losses(
    targets, predictions, weights=(1.0, 200.0, 0.01), top_k=(0.2, 1.0, 1.0), ignore_label=255
):
    """Per-image losses in float64: dict name -> [B], keyed by `LOSS_NAMES`.

    Args:
        targets: Dict of numpy arrays as `PanopticTargetGenerator` makes them.
        predictions: Dict of numpy arrays (any float dtype, read as float64): `semantic_logits`
            [B, H, W, C], `center_heatmap` [B, H, W], `offset_map` [B, H, W, 2].
        weights: Semantic, center and offset loss weights.
        top_k: Semantic, center and offset top-k fractions.
        ignore_label: The semantic label without loss.
    """
    per_image = {name: [] for name in LOSS_NAMES}
    for b in range(len(targets["semantic_label"])):
        logits = np.asarray(predictions["semantic_logits"][b], np.float64)  # [H, W, C]
        labels = np.asarray(targets["semantic_label"][b], np.int64)  # [H, W]
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        is_valid = labels != ignore_label
        picked = np.take_along_axis(log_probs, np.where(is_valid, labels, 0)[..., None], -1)[..., 0]
        semantic = np.where(is_valid, -picked, 0.0) * targets["semantic_weights"][b]
        center_error = targets["center_heatmap"][b] - np.asarray(
            predictions["center_heatmap"][b], np.float64)
        center = center_error**2 * targets["center_weights"][b]
        offset_error = targets["offset_map"][b] - np.asarray(
            predictions["offset_map"][b], np.float64)
        offset = np.abs(offset_error).mean(-1) * targets["offset_weights"][b]
        values = [
            weight * reference_average(loss, k)
            for weight, loss, k in zip(weights, (semantic, center, offset), top_k)
        ]
        for name, value in zip(LOSS_NAMES, values + [sum(values)]):
            per_image[name].append(value)
    return {name: np.array(values) for name, values in per_image.items()}


def tiny_panoptic_model(num_classes):
    """A 1x1-convolution model with `AxialDeepLab`'s three outputs, for `compile`/`fit` tests.

    Returns:
        A functional `keras.Model` on [B, H, W, 3] images returning `semantic_logits`
        [B, H, W, num_classes], `center_heatmap` [B, H, W] and `offset_map` [B, H, W, 2].
    """
    images = keras.Input((None, None, 3))
    center = keras.layers.Conv2D(1, 1, name="center_head")(images)  # [B, H, W, 1]
    outputs = {
        "semantic_logits": keras.layers.Conv2D(num_classes, 1, name="semantic_head")(images),
        "center_heatmap": keras.ops.squeeze(center, axis=-1),  # [B, H, W]
        "offset_map": keras.layers.Conv2D(2, 1, name="offset_head")(images),
    }
    return keras.Model(images, outputs)
