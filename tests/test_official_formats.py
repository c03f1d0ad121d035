"""Predictions in the official result formats, checked by the official evaluators.

Small generated datasets: ground-truth panoptic maps with stuff, thing instances, a crowd region
and void, and predictions of them with known kinds of error (shifted, dropped, spurious and
relabelled segments, void, crowd hits). The ground truth is written in each benchmark's format by
this file (its own encoding, independent of the writer); the predictions go through the writer
`tools/predict.py` uses (`PanopticTask.write_prediction`, `write_predictions_json`). hotcoco's
panopticapi-compatible `pq_compute` (COCO panoptic) and cityscapesscripts' panoptic and
pixel-level evaluations (Cityscapes) must then report what `axial_tf.metrics` (the metrics of
`tools/evaluate.py`) computes on the same maps.
"""

import copy
import json
import types

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from test_export import TINY_BACKBONE, run_command, tiny_panoptic_config, write_training_run
from test_export_target import assert_one_line_error
from training_helpers import tool_command

from axial_tf.data import PanopticDatasetInfo
from axial_tf.data import cityscapes_panoptic, shapes_renderer
from axial_tf.experiment.serving import result_formats
from axial_tf.experiment.tasks.panoptic import PanopticTask
from axial_tf.metrics import PanopticQuality, SemanticMeanIoU
from axial_tf.utils import visualization

DIVISOR = 1000
IGNORE = 255
SHAPES = ((40, 56), (48, 40))
NUM_IMAGES = 6


# ------------------------------------------------------------------ generated data


def _box(rng, shape, low, high):
    """A random rectangle (slices) of height and width in [low, high) inside `shape`."""
    height, width = (int(rng.integers(low, high)) for _ in range(2))
    top, left = int(rng.integers(0, shape[0] - height)), int(rng.integers(0, shape[1] - width))
    return slice(top, top + height), slice(left, left + width)


def scene_and_prediction(rng, shape, stuff, things):
    """A ground-truth panoptic map and a prediction of it with known kinds of error.

    Args:
        rng: NumPy generator.
        shape: (height, width).
        stuff: Three or more stuff train ids.
        things: Two or more thing train ids.

    Returns:
        `(groundtruth, prediction)`, int32 [H, W] maps `class * DIVISOR + instance`.
    """
    groundtruth = np.full(shape, stuff[0] * DIVISOR, np.int32)  # [H, W]
    groundtruth[shape[0] // 2:] = stuff[1] * DIVISOR
    groundtruth[_box(rng, shape, 8, 16)] = stuff[2] * DIVISOR
    for instance in range(1, 5):
        groundtruth[_box(rng, shape, 5, 14)] = int(rng.choice(things)) * DIVISOR + instance
    crowd = _box(rng, shape, 6, 12)
    groundtruth[crowd] = things[0] * DIVISOR  # a thing class with instance 0: its crowd region
    groundtruth[_box(rng, shape, 4, 10)] = IGNORE * DIVISOR

    prediction = groundtruth.copy()
    is_instance = np.isin(groundtruth // DIVISOR, things) & (groundtruth % DIVISOR > 0)  # [H, W]
    instance_labels = np.unique(groundtruth[is_instance])  # [K]
    prediction[is_instance] += 10  # instance ids are arbitrary
    moved = groundtruth == instance_labels[-1]  # [H, W]
    prediction[moved] = stuff[0] * DIVISOR
    shift = tuple(int(offset) for offset in rng.integers(-4, 5, 2))
    prediction[np.roll(moved, shift, axis=(0, 1))] = instance_labels[-1] + 40  # shifted: matched or not
    prediction[groundtruth == instance_labels[0]] = stuff[1] * DIVISOR  # dropped
    prediction[_box(rng, shape, 5, 12)] = things[1] * DIVISOR + 50  # spurious (or on void: ignored)
    if rng.random() < 0.5:
        prediction[groundtruth == stuff[2] * DIVISOR] = stuff[0] * DIVISOR  # a stuff region missed
    prediction[_box(rng, shape, 6, 14)] = stuff[-1] * DIVISOR  # relabelled stuff
    prediction[crowd] = things[0] * DIVISOR + 60  # on the crowd region: ignored
    prediction[_box(rng, shape, 3, 8)] = things[-1] * DIVISOR  # a thing region without instance id
    prediction[_box(rng, shape, 3, 8)] = IGNORE * DIVISOR  # predicted void
    return groundtruth, prediction


def generated_dataset(stuff, things, seed):
    """NUM_IMAGES (groundtruth, prediction) pairs of alternating SHAPES."""
    rng = np.random.default_rng(seed)
    return [scene_and_prediction(rng, SHAPES[index % 2], stuff, things) for index in range(NUM_IMAGES)]


def label_space(class_names, thing_class_ids, category_ids):
    """The serving module's `label_space` facts the writers read."""
    return {"class_names": list(class_names), "thing_class_ids": list(thing_class_ids),
            "category_ids": list(category_ids), "label_divisor": DIVISOR, "void_label": IGNORE}


def axial_tf_report(pairs, info):
    """`PanopticQuality.report()` of the pairs, as tools/evaluate.py computes PQ."""
    metric = PanopticQuality(len(info["class_names"]), info["thing_class_ids"], label_divisor=DIVISOR,
                             ignore_label=IGNORE)
    for groundtruth, prediction in pairs:
        metric.update_state(groundtruth, prediction)
    return metric.report()


def write_groundtruth(root, pairs, image_ids, file_names, categories, things):
    """The ground truth in COCO panoptic format (`root.json` + PNG folder `root/`), encoded here.

    Segment ids are label + 1, thing pixels with instance 0 are one crowd segment, void is 0.

    Args:
        root: Path of the JSON without ".json".
        pairs: (groundtruth, prediction) maps.
        image_ids: Image id of each pair.
        file_names: PNG file name of each pair.
        categories: The JSON's categories ({"id", "name", "isthing"}), one per train id.
        things: Thing train ids.

    Returns:
        `(json_path, folder)`.
    """
    root.mkdir(parents=True)
    annotations, images = [], []
    for (groundtruth, _), image_id, file_name in zip(pairs, image_ids, file_names):
        segment_ids = np.where(groundtruth // DIVISOR < len(categories), groundtruth + 1, 0)  # [H, W]
        rgb = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], axis=-1)
        PIL.Image.fromarray(rgb.astype(np.uint8)).save(root / file_name)
        segments = []
        for label in np.unique(groundtruth):
            class_id = int(label) // DIVISOR
            if class_id >= len(categories):
                continue
            rows, cols = np.nonzero(groundtruth == label)
            segments.append({
                "id": int(label) + 1, "category_id": categories[class_id]["id"], "area": int(rows.size),
                "bbox": [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1],
                "iscrowd": int(class_id in things and label % DIVISOR == 0),
            })
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
        images.append({"id": image_id, "file_name": file_name, "height": groundtruth.shape[0],
                       "width": groundtruth.shape[1]})
    json_path = root.parent / f"{root.name}.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path, root


def write_predictions(directory, pairs, sources, info, file_format, semantic_maps=None):
    """The predictions written as `tools/predict.py --format file_format` writes them."""
    stems = [source.rsplit("/", 1)[-1].rsplit(".", 1)[0] for source in sources]
    annotations = []
    for index, ((_, prediction), source, stem) in enumerate(zip(pairs, sources, stems)):
        semantic = prediction // DIVISOR if semantic_maps is None else semantic_maps[index]
        outputs = {"panoptic_pred": prediction, "semantic_pred": semantic}
        image = np.zeros((*prediction.shape, 3), np.uint8)
        annotations.append(PanopticTask.write_prediction(
            outputs, image, str(directory / stem), info, source, file_format=file_format))
    return result_formats.write_predictions_json(str(directory), annotations, info)


def assert_same_panoptic_quality(results, report, category_ids):
    """An evaluator's panopticapi-style results equal axial_tf's report (overall, things, stuff, per class)."""
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for name in ("pq", "sq", "rq"):
            assert results[group][name] == pytest.approx(report[name + suffix], abs=1e-12), (group, name)
    assert results["All"]["n"] == report["num_classes_counted"]
    for train_id, entry in report["per_class"].items():
        if entry["counted"]:
            evaluated = results["per_class"][category_ids[train_id]]
            assert [evaluated[name] for name in ("pq", "sq", "rq")] == pytest.approx(
                [entry[name] for name in ("pq", "sq", "rq")], abs=1e-12), train_id


def assert_every_kind_of_outcome(report):
    """The generated errors give matches, false positives and false negatives, for things and stuff."""
    for is_thing in (True, False):
        entries = [entry for entry in report["per_class"].values() if entry["is_thing"] == is_thing]
        assert all(sum(entry[key] for entry in entries) > 0 for key in ("tp", "fp", "fn")), is_thing
    assert 0.2 < report["pq"] < 0.9


# ---------------------------------------------------------------------- the writer


def test_segments_number_each_label_and_leave_void_out():
    panoptic = np.array([
        [0, 0, 1001, 1001],
        [255000, 2000, 1001, 3],
        [2000, 2000, 7000, 1002],
    ])  # class 7 is outside the 3 classes: void like the ignore label
    segment_ids, segments = result_formats.panoptic_segments(panoptic, [1, 7, 24], DIVISOR)
    np.testing.assert_array_equal(segment_ids, [[1, 1, 3, 3], [0, 5, 3, 2], [5, 5, 0, 4]])
    assert segments == [
        {"id": 1, "category_id": 1, "area": 2, "bbox": [0, 0, 2, 1], "iscrowd": 0},
        {"id": 2, "category_id": 1, "area": 1, "bbox": [3, 1, 1, 1], "iscrowd": 0},
        {"id": 3, "category_id": 7, "area": 3, "bbox": [2, 0, 2, 2], "iscrowd": 0},
        {"id": 4, "category_id": 7, "area": 1, "bbox": [3, 2, 1, 1], "iscrowd": 0},
        {"id": 5, "category_id": 24, "area": 3, "bbox": [0, 1, 2, 2], "iscrowd": 0},
    ]
    np.testing.assert_array_equal(
        result_formats.label_id_map(np.array([[0, 1, 2, 255, -1]]), [7, 8, 11]), [[7, 8, 11, 0, 0]])


def test_image_ids_follow_each_benchmark():
    assert result_formats.image_id("val/000000000139.jpg", "coco_panoptic") == 139
    assert result_formats.image_id("photos/street.png", "coco_panoptic") == "street"
    assert result_formats.image_id("aachen_000000_000019_leftImg8bit.png", "cityscapes") == "aachen_000000_000019"
    with pytest.raises(ValueError, match=r"a/7\.png and b/007\.jpg would both be image_id 7 in --format coco_panoptic"):
        result_formats.check_image_ids(["a/7.png", "b/007.jpg"], "coco_panoptic")


def test_category_ids_are_checked_against_the_format():
    info = label_space(("sky", "disc"), (1,), (0, 1))
    assert result_formats.dataset_category_ids(info, "coco_panoptic") == [0, 1]
    with pytest.raises(ValueError, match=r"cityscapes writes 8-bit label ids with 0 for void.*\[0, 1\]"):
        result_formats.dataset_category_ids(info, "cityscapes")
    del info["category_ids"]
    with pytest.raises(ValueError, match="lacks .*re-export it"):
        result_formats.dataset_category_ids(info, "coco_panoptic")


def test_dataset_info_category_ids_default_to_the_train_ids_and_round_trip():
    info = PanopticDatasetInfo(name="toy", class_names=("sky", "disc", "box"), thing_class_ids=(1, 2))
    assert info.category_ids == (0, 1, 2)
    coco = PanopticDatasetInfo(name="toy", class_names=("sky", "disc"), thing_class_ids=(1,), category_ids=[184, 1])
    assert PanopticDatasetInfo.from_json(coco.to_json()) == coco and coco.category_ids == (184, 1)
    stored_before = json.loads(info.to_json())
    del stored_before["category_ids"]
    assert PanopticDatasetInfo.from_json(json.dumps(stored_before)) == info
    for bad in ((1,), (1, 1), (-1, 2)):
        with pytest.raises(ValueError, match="category_ids .* must be 2 distinct non-negative ids"):
            PanopticDatasetInfo(name="toy", class_names=("sky", "disc"), thing_class_ids=(1,), category_ids=bad)


# ------------------------------------------------------------- independent evaluators


def test_coco_panoptic_results_give_the_same_pq_in_panopticapi_protocol(tmp_path):
    from hotcoco.panoptic import pq_compute

    # COCO's ids are sparse and not in train-id order of names: person 1, car 3, dog 18 (things),
    # wall-other-merged 199, sky-other-merged 187, grass-merged 193 (stuff), ordered by id.
    category_ids, names = (1, 3, 18, 187, 193, 199), ("person", "car", "dog", "sky", "grass", "wall")
    things = (0, 1, 2)
    info = label_space(names, things, category_ids)
    pairs = generated_dataset(stuff=(3, 4, 5), things=things, seed=11)
    sources = [f"images/{1000 + 7 * index:012d}.jpg" for index in range(NUM_IMAGES)]
    categories = [{"id": category_id, "name": name, "isthing": int(train_id in things)}
                  for train_id, (category_id, name) in enumerate(zip(category_ids, names))]
    groundtruth_json, groundtruth_folder = write_groundtruth(
        tmp_path / "panoptic_val", pairs, [1000 + 7 * index for index in range(NUM_IMAGES)],
        [f"{1000 + 7 * index:012d}.png" for index in range(NUM_IMAGES)], categories, things)

    predictions_json = write_predictions(tmp_path / "out", pairs, sources, info, "coco_panoptic")
    written = json.loads((tmp_path / "out" / result_formats.PREDICTIONS_JSON).read_text())
    assert written["categories"] == categories
    assert [annotation["image_id"] for annotation in written["annotations"]] == [1000 + 7 * i for i in range(NUM_IMAGES)]
    assert not list((tmp_path / "out").rglob("*.tmp"))

    results = pq_compute(str(groundtruth_json), predictions_json, gt_folder=str(groundtruth_folder))  # folder: default
    report = axial_tf_report(pairs, info)
    assert_every_kind_of_outcome(report)
    assert_same_panoptic_quality(results, report, category_ids)


@pytest.fixture
def cityscapes_evaluations():
    """cityscapesscripts' panoptic and pixel-level evaluation modules, and its labels."""
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling, evalPixelLevelSemanticLabeling
    from cityscapesscripts.helpers import labels

    return types.SimpleNamespace(panoptic=evalPanopticSemanticLabeling, pixel=evalPixelLevelSemanticLabeling,
                                 labels=labels)


def test_cityscapes_results_give_the_same_pq_and_miou_in_cityscapesscripts(tmp_path, cityscapes_evaluations):
    scripts = cityscapes_evaluations
    evaluated = [label for label in scripts.labels.labels if 0 <= label.trainId < 255]  # the 19 classes
    evaluated.sort(key=lambda label: label.trainId)
    assert list(cityscapes_panoptic.LABEL_IDS) == [label.id for label in evaluated]
    assert cityscapes_panoptic.CLASS_NAMES == tuple(label.name for label in evaluated)
    things = cityscapes_panoptic.THING_CLASS_IDS
    info = label_space(cityscapes_panoptic.CLASS_NAMES, things, cityscapes_panoptic.LABEL_IDS)
    # road, building, sky, vegetation; person, car, bicycle.
    pairs = generated_dataset(stuff=(0, 2, 10, 8), things=(11, 13, 18), seed=5)
    prefixes = [f"{city}_000000_{19 + index:06d}" for index, city in
                enumerate(["aachen", "bremen", "aachen", "erfurt", "bremen", "jena"])]
    # The semantic prediction: the panoptic one's classes, with a pole where the model saw one.
    semantic_maps = []
    for index, (_, prediction) in enumerate(pairs):
        semantic = prediction // DIVISOR
        semantic[index:index + 6, 2:5] = 5
        semantic_maps.append(semantic)

    categories = [{"id": label.id, "name": label.name, "isthing": int(label.hasInstances)} for label in evaluated]
    groundtruth_json, groundtruth_folder = write_groundtruth(
        tmp_path / "gtFine" / "cityscapes_panoptic_val", pairs, prefixes,
        [f"{prefix}_gtFine_panoptic.png" for prefix in prefixes], categories, things)
    output = tmp_path / "results"
    predictions_json = write_predictions(
        output, pairs, [f"leftImg8bit/val/{prefix}_leftImg8bit.png" for prefix in prefixes], info, "cityscapes",
        semantic_maps)

    results = scripts.panoptic.evaluatePanoptic(
        str(groundtruth_json), str(groundtruth_folder), predictions_json,
        predictions_json.removesuffix(".json"), str(tmp_path / "panoptic_results.json"))
    report = axial_tf_report(pairs, info)
    assert_every_kind_of_outcome(report)
    assert_same_panoptic_quality(results, report, cityscapes_panoptic.LABEL_IDS)

    # Pixel level: ground-truth label-id images, the predictions found by their file names.
    iou = SemanticMeanIoU(len(evaluated), label_divisor=1, ignore_label=IGNORE)
    groundtruth_files = []
    for prefix, (groundtruth, _), semantic in zip(prefixes, pairs, semantic_maps):
        label_ids = np.array([label.id for label in evaluated] + [0] * (256 - len(evaluated)), np.uint8)
        path = tmp_path / "gtFine" / "val" / prefix.split("_")[0] / f"{prefix}_gtFine_labelIds.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(label_ids[groundtruth // DIVISOR]).save(path)
        groundtruth_files.append(str(path))
        iou.update_state(groundtruth // DIVISOR, semantic)
    args = copy.copy(scripts.pixel.args)
    args.predictionPath = str(output / result_formats.SEMANTIC_FOLDER)
    args.predictionWalk, args.evalInstLevelScore, args.JSONOutput, args.quiet = None, False, False, True
    found = [scripts.pixel.getPrediction(args, path) for path in groundtruth_files]
    pixel_results = scripts.pixel.evaluateImgLists(found, groundtruth_files, args)
    expected = iou.report()
    assert pixel_results["averageScoreClasses"] == pytest.approx(expected["miou"], abs=1e-12)
    for train_id, label in enumerate(evaluated):
        score = pixel_results["classScores"][label.name]
        assert (np.isnan(score) and expected["per_class"][train_id]["iou"] is None) or score == pytest.approx(
            expected["per_class"][train_id]["iou"], abs=1e-12), label.name


# -------------------------------------------------------------------- the tool


@pytest.mark.full
def test_predict_tool_writes_the_coco_panoptic_result_format(tmp_path):
    config = tiny_panoptic_config(tmp_path / "tfds")
    write_training_run(tmp_path / "run", config, seed=1)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    (images / "000000000042.png").write_bytes(tf.io.encode_png(rng.integers(0, 256, (33, 47, 3), np.uint8)).numpy())
    (images / "street.jpg").write_bytes(tf.io.encode_jpeg(rng.integers(0, 256, (50, 30, 3), np.uint8)).numpy())
    output = tmp_path / "out"
    result = run_command(tool_command(
        "predict", "--model_dir", tmp_path / "run", "--input", images, "--output", output,
        "--format", "coco_panoptic", "--overlay"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.relative_to(output).as_posix() for path in output.rglob("*")) == [
        "000000000042_overlay.png", "panoptic_predictions", "panoptic_predictions.json",
        "panoptic_predictions/000000000042.png", "panoptic_predictions/street.png", "street_overlay.png"]
    written = json.loads((output / "panoptic_predictions.json").read_text())
    assert written["categories"] == [
        {"id": train_id, "name": name, "isthing": int(train_id in shapes_renderer.THING_CLASS_IDS)}
        for train_id, name in enumerate(shapes_renderer.CLASS_NAMES)]
    assert [(a["image_id"], a["file_name"]) for a in written["annotations"]] == [
        (42, "000000000042.png"), ("street", "street.png")]
    for annotation, size in zip(written["annotations"], ((33, 47), (50, 30))):
        segment_ids = visualization.decode_panoptic_rgb(
            np.asarray(PIL.Image.open(output / "panoptic_predictions" / annotation["file_name"])))
        assert segment_ids.shape == size
        segments = annotation["segments_info"]
        assert set(np.unique(segment_ids)) - {0} == {segment["id"] for segment in segments}
        for segment in segments:
            rows, cols = np.nonzero(segment_ids == segment["id"])
            assert segment["area"] == rows.size and segment["iscrowd"] == 0
            assert segment["bbox"] == [cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1]


@pytest.mark.full
def test_predict_tool_refuses_result_formats_it_cannot_write(tmp_path):
    from axial_tf.models.classifier import AxialResNetClassifier

    AxialResNetClassifier("axial_resnet_s", num_classes=3, backbone_overrides={
        **TINY_BACKBONE, "output_stride": 32}).save(tmp_path / "classifier.keras")
    (tmp_path / "a.png").write_bytes(tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
    result = run_command(tool_command(
        "predict", "--keras_model", tmp_path / "classifier.keras", "--image_size", 32, "--input", tmp_path / "a.png",
        "--output", tmp_path / "out", "--format", "cityscapes"))
    assert_one_line_error(result, "--format cityscapes is a panoptic result format; this is a classification model")
    assert list((tmp_path / "out").iterdir()) == []
