"""Panoptic-DeepLab post-processing: heads' outputs -> panoptic prediction.

Pure TensorFlow with stock ops only (no py_function, no custom op), batched and
shape-agnostic, so it can live inside an exported SavedModel served by TF
Serving.
"""

import keras
import tensorflow as tf

from axial_tf.postprocessing.centers import center_nms_heatmap, select_centers
from axial_tf.postprocessing.grouping import group_instances
from axial_tf.postprocessing.merge import merge_semantic_and_instance
from axial_tf.postprocessing.options import PostProcessOptions

PANOPTIC_PRED = "panoptic_pred"
SEMANTIC_PRED = "semantic_pred"
INSTANCE_PRED = "instance_pred"
INSTANCE_CENTER_PRED = "instance_center_pred"
INSTANCE_SCORES = "instance_scores"


def _semantic_prediction(semantic):
    """argmax over classes for [B, H, W, C] scores; [B, H, W] ids pass through."""
    rank = semantic.shape.rank
    if rank == 4:
        # Logits and probabilities give the same argmax (first index on ties).
        return tf.argmax(semantic, axis=-1, output_type=tf.int32)
    if rank == 3:
        if not semantic.dtype.is_integer:
            raise ValueError(
                "A rank-3 `semantic` input must be an integer class map [B, H, W], "
                f"got dtype {semantic.dtype.name}."
            )
        return tf.cast(semantic, tf.int32)
    raise ValueError(
        "`semantic` must be scores [B, H, W, C] or a class map [B, H, W] "
        f"(static rank 4 or 3), got shape {semantic.shape}."
    )


def _squeeze_heatmap(center_heatmap):
    """Accepts [B, H, W] or the head's [B, H, W, 1]."""
    if center_heatmap.shape.rank == 4 and center_heatmap.shape[-1] == 1:
        return center_heatmap[..., 0]
    if center_heatmap.shape.rank != 3:
        raise ValueError(
            "`center_heatmap` must be [B, H, W] or [B, H, W, 1], "
            f"got shape {center_heatmap.shape}."
        )
    return center_heatmap


def panoptic_postprocess(semantic, center_heatmap, offset_map, options):
    """Runs Panoptic-DeepLab post-processing on a batch.

    Steps: semantic argmax; heatmap threshold and max-pool NMS; top-K centers
    (raster order, ids from 1); every thing pixel joins the center nearest to
    its vote (y + dy, x + dx); majority-vote class per instance and per-class
    renumbering; small stuff classes become void (see `PostProcessOptions`).
    Images of a batch are processed independently.

    Args:
        semantic: float [B, H, W, C] logits or probabilities, or an int
            [B, H, W] semantic prediction.
        center_heatmap: float [B, H, W] (or [B, H, W, 1]) raw center heatmap.
        offset_map: float [B, H, W, 2] center offsets (dy, dx) in pixels.
        options: `PostProcessOptions`.

    Returns:
        A dict with "panoptic_pred", "semantic_pred", "instance_pred" (int32
        [B, H, W]; instance ids are class-agnostic, 0 off things),
        "instance_center_pred" (float32 [B, H, W], heatmap after threshold and
        NMS, before top-K, as DeepLab2 returns it) and "instance_scores"
        (float32 [B, H, W], heatmap value at the pixel's instance center).

    Example:
        >>> outputs = panoptic_postprocess(logits, heatmap, offsets,
        ...                                PostProcessOptions(thing_class_ids=(1,)))
        >>> outputs["panoptic_pred"]  # int32 [B, H, W]
    """
    if not isinstance(options, PostProcessOptions):
        raise TypeError(f"options must be a PostProcessOptions, got {type(options).__name__}.")
    semantic = tf.convert_to_tensor(semantic)
    center_heatmap = _squeeze_heatmap(tf.convert_to_tensor(center_heatmap))
    offset_map = tf.convert_to_tensor(offset_map)
    if offset_map.shape.rank != 4 or offset_map.shape[-1] not in (None, 2):
        raise ValueError(f"`offset_map` must be [B, H, W, 2], got shape {offset_map.shape}.")

    semantic_pred = _semantic_prediction(semantic)  # [B, H, W]
    nms_heatmap = center_nms_heatmap(
        center_heatmap, options.center_threshold, options.nms_kernel
    )  # [B, H, W]
    centers = select_centers(nms_heatmap, options.keep_k_centers)
    instance_pred, instance_scores = group_instances(
        semantic_pred, offset_map, centers, options.thing_class_ids
    )
    panoptic_pred = merge_semantic_and_instance(semantic_pred, instance_pred, options)
    return {
        PANOPTIC_PRED: panoptic_pred,
        SEMANTIC_PRED: semantic_pred,
        INSTANCE_PRED: instance_pred,
        INSTANCE_CENTER_PRED: nms_heatmap,
        INSTANCE_SCORES: instance_scores,
    }


@keras.saving.register_keras_serializable(package="axial_tf")
class PanopticPostProcessor(keras.layers.Layer):
    """Keras layer wrapping `panoptic_postprocess` (TensorFlow backend only).

    Args:
        options: `PostProcessOptions` or a dict of its fields.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:
        >>> layer = PanopticPostProcessor({"thing_class_ids": [11, 12]})
        >>> outputs = layer(semantic_logits, center_heatmap, offset_map)
    """

    def __init__(self, options, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if isinstance(options, dict):
            options = PostProcessOptions.from_dict(options)
        if not isinstance(options, PostProcessOptions):
            raise TypeError(
                f"options must be a PostProcessOptions or dict, got {type(options).__name__}."
            )
        self.options = options

    def call(self, semantic, center_heatmap, offset_map):
        return panoptic_postprocess(semantic, center_heatmap, offset_map, self.options)

    def get_config(self):
        config = super().get_config()
        config["options"] = self.options.to_dict()
        return config
