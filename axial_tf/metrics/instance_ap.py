"""COCO-style mask AP of the thing instances of panoptic predictions.

Needs pycocotools (`pip install axial_tf[coco]`). Unlike PQ and mIoU this
metric runs on the host with numpy: under `tf.distribute`, gather the
per-replica outputs (e.g. `strategy.experimental_local_results`) and call
`update_state` with them.
"""

import contextlib
import io

import numpy as np

from axial_tf.metrics._checks import check_choice, check_class_ids, check_int
from axial_tf.metrics.segment_matching import CROWD_CONVENTIONS

# Order of COCOeval.stats for iouType "segm".
COCO_STAT_KEYS = (
    "ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)


def _import_pycocotools():
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError(
            "Instance AP needs pycocotools, which is an optional dependency: "
            "install it with `pip install axial_tf[coco]`."
        ) from error
    return mask_utils, COCO, COCOeval


def _to_numpy(array):
    return array.numpy() if hasattr(array, "numpy") else np.asarray(array)


def _as_image_batch(array, name, rank, batch_shape=None):
    """Adds the batch axis to a single image; checks the rank.

    Args:
        array: The array, with or without its batch axis.
        name: The argument's name, for errors.
        rank: The rank with the batch axis.
        batch_shape: When given, the [B, H, W] the array must start with.
    """
    array = _to_numpy(array)
    if array.ndim == rank - 1:
        array = array[np.newaxis]
    if array.ndim != rank:
        raise ValueError(
            f"{name} must have rank {rank} (or {rank - 1} for one image), got shape {array.shape}."
        )
    if batch_shape is not None and array.shape[:3] != batch_shape:
        raise ValueError(
            f"{name} has shape {array.shape}; its [B, H, W] must be groundtruth_panoptic's "
            f"{batch_shape}."
        )
    return array


def _as_crowd_batch(crowd_mask, batch_shape):
    """bool [B, H, W] from a bool/int crowd map of one image or a batch."""
    crowd_mask = _as_image_batch(crowd_mask, "crowd_mask", 3, batch_shape)
    if not (crowd_mask.dtype == bool or np.issubdtype(crowd_mask.dtype, np.integer)):
        raise ValueError(f"crowd_mask must be a bool or int map, got dtype {crowd_mask.dtype}.")
    return crowd_mask != 0


class PanopticInstanceAP:
    """COCO mask AP / AR of thing segments, accumulated over images.

    Every thing segment of a ground-truth map is a COCO annotation; every
    thing segment of a predicted map is a detection. A detection's score is
    the mean of `instance_scores` over its pixels (1 if not given), times the
    mean probability of its class over its pixels when `semantic_probs` is
    given (DeepLab2's combined score).

    A ground-truth segment is a crowd region (COCO `iscrowd=1`: a detection
    whose area lies inside it by at least the IoU threshold, and that matches
    no other object, is ignored rather than counted as a false positive) when
    its instance id is 0 under crowd_convention "coco", or when the
    `crowd_mask` given to `update_state` marks it (DeepLab2's `is_crowd` map,
    for labels whose crowds are not instance 0).

    Void pixels (class `ignore_label`) are never a thing, in the ground truth
    or in a prediction, even when `thing_class_ids` lists the ignore label:
    `PanopticQuality` and DeepLab2's instance AP treat void the same way.

    Args:
        num_classes: Number of semantic classes.
        thing_class_ids: Classes with instances (the only ones evaluated); the
            ignore label is dropped from them.
        label_divisor: Panoptic label = class * label_divisor + instance.
        ignore_label: Void class.
        crowd_convention: "coco" or "none" (see `PanopticQuality`).

    Example:
        >>> metric = PanopticInstanceAP(num_classes=19, thing_class_ids=range(11, 19))
        >>> metric.update_state(gt_panoptic, outputs["panoptic_pred"],
        ...                     instance_scores=outputs["instance_scores"])
        >>> metric.report()["ap"]
    """

    def __init__(self, num_classes, thing_class_ids, label_divisor=1000,
                 ignore_label=255, crowd_convention="coco"):
        self._mask_utils, self._coco_class, self._cocoeval_class = _import_pycocotools()
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.ignore_label = check_int("ignore_label", ignore_label)
        listed_things = check_class_ids("thing_class_ids", thing_class_ids, num_classes)
        self.thing_class_ids = tuple(
            class_id for class_id in listed_things if class_id != self.ignore_label
        )
        if not self.thing_class_ids:
            raise ValueError(
                "PanopticInstanceAP needs at least one thing class other than "
                f"ignore_label={self.ignore_label}; got thing_class_ids={listed_things}."
            )
        self.label_divisor = check_int("label_divisor", label_divisor, minimum=1)
        self.crowd_convention = check_choice(
            "crowd_convention", crowd_convention, CROWD_CONVENTIONS
        )
        self.reset_state()

    def reset_state(self):
        """Forgets every image added so far."""
        self._images = []
        self._groundtruth = []
        self._detections = []

    def _thing_segments(self, panoptic):
        """Yields (value, class, mask) for every thing segment of one map [H, W]."""
        for value in np.unique(panoptic):
            class_id = int(value) // self.label_divisor
            # thing_class_ids excludes the ignore label: void is never a thing.
            if class_id in self.thing_class_ids:
                yield int(value), class_id, panoptic == value

    def _encode(self, mask):
        return self._mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))

    def _is_crowd(self, value, mask, crowd_mask):
        """Whether a ground-truth thing segment is a COCO crowd region.

        A segment counts as crowd when `crowd_mask` marks any of its pixels:
        like DeepLab2, a crowd map is expected to be constant over a segment.
        """
        if crowd_mask is not None and crowd_mask[mask].any():
            return True
        return self.crowd_convention == "coco" and value % self.label_divisor == 0

    def _add_image(self, groundtruth, prediction, scores, probs, crowd_mask):
        image_id = len(self._images) + 1
        height, width = groundtruth.shape
        self._images.append({"id": image_id, "height": height, "width": width})
        self._add_groundtruth(image_id, groundtruth, crowd_mask)
        self._add_detections(image_id, prediction, scores, probs)

    def _add_groundtruth(self, image_id, groundtruth, crowd_mask):
        """Adds the thing segments of a ground-truth map [H, W] as COCO annotations."""
        for value, class_id, mask in self._thing_segments(groundtruth):
            rle = self._encode(mask)
            is_crowd = self._is_crowd(value, mask, crowd_mask)
            self._groundtruth.append({
                "id": len(self._groundtruth) + 1,
                "image_id": image_id,
                "category_id": class_id,
                "segmentation": rle,
                "area": float(self._mask_utils.area(rle)),
                "bbox": self._mask_utils.toBbox(rle).tolist(),
                "iscrowd": int(is_crowd),
            })

    def _add_detections(self, image_id, prediction, scores, probs):
        """Adds the thing segments of a predicted map [H, W] as scored detections."""
        for _, class_id, mask in self._thing_segments(prediction):
            score = float(scores[mask].mean()) if scores is not None else 1.0
            if probs is not None:
                score *= float(probs[..., class_id][mask].mean())
            self._detections.append({
                "image_id": image_id,
                "category_id": class_id,
                "segmentation": self._encode(mask),
                "score": score,
            })

    def update_state(self, groundtruth_panoptic, predicted_panoptic,
                     instance_scores=None, semantic_probs=None, crowd_mask=None):
        """Adds a batch of images.

        Args:
            groundtruth_panoptic: int [B, H, W] (or [H, W]) panoptic labels.
            predicted_panoptic: int, same shape.
            instance_scores: Optional float [B, H, W] per-pixel instance score
                (the post-processor's "instance_scores").
            semantic_probs: Optional float [B, H, W, C] class probabilities.
            crowd_mask: Optional bool or int [B, H, W] map, true (non-zero) on
                ground-truth crowd regions (DeepLab2's `is_crowd`); the
                ground-truth thing segments it marks become COCO crowd regions,
                in addition to those of `crowd_convention`.
        """
        groundtruth = _as_image_batch(groundtruth_panoptic, "groundtruth_panoptic", 3)
        batch_shape = groundtruth.shape  # [B, H, W]
        prediction = _as_image_batch(predicted_panoptic, "predicted_panoptic", 3, batch_shape)
        scores = probs = crowd = None
        if instance_scores is not None:
            scores = _as_image_batch(instance_scores, "instance_scores", 3, batch_shape)
        if semantic_probs is not None:
            probs = _as_image_batch(semantic_probs, "semantic_probs", 4, batch_shape)
            if probs.shape[-1] != self.num_classes:
                raise ValueError(
                    f"semantic_probs has {probs.shape[-1]} channels; it needs one per class "
                    f"(num_classes={self.num_classes})."
                )
        if crowd_mask is not None:
            crowd = _as_crowd_batch(crowd_mask, batch_shape)
        for index in range(batch_shape[0]):
            self._add_image(
                groundtruth[index],
                prediction[index],
                None if scores is None else scores[index],
                None if probs is None else probs[index],
                None if crowd is None else crowd[index],
            )

    def report(self):
        """Runs COCOeval (iouType "segm") on everything added.

        Returns:
            A dict keyed by `COCO_STAT_KEYS` ("ap", "ap50", "ap75",
            "ap_small", ..., "ar_large") of floats in [0, 1], or None where
            the statistic is undefined because it has no ground truth (e.g.
            no large objects; COCOeval prints -1 there).
        """
        if not self._images:
            raise ValueError("PanopticInstanceAP.report() called before any update_state().")
        coco_groundtruth = self._coco_dataset(self._groundtruth)
        # pycocotools prints progress and the summary table; keep logs clean.
        with contextlib.redirect_stdout(io.StringIO()):
            coco_groundtruth.createIndex()
            # loadRes rejects an empty list, so no detections is a plain dataset.
            if self._detections:
                coco_detections = coco_groundtruth.loadRes(list(self._detections))
            else:
                coco_detections = self._coco_dataset([])
                coco_detections.createIndex()
            evaluator = self._cocoeval_class(coco_groundtruth, coco_detections, iouType="segm")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return {
            key: float(value) if value >= 0 else None
            for key, value in zip(COCO_STAT_KEYS, evaluator.stats)
        }

    def _coco_dataset(self, annotations):
        dataset = self._coco_class()
        dataset.dataset = {
            "images": list(self._images),
            "annotations": list(annotations),
            "categories": [{"id": class_id} for class_id in self.thing_class_ids],
        }
        return dataset
