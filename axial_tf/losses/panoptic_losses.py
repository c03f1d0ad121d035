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
or that has weight 0) and `check_finite` turns it into an error. A semantic
label outside [0, num_classes) that is not `ignore_label` is an error on
TensorFlow (an assertion, outside XLA) and a NaN loss for its image on every
backend, never a plausible value.

Steps 1-3 are `pixel_losses.py`; the three terms as Keras losses for
`compile`/`fit` are `fit_losses.py` (`PanopticLoss.keras_losses`). Everything
is `keras.ops` and runs on every Keras backend; TensorFlow-only parts (label
asserts, graph-mode checks, tf.distribute values) import TensorFlow lazily.
"""

import keras
import numpy as np

from axial_tf.losses.fit_losses import (
    PanopticCenterLoss,
    PanopticOffsetLoss,
    PanopticSemanticLoss,
    pack_fit_targets,
)
from axial_tf.losses.pixel_losses import check_top_k_percent, get_tensor

LOSS_NAMES = ("semantic_loss", "center_loss", "offset_loss", "total_loss")


class NonFiniteLossError(FloatingPointError):
    """Raised by `check_finite` when a loss value is NaN or Inf."""


class PanopticLoss:
    """Panoptic-DeepLab loss: top-k cross-entropy + center MSE + offset L1.

    Targets come from `axial_tf.targets.PanopticTargetGenerator`; predictions
    from the model. Predictions may be float16/bfloat16 (mixed precision):
    everything is computed in float32. Runs on every Keras backend.

    Distribution: the returned scalars are means over the images of the batch
    passed in, i.e. per-replica means under `tf.distribute`. As in DeepLab2,
    divide `total_loss` by `strategy.num_replicas_in_sync` before taking
    gradients (gradients are summed across replicas), and average the logged
    values over replicas (e.g. `strategy.reduce(MEAN, ...)`).

    Keras `fit`: `keras_losses()` gives the three terms as Keras losses keyed
    by the model outputs and `fit_targets(targets)` packs the targets for them
    (layout in `fit_losses.py`); Keras then reports `total_loss` as `loss`.

    Example:
        >>> loss_fn = PanopticLoss()
        >>> losses = loss_fn(targets, model(images, training=True))
        >>> check_finite(losses)
        >>> losses["total_loss"]  # scalar float32
        >>> model.compile(optimizer="adam", loss=loss_fn.keras_losses())
        >>> model.fit(images, loss_fn.fit_targets(targets), batch_size=8)
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
        self.top_k_percent = check_top_k_percent("top_k_percent", top_k_percent)
        self.center_top_k_percent = check_top_k_percent(
            "center_top_k_percent", center_top_k_percent
        )
        self.offset_top_k_percent = check_top_k_percent(
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

    def keras_losses(self):
        """The three weighted terms as Keras losses, for `model.compile(loss=...)`.

        Returns:
            Dict keyed by the `AxialDeepLab` outputs: `semantic_logits` ->
            `PanopticSemanticLoss`, `center_heatmap` -> `PanopticCenterLoss`,
            `offset_map` -> `PanopticOffsetLoss`, with this loss's weights,
            top-k fractions and ignore label. Their targets come from
            `fit_targets`.
        """
        return {
            "semantic_logits": PanopticSemanticLoss(
                self.semantic_weight, self.top_k_percent, self.ignore_label
            ),
            "center_heatmap": PanopticCenterLoss(self.center_weight, self.center_top_k_percent),
            "offset_map": PanopticOffsetLoss(self.offset_weight, self.offset_top_k_percent),
        }

    def fit_targets(self, targets):
        """Packs `targets` for the losses of `keras_losses()` (see `fit_losses.pack_fit_targets`).

        Args:
            targets: See `per_image`; numpy arrays or backend tensors (on
                TensorFlow also inside a `tf.data` `map`).

        Returns:
            Dict keyed by the model outputs: `semantic_logits` [B, H, W, 2]
            (label, weight), `center_heatmap` [B, H, W, 2] (heatmap, weight)
            and `offset_map` [B, H, W, 3] (dy, dx, weight), float32.
        """
        return pack_fit_targets(targets)

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

        def target(key):
            return get_tensor(targets, key, "targets")

        def prediction(key):
            return get_tensor(predictions, key, "predictions")

        terms = self.keras_losses()
        semantic = terms["semantic_logits"].per_image(
            target("semantic_label"), target("semantic_weights"), prediction("semantic_logits")
        )
        center = terms["center_heatmap"].per_image(
            target("center_heatmap"), target("center_weights"), prediction("center_heatmap")
        )
        offset = terms["offset_map"].per_image(
            target("offset_map"), target("offset_weights"), prediction("offset_map")
        )
        return {
            "semantic_loss": semantic,
            "center_loss": center,
            "offset_loss": offset,
            "total_loss": semantic + center + offset,
        }

    def __call__(self, targets, predictions):
        """Batch-mean losses (per-replica under tf.distribute).

        Args:
            targets: See `per_image`.
            predictions: See `per_image`.

        Returns:
            Dict of scalar float32 tensors keyed by `LOSS_NAMES`.
        """
        return {
            name: keras.ops.mean(value)
            for name, value in self.per_image(targets, predictions).items()
        }


def _local_values(value):
    """The per-replica components of a tf.distribute value, else `(value,)`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(value, tf.distribute.DistributedValues):
            return value.values
    return (value,)


def _in_tensorflow_graph():
    """Whether this runs while TensorFlow traces a graph (a `tf.function`)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.executing_eagerly()


def check_finite(losses, step=None):
    """Fails loudly on a NaN or Inf loss instead of training on it.

    On concrete values (eager TensorFlow, e.g. what a compiled train step
    returned; JAX or PyTorch values outside a traced function) it raises
    `NonFiniteLossError` naming every non-finite entry. Inside a
    `tf.function` it adds `tf.debugging.assert_all_finite` checks, which
    raise `tf.errors.InvalidArgumentError` naming the loss when the graph
    runs; use the returned dict so the checks are executed.

    Args:
        losses: Dict name -> loss value (backend tensor, numpy value, Python
            float or `tf.distribute` per-replica value).
        step: Optional training step, quoted in the error message.

    Returns:
        `losses` (eager) or a dict of checked tensors (TensorFlow graph).

    Raises:
        NonFiniteLossError: On concrete values, if any value is NaN or Inf.

    Example:
        >>> check_finite(PanopticLoss()(targets, predictions), step=12)
    """
    where = "" if step is None else f" at step {int(step)}"
    if _in_tensorflow_graph():
        import tensorflow as tf

        return {
            name: tf.debugging.assert_all_finite(
                value, message=f"Loss '{name}' is NaN or Inf{where}"
            )
            for name, value in losses.items()
        }
    non_finite = {}
    for name, value in losses.items():
        arrays = [
            np.asarray(keras.ops.convert_to_numpy(component), np.float64)
            for component in _local_values(value)
        ]
        if not all(np.all(np.isfinite(array)) for array in arrays):
            non_finite[name] = [array.tolist() for array in arrays]
    if non_finite:
        details = ", ".join(f"{name}={values}" for name, values in non_finite.items())
        raise NonFiniteLossError(
            f"Non-finite loss{where}: {details}. Check the learning rate, the "
            "inputs and the loss-scale settings of mixed precision."
        )
    return losses
