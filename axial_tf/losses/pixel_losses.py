"""Per-pixel Panoptic-DeepLab losses and DeepLab2's per-image top-k average, in `keras.ops`.

Steps 1-3 of the averaging that `panoptic_losses.py` documents: the weighted per-pixel losses
(`semantic_pixel_loss`, `center_pixel_loss`, `offset_pixel_loss`, all [B, H, W]) and their
per-image average (`average_top_k_loss`, [B]). Every backend computes in float32, whatever the
dtype of the predictions. TensorFlow's label checks sit behind a backend check, with a lazy import.
"""

import math

import keras
import numpy as np
from keras import ops


def check_top_k_percent(name, value):
    """Returns a top-k fraction as a float after checking that it lies in [0, 1].

    Args:
        name: The argument's name, quoted in the error.
        value: The fraction of the pixels to keep.

    Raises:
        ValueError: If `value` lies outside [0, 1].
    """
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0.0, 1.0], got {value}.")
    return float(value)


def get_tensor(tensors, key, owner):
    """`tensors[key]`, or a ValueError naming the missing key and the keys `owner` has."""
    if key not in tensors:
        raise ValueError(f"{owner} is missing key '{key}' (has {sorted(tensors)}).")
    return tensors[key]


def _as_float32(tensor, key, rank):
    """`tensor` cast to float32, after checking its static rank."""
    tensor = ops.cast(tensor, "float32")
    if ops.ndim(tensor) not in (None, rank):
        raise ValueError(f"'{key}' must have rank {rank}, got shape {tuple(tensor.shape)}.")
    return tensor


def _top_k_count(flat_loss, num_pixels, top_k_percent):
    """k = round(top_k_percent * N), computed in float32 as DeepLab2 does.

    A Python int when N is static (always on JAX and PyTorch, where `top_k` needs one); an int32
    scalar tensor inside a TensorFlow graph with unknown image sizes.
    """
    if num_pixels is not None:
        return int(np.round(np.float32(top_k_percent) * np.float32(num_pixels)))
    dynamic_pixels = ops.cast(ops.shape(flat_loss)[1], "float32")
    return ops.cast(ops.round(top_k_percent * dynamic_pixels), "int32")


def average_top_k_loss(weighted_pixel_loss, top_k_percent=1.0):
    """DeepLab2's per-image average of the hardest weighted pixel losses.

    Args:
        weighted_pixel_loss: float [B, ...], per-pixel loss times weight.
        top_k_percent: Fraction of the pixels of each image to keep (the largest values); 1.0
            keeps all of them.

    Returns:
        float32 [B]: per image, the sum of the kept values divided by the number of non-zero
        kept values (0 when there is none); NaN when any value of the image is NaN or Inf.

    Example:
        >>> average_top_k_loss(np.array([[0.5, 0.0, 3.0, 1.0, 2.0]], "float32"), 0.4)  # [2.5]
    """
    pixel_loss = ops.cast(weighted_pixel_loss, "float32")
    pixel_shape = tuple(pixel_loss.shape)[1:]
    num_pixels = None if None in pixel_shape else math.prod(pixel_shape)
    flat_loss = ops.reshape(pixel_loss, (ops.shape(pixel_loss)[0], -1))  # [B, N]
    # top_k may skip a NaN pixel, so finiteness is judged on all of them.
    all_finite = ops.all(ops.isfinite(flat_loss), axis=1)  # [B]
    if top_k_percent < 1.0:
        k = _top_k_count(flat_loss, num_pixels, top_k_percent)
        flat_loss, _ = ops.top_k(flat_loss, k, sorted=False)  # [B, k]
    num_non_zero = ops.sum(ops.cast(ops.not_equal(flat_loss, 0.0), "float32"), axis=1)  # [B]
    average = ops.divide_no_nan(ops.sum(flat_loss, axis=1), num_non_zero)  # [B]
    return ops.where(all_finite, average, float("nan"))


def _tensorflow_cross_entropy(labels, logits, ignore_label):
    """TensorFlow: cross-entropy [B, H, W] whose labels are checked by TensorFlow itself.

    The asserts raise InvalidArgumentError on a label outside [0, num_classes); XLA drops them,
    and there (as on GPU) TensorFlow's cross-entropy kernel returns NaN for such a label.
    """
    import tensorflow as tf

    num_classes = ops.shape(logits)[-1]
    tf.debugging.assert_non_negative(labels, message="'semantic_label' has a negative value")
    tf.debugging.assert_less(
        labels,
        num_classes,
        message=(
            "'semantic_label' has a value >= the number of classes of 'semantic_logits' that is "
            f"not ignore_label={ignore_label}"
        ),
    )
    # The kernel itself, on the int32 labels (Keras' op would first cast them to int64).
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def _checked_cross_entropy(labels, logits):
    """JAX, PyTorch: cross-entropy [B, H, W], NaN where a label lies outside [0, num_classes).

    Their own kernels would not say so: JAX's one-hot gives such a pixel a loss of 0, PyTorch's
    cross-entropy raises an IndexError that names no key.
    """
    num_classes = ops.shape(logits)[-1]
    in_range = ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, num_classes))
    cross_entropy = ops.sparse_categorical_crossentropy(
        ops.where(in_range, labels, 0), logits, from_logits=True
    )  # [B, H, W]
    return ops.where(in_range, cross_entropy, float("nan"))


def semantic_pixel_loss(semantic_label, semantic_logits, semantic_weights, ignore_label):
    """Weighted softmax cross-entropy per pixel.

    A label outside [0, num_classes) that is not `ignore_label` never yields a plausible loss,
    whatever its weight: on TensorFlow an assertion raises `InvalidArgumentError` (under XLA,
    which drops asserts, the pixel's loss is NaN); on JAX and PyTorch the pixel's loss is NaN. A
    NaN makes the image's `average_top_k_loss` NaN, which `check_finite` reports.

    Args:
        semantic_label: int (or integer-valued float) [B, H, W]; `ignore_label` marks void.
        semantic_logits: float [B, H, W, C] (float16/bfloat16 are computed in float32).
        semantic_weights: float [B, H, W].
        ignore_label: Label excluded from the loss.

    Returns:
        float32 [B, H, W]: cross-entropy times weight, 0 on ignored pixels, NaN where the logits
        are not finite or the label is out of range.

    Example:
        >>> semantic_pixel_loss(labels, logits, weights, ignore_label=255)  # [B, H, W]
    """
    logits = _as_float32(semantic_logits, "semantic_logits", 4)  # [B, H, W, C]
    weights = _as_float32(semantic_weights, "semantic_weights", 3)  # [B, H, W]
    labels = ops.cast(semantic_label, "int32")  # [B, H, W]
    is_valid = ops.not_equal(labels, ignore_label)
    # Void pixels are computed as class 0 and weighted 0; boolean masks would break XLA.
    valid_labels = ops.where(is_valid, labels, 0)  # [B, H, W]
    if keras.backend.backend() == "tensorflow":
        cross_entropy = _tensorflow_cross_entropy(valid_labels, logits, ignore_label)
    else:
        cross_entropy = _checked_cross_entropy(valid_labels, logits)
    return cross_entropy * weights * ops.cast(is_valid, "float32")  # [B, H, W]


def center_pixel_loss(center_heatmap, center_prediction, center_weights):
    """Weighted squared error of the center heatmap per pixel.

    Args:
        center_heatmap: float [B, H, W], the target heatmap.
        center_prediction: float [B, H, W] or [B, H, W, 1], the predicted heatmap.
        center_weights: float [B, H, W].

    Returns:
        float32 [B, H, W].

    Example:
        >>> center_pixel_loss(targets["center_heatmap"], outputs["center_heatmap"], weights)
    """
    if ops.ndim(center_prediction) == 4:
        center_prediction = ops.squeeze(center_prediction, axis=-1)
    prediction = _as_float32(center_prediction, "center_heatmap", 3)  # [B, H, W]
    target = _as_float32(center_heatmap, "center_heatmap", 3)
    return ops.square(target - prediction) * _as_float32(center_weights, "center_weights", 3)


def offset_pixel_loss(offset_map, offset_prediction, offset_weights):
    """Weighted absolute error of the offsets per pixel, averaged over (dy, dx).

    Args:
        offset_map: float [B, H, W, 2], the target offsets.
        offset_prediction: float [B, H, W, 2], the predicted offsets.
        offset_weights: float [B, H, W].

    Returns:
        float32 [B, H, W].

    Example:
        >>> offset_pixel_loss(targets["offset_map"], outputs["offset_map"], weights)
    """
    target = _as_float32(offset_map, "offset_map", 4)  # [B, H, W, 2]
    prediction = _as_float32(offset_prediction, "offset_map", 4)
    absolute_error = ops.mean(ops.abs(target - prediction), axis=-1)  # [B, H, W]
    return absolute_error * _as_float32(offset_weights, "offset_weights", 3)
