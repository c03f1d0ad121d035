"""Streaming semantic mIoU from a confusion matrix, as a Keras metric."""

import keras
import tensorflow as tf

from axial_tf.metrics._checks import check_int
from axial_tf.metrics.summaries import mean_iou_summary


@keras.saving.register_keras_serializable(package="axial_tf")
class SemanticMeanIoU(keras.metrics.Metric):
    """Mean IoU over classes from an accumulated confusion matrix.

    Inputs are panoptic maps (the class is `value // label_divisor`) or, with
    `label_divisor=1`, semantic maps. Ground-truth pixels of the ignore label
    (or outside [0, num_classes)) are skipped. A predicted void / unknown class
    on a valid ground-truth pixel counts in an extra "no class" column: a miss
    for the ground-truth class, a false positive of no class (as the
    Cityscapes pixel-level evaluation treats unevaluated labels). Classes whose
    union is 0 are left out of the mean. The matrix is a float64 variable with
    on-read sum synchronisation, so it is correct under `tf.distribute`.

    Args:
        num_classes: Number of evaluated classes.
        label_divisor: Divisor of the panoptic encoding (1 for semantic maps).
        ignore_label: Void class.
        name: Metric name.
        **kwargs: Other `keras.metrics.Metric` arguments.

    Example:
        >>> metric = SemanticMeanIoU(num_classes=19)
        >>> metric.update_state(groundtruth_panoptic, predicted_panoptic)
        >>> metric.report()["miou"]
    """

    def __init__(self, num_classes, label_divisor=1000, ignore_label=255,
                 name="semantic_miou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.label_divisor = check_int("label_divisor", label_divisor, minimum=1)
        self.ignore_label = check_int("ignore_label", ignore_label)
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes + 1), initializer="zeros",
            dtype="float64", name="confusion",
        )

    def _valid_class(self, semantic):
        in_range = tf.logical_and(semantic >= 0, semantic < self.num_classes)
        return tf.logical_and(in_range, tf.not_equal(semantic, self.ignore_label))

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch of ground-truth / predicted maps (any equal shapes)."""
        if sample_weight is not None:
            raise ValueError("SemanticMeanIoU does not support sample_weight.")
        y_true = tf.convert_to_tensor(y_true)
        y_pred = tf.convert_to_tensor(y_pred)
        for name, tensor in (("y_true", y_true), ("y_pred", y_pred)):
            if not tensor.dtype.is_integer:
                raise ValueError(f"{name} must hold integer labels, got {tensor.dtype.name}.")
        tf.debugging.assert_equal(
            tf.shape(y_true), tf.shape(y_pred), message="y_true and y_pred shapes differ"
        )
        gt_class = tf.math.floordiv(tf.reshape(tf.cast(y_true, tf.int64), [-1]), self.label_divisor)
        pred_class = tf.math.floordiv(tf.reshape(tf.cast(y_pred, tf.int64), [-1]), self.label_divisor)
        gt_valid = self._valid_class(gt_class)
        no_class_column = tf.constant(self.num_classes, tf.int64)
        pred_column = tf.where(self._valid_class(pred_class), pred_class, no_class_column)
        cell = gt_class * (self.num_classes + 1) + pred_column
        cell = tf.where(gt_valid, cell, tf.zeros_like(cell))
        counts = tf.math.unsorted_segment_sum(
            tf.cast(gt_valid, tf.float64), cell, self.num_classes * (self.num_classes + 1)
        )
        self.confusion.assign_add(tf.reshape(counts, [self.num_classes, self.num_classes + 1]))

    def result(self):
        """The mIoU as a scalar tensor."""
        return mean_iou_summary(tf.convert_to_tensor(self.confusion.value))["miou"]

    def report(self):
        """The results as plain Python values.

        Returns:
            A dict with "miou" (float in [0, 1]), "num_valid_classes" and
            "per_class": {class_id: {"iou" (None when the union is 0),
            "intersection", "union" (pixel counts)}}.
        """
        summary = mean_iou_summary(tf.convert_to_tensor(self.confusion.value))
        valid = summary["valid"].numpy()
        per_class = {
            class_id: {
                "iou": float(summary["iou"][class_id]) if valid[class_id] else None,
                "intersection": int(summary["intersection"][class_id]),
                "union": int(summary["union"][class_id]),
            }
            for class_id in range(self.num_classes)
        }
        return {
            "miou": float(summary["miou"]),
            "num_valid_classes": int(summary["num_valid_classes"]),
            "per_class": per_class,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            label_divisor=self.label_divisor,
            ignore_label=self.ignore_label,
        )
        return config
