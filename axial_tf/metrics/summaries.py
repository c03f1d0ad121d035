"""Dataset-level PQ / SQ / RQ and IoU summaries from accumulated counts."""

import tensorflow as tf

def _safe_divide(numerator, denominator):
    return tf.math.divide_no_nan(numerator, denominator)


def _masked_mean(values, mask):
    mask = tf.cast(mask, values.dtype)
    return _safe_divide(tf.reduce_sum(values * mask), tf.reduce_sum(mask))


def panoptic_quality_summary(tp, fp, fn, iou_sum, is_thing):
    """PQ, SQ, RQ per class and their means over all / thing / stuff classes.

    A class with TP + FP + FN = 0 is not counted and is left out of every
    mean; a counted class with TP = 0 has PQ = SQ = RQ = 0. An empty mean is 0.

    Args:
        tp, fp, fn, iou_sum: float64 [num_classes] dataset-level sums.
        is_thing: bool [num_classes].

    Returns:
        A dict of tensors: scalars "pq", "sq", "rq" and their "_things" /
        "_stuff" versions, int32 scalars "num_classes_counted",
        "num_things_counted", "num_stuff_counted", and [num_classes] vectors
        "per_class_pq", "per_class_sq", "per_class_rq", "counted".
    """
    counted = (tp + fp + fn) > 0
    denominator = tp + 0.5 * fp + 0.5 * fn
    per_class = {
        "pq": _safe_divide(iou_sum, denominator),
        "sq": _safe_divide(iou_sum, tp),
        "rq": _safe_divide(tp, denominator),
    }
    masks = {
        "": counted,
        "_things": tf.logical_and(counted, is_thing),
        "_stuff": tf.logical_and(counted, tf.logical_not(is_thing)),
    }
    summary = {}
    for suffix, mask in masks.items():
        for name, values in per_class.items():
            summary[name + suffix] = _masked_mean(values, mask)
    summary["num_classes_counted"] = tf.reduce_sum(tf.cast(masks[""], tf.int32))
    summary["num_things_counted"] = tf.reduce_sum(tf.cast(masks["_things"], tf.int32))
    summary["num_stuff_counted"] = tf.reduce_sum(tf.cast(masks["_stuff"], tf.int32))
    for name, values in per_class.items():
        summary["per_class_" + name] = values
    summary["counted"] = counted
    return summary


def mean_iou_summary(confusion):
    """Per-class IoU and mIoU from a confusion matrix with a "no class" column.

    Args:
        confusion: float64 [num_classes, num_classes + 1]; rows are
            ground-truth classes, columns predicted classes, and the last
            column counts predictions of no evaluated class (void).

    Returns:
        A dict: "miou" (mean over classes with a non-zero union),
        "num_valid_classes", and [num_classes] vectors "intersection",
        "union", "iou" (0 where the union is 0) and "valid".
    """
    num_classes = tf.shape(confusion)[0]
    intersection = tf.linalg.diag_part(confusion[:, :num_classes])
    groundtruth_total = tf.reduce_sum(confusion, axis=1)
    predicted_total = tf.reduce_sum(confusion[:, :num_classes], axis=0)
    union = groundtruth_total + predicted_total - intersection
    valid = union > 0
    iou = _safe_divide(intersection, union)
    return {
        "miou": _masked_mean(iou, valid),
        "num_valid_classes": tf.reduce_sum(tf.cast(valid, tf.int32)),
        "intersection": intersection,
        "union": union,
        "iou": iou,
        "valid": valid,
    }
