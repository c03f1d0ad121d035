"""Panoptic-DeepLab training targets built from panoptic label maps.

A panoptic label is `semantic_class * label_divisor + instance_id`. The
encoding follows DeepLab2 (`data/dataset_utils.py`):

- void: semantic class `ignore_label` (any instance id), e.g. 255 * 1000.
- stuff: a class not in `thing_class_ids`, instance id 0.
- thing instance: a class in `thing_class_ids`, instance id >= 1.
- crowd: a class in `thing_class_ids` with instance id 0. A crowd region keeps
  its class in the semantic label and takes part in the semantic loss, but it
  has no center, no offsets, and no center or offset loss.

Everything is computed with vectorised TF ops (one `tf.unique` over the
batch, segment sums per instance and one scatter for all Gaussians), so the
generator runs eagerly, inside `tf.function` and inside `tf.data.Dataset.map`
with unknown image sizes.
"""

import numpy as np
import tensorflow as tf

# Segment keys are `image_index * _IMAGE_KEY_STRIDE + panoptic_label`, so one
# tf.unique over the whole batch separates equal ids of different images.
# Panoptic labels are int32, hence always below this stride.
_IMAGE_KEY_STRIDE = 2**31
# Key of every pixel that does not belong to a thing instance.
_NO_INSTANCE_KEY = -1


def _gaussian_patch(sigma):
    """The square Gaussian patch DeepLab2 stamps at every instance center.

    DeepLab2 uses a patch of `int(6 * sigma + 3)` pixels per side with its
    peak at index `3 * sigma + 1` and pastes it so that index
    `round(3 * sigma + 1)` lands on the center pixel. For an integer sigma (the
    default 8) that is a Gaussian with peak 1 at the center, truncated to
    |dy|, |dx| <= 3 * sigma + 1.

    Args:
        sigma: Standard deviation in pixels.

    Returns:
        A tuple `(patch, anchor)`: float32 array [S, S] and the patch index that
        lands on the center pixel.
    """
    size = int(6 * sigma + 3)
    peak = 3 * sigma + 1
    coords = np.arange(size, dtype=np.float64)
    squared_distance = (coords[:, None] - peak) ** 2 + (coords[None, :] - peak) ** 2
    patch = np.exp(-squared_distance / (2.0 * sigma**2)).astype(np.float32)
    anchor = int(round(3 * sigma + 1))
    return patch, anchor


class PanopticTargetGenerator:
    """Builds Panoptic-DeepLab targets and loss weights from panoptic labels.

    Definitions (as DeepLab2's `PanopticSampleGenerator`):

    - `semantic_label` = label // label_divisor (void pixels -> ignore_label,
      crowd pixels keep their thing class).
    - `center_heatmap`: for every thing instance, a Gaussian (peak 1, sigma
      `sigma`, see `_gaussian_patch`) at the rounded mean (round half to even,
      like `tf.round`) of its pixel coordinates; the maximum over instances.
    - `offset_map`: (center_y - y, center_x - x) on instance pixels, 0
      elsewhere; channel 0 is dy.
    - `semantic_weights`: 1, `small_instance_weight` on instances with fewer
      than `small_instance_area` pixels, 0 on void (the loss also masks void
      by label) and 0 on crowd if `ignore_crowd_in_semantic`.
    - `center_weights`: 1 on pixels that are neither void nor crowd.
    - `offset_weights`: 1 on thing pixels that are not crowd.

    One deliberate difference: DeepLab2 also draws a center for a stuff segment
    whose instance id is non-zero (a malformed label); here only classes in
    `thing_class_ids` have instances. Instance centers are computed from exact
    integer coordinate sums (DeepLab2 uses a float32 mean, which can differ on
    an exact .5 tie for very large instances).

    Example:
        >>> generator = PanopticTargetGenerator(
        ...     label_divisor=1000, thing_class_ids=(11, 12, 13))
        >>> targets = generator(panoptic_label)  # int32 [B, H, W] or [H, W]
        >>> targets["center_heatmap"].shape      # [B, H, W]
    """

    def __init__(
        self,
        label_divisor,
        thing_class_ids,
        ignore_label=255,
        sigma=8.0,
        small_instance_area=4096,
        small_instance_weight=3.0,
        ignore_crowd_in_semantic=False,
    ):
        """Initialises the generator.

        Args:
            label_divisor: Panoptic label divisor (e.g. 1000 for Cityscapes).
            thing_class_ids: Semantic classes that have instances.
            ignore_label: Semantic class of void pixels; must lie in
                [0, label_divisor) (DeepLab2's requirement).
            sigma: Standard deviation of the center Gaussian in pixels.
            small_instance_area: Instances with fewer pixels than this get
                `small_instance_weight` as semantic weight.
            small_instance_weight: Semantic weight of small instances; 1.0
                turns the re-weighting off.
            ignore_crowd_in_semantic: If True, crowd pixels get semantic
                weight 0 (Detectron2's Panoptic-DeepLab option; DeepLab2 keeps
                them, which is the default here).

        Raises:
            ValueError: If an option is out of range.
        """
        label_divisor = int(label_divisor)
        if label_divisor <= 0:
            raise ValueError(f"label_divisor must be positive, got {label_divisor}.")
        ignore_label = int(ignore_label)
        if not 0 <= ignore_label < label_divisor:
            raise ValueError(
                f"ignore_label must lie in [0, label_divisor={label_divisor}), "
                f"got {ignore_label}."
            )
        thing_class_ids = tuple(int(class_id) for class_id in thing_class_ids)
        for class_id in thing_class_ids:
            if class_id < 0 or class_id == ignore_label:
                raise ValueError(
                    f"thing_class_ids must be non-negative and differ from "
                    f"ignore_label={ignore_label}, got {class_id}."
                )
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}.")
        if small_instance_area < 0:
            raise ValueError(
                f"small_instance_area must be >= 0, got {small_instance_area}."
            )
        if small_instance_weight < 0:
            raise ValueError(
                f"small_instance_weight must be >= 0, got {small_instance_weight}."
            )
        self.label_divisor = label_divisor
        self.thing_class_ids = thing_class_ids
        self.ignore_label = ignore_label
        self.sigma = float(sigma)
        self.small_instance_area = int(small_instance_area)
        self.small_instance_weight = float(small_instance_weight)
        self.ignore_crowd_in_semantic = bool(ignore_crowd_in_semantic)

        # Lookup table class id -> is thing; ids past the table are stuff.
        is_thing_table = np.zeros(max(thing_class_ids, default=-1) + 2, dtype=bool)
        is_thing_table[list(thing_class_ids)] = True
        self._is_thing_table = is_thing_table
        self._gaussian, self._gaussian_anchor = _gaussian_patch(self.sigma)

    def get_config(self):
        """Returns the constructor arguments as a dict."""
        return {
            "label_divisor": self.label_divisor,
            "thing_class_ids": list(self.thing_class_ids),
            "ignore_label": self.ignore_label,
            "sigma": self.sigma,
            "small_instance_area": self.small_instance_area,
            "small_instance_weight": self.small_instance_weight,
            "ignore_crowd_in_semantic": self.ignore_crowd_in_semantic,
        }

    @classmethod
    def from_config(cls, config):
        """Builds a generator from `get_config()` output."""
        return cls(**config)

    def __call__(self, panoptic_label):
        """Builds the targets.

        Args:
            panoptic_label: Integer tensor [B, H, W] or [H, W] (one image, e.g.
                inside `tf.data.Dataset.map` before batching).

        Returns:
            A dict of tensors with the leading shape of the input ([B, H, W] or
            [H, W]): `semantic_label` int32, `center_heatmap` float32,
            `offset_map` float32 [..., 2] (dy, dx), `semantic_weights`,
            `center_weights`, `offset_weights` float32, `thing_mask` and
            `crowd_mask` bool.

        Raises:
            ValueError: If the label is not an integer tensor of rank 2 or 3.
        """
        panoptic_label = tf.convert_to_tensor(panoptic_label)
        if not panoptic_label.dtype.is_integer:
            raise ValueError(
                f"panoptic_label must be an integer tensor, got {panoptic_label.dtype}."
            )
        rank = panoptic_label.shape.rank
        if rank not in (2, 3):
            raise ValueError(
                "panoptic_label must have shape [B, H, W] or [H, W], got "
                f"{panoptic_label.shape}."
            )
        labels = tf.cast(panoptic_label, tf.int32)
        if rank == 2:
            labels = labels[tf.newaxis]
        targets = self._batched_targets(labels)
        if rank == 2:
            targets = {name: value[0] for name, value in targets.items()}
        return targets

    def _batched_targets(self, labels):
        """Targets for int32 labels [B, H, W]."""
        tf.debugging.assert_non_negative(
            labels, message="panoptic_label must be non-negative"
        )
        semantic = labels // self.label_divisor  # [B, H, W]
        instance_id = labels % self.label_divisor  # [B, H, W]
        table = tf.constant(self._is_thing_table)
        is_thing = tf.gather(table, tf.minimum(semantic, len(self._is_thing_table) - 1))
        is_void = tf.equal(semantic, self.ignore_label)
        is_crowd = tf.logical_and(is_thing, tf.equal(instance_id, 0))
        is_instance = tf.logical_and(is_thing, instance_id > 0)

        stats = self._instance_statistics(labels, is_instance)
        offset_map = tf.where(
            is_instance[..., tf.newaxis], stats["pixel_center"] - stats["pixel_coords"], 0
        )  # [B, H, W, 2]

        is_small = tf.logical_and(
            is_instance, stats["pixel_area"] < self.small_instance_area
        )
        semantic_weights = tf.where(is_small, self.small_instance_weight, 1.0)
        drop_semantic = is_void
        if self.ignore_crowd_in_semantic:
            drop_semantic = tf.logical_or(drop_semantic, is_crowd)
        semantic_weights = tf.where(drop_semantic, 0.0, semantic_weights)

        center_weights = tf.logical_not(tf.logical_or(is_void, is_crowd))
        offset_weights = tf.logical_and(is_thing, tf.logical_not(is_crowd))
        return {
            "semantic_label": semantic,
            "center_heatmap": self._center_heatmap(
                tf.shape(labels), stats["instance_image"], stats["instance_center"]
            ),
            "offset_map": tf.cast(offset_map, tf.float32),
            "semantic_weights": tf.cast(semantic_weights, tf.float32),
            "center_weights": tf.cast(center_weights, tf.float32),
            "offset_weights": tf.cast(offset_weights, tf.float32),
            "thing_mask": is_thing,
            "crowd_mask": is_crowd,
        }

    def _instance_statistics(self, labels, is_instance):
        """Area and rounded mean position of every instance in the batch.

        Args:
            labels: int32 [B, H, W].
            is_instance: bool [B, H, W], True on thing pixels with instance id > 0.

        Returns:
            A dict: `pixel_coords` int32 [B, H, W, 2] (y, x); per pixel the
            area (`pixel_area` int32 [B, H, W]) and center (`pixel_center` int32
            [B, H, W, 2]) of its segment (meaningless off instances); per
            instance its image index (`instance_image` int32 [K]) and center
            (`instance_center` int32 [K, 2]).
        """
        shape = tf.shape(labels)
        batch, height, width = shape[0], shape[1], shape[2]
        image_index = tf.broadcast_to(
            tf.range(batch, dtype=tf.int64)[:, tf.newaxis, tf.newaxis], shape
        )
        keys = tf.where(
            is_instance,
            image_index * _IMAGE_KEY_STRIDE + tf.cast(labels, tf.int64),
            tf.constant(_NO_INSTANCE_KEY, tf.int64),
        )  # [B, H, W]
        unique_keys, segment_index = tf.unique(tf.reshape(keys, [-1]))
        num_segments = tf.size(unique_keys)

        rows, cols = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
        pixel_coords = tf.broadcast_to(
            tf.stack([rows, cols], axis=-1)[tf.newaxis], [batch, height, width, 2]
        )  # [B, H, W, 2]
        # Integer sums keep the mean exact, so .5 ties round like DeepLab2's tf.round.
        coordinate_sum = tf.math.unsorted_segment_sum(
            tf.cast(tf.reshape(pixel_coords, [-1, 2]), tf.int64), segment_index, num_segments
        )  # [S, 2]
        area = tf.math.unsorted_segment_sum(
            tf.ones_like(segment_index, tf.int64), segment_index, num_segments
        )  # [S]
        center = tf.cast(
            tf.round(
                tf.cast(coordinate_sum, tf.float64)
                / tf.cast(area[:, tf.newaxis], tf.float64)
            ),
            tf.int32,
        )  # [S, 2]

        is_instance_segment = unique_keys != _NO_INSTANCE_KEY  # [S]
        instance_keys = tf.boolean_mask(unique_keys, is_instance_segment)  # [K]
        return {
            "pixel_coords": pixel_coords,
            "pixel_area": tf.reshape(
                tf.cast(tf.gather(area, segment_index), tf.int32), shape
            ),
            "pixel_center": tf.reshape(
                tf.gather(center, segment_index), [batch, height, width, 2]
            ),
            "instance_image": tf.cast(instance_keys // _IMAGE_KEY_STRIDE, tf.int32),
            "instance_center": tf.boolean_mask(center, is_instance_segment),
        }

    def _center_heatmap(self, label_shape, instance_image, instance_center):
        """Max over instances of the Gaussian patches.

        Args:
            label_shape: int32 [3], the label shape [B, H, W].
            instance_image: int32 [K], image index of each instance.
            instance_center: int32 [K, 2], (y, x) center of each instance.

        Returns:
            float32 [B, H, W].
        """
        patch_size = self._gaussian.shape[0]
        anchor = self._gaussian_anchor
        # Pad so that every patch fits, then crop back to the image.
        pad_before, pad_after = anchor, patch_size - anchor
        batch, height, width = label_shape[0], label_shape[1], label_shape[2]
        padded = tf.zeros(
            [batch, height + pad_before + pad_after, width + pad_before + pad_after],
            tf.float32,
        )
        # Patch index (i, j) of an instance centered at (cy, cx) lands on the
        # padded pixel (cy + i, cx + j), i.e. the image pixel (cy + i - anchor, ...).
        patch_rows, patch_cols = np.meshgrid(
            np.arange(patch_size), np.arange(patch_size), indexing="ij"
        )
        patch_offsets = tf.constant(
            np.stack([patch_rows, patch_cols], axis=-1).reshape(-1, 2), tf.int32
        )  # [S*S, 2]
        num_instances = tf.shape(instance_image)[0]
        positions = instance_center[:, tf.newaxis, :] + patch_offsets  # [K, S*S, 2]
        images = tf.broadcast_to(
            instance_image[:, tf.newaxis, tf.newaxis], [num_instances, patch_size**2, 1]
        )
        indices = tf.reshape(tf.concat([images, positions], axis=-1), [-1, 3])
        updates = tf.tile(tf.reshape(tf.constant(self._gaussian), [-1]), [num_instances])
        heatmap = tf.tensor_scatter_nd_max(padded, indices, updates)
        return heatmap[:, pad_before : pad_before + height, pad_before : pad_before + width]
