"""Cityscapes builder: both createPanopticImgs layouts (label ids and
`--use-train-id`), JSONs without `categories`/`images` (DeepLab2's sample),
and the errors for a missing layout or foreign categories."""

import json

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from axial_tf import data
from axial_tf.data.cityscapes_panoptic import LABEL_IDS

tfds.display_progress_bar(False)

CLASS_NAMES = data.get_dataset_info("cityscapes_panoptic").class_names
SPLIT_CITIES = {"train": "aachen", "val": "frankfurt"}
ROAD, SKY, PERSON, CAR = 0, 10, 11, 13  # train ids

# (segment id in the PNG, train id, iscrowd). As cityscapesscripts writes them,
# segment ids come from the label-id instance maps in both layouts: instances
# are `label_id * 1000 + n`, crowds and stuff are the bare label id.
SEGMENTS = (
    (7, ROAD, 0),
    (23, SKY, 0),
    (26002, CAR, 0),  # listed first: instance 1 of car
    (26001, CAR, 0),
    (24, PERSON, 1),
)


def _scene(flip):
    """Segment ids [16, 32] of a tiny street, and its expected panoptic label."""
    segment_ids = np.full((16, 32), 7, np.int64)
    segment_ids[:5] = 23
    segment_ids[6:12, 2:9] = 26001
    segment_ids[6:12, 12:18] = 26002
    segment_ids[6:12, 20:30] = 24
    segment_ids[14:, :4] = 0  # unlabeled: void
    expected = np.select(
        [segment_ids == value for value in (7, 23, 26002, 26001, 24, 0)],
        [ROAD * 1000, SKY * 1000, CAR * 1000 + 1, CAR * 1000 + 2, PERSON * 1000, 255000],
    ).astype(np.int32)
    if flip:
        return segment_ids[:, ::-1], expected[:, ::-1]
    return segment_ids, expected


def _write_png_ids(path, segment_ids):
    rgb = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], axis=-1)
    PIL.Image.fromarray(rgb.astype(np.uint8)).save(path)


def _categories(use_train_id):
    return [
        {
            "id": train_id if use_train_id else LABEL_IDS[train_id],
            "name": name,
            "isthing": int(train_id >= PERSON),
        }
        for train_id, name in enumerate(CLASS_NAMES)
    ]


def _write_split(root, split_folder, use_train_id, with_categories=True, with_images=True):
    """Writes one split as `createPanopticImgs` does; returns {image file: label}."""
    suffix = "_trainId" if use_train_id else ""
    base_name = f"cityscapes_panoptic_{split_folder}{suffix}"
    labels_dir = root / "gtFine" / base_name
    labels_dir.mkdir(parents=True, exist_ok=True)
    city = SPLIT_CITIES[split_folder]
    images_dir = root / "leftImg8bit" / split_folder / city
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, expected_labels = [], [], {}
    for index, flip in enumerate((False, True)):
        prefix = f"{city}_000000_{index:06d}"
        segment_ids, expected = _scene(flip)
        PIL.Image.fromarray(np.full((16, 32, 3), 40 * index, np.uint8)).save(
            images_dir / f"{prefix}_leftImg8bit.png"
        )
        _write_png_ids(labels_dir / f"{prefix}_gtFine_panoptic.png", segment_ids)
        # cityscapesscripts' quirk: the listed image name keeps "_gtFine".
        images.append({"id": prefix, "file_name": f"{prefix}_gtFine_leftImg8bit.png"})
        segments_info = [
            {
                "id": segment_id,
                "category_id": train_id if use_train_id else LABEL_IDS[train_id],
                "iscrowd": iscrowd,
            }
            for segment_id, train_id, iscrowd in SEGMENTS
        ]
        annotations.append(
            {
                "image_id": prefix,
                "file_name": f"{prefix}_gtFine_panoptic.png",
                "segments_info": segments_info,
            }
        )
        expected_labels[f"{prefix}_leftImg8bit.png"] = expected
    content = {"annotations": annotations}
    if with_categories:
        content["categories"] = _categories(use_train_id)
    if with_images:
        content["images"] = images
    (root / "gtFine" / f"{base_name}.json").write_text(json.dumps(content))
    return expected_labels


def _prepare(tmp_path, root):
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    data.prepare(builder, manual_dir=str(root))
    return builder


def _assert_records(builder, split, expected_labels):
    records = {
        record["file_name"].decode(): record["panoptic_label"]
        for record in tfds.as_numpy(data.read_split(builder, split))
    }
    assert sorted(records) == sorted(expected_labels)
    for file_name, expected in expected_labels.items():
        np.testing.assert_array_equal(records[file_name], expected, err_msg=file_name)


@pytest.mark.parametrize("use_train_id", [False, True], ids=["label_ids", "train_ids"])
@pytest.mark.parametrize("with_categories", [True, False], ids=["categories", "no_categories"])
@pytest.mark.sweep
def test_both_layouts_give_the_same_labels(tmp_path, use_train_id, with_categories):
    root = tmp_path / "cityscapes"
    expected = {
        split: _write_split(root, folder, use_train_id, with_categories)
        for split, folder in (("train", "train"), ("validation", "val"))
    }
    builder = _prepare(tmp_path, root)
    for split, expected_labels in expected.items():
        _assert_records(builder, split, expected_labels)
    info = data.dataset_info_from_builder(builder)
    assert info.class_names == CLASS_NAMES and info.thing_class_ids == tuple(range(11, 19))
    assert info.splits == {"train": 2, "validation": 2}


def test_deeplab2_sample_style_json_without_categories_or_images(tmp_path):
    # Train split with train ids (DeepLab2's sample: annotations only), val with label ids.
    root = tmp_path / "cityscapes"
    train = _write_split(root, "train", True, with_categories=False, with_images=False)
    validation = _write_split(root, "val", False, with_categories=False, with_images=False)
    builder = _prepare(tmp_path, root)
    _assert_records(builder, "train", train)
    _assert_records(builder, "validation", validation)


def test_missing_layout_names_every_file_looked_for(tmp_path):
    root = tmp_path / "cityscapes"
    _write_split(root, "train", True)
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError) as error:
        data.prepare(builder, manual_dir=str(root))
    message = str(error.value)
    assert "split(s) ['val']" in message and str(root / "gtFine") in message
    assert "cityscapes_panoptic_val.json, cityscapes_panoptic_val_trainId.json" in message
    assert "cityscapes_panoptic_train" not in message


def test_missing_png_folder_is_named(tmp_path):
    root = tmp_path / "cityscapes"
    for folder in ("train", "val"):
        _write_split(root, folder, True)
    for png in (root / "gtFine" / "cityscapes_panoptic_val_trainId").iterdir():
        png.unlink()
    (root / "gtFine" / "cityscapes_panoptic_val_trainId").rmdir()
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="cityscapes_panoptic_val_trainId'"):
        data.prepare(builder, manual_dir=str(root))


def test_foreign_categories_are_rejected_naming_the_json(tmp_path):
    root = tmp_path / "cityscapes"
    for folder in ("train", "val"):
        _write_split(root, folder, True)
    json_path = root / "gtFine" / "cityscapes_panoptic_val_trainId.json"
    content = json.loads(json_path.read_text())
    content["categories"][0]["name"] = "highway"
    json_path.write_text(json.dumps(content))
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(data.DataValidationError, match=r"_val_trainId\.json: its categories"):
        data.prepare(builder, manual_dir=str(root))


def test_json_without_annotations_is_named(tmp_path):
    root = tmp_path / "cityscapes"
    for folder in ("train", "val"):
        _write_split(root, folder, False)
    json_path = root / "gtFine" / "cityscapes_panoptic_train.json"
    json_path.write_text(json.dumps({"images": []}))
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(data.DataValidationError, match=r"_train\.json is not a panoptic JSON"):
        data.prepare(builder, manual_dir=str(root))


def test_edited_manual_dir_is_noticed_only_when_given(tmp_path):
    root = tmp_path / "cityscapes"
    expected = {folder: _write_split(root, folder, True) for folder in ("train", "val")}
    _prepare(tmp_path, root)
    json_path = root / "gtFine" / "cityscapes_panoptic_val_trainId.json"
    content = json.loads(json_path.read_text())
    del content["annotations"][1]
    json_path.write_text(json.dumps(content))
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    assert data.prepare(builder) is builder  # no manual_dir: the prepared records are all there is
    with pytest.raises(ValueError) as error:
        data.prepare(builder, manual_dir=str(root))
    assert f"validation annotations {json_path} has another content" in str(error.value)
    assert "\n" not in str(error.value)
    rebuilt = data.prepare(
        data.get_builder(
            "cityscapes_panoptic", data_dir=str(tmp_path / "tfds"), rebuild_on_change=True
        ),
        manual_dir=str(root),
    )
    first_val_image = sorted(expected["val"])[0]
    _assert_records(rebuilt, "validation", {first_val_image: expected["val"][first_val_image]})
    _assert_records(rebuilt, "train", expected["train"])


def test_annotation_without_image_id_is_named(tmp_path):
    root = tmp_path / "cityscapes"
    for folder in ("train", "val"):
        _write_split(root, folder, True, with_images=False)
    json_path = root / "gtFine" / "cityscapes_panoptic_val_trainId.json"
    content = json.loads(json_path.read_text())
    del content["annotations"][1]["image_id"]
    json_path.write_text(json.dumps(content))
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(
        data.DataValidationError,
        match=r"_val_trainId\.json: annotations\[1\] \(frankfurt_\w+\.png\) has no 'image_id'",
    ):
        data.prepare(builder, manual_dir=str(root))
