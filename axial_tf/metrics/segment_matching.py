"""Per-class PQ statistics of a batch of panoptic maps (batched TF ops).

The rules are panopticapi's (COCO panoptic evaluation):

- each distinct map value of an image is one segment; pixels whose class is
  the ignore label or outside [0, num_classes) are void and belong to no
  segment;
- a ground-truth and a predicted segment of the same class match when
  IoU > 0.5, with IoU = |G n P| / (|G| + |P| - |G n P| - |P n GT void|);
- unmatched ground-truth segments are false negatives, except crowd regions;
- an unmatched predicted segment is a false positive unless more than half of
  it lies on ground-truth void plus the crowd region of its own class;
- with crowd_convention "coco", the ground-truth pixels of a thing class with
  instance id 0 are that class's crowd region; with "none" they are an
  ordinary segment (DeepLab2's convention).
"""

import tensorflow as tf

CROWD_CONVENTIONS = ("coco", "none")


def _as_batch(label_map, name):
    """int64 [B, H, W] from a [B, H, W] or [H, W] integer map."""
    label_map = tf.convert_to_tensor(label_map)
    if not label_map.dtype.is_integer:
        raise ValueError(f"{name} must hold integer panoptic labels, got {label_map.dtype.name}.")
    rank = label_map.shape.rank
    if rank == 2:
        label_map = label_map[tf.newaxis]
    elif rank != 3:
        raise ValueError(f"{name} must be [B, H, W] or [H, W], got shape {label_map.shape}.")
    return tf.cast(label_map, tf.int64)


class _Segments:
    """The segments of a batch of maps: one per (image, non-void value)."""

    def __init__(self, label_map, label_divisor, is_valid_class):
        # Shift values by one so that 0 can stand for "void" in every image.
        semantic = tf.math.floordiv(label_map, label_divisor)
        shifted = tf.where(
            is_valid_class(semantic), label_map + 1, tf.zeros_like(label_map)
        )  # [B, H, W]
        stride = tf.reduce_max(tf.concat([[0], tf.reshape(shifted, [-1])], 0)) + 1
        batch_index = tf.range(tf.shape(label_map, out_type=tf.int64)[0])
        keys = batch_index[:, tf.newaxis, tf.newaxis] * stride + shifted
        unique_keys, self.pixel_segment, self.area = tf.unique_with_counts(
            tf.reshape(keys, [-1]), out_idx=tf.int64
        )  # [S], [B*H*W], [S]
        shifted_value = tf.math.floormod(unique_keys, stride)
        value = shifted_value - 1
        self.count = tf.size(unique_keys, out_type=tf.int64)
        self.is_void = tf.equal(shifted_value, 0)  # [S]
        self.semantic = tf.where(
            self.is_void, tf.zeros_like(value), tf.math.floordiv(value, label_divisor)
        )
        self.instance = tf.math.floormod(value, label_divisor)


def panoptic_segment_statistics(
    groundtruth,
    prediction,
    num_classes,
    thing_class_ids,
    label_divisor=1000,
    ignore_label=255,
    crowd_convention="coco",
):
    """Counts TP, FP, FN and sums matched IoUs per class over a batch.

    Args:
        groundtruth: int [B, H, W] (or [H, W]) panoptic labels
            `class * label_divisor + instance`.
        prediction: int, same shape as `groundtruth`.
        num_classes: Python int; classes are 0..num_classes-1.
        thing_class_ids: Python ints, classes with instances.
        label_divisor: Python int.
        ignore_label: Python int, void class.
        crowd_convention: "coco" or "none" (see the module docstring).

    Returns:
        A dict of float64 [num_classes] tensors "tp", "fp", "fn", "iou_sum".
        Images padded with void in both maps are unaffected by the padding.
    """
    if crowd_convention not in CROWD_CONVENTIONS:
        raise ValueError(
            f"crowd_convention must be one of {CROWD_CONVENTIONS}, got {crowd_convention!r}."
        )
    groundtruth = _as_batch(groundtruth, "groundtruth")
    prediction = _as_batch(prediction, "prediction")
    tf.debugging.assert_equal(
        tf.shape(groundtruth), tf.shape(prediction),
        message="groundtruth and prediction shapes differ",
    )

    def is_valid_class(semantic):
        in_range = tf.logical_and(semantic >= 0, semantic < num_classes)
        return tf.logical_and(in_range, tf.not_equal(semantic, ignore_label))

    gt = _Segments(groundtruth, label_divisor, is_valid_class)
    pred = _Segments(prediction, label_divisor, is_valid_class)
    gt_is_crowd = tf.zeros_like(gt.is_void)
    if crowd_convention == "coco" and thing_class_ids:
        gt_is_thing = tf.reduce_any(
            tf.equal(gt.semantic[:, tf.newaxis], tf.constant(thing_class_ids, tf.int64)), axis=1
        )
        gt_is_crowd = tf.logical_and(
            tf.logical_and(gt_is_thing, tf.logical_not(gt.is_void)), tf.equal(gt.instance, 0)
        )

    # Overlaps: one entry per (gt segment, predicted segment) pair that meets.
    pair_keys, _, overlap = tf.unique_with_counts(
        gt.pixel_segment * pred.count + pred.pixel_segment, out_idx=tf.int64
    )  # [P], [P]
    pair_gt = tf.math.floordiv(pair_keys, pred.count)
    pair_pred = tf.math.floormod(pair_keys, pred.count)
    pair_gt_void = tf.gather(gt.is_void, pair_gt)
    pair_gt_crowd = tf.gather(gt_is_crowd, pair_gt)
    pair_gt_class = tf.gather(gt.semantic, pair_gt)
    pair_pred_class = tf.gather(pred.semantic, pair_pred)
    same_class = tf.equal(pair_gt_class, pair_pred_class)

    def per_pred_segment(values):
        return tf.math.unsorted_segment_sum(values, pair_pred, pred.count)

    zeros = tf.zeros_like(overlap)
    pred_on_void = per_pred_segment(tf.where(pair_gt_void, overlap, zeros))  # [S_pred]
    pred_on_crowd = per_pred_segment(
        tf.where(tf.logical_and(pair_gt_crowd, same_class), overlap, zeros)
    )

    # IoU > 0.5 is tested as 2 * intersection > union, exactly, in integers.
    pair_pred_void = tf.gather(pred.is_void, pair_pred)
    can_match = tf.logical_and(
        tf.logical_and(tf.logical_not(pair_gt_void), tf.logical_not(pair_pred_void)),
        tf.logical_and(tf.logical_not(pair_gt_crowd), same_class),
    )
    union = (
        tf.gather(gt.area, pair_gt) + tf.gather(pred.area, pair_pred)
        - overlap - tf.gather(pred_on_void, pair_pred)
    )
    matched = tf.logical_and(can_match, 2 * overlap > union)  # [P]
    iou = tf.where(matched, tf.cast(overlap, tf.float64) / tf.cast(union, tf.float64), 0.0)

    matched_int = tf.cast(matched, tf.int64)
    gt_matched = tf.math.unsorted_segment_max(matched_int, pair_gt, gt.count) > 0
    pred_matched = tf.math.unsorted_segment_max(matched_int, pair_pred, pred.count) > 0
    is_fn = tf.logical_and(
        tf.logical_not(tf.logical_or(gt.is_void, gt_is_crowd)), tf.logical_not(gt_matched)
    )
    mostly_ignored = 2 * (pred_on_void + pred_on_crowd) > pred.area
    is_fp = tf.logical_and(
        tf.logical_and(tf.logical_not(pred.is_void), tf.logical_not(pred_matched)),
        tf.logical_not(mostly_ignored),
    )

    def per_class(flags_or_values, classes):
        values = tf.cast(flags_or_values, tf.float64)
        return tf.math.unsorted_segment_sum(values, classes, num_classes)

    return {
        "tp": per_class(matched, pair_gt_class),
        "fp": per_class(is_fp, pred.semantic),
        "fn": per_class(is_fn, gt.semantic),
        "iou_sum": per_class(iou, pair_gt_class),
    }
