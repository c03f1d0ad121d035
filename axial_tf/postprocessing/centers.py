"""Instance centers from a Panoptic-DeepLab center heatmap (batched, stock TF ops)."""

import tensorflow as tf


def center_nms_heatmap(center_heatmap, threshold, nms_kernel):
    """Thresholds the heatmap and keeps only its local maxima.

    A pixel is a center candidate when its thresholded value is > 0 and equals
    the maximum of the `nms_kernel` x `nms_kernel` window around it (zero
    padding; for even sizes the window reaches one pixel further after the
    pixel than before it, as TF "SAME" pooling does). Every pixel of an exact
    plateau survives.

    Args:
        center_heatmap: float [B, H, W] raw heatmap (no sigmoid).
        threshold: Python float; values not strictly greater become 0.
        nms_kernel: Python int, side of the pooling window.

    Returns:
        float32 [B, H, W]: the thresholded heatmap at candidates, 0 elsewhere.
    """
    heatmap = tf.cast(center_heatmap, tf.float32)
    heatmap = tf.where(heatmap > tf.constant(threshold, tf.float32), heatmap, 0.0)
    pad_before = (nms_kernel - 1) // 2
    pad_after = nms_kernel - 1 - pad_before
    # Explicit zero padding: "SAME" pooling would ignore the border instead,
    # which differs when a negative threshold leaves negative values.
    padded = tf.pad(
        heatmap[..., tf.newaxis],
        [[0, 0], [pad_before, pad_after], [pad_before, pad_after], [0, 0]],
    )  # [B, H + k - 1, W + k - 1, 1]
    pooled = tf.nn.max_pool2d(padded, nms_kernel, strides=1, padding="VALID")
    is_candidate = tf.logical_and(heatmap > 0.0, tf.equal(heatmap, pooled[..., 0]))
    return tf.where(is_candidate, heatmap, 0.0)


def select_centers(nms_heatmap, keep_k_centers):
    """Lists the kept centers of every image in raster order.

    Images have different numbers of centers, so the list is padded to the
    largest count in the batch (at least 1, so that later reductions over the
    center axis are never empty); `valid` marks the real entries.

    Args:
        nms_heatmap: float32 [B, H, W] from `center_nms_heatmap`.
        keep_k_centers: Python int; keep at most this many highest-scoring
            centers per image (top_k breaks ties by raster order); <= 0 keeps
            all.

    Returns:
        A tuple (center_y, center_x, center_scores, valid) of [B, M] tensors
        (float32, float32, float32, bool). Entry n of image b is the centre
        with class-agnostic id n + 1.
    """
    shape = tf.shape(nms_heatmap)
    width = shape[2]
    num_pixels = shape[1] * width
    flat_scores = tf.reshape(nms_heatmap, [shape[0], num_pixels])  # [B, HW]

    candidates_per_image = tf.reduce_sum(tf.cast(flat_scores > 0.0, tf.int32), axis=1)
    num_slots = tf.reduce_max(tf.concat([candidates_per_image, [0]], axis=0))
    if keep_k_centers > 0:
        num_slots = tf.minimum(num_slots, keep_k_centers)
    num_slots = tf.maximum(num_slots, 1)

    # The `num_slots` best scores hold every kept centre of every image; slots
    # of images with fewer centres get scores of 0 and are marked invalid.
    top_scores, top_positions = tf.math.top_k(flat_scores, k=num_slots)  # [B, M]
    is_kept = top_scores > 0.0
    # Sort kept positions into raster order; padding sorts last.
    sort_key = tf.where(is_kept, top_positions, num_pixels)
    positions = tf.sort(sort_key, axis=1)  # [B, M]
    valid = positions < num_pixels
    safe_positions = tf.where(valid, positions, 0)
    center_scores = tf.gather(flat_scores, safe_positions, batch_dims=1)
    center_scores = tf.where(valid, center_scores, 0.0)
    center_y = tf.cast(safe_positions // width, tf.float32)
    center_x = tf.cast(safe_positions % width, tf.float32)
    return center_y, center_x, center_scores, valid
