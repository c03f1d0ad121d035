"""PQ and mIoU together, with one combined report."""

from axial_tf.metrics.mean_iou import SemanticMeanIoU
from axial_tf.metrics.panoptic_quality import PanopticQuality


class PanopticEvaluator:
    """Accumulates `PanopticQuality` and `SemanticMeanIoU` on the same maps.

    Create it inside `strategy.scope()` to use it under `tf.distribute`;
    `update_state` may then run inside `strategy.run`.

    Args:
        num_classes: Number of semantic classes.
        thing_class_ids: Classes with instances.
        label_divisor: Panoptic label = class * label_divisor + instance.
        ignore_label: Void class.
        crowd_convention: "coco" or "none" (see `PanopticQuality`).

    Example:
        >>> evaluator = PanopticEvaluator(num_classes=19, thing_class_ids=range(11, 19))
        >>> evaluator.update_state(groundtruth_panoptic, outputs["panoptic_pred"])
        >>> results = evaluator.report()  # {"pq": ..., "miou": ..., "per_class": ...}
    """

    def __init__(self, num_classes, thing_class_ids, label_divisor=1000,
                 ignore_label=255, crowd_convention="coco"):
        self.panoptic_quality = PanopticQuality(
            num_classes, thing_class_ids, label_divisor=label_divisor,
            ignore_label=ignore_label, crowd_convention=crowd_convention,
        )
        self.mean_iou = SemanticMeanIoU(
            num_classes, label_divisor=label_divisor, ignore_label=ignore_label
        )

    def update_state(self, groundtruth_panoptic, predicted_panoptic):
        """Adds a batch of panoptic maps [B, H, W] (or one map [H, W])."""
        self.panoptic_quality.update_state(groundtruth_panoptic, predicted_panoptic)
        self.mean_iou.update_state(groundtruth_panoptic, predicted_panoptic)

    def reset_state(self):
        """Clears all accumulated counts."""
        self.panoptic_quality.reset_state()
        self.mean_iou.reset_state()

    def report(self):
        """Returns the combined results as plain Python values.

        Returns:
            The dict of `PanopticQuality.report` plus "miou" and
            "num_valid_classes", and per class "iou", "intersection" and
            "union" (see `SemanticMeanIoU.report`).
        """
        report = self.panoptic_quality.report()
        iou_report = self.mean_iou.report()
        report["miou"] = iou_report["miou"]
        report["num_valid_classes"] = iou_report["num_valid_classes"]
        for class_id, iou_entry in iou_report["per_class"].items():
            report["per_class"][class_id].update(iou_entry)
        return report
