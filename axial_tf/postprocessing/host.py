"""Panoptic-DeepLab post-processing on the host, in NumPy.

The route for exported formats whose graphs end at the dense network outputs
(ONNX Runtime, OpenVINO, LiteRT, ...): run the network in that runtime, then
call `panoptic_postprocess_numpy` on its semantic, center and offset outputs.
It needs neither TensorFlow nor Keras and returns exactly what the TensorFlow
`panoptic_postprocess` returns (same keys, dtypes and values, bit for bit): the
float32 arithmetic is done in the same order where a rounding could change a
result (threshold, nearest-center distances and their ties).

Images of a batch are processed one by one; no step couples them.
"""

import numpy as np

from axial_tf.postprocessing.options import PostProcessOptions

PANOPTIC_PRED = "panoptic_pred"
SEMANTIC_PRED = "semantic_pred"
INSTANCE_PRED = "instance_pred"
INSTANCE_CENTER_PRED = "instance_center_pred"
INSTANCE_SCORES = "instance_scores"
_OUTPUT_DTYPES = {
    PANOPTIC_PRED: np.int32,
    SEMANTIC_PRED: np.int32,
    INSTANCE_PRED: np.int32,
    INSTANCE_CENTER_PRED: np.float32,
    INSTANCE_SCORES: np.float32,
}

# Largest [centers, pixels] block of distances held at once, in float32 elements
# (256 KiB): a 1025x2049 image with 200 centers would need 1.7 GB in one piece,
# and cache-sized blocks ran faster than 4 MiB ones (3.0 s against 4.4 s there).
_DISTANCE_BLOCK_ELEMENTS = 1 << 16


def _semantic_prediction(semantic):
    """argmax over classes for [B, H, W, C] scores; [B, H, W] ids pass through."""
    if semantic.ndim == 4:
        # Logits and probabilities give the same argmax (first index on ties).
        return np.argmax(semantic, axis=-1).astype(np.int32)
    if semantic.ndim == 3:
        if not np.issubdtype(semantic.dtype, np.integer):
            raise ValueError(
                "A rank-3 `semantic` input must be an integer class map [B, H, W], "
                f"got dtype {semantic.dtype.name}."
            )
        return semantic.astype(np.int32)
    raise ValueError(
        "`semantic` must be scores [B, H, W, C] or a class map [B, H, W] "
        f"(rank 4 or 3), got shape {semantic.shape}."
    )


def _squeeze_heatmap(center_heatmap):
    """Accepts [B, H, W] or the head's [B, H, W, 1]."""
    if center_heatmap.ndim == 4 and center_heatmap.shape[-1] == 1:
        return center_heatmap[..., 0]
    if center_heatmap.ndim != 3:
        raise ValueError(
            "`center_heatmap` must be [B, H, W] or [B, H, W, 1], "
            f"got shape {center_heatmap.shape}."
        )
    return center_heatmap


def _max_filter(image, kernel):
    """Max over the `kernel` x `kernel` window of each pixel, zero padding.

    The window of pixel i spans i - (kernel - 1) // 2 .. i + kernel // 2 on
    both axes (TF "SAME" placement: even sizes reach further after the pixel).

    Args:
        image: float32 [H, W].
        kernel: Python int, side of the window.

    Returns:
        float32 [H, W].
    """
    before = (kernel - 1) // 2
    after = kernel - 1 - before
    padded = np.pad(image, [(before, after), (before, after)])  # [H + k - 1, W + k - 1]
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=0)
    rows_max = windows.max(axis=-1)  # [H, W + k - 1]
    windows = np.lib.stride_tricks.sliding_window_view(rows_max, kernel, axis=1)
    return windows.max(axis=-1)  # [H, W]


def _center_nms_heatmap(heatmap, threshold, nms_kernel):
    """Thresholded heatmap kept at its local maxima, 0 elsewhere.

    Args:
        heatmap: float32 [H, W] raw heatmap.
        threshold: Python float, compared in float32 (values must be greater).
        nms_kernel: Python int, side of the max-pooling window.

    Returns:
        float32 [H, W], as `centers.center_nms_heatmap`.
    """
    heatmap = np.where(heatmap > np.float32(threshold), heatmap, np.float32(0.0))
    is_candidate = (heatmap > 0.0) & (heatmap == _max_filter(heatmap, nms_kernel))
    return np.where(is_candidate, heatmap, np.float32(0.0))


def _select_centers(nms_heatmap, keep_k_centers):
    """Raster positions of the kept centers of one image.

    Args:
        nms_heatmap: float32 [H, W] from `_center_nms_heatmap`.
        keep_k_centers: Keep at most this many highest scores (ties: earlier
            in raster order); <= 0 keeps all.

    Returns:
        int64 [N] flat positions in increasing (raster) order; entry n is the
        center with class-agnostic id n + 1.
    """
    flat_scores = nms_heatmap.ravel()  # [HW]
    positions = np.flatnonzero(flat_scores > 0.0)  # [N], raster order
    if 0 < keep_k_centers < positions.size:
        # A stable sort on descending score keeps raster order among ties.
        best_first = np.argsort(-flat_scores[positions], kind="stable")
        positions = np.sort(positions[best_first[:keep_k_centers]])
    return positions


def _votes(offsets):
    """Where each pixel votes: (y + dy, x + dx), in float32 as `grouping.nearest_center`.

    Args:
        offsets: float32 [H, W, 2] offsets (dy, dx).

    Returns:
        A tuple (vote_y, vote_x) of float32 [H, W].
    """
    height, width = offsets.shape[:2]
    rows = np.arange(height, dtype=np.float32)[:, np.newaxis]  # [H, 1]
    cols = np.arange(width, dtype=np.float32)[np.newaxis, :]  # [1, W]
    return rows + offsets[..., 0], cols + offsets[..., 1]


def _nearest_center(vote_y, vote_x, center_y, center_x):
    """Index of the center nearest to each vote.

    Distances are float32 Euclidean with the square root, as in
    `grouping.nearest_center`, so ties (lowest index wins) are the same.

    Args:
        vote_y: float32 [P] vote rows.
        vote_x: float32 [P] vote columns.
        center_y: float32 [N] center rows, N >= 1.
        center_x: float32 [N] center columns.

    Returns:
        int [P] indices in [0, N).
    """
    nearest = np.empty(vote_y.size, np.intp)  # [P]
    block = max(1, _DISTANCE_BLOCK_ELEMENTS // center_y.size)
    for start in range(0, vote_y.size, block):
        votes = slice(start, start + block)
        diff_y = center_y[:, np.newaxis] - vote_y[np.newaxis, votes]  # [N, block]
        diff_x = center_x[:, np.newaxis] - vote_x[np.newaxis, votes]  # [N, block]
        distance = np.sqrt(diff_y * diff_y + diff_x * diff_x)
        nearest[votes] = np.argmin(distance, axis=0)
    return nearest


def _group_instances(is_thing, offsets, nms_heatmap, keep_k_centers):
    """Class-agnostic instance ids and scores of one image.

    Only thing pixels look for their nearest center: the others get id 0.

    Args:
        is_thing: bool [H, W], pixels of thing classes.
        offsets: float32 [H, W, 2] offsets (dy, dx).
        nms_heatmap: float32 [H, W] from `_center_nms_heatmap`.
        keep_k_centers: See `PostProcessOptions`.

    Returns:
        A tuple (instance_pred int32 [H, W], instance_scores float32 [H, W]):
        the 1-based id of the nearest center on thing pixels (0 elsewhere, and
        everywhere when there is no center) and that center's heatmap value.
    """
    instance_pred = np.zeros(is_thing.shape, np.int32)
    instance_scores = np.zeros(is_thing.shape, np.float32)
    positions = _select_centers(nms_heatmap, keep_k_centers)  # [N]
    if positions.size == 0:
        return instance_pred, instance_scores
    center_y, center_x = np.divmod(positions, is_thing.shape[1])
    vote_y, vote_x = _votes(offsets)  # [H, W]
    nearest = _nearest_center(
        vote_y[is_thing], vote_x[is_thing], center_y.astype(np.float32), center_x.astype(np.float32)
    )  # [P] over the thing pixels
    instance_pred[is_thing] = nearest + 1
    instance_scores[is_thing] = nms_heatmap.ravel()[positions[nearest]]
    return instance_pred, instance_scores


def _per_class_ids(group_class, order_key, present):
    """Per-class instance ids 1, 2, ... of the groups, in `order_key` order.

    Args:
        group_class: int32 [G] class of each group.
        order_key: int [G], distinct among present groups.
        present: bool [G], groups that become instances.

    Returns:
        int32 [G]: number of present groups of the same class whose key is no
        larger (meaningful for present groups only).
    """
    same_class = group_class[:, np.newaxis] == group_class[np.newaxis, :]  # [G, G]
    earlier = order_key[np.newaxis, :] <= order_key[:, np.newaxis]  # [G, G]
    counted = same_class & earlier & present[np.newaxis, :]
    return counted.sum(axis=-1).astype(np.int32)


def _thing_values(semantic_pred, is_thing, instance_pred, options):
    """Panoptic values of one image's thing pixels (as `merge._thing_values`).

    Groups are the class-agnostic ids 0..G-1; group 0 only holds thing pixels
    when the image has no center. A group takes the majority thing class of its
    pixels (ties: the smaller class).

    Args:
        semantic_pred: int32 [H, W].
        is_thing: bool [H, W].
        instance_pred: int32 [H, W] class-agnostic ids, 0 off things.
        options: `PostProcessOptions`.

    Returns:
        int32 [H, W], meaningful on thing pixels.
    """
    thing_ids = np.asarray(options.thing_class_ids, np.int32)  # [T], sorted
    num_groups = int(instance_pred.max()) + 1
    groups = instance_pred[is_thing]  # [P] in raster order
    thing_index = np.searchsorted(thing_ids, semantic_pred[is_thing])  # [P]
    votes = np.bincount(
        groups * thing_ids.size + thing_index, minlength=num_groups * thing_ids.size
    ).reshape(num_groups, thing_ids.size)  # [G, T]
    present = votes.sum(axis=-1) > 0  # [G]
    if options.things_without_center == "void":
        present[0] = False
    group_class = thing_ids[np.argmax(votes, axis=-1)]  # [G]

    if options.instance_numbering == "by_center_order":
        order_key = np.arange(num_groups)
    else:
        # Key = raster index of the group's first thing pixel.
        order_key = np.full(num_groups, is_thing.size)
        seen, first = np.unique(groups, return_index=True)
        order_key[seen] = np.flatnonzero(is_thing)[first]
    per_class_id = _per_class_ids(group_class, order_key, present)  # [G]

    void_value = options.void_label * options.label_divisor
    group_value = np.where(
        present, group_class * options.label_divisor + per_class_id, void_value
    ).astype(np.int32)  # [G]
    return group_value[instance_pred]


def _stuff_values(semantic_pred, is_thing, options):
    """Panoptic values of stuff pixels: class * divisor, or void if too small."""
    area = np.bincount(semantic_pred[~is_thing], minlength=int(semantic_pred.max()) + 1)
    if options.stuff_area_rule == "keep_above_limit":
        keep = area > options.stuff_area_limit
    else:
        keep = area >= options.stuff_area_limit
    void_value = options.void_label * options.label_divisor
    return np.where(keep[semantic_pred], semantic_pred * options.label_divisor, void_value)


def _postprocess_image(semantic_pred, heatmap, offsets, options):
    """All outputs of one image (see `panoptic_postprocess_numpy`)."""
    is_thing = np.isin(semantic_pred, options.thing_class_ids)  # [H, W]
    nms_heatmap = _center_nms_heatmap(heatmap, options.center_threshold, options.nms_kernel)
    instance_pred, instance_scores = _group_instances(
        is_thing, offsets, nms_heatmap, options.keep_k_centers
    )
    panoptic_pred = np.where(
        is_thing,
        _thing_values(semantic_pred, is_thing, instance_pred, options),
        _stuff_values(semantic_pred, is_thing, options),
    )
    return {
        PANOPTIC_PRED: panoptic_pred,
        SEMANTIC_PRED: semantic_pred,
        INSTANCE_PRED: instance_pred,
        INSTANCE_CENTER_PRED: nms_heatmap,
        INSTANCE_SCORES: instance_scores,
    }


def panoptic_postprocess_numpy(semantic, center_heatmap, offset_map, options):
    """Runs Panoptic-DeepLab post-processing on a batch, in NumPy.

    The host-side twin of `axial_tf.postprocessing.panoptic_postprocess`, for
    models exported to formats whose graphs end at the dense outputs (ONNX,
    OpenVINO, LiteRT): the same arguments (NumPy arrays) and the same output
    keys, dtypes, shapes and values; its docstring describes them and the steps.

    Example:
        >>> semantic, heatmap, offsets = onnx_session.run(None, {"image": image})
        >>> outputs = panoptic_postprocess_numpy(
        ...     semantic, heatmap, offsets, PostProcessOptions(thing_class_ids=(11, 12)))
        >>> outputs["panoptic_pred"]  # int32 [B, H, W]
    """
    if not isinstance(options, PostProcessOptions):
        raise TypeError(f"options must be a PostProcessOptions, got {type(options).__name__}.")
    semantic_pred = _semantic_prediction(np.asarray(semantic))  # [B, H, W]
    heatmap = _squeeze_heatmap(np.asarray(center_heatmap)).astype(np.float32)  # [B, H, W]
    offset_map = np.asarray(offset_map)
    if offset_map.ndim != 4 or offset_map.shape[-1] != 2:
        raise ValueError(f"`offset_map` must be [B, H, W, 2], got shape {offset_map.shape}.")
    offset_map = offset_map.astype(np.float32)  # [B, H, W, 2]

    if heatmap.shape != semantic_pred.shape or offset_map.shape[:3] != semantic_pred.shape:
        raise ValueError(
            f"Inputs disagree on [B, H, W]: semantic {semantic_pred.shape}, "
            f"center_heatmap {heatmap.shape}, offset_map {offset_map.shape}."
        )

    outputs = {key: np.zeros(semantic_pred.shape, dtype) for key, dtype in _OUTPUT_DTYPES.items()}
    for image in range(semantic_pred.shape[0]):
        image_outputs = _postprocess_image(
            semantic_pred[image], heatmap[image], offset_map[image], options
        )
        for key, value in image_outputs.items():
            outputs[key][image] = value
    return outputs
