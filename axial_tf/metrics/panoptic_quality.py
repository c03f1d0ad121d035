"""Streaming panoptic quality (PQ, SQ, RQ) as a Keras metric."""

import keras
import tensorflow as tf

from axial_tf.metrics._checks import check_choice, check_class_ids, check_int
from axial_tf.metrics.segment_matching import CROWD_CONVENTIONS, panoptic_segment_statistics
from axial_tf.metrics.summaries import panoptic_quality_summary

PQ_SCALAR_KEYS = tuple(
    name + suffix for suffix in ("", "_things", "_stuff") for name in ("pq", "sq", "rq")
)


def _optional_float(value, keep):
    return float(value) if keep else None


@keras.saving.register_keras_serializable(package="axial_tf")
class PanopticQuality(keras.metrics.Metric):
    """Panoptic quality following panopticapi, accumulated over batches.

    `update_state` matches the segments of a batch with TF ops (it can run
    inside `tf.function` and `strategy.run`) and adds per-class TP, FP, FN and
    IoU sums to float64 variables. The variables are on-read synchronised with
    sum aggregation, so under `tf.distribute` each replica accumulates its own
    batches and `result()` / `report()` read the sum over replicas. See
    `axial_tf.metrics.segment_matching` for the matching, void and crowd rules.

    Args:
        num_classes: Number of semantic classes (ids 0..num_classes-1).
        thing_class_ids: Classes with instances; the others are stuff.
        label_divisor: Panoptic label = class * label_divisor + instance.
        ignore_label: Void class.
        crowd_convention: "coco" (ground-truth thing pixels with instance 0
            are crowd, as in panopticapi) or "none" (they are an ordinary
            segment, as in DeepLab2's metric).
        name: Metric name.
        **kwargs: Other `keras.metrics.Metric` arguments.

    Example:
        >>> metric = PanopticQuality(num_classes=19, thing_class_ids=range(11, 19))
        >>> metric.update_state(groundtruth_panoptic, predicted_panoptic)
        >>> metric.report()["pq"]
    """

    def __init__(
        self,
        num_classes,
        thing_class_ids,
        label_divisor=1000,
        ignore_label=255,
        crowd_convention="coco",
        name="panoptic_quality",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.thing_class_ids = check_class_ids("thing_class_ids", thing_class_ids, num_classes)
        self.label_divisor = check_int("label_divisor", label_divisor, minimum=1)
        self.ignore_label = check_int("ignore_label", ignore_label)
        self.crowd_convention = check_choice(
            "crowd_convention", crowd_convention, CROWD_CONVENTIONS
        )
        self._is_thing = [class_id in self.thing_class_ids for class_id in range(num_classes)]
        self.accumulators = {
            key: self.add_variable(
                shape=(num_classes,), initializer="zeros", dtype="float64", name=key
            )
            for key in ("tp", "fp", "fn", "iou_sum")
        }

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch of ground-truth / predicted panoptic maps [B, H, W]."""
        if sample_weight is not None:
            raise ValueError("PanopticQuality does not support sample_weight.")
        statistics = panoptic_segment_statistics(
            y_true,
            y_pred,
            num_classes=self.num_classes,
            thing_class_ids=self.thing_class_ids,
            label_divisor=self.label_divisor,
            ignore_label=self.ignore_label,
            crowd_convention=self.crowd_convention,
        )
        for key, variable in self.accumulators.items():
            variable.assign_add(statistics[key])

    def _summary(self):
        totals = {key: tf.convert_to_tensor(v.value) for key, v in self.accumulators.items()}
        return panoptic_quality_summary(
            is_thing=tf.constant(self._is_thing), **totals
        ), totals

    def result(self):
        """Scalar tensors "pq", "sq", "rq" and their "_things" / "_stuff" means."""
        summary, _ = self._summary()
        return {key: summary[key] for key in PQ_SCALAR_KEYS}

    def report(self):
        """The results as plain Python values.

        Returns:
            A dict with floats "pq", "sq", "rq", "pq_things", ..., "rq_stuff"
            (fractions in [0, 1]), ints "num_classes_counted",
            "num_things_counted", "num_stuff_counted", and "per_class":
            {class_id: {"pq", "sq", "rq" (None when the class is not counted),
            "tp", "fp", "fn" (ints), "iou_sum", "counted", "is_thing"}}.
        """
        summary, totals = self._summary()
        report = {key: float(summary[key]) for key in PQ_SCALAR_KEYS}
        for key in ("num_classes_counted", "num_things_counted", "num_stuff_counted"):
            report[key] = int(summary[key])
        counted = summary["counted"].numpy()
        per_class = {}
        for class_id in range(self.num_classes):
            keep = bool(counted[class_id])
            per_class[class_id] = {
                name: _optional_float(summary["per_class_" + name][class_id], keep)
                for name in ("pq", "sq", "rq")
            }
            per_class[class_id].update(
                {name: int(totals[name][class_id]) for name in ("tp", "fp", "fn")},
                iou_sum=float(totals["iou_sum"][class_id]),
                counted=keep,
                is_thing=self._is_thing[class_id],
            )
        report["per_class"] = per_class
        return report

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            thing_class_ids=list(self.thing_class_ids),
            label_divisor=self.label_divisor,
            ignore_label=self.ignore_label,
            crowd_convention=self.crowd_convention,
        )
        return config
