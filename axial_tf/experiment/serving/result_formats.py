"""Panoptic predictions in the official result formats of COCO panoptic and Cityscapes.

Both formats are COCO's panoptic results format, which panopticapi's `pq_compute` and
cityscapesscripts' `evalPanopticSemanticLabeling` read: per image a PNG whose pixels hold
segment ids (id = R + 256 G + 256^2 B; 0 = void, in no segment), and one JSON for all images,

    {"annotations": [{"image_id", "file_name", "segments_info": [
        {"id", "category_id", "area", "bbox": [x, y, width, height], "iscrowd": 0}, ...]}, ...],
     "categories": [{"id", "name", "isthing"}, ...]}

where classes are named by the dataset's own ids (`PanopticDatasetInfo.category_ids`: COCO
category ids, Cityscapes label ids), not by train ids. Each distinct panoptic label of an image
is one segment (as `axial_tf.metrics.PanopticQuality` counts them), numbered 1, 2, ... in label
order. In an output folder:

    panoptic_predictions.json   the JSON (written last, once every image is done)
    panoptic_predictions/STEM.png   the segment-id PNGs: the evaluators' default folder is the
                                    JSON's path without ".json"
    semantic_predictions/STEM.png   "cityscapes" only: the semantic prediction (`semantic_pred`,
                                    as in --format png) as 8-bit label ids, 0 = unlabeled: the
                                    files cityscapesscripts' evalPixelLevelSemanticLabeling
                                    finds with CITYSCAPES_RESULTS set to this folder

Image ids: for "coco_panoptic" the input file's stem, as an integer when it is all digits (COCO
names images by their zero-padded integer id: 000000000139.jpg is image 139); for "cityscapes"
the stem without "_leftImg8bit" (cityscapesscripts' ids are the file prefixes
CITY_SEQUENCE_FRAME). Every file is written under a temporary name and renamed into place.
"""

import json
import os
import pathlib
import re

import numpy as np
import tensorflow as tf

from axial_tf.utils import visualization
from axial_tf.utils.files import write_text_atomically

RESULT_FORMATS = ("coco_panoptic", "cityscapes")
PREDICTIONS_JSON = "panoptic_predictions.json"
PANOPTIC_FOLDER = "panoptic_predictions"
SEMANTIC_FOLDER = "semantic_predictions"
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit"
_LARGEST_LABEL_ID = 255  # Cityscapes' semantic results are 8-bit PNGs


def dataset_category_ids(info, file_format):
    """The dataset's id of each train id, checked against what `file_format` can hold.

    Args:
        info: The serving module's `label_space` dict.
        file_format: One of RESULT_FORMATS.

    Returns:
        A list of ints, one per train id.

    Raises:
        ValueError: If the label space has no category ids (an export older than them), or for
            "cityscapes" an id is 0 (void there) or does not fit 8 bits.
    """
    if file_format not in RESULT_FORMATS:
        raise ValueError(f"file_format must be one of {RESULT_FORMATS}, got {file_format!r}.")
    category_ids = info.get("category_ids")
    if category_ids is None:
        raise ValueError(
            f"--format {file_format} needs the dataset's category ids, which this model's label space lacks "
            "(exported before they were recorded); re-export it with tools/export.py."
        )
    if file_format == "cityscapes" and not all(0 < i <= _LARGEST_LABEL_ID for i in category_ids):
        raise ValueError(
            f"--format cityscapes writes 8-bit label ids with 0 for void, but the dataset's category ids are "
            f"{category_ids}."
        )
    return category_ids


def image_id(source, file_format):
    """The `image_id` of the input file `source` in `file_format` (see the module docstring)."""
    stem = pathlib.PurePath(source).stem
    if file_format == "cityscapes":
        return stem.removesuffix(CITYSCAPES_IMAGE_SUFFIX)
    return int(stem) if re.fullmatch(r"[0-9]+", stem) else stem


def check_image_ids(sources, file_format):
    """Checks that the input files have distinct image ids (an evaluator pairs images by id).

    Raises:
        ValueError: Naming the two files that share an id.
    """
    first_source = {}
    for source in sources:
        key = image_id(source, file_format)
        if key in first_source:
            raise ValueError(
                f"{first_source[key]} and {source} would both be image_id {key!r} in --format {file_format}."
            )
        first_source[key] = source


def panoptic_segments(panoptic, category_ids, label_divisor):
    """The COCO segments of a panoptic label map.

    Args:
        panoptic: int [H, W] labels `train_id * label_divisor + instance`; a class outside
            [0, len(category_ids)) (the void label) is void.
        category_ids: The dataset's id of each train id.
        label_divisor: Divisor of the panoptic encoding.

    Returns:
        A tuple `(segment_ids, segments_info)`: int32 [H, W] segment ids (0 on void), and per
        segment a dict with "id", "category_id", "area", "bbox" ([x, y, width, height] of its
        pixels) and "iscrowd" (0).
    """
    panoptic = np.asarray(panoptic)
    semantic = panoptic // label_divisor  # [H, W]
    valid = (semantic >= 0) & (semantic < len(category_ids))  # [H, W]
    labels, segment_index, areas = np.unique(
        panoptic[valid], return_inverse=True, return_counts=True
    )  # [S], [N], [S]
    segment_ids = np.zeros(panoptic.shape, np.int32)
    segment_ids[valid] = segment_index + 1
    rows, cols = np.nonzero(valid)  # [N], [N], in the order of panoptic[valid]
    top = np.full(len(labels), panoptic.shape[0])
    left = np.full(len(labels), panoptic.shape[1])
    bottom = np.full(len(labels), -1)
    right = np.full(len(labels), -1)
    np.minimum.at(top, segment_index, rows)
    np.minimum.at(left, segment_index, cols)
    np.maximum.at(bottom, segment_index, rows)
    np.maximum.at(right, segment_index, cols)
    segments_info = [
        {
            "id": index + 1,
            "category_id": int(category_ids[label // label_divisor]),
            "area": int(areas[index]),
            "bbox": [int(left[index]), int(top[index]), int(right[index] - left[index] + 1),
                     int(bottom[index] - top[index] + 1)],
            "iscrowd": 0,
        }
        for index, label in enumerate(labels)
    ]
    return segment_ids, segments_info


def label_id_map(semantic, category_ids):
    """uint8 [H, W] dataset ids of a semantic class map [H, W]; void (any other class) is 0."""
    semantic = np.asarray(semantic)
    valid = (semantic >= 0) & (semantic < len(category_ids))
    lookup = np.asarray(category_ids, np.uint8)
    return np.where(valid, lookup[np.where(valid, semantic, 0)], 0).astype(np.uint8)


def write_result_prediction(outputs, output_base, info, source, file_format):
    """Writes one image's files of a result format and returns its entry of the predictions JSON.

    Args:
        outputs: The image's panoptic `serving_default` outputs (NumPy, no batch dim).
        output_base: The output folder joined with the image's output stem.
        info: The serving module's `label_space` dict.
        source: The input file's path (gives the image id).
        file_format: One of RESULT_FORMATS.

    Returns:
        The annotation dict: "image_id", "file_name" (the PNG's name in PANOPTIC_FOLDER) and
        "segments_info".
    """
    category_ids = dataset_category_ids(info, file_format)
    directory, stem = os.path.split(output_base)
    file_name = f"{stem}.png"
    segment_ids, segments_info = panoptic_segments(outputs["panoptic_pred"], category_ids, info["label_divisor"])
    _write_png(os.path.join(directory, PANOPTIC_FOLDER, file_name), visualization.encode_panoptic_rgb(segment_ids))
    if file_format == "cityscapes":
        label_ids = label_id_map(outputs["semantic_pred"], category_ids)  # [H, W]
        _write_png(os.path.join(directory, SEMANTIC_FOLDER, file_name), label_ids[..., np.newaxis])
    return {"image_id": image_id(source, file_format), "file_name": file_name, "segments_info": segments_info}


def write_predictions_json(directory, annotations, info):
    """Writes `directory/PREDICTIONS_JSON`: the annotations and the dataset's categories.

    Args:
        directory: The output folder.
        annotations: The `write_result_prediction` entries, in input order.
        info: The serving module's `label_space` dict.

    Returns:
        The JSON's path.
    """
    things = set(info["thing_class_ids"])
    categories = [
        {"id": category_id, "name": name, "isthing": int(train_id in things)}
        for train_id, (category_id, name) in enumerate(zip(info["category_ids"], info["class_names"]))
    ]
    path = os.path.join(directory, PREDICTIONS_JSON)
    write_text_atomically(path, json.dumps({"annotations": annotations, "categories": categories}))
    return path


def _write_png(path, pixels):
    """Writes uint8 [H, W, C] `pixels` as a PNG at `path` (folder created) through a temporary name."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    write_text_atomically(path, tf.io.encode_png(pixels).numpy())
