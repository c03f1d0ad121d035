"""Panoptic-DeepLab losses, averaged exactly as DeepLab2 averages them.

DeepLab2 (`model/loss/base_loss.py`, `loss_builder.py`, `trainer/trainer.py`):

1. Per pixel: softmax cross-entropy (semantic), squared error (center
   heatmap) or absolute error averaged over the two offset channels (offsets).
2. Multiplied by the per-pixel weights of the targets (ignore pixels get 0).
3. Per image: optionally keep the `top_k_percent` largest weighted pixel
   losses (k = round(top_k_percent * H * W)), then divide their sum by the
   number of NON-ZERO values among them (not by the weight sum). Pixels with
   weight 0 therefore do not count, a small instance with weight 3 counts
   once in the denominator and thrice in the numerator, and a pixel whose
   loss is exactly 0 (a perfect prediction) does not count either. An image
   without any non-zero value has loss 0.
4. Multiplied by the loss weight (1, 200, 0.01 by default), then averaged over
   the images of the (per-replica) batch; the total is the sum of the three.

Unlike DeepLab2's trainer, which replaces a NaN loss by 0, a non-finite value
propagates to the returned loss (even from a pixel that top-k mining skipped
or that has weight 0) and `check_finite` turns it into an error.
"""

import numpy as np
import tensorflow as tf

LOSS_NAMES = ("semantic_loss", "center_loss", "offset_loss", "total_loss")


class NonFiniteLossError(FloatingPointError):
    """Raised by `check_finite` when a loss value is NaN or Inf."""


def _check_percentage(name, value):
    """Validates a top-k percentage in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0.0, 1.0], got {value}.")
    return float(value)


def average_top_k_loss(weighted_pixel_loss, top_k_percent=1.0):
    """DeepLab2's per-image average of the hardest weighted pixel losses.

    Args:
        weighted_pixel_loss: float32 [B, ...], per-pixel loss times weight.
        top_k_percent: Fraction of the pixels of each image to keep (the
            largest values); 1.0 keeps all of them.

    Returns:
        float32 [B]: per image, the sum of the kept values divided by the
        number of non-zero kept values (0 when there is none); NaN when any
        value of the image is NaN or Inf.
    """
    batch = tf.shape(weighted_pixel_loss)[0]
    flat_loss = tf.reshape(weighted_pixel_loss, [batch, -1])  # [B, N]
    # top_k may skip a NaN pixel, so finiteness is judged on all of them.
    all_finite = tf.reduce_all(tf.math.is_finite(flat_loss), axis=1)  # [B]
    if top_k_percent < 1.0:
        num_pixels = tf.cast(tf.shape(flat_loss)[1], tf.float32)
        k = tf.cast(tf.math.round(top_k_percent * num_pixels), tf.int32)
        flat_loss = tf.math.top_k(flat_loss, k, sorted=False).values  # [B, k]
    num_non_zero = tf.reduce_sum(tf.cast(tf.not_equal(flat_loss, 0.0), tf.float32), 1)
    average = tf.math.divide_no_nan(tf.reduce_sum(flat_loss, axis=1), num_non_zero)
    return tf.where(all_finite, average, tf.constant(np.nan, tf.float32))


def _get(tensors, key, owner):
    """Looks up `key` in the targets or predictions dict with a clear error."""
    if key not in tensors:
        raise ValueError(f"{owner} is missing key '{key}' (has {sorted(tensors)}).")
    return tensors[key]


def _as_float32(tensor, key, rank):
    """Casts to float32 and checks the static rank."""
    tensor = tf.cast(tensor, tf.float32)
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(f"'{key}' must have rank {rank}, got shape {tensor.shape}.")
    return tensor


def semantic_pixel_loss(semantic_label, semantic_logits, semantic_weights, ignore_label):
    """Weighted softmax cross-entropy per pixel.

    Args:
        semantic_label: int [B, H, W]; `ignore_label` marks void.
        semantic_logits: float32 [B, H, W, C].
        semantic_weights: float32 [B, H, W].
        ignore_label: Label excluded from the loss.

    Returns:
        float32 [B, H, W]: cross-entropy times weight, 0 on ignored pixels
        (NaN if the logits are not finite there).
    """
    semantic_label = tf.cast(semantic_label, tf.int32)
    is_valid = tf.not_equal(semantic_label, ignore_label)
    num_classes = tf.shape(semantic_logits)[-1]
    # Void pixels are checked as class 0; boolean_mask would break XLA.
    valid_labels = tf.where(is_valid, semantic_label, 0)  # [B, H, W]
    tf.debugging.assert_non_negative(
        valid_labels, message="'semantic_label' has a negative value"
    )
    tf.debugging.assert_less(
        valid_labels,
        num_classes,
        message=(
            "'semantic_label' has a value >= the number of classes of "
            f"'semantic_logits' that is not ignore_label={ignore_label}"
        ),
    )
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=valid_labels, logits=semantic_logits
    )  # [B, H, W]
    return cross_entropy * semantic_weights * tf.cast(is_valid, tf.float32)


class PanopticLoss:
    """Panoptic-DeepLab loss: top-k cross-entropy + center MSE + offset L1.

    Targets come from `axial_tf.targets.PanopticTargetGenerator`; predictions
    from the model. Predictions may be float16/bfloat16 (mixed precision):
    everything is computed in float32.

    Distribution: the returned scalars are means over the images of the batch
    passed in, i.e. per-replica means under `tf.distribute`. As in DeepLab2,
    divide `total_loss` by `strategy.num_replicas_in_sync` before taking
    gradients (gradients are summed across replicas), and average the logged
    values over replicas (e.g. `strategy.reduce(MEAN, ...)`).

    Example:
        >>> loss_fn = PanopticLoss()
        >>> losses = loss_fn(targets, model(images, training=True))
        >>> check_finite(losses)
        >>> losses["total_loss"]  # scalar float32
    """

    def __init__(
        self,
        semantic_weight=1.0,
        center_weight=200.0,
        offset_weight=0.01,
        top_k_percent=0.2,
        center_top_k_percent=1.0,
        offset_top_k_percent=1.0,
        ignore_label=255,
    ):
        """Initialises the loss.

        Args:
            semantic_weight: Weight of the semantic cross-entropy.
            center_weight: Weight of the center heatmap MSE.
            offset_weight: Weight of the offset L1.
            top_k_percent: Fraction of the hardest pixels per image used by
                the semantic loss (DeepLab2's `top_k_percent`, 0.2).
            center_top_k_percent: Same for the center loss (1.0 = all).
            offset_top_k_percent: Same for the offset loss (1.0 = all).
            ignore_label: Semantic label excluded from the semantic loss.

        Raises:
            ValueError: If a percentage is outside [0, 1].
        """
        self.semantic_weight = float(semantic_weight)
        self.center_weight = float(center_weight)
        self.offset_weight = float(offset_weight)
        self.top_k_percent = _check_percentage("top_k_percent", top_k_percent)
        self.center_top_k_percent = _check_percentage(
            "center_top_k_percent", center_top_k_percent
        )
        self.offset_top_k_percent = _check_percentage(
            "offset_top_k_percent", offset_top_k_percent
        )
        self.ignore_label = int(ignore_label)

    def get_config(self):
        """Returns the constructor arguments as a dict."""
        return {
            "semantic_weight": self.semantic_weight,
            "center_weight": self.center_weight,
            "offset_weight": self.offset_weight,
            "top_k_percent": self.top_k_percent,
            "center_top_k_percent": self.center_top_k_percent,
            "offset_top_k_percent": self.offset_top_k_percent,
            "ignore_label": self.ignore_label,
        }

    @classmethod
    def from_config(cls, config):
        """Builds a loss from `get_config()` output."""
        return cls(**config)

    def per_image(self, targets, predictions):
        """Weighted losses of every image.

        Args:
            targets: Dict with `semantic_label` [B, H, W], `semantic_weights`,
                `center_heatmap`, `center_weights`, `offset_weights` [B, H, W]
                and `offset_map` [B, H, W, 2].
            predictions: Dict with `semantic_logits` [B, H, W, C],
                `center_heatmap` [B, H, W] (or [B, H, W, 1]) and `offset_map`
                [B, H, W, 2].

        Returns:
            Dict of float32 [B] tensors keyed by `LOSS_NAMES`.
        """
        logits = _as_float32(
            _get(predictions, "semantic_logits", "predictions"), "semantic_logits", 4
        )
        center_pred = tf.cast(_get(predictions, "center_heatmap", "predictions"), tf.float32)
        if center_pred.shape.rank == 4:
            center_pred = tf.squeeze(center_pred, axis=-1)
        center_pred = _as_float32(center_pred, "center_heatmap", 3)
        offset_pred = _as_float32(
            _get(predictions, "offset_map", "predictions"), "offset_map", 4
        )

        semantic = average_top_k_loss(
            semantic_pixel_loss(
                _get(targets, "semantic_label", "targets"),
                logits,
                _as_float32(
                    _get(targets, "semantic_weights", "targets"), "semantic_weights", 3
                ),
                self.ignore_label,
            ),
            self.top_k_percent,
        )
        center_target = _as_float32(
            _get(targets, "center_heatmap", "targets"), "center_heatmap", 3
        )
        center_weights = _as_float32(
            _get(targets, "center_weights", "targets"), "center_weights", 3
        )
        center = average_top_k_loss(
            tf.square(center_target - center_pred) * center_weights,
            self.center_top_k_percent,
        )
        offset_target = _as_float32(_get(targets, "offset_map", "targets"), "offset_map", 4)
        offset_weights = _as_float32(
            _get(targets, "offset_weights", "targets"), "offset_weights", 3
        )
        offset = average_top_k_loss(
            tf.reduce_mean(tf.abs(offset_target - offset_pred), axis=-1) * offset_weights,
            self.offset_top_k_percent,
        )
        losses = {
            "semantic_loss": self.semantic_weight * semantic,
            "center_loss": self.center_weight * center,
            "offset_loss": self.offset_weight * offset,
        }
        losses["total_loss"] = tf.add_n(list(losses.values()))
        return losses

    def __call__(self, targets, predictions):
        """Batch-mean losses (per-replica under tf.distribute).

        Args:
            targets: See `per_image`.
            predictions: See `per_image`.

        Returns:
            Dict of scalar float32 tensors keyed by `LOSS_NAMES`.
        """
        return {
            name: tf.reduce_mean(value)
            for name, value in self.per_image(targets, predictions).items()
        }


def _local_values(value):
    """The per-replica components of a distributed value, else the value."""
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values
    return (value,)


def check_finite(losses, step=None):
    """Fails loudly on a NaN or Inf loss instead of training on it.

    Eagerly (e.g. on the values a compiled train step returned) it raises
    `NonFiniteLossError` naming every non-finite entry. Inside a `tf.function`
    it adds `tf.debugging.assert_all_finite` checks, which raise
    `tf.errors.InvalidArgumentError` naming the loss when the graph runs; use
    the returned dict so the checks are executed.

    Args:
        losses: Dict name -> loss value (tensor, numpy value, Python float or
            `tf.distribute` per-replica value).
        step: Optional training step, quoted in the error message.

    Returns:
        `losses` (eager) or a dict of checked tensors (graph).

    Raises:
        NonFiniteLossError: Eagerly, if any value is NaN or Inf.
    """
    where = "" if step is None else f" at step {int(step)}"
    if not tf.executing_eagerly():
        return {
            name: tf.debugging.assert_all_finite(
                value, message=f"Loss '{name}' is NaN or Inf{where}"
            )
            for name, value in losses.items()
        }
    non_finite = {}
    for name, value in losses.items():
        arrays = [np.asarray(component, dtype=np.float64) for component in _local_values(value)]
        if not all(np.all(np.isfinite(array)) for array in arrays):
            non_finite[name] = [array.tolist() for array in arrays]
    if non_finite:
        details = ", ".join(f"{name}={values}" for name, values in non_finite.items())
        raise NonFiniteLossError(
            f"Non-finite loss{where}: {details}. Check the learning rate, the "
            "inputs and the loss-scale settings of mixed precision."
        )
    return losses
