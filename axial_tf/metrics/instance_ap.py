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


def _as_image_batch(array, name, rank):
    """Adds the batch axis to a single image; checks the rank."""
    array = _to_numpy(array)
    if array.ndim == rank - 1:
        array = array[np.newaxis]
    if array.ndim != rank:
        raise ValueError(
            f"{name} must have rank {rank} (or {rank - 1} for one image), got shape {array.shape}."
        )
    return array


class PanopticInstanceAP:
    """COCO mask AP / AR of thing segments, accumulated over images.

    Every thing segment of a ground-truth map is a COCO annotation (its crowd
    region, i.e. instance id 0, is `iscrowd=1` under crowd_convention "coco");
    every thing segment of a predicted map is a detection. A detection's score
    is the mean of `instance_scores` over its pixels (1 if not given), times
    the mean probability of its class over its pixels when `semantic_probs`
    is given (DeepLab2's combined score).

    Args:
        num_classes: Number of semantic classes.
        thing_class_ids: Classes with instances (the only ones evaluated).
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
        self.thing_class_ids = check_class_ids("thing_class_ids", thing_class_ids, num_classes)
        if not self.thing_class_ids:
            raise ValueError("PanopticInstanceAP needs at least one thing class.")
        self.label_divisor = check_int("label_divisor", label_divisor, minimum=1)
        self.ignore_label = check_int("ignore_label", ignore_label)
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
        """Yields (value, class, mask) for every thing segment of one map."""
        for value in np.unique(panoptic):
            class_id = int(value) // self.label_divisor
            if class_id in self.thing_class_ids:
                yield int(value), class_id, panoptic == value

    def _encode(self, mask):
        return self._mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))

    def _add_image(self, groundtruth, prediction, scores, probs):
        image_id = len(self._images) + 1
        height, width = groundtruth.shape
        self._images.append({"id": image_id, "height": height, "width": width})
        for value, class_id, mask in self._thing_segments(groundtruth):
            rle = self._encode(mask)
            is_crowd = self.crowd_convention == "coco" and value % self.label_divisor == 0
            self._groundtruth.append({
                "id": len(self._groundtruth) + 1,
                "image_id": image_id,
                "category_id": class_id,
                "segmentation": rle,
                "area": float(self._mask_utils.area(rle)),
                "bbox": self._mask_utils.toBbox(rle).tolist(),
                "iscrowd": int(is_crowd),
            })
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
                     instance_scores=None, semantic_probs=None):
        """Adds a batch of images.

        Args:
            groundtruth_panoptic: int [B, H, W] (or [H, W]) panoptic labels.
            predicted_panoptic: int, same shape.
            instance_scores: Optional float [B, H, W] per-pixel instance score
                (the post-processor's "instance_scores").
            semantic_probs: Optional float [B, H, W, C] class probabilities.
        """
        groundtruth = _as_image_batch(groundtruth_panoptic, "groundtruth_panoptic", 3)
        prediction = _as_image_batch(predicted_panoptic, "predicted_panoptic", 3)
        if groundtruth.shape != prediction.shape:
            raise ValueError(
                f"groundtruth_panoptic {groundtruth.shape} and predicted_panoptic "
                f"{prediction.shape} shapes differ."
            )
        scores = None
        if instance_scores is not None:
            scores = _as_image_batch(instance_scores, "instance_scores", 3)
        probs = None
        if semantic_probs is not None:
            probs = _as_image_batch(semantic_probs, "semantic_probs", 4)
        for index in range(groundtruth.shape[0]):
            self._add_image(
                groundtruth[index],
                prediction[index],
                None if scores is None else scores[index],
                None if probs is None else probs[index],
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
