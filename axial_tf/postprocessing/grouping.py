"""Class-agnostic instance grouping: every pixel votes for its nearest center."""

import tensorflow as tf


def nearest_center(offset_map, center_y, center_x, valid):
    """Finds, per pixel, the kept center nearest to where the pixel votes.

    Pixel (y, x) votes for (y + dy, x + dx). Distances are Euclidean in pixels,
    computed as DeepLab2 does (float32, square root included) so that ties
    resolve identically: argmin picks the lowest center index.

    Args:
        offset_map: float [B, H, W, 2] offsets (dy, dx) in pixels.
        center_y: float32 [B, M] center rows (from `select_centers`).
        center_x: float32 [B, M] center columns.
        valid: bool [B, M], False on padding entries.

    Returns:
        int32 [B, H, W]: index in [0, M) of the nearest valid center (0 when an
        image has no center; callers mask those images).
    """
    offsets = tf.cast(offset_map, tf.float32)
    shape = tf.shape(offsets)
    batch, height, width = shape[0], shape[1], shape[2]
    rows = tf.cast(tf.range(height), tf.float32)[tf.newaxis, :, tf.newaxis]  # [1, H, 1]
    cols = tf.cast(tf.range(width), tf.float32)[tf.newaxis, tf.newaxis, :]  # [1, 1, W]
    vote_y = tf.reshape(rows + offsets[..., 0], [batch, 1, height * width])  # [B, 1, HW]
    vote_x = tf.reshape(cols + offsets[..., 1], [batch, 1, height * width])  # [B, 1, HW]
    diff_y = center_y[:, :, tf.newaxis] - vote_y  # [B, M, HW]
    diff_x = center_x[:, :, tf.newaxis] - vote_x  # [B, M, HW]
    distance = tf.sqrt(diff_y * diff_y + diff_x * diff_x)
    distance = tf.where(valid[:, :, tf.newaxis], distance, float("inf"))
    nearest = tf.argmin(distance, axis=1, output_type=tf.int32)  # [B, HW]
    return tf.reshape(nearest, [batch, height, width])


def thing_mask(semantic_pred, thing_class_ids):
    """Marks pixels whose semantic class has instances.

    Args:
        semantic_pred: int32 [B, H, W].
        thing_class_ids: Sorted tuple of Python ints.

    Returns:
        A tuple (is_thing bool [B, H, W], thing_index int32 [B, H, W]) where
        thing_index is the position of the class in `thing_class_ids` (0 on
        non-thing pixels).
    """
    thing_ids = tf.constant(thing_class_ids, tf.int32)  # [T]
    matches = tf.equal(semantic_pred[..., tf.newaxis], thing_ids)  # [B, H, W, T]
    is_thing = tf.reduce_any(matches, axis=-1)
    thing_index = tf.argmax(tf.cast(matches, tf.int32), axis=-1, output_type=tf.int32)
    return is_thing, thing_index


def group_instances(semantic_pred, offset_map, centers, thing_class_ids):
    """Class-agnostic instance ids and instance scores.

    Args:
        semantic_pred: int32 [B, H, W].
        offset_map: float [B, H, W, 2] offsets (dy, dx).
        centers: The tuple returned by `select_centers`.
        thing_class_ids: Sorted tuple of Python ints.

    Returns:
        A tuple (instance_pred int32 [B, H, W], instance_scores float32
        [B, H, W]): the 1-based id of the nearest center on thing pixels of
        images with centers, 0 elsewhere; and that center's heatmap value
        (0 where the id is 0).
    """
    center_y, center_x, center_scores, valid = centers
    nearest = nearest_center(offset_map, center_y, center_x, valid)  # [B, H, W]
    is_thing, _ = thing_mask(semantic_pred, thing_class_ids)
    has_center = tf.reduce_any(valid, axis=1)[:, tf.newaxis, tf.newaxis]  # [B, 1, 1]
    assigned = tf.logical_and(is_thing, has_center)
    instance_pred = tf.where(assigned, nearest + 1, 0)
    shape = tf.shape(nearest)
    flat_nearest = tf.reshape(nearest, [shape[0], -1])
    scores = tf.reshape(tf.gather(center_scores, flat_nearest, batch_dims=1), shape)
    instance_scores = tf.where(assigned, scores, 0.0)
    return instance_pred, instance_scores
