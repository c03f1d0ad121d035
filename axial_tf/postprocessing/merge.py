"""Merges a semantic map and class-agnostic instances into a panoptic map."""

import tensorflow as tf

from axial_tf.postprocessing.grouping import thing_mask


def _segment_sum(values, segment_ids, num_segments):
    return tf.math.unsorted_segment_sum(values, segment_ids, num_segments)


def _max_plus_one(values):
    """1 + the largest element, or 1 for an empty tensor (a safe table size)."""
    return tf.reduce_max(tf.concat([[0], tf.reshape(values, [-1])], axis=0)) + 1


def _thing_values(semantic_pred, instance_pred, options, num_groups):
    """Panoptic values of thing pixels (void where the group is dropped).

    Groups are the class-agnostic ids 0..M of each image; group 0 only holds
    thing pixels of images without any center.
    """
    shape = tf.shape(semantic_pred)
    batch, num_pixels = shape[0], shape[1] * shape[2]
    num_things = len(options.thing_class_ids)
    is_thing, thing_index = thing_mask(semantic_pred, options.thing_class_ids)

    batch_index = tf.range(batch)[:, tf.newaxis, tf.newaxis]  # [B, 1, 1]
    group = batch_index * num_groups + instance_pred  # [B, H, W] unique per image
    # Majority vote: pixel counts per (group, thing class).
    votes = _segment_sum(
        tf.cast(is_thing, tf.int32),
        group * num_things + thing_index,
        batch * num_groups * num_things,
    )
    votes = tf.reshape(votes, [batch, num_groups, num_things])  # [B, G, T]
    present = tf.reduce_sum(votes, axis=-1) > 0  # [B, G]
    if options.things_without_center == "void":
        present = tf.logical_and(present, tf.range(num_groups) > 0)
    # argmax returns the first maximum: ties go to the smaller (sorted) class.
    group_class = tf.gather(
        tf.constant(options.thing_class_ids, tf.int32),
        tf.argmax(votes, axis=-1, output_type=tf.int32),
    )  # [B, G]

    if options.instance_numbering == "by_center_order":
        order_key = tf.broadcast_to(tf.range(num_groups), [batch, num_groups])
    else:
        pixel_index = tf.reshape(tf.range(num_pixels), tf.shape(group)[1:])
        first_pixel = tf.math.unsorted_segment_min(
            tf.where(is_thing, pixel_index[tf.newaxis], num_pixels),
            group,
            batch * num_groups,
        )
        order_key = tf.reshape(first_pixel, [batch, num_groups])  # [B, G]

    # Per-class id = number of present groups of the same class that come
    # no later in the order (keys are distinct within an image).
    same_class = tf.equal(group_class[:, :, tf.newaxis], group_class[:, tf.newaxis, :])
    earlier = order_key[:, tf.newaxis, :] <= order_key[:, :, tf.newaxis]
    counted = tf.logical_and(tf.logical_and(same_class, earlier), present[:, tf.newaxis, :])
    per_class_id = tf.reduce_sum(tf.cast(counted, tf.int32), axis=-1)  # [B, G]

    void_value = options.void_label * options.label_divisor
    group_value = tf.where(
        present, group_class * options.label_divisor + per_class_id, void_value
    )  # [B, G]
    thing_value = tf.gather(group_value, instance_pred, batch_dims=1)  # [B, H, W]
    return is_thing, thing_value


def _stuff_values(semantic_pred, is_thing, options):
    """Panoptic values of stuff pixels: class * divisor, or void if too small."""
    shape = tf.shape(semantic_pred)
    batch = shape[0]
    num_classes = _max_plus_one(semantic_pred)
    is_stuff = tf.logical_not(is_thing)
    batch_index = tf.range(batch)[:, tf.newaxis, tf.newaxis]  # [B, 1, 1]
    class_slot = batch_index * num_classes + semantic_pred  # [B, H, W]
    area = _segment_sum(tf.cast(is_stuff, tf.int32), class_slot, batch * num_classes)
    area = tf.reshape(area, [batch, num_classes])  # [B, num_classes]
    if options.stuff_area_rule == "keep_above_limit":
        keep = area > options.stuff_area_limit
    else:
        keep = area >= options.stuff_area_limit
    pixel_keep = tf.gather(keep, semantic_pred, batch_dims=1)  # [B, H, W]
    void_value = options.void_label * options.label_divisor
    return tf.where(pixel_keep, semantic_pred * options.label_divisor, void_value)


def merge_semantic_and_instance(semantic_pred, instance_pred, options):
    """Builds the panoptic map from semantic classes and class-agnostic ids.

    Thing pixels are grouped by class-agnostic id; a group takes the majority
    class of its pixels (ties: smaller class id) and the next per-class id
    (order set by `options.instance_numbering`). Stuff pixels get
    `class * label_divisor` unless their class area fails
    `options.stuff_area_rule`, in which case they become void.

    Args:
        semantic_pred: int32 [B, H, W], non-negative classes.
        instance_pred: int32 [B, H, W] class-agnostic ids (0 = none); ids
            on non-thing pixels are ignored.
        options: `PostProcessOptions`.

    Returns:
        int32 [B, H, W] panoptic map.
    """
    semantic_pred = tf.cast(semantic_pred, tf.int32)
    instance_pred = tf.cast(instance_pred, tf.int32)
    num_groups = _max_plus_one(instance_pred)
    is_thing, thing_value = _thing_values(semantic_pred, instance_pred, options, num_groups)
    stuff_value = _stuff_values(semantic_pred, is_thing, options)
    return tf.where(is_thing, thing_value, stuff_value)
