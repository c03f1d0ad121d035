"""Classification data: image-folder builder (round trip, invalid and oversized
images, splits without a valid example, folders edited after preparing),
ImageNet wiring, pipelines."""

import os

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from axial_tf import data
from axial_tf.data.source_fingerprint import SourceChangedError

tfds.display_progress_bar(False)


def _write_image(path, value, size=(12, 10), image_format=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.full(size + (3,), value, np.uint8)).save(path, format=image_format)


def _write_folder(root):
    """train/{cat,dog} and val/{cat,dog}; an image's value encodes its class."""
    for split, count in (("train", 3), ("val", 2)):
        for class_index, name in enumerate(("cat", "dog")):
            for i in range(count):
                _write_image(root / split / name / f"{name}{i}.png", 40 + 100 * class_index)
    # A grayscale JPEG and a non-image file: decoded to RGB, and ignored.
    PIL.Image.fromarray(np.full((9, 11), 140, np.uint8)).save(root / "val" / "dog" / "gray.jpg")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def _builder(root, data_dir, rebuild_on_change=False, **config):
    return data.get_builder(
        "image_folder_classification",
        data_dir=str(data_dir),
        config={"name": "pets", "root": str(root), **config},
        rebuild_on_change=rebuild_on_change,
    )


def _records(builder, split):
    return {
        record["file_name"].decode(): record
        for record in tfds.as_numpy(data.read_split(builder, split))
    }


def test_image_folder_round_trip(tmp_path):
    _write_folder(tmp_path / "src")
    builder = data.prepare(_builder(tmp_path / "src", tmp_path / "tfds"))
    info = data.dataset_info_from_builder(builder)
    assert info.class_names == ("cat", "dog")
    assert info.splits == {"train": 6, "validation": 5}
    records = _records(builder, "validation")
    assert sorted(records) == [
        "cat/cat0.png",
        "cat/cat1.png",
        "dog/dog0.png",
        "dog/dog1.png",
        "dog/gray.jpg",
    ]
    for name, record in records.items():
        assert record["image"].dtype == np.uint8 and record["image"].shape[-1] == 3
        assert record["label"] == (0 if name.startswith("cat") else 1)
        if name.endswith(".png"):
            assert np.all(record["image"] == 40 + 100 * record["label"])


def test_manual_dir_root_and_reload_without_sources(tmp_path):
    _write_folder(tmp_path / "src")
    builder = data.get_builder("image_folder_classification", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="pass manual_dir"):
        data.prepare(builder)
    assert data.dataset_info_from_builder(
        builder, manual_dir=str(tmp_path / "src")
    ).class_names == (
        "cat",
        "dog",
    )
    data.prepare(builder, manual_dir=str(tmp_path / "src"))
    (tmp_path / "src").rename(tmp_path / "moved")
    reloaded = data.get_builder("image_folder_classification", data_dir=str(tmp_path / "tfds"))
    info = data.dataset_info_from_builder(reloaded)
    assert info.class_names == ("cat", "dog") and info.splits == {"train": 6, "validation": 5}
    assert len(_records(reloaded, "train")) == 6


def test_unknown_class_folder_and_corrupt_image(tmp_path):
    _write_folder(tmp_path / "src")
    _write_image(tmp_path / "src" / "val" / "bird" / "bird0.png", 7)
    broken = tmp_path / "src" / "train" / "dog" / "dog1.png"
    broken.write_bytes(broken.read_bytes()[:50])
    with pytest.raises(data.DataValidationError, match="dog1.png") as error:
        data.prepare(_builder(tmp_path / "src", tmp_path / "tfds"))
    assert "Corrupt or unreadable image" in str(error.value)
    broken.unlink()
    with pytest.raises(data.DataValidationError, match="class folder 'bird' is not one of"):
        data.prepare(_builder(tmp_path / "src", tmp_path / "tfds2"))


def test_skip_invalid_counts(tmp_path):
    _write_folder(tmp_path / "src")
    _write_image(tmp_path / "src" / "val" / "bird" / "bird0.png", 7)
    broken = tmp_path / "src" / "train" / "dog" / "dog1.png"
    broken.write_bytes(broken.read_bytes()[:50])
    builder = data.prepare(_builder(tmp_path / "src", tmp_path / "tfds", skip_invalid=True))
    report = builder.info.metadata["invalid_examples"]
    assert report["train"]["count"] == 1 and report["validation"]["count"] == 1
    assert "bird0.png" in report["validation"]["messages"][0]
    assert builder.info.splits["train"].num_examples == 5
    assert builder.info.splits["validation"].num_examples == 5


def test_oversized_image_is_an_invalid_example(tmp_path, monkeypatch):
    _write_folder(tmp_path / "src")
    _write_image(tmp_path / "src" / "train" / "cat" / "huge.png", 40, size=(40, 30))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 pixels: PIL would only warn
    with pytest.raises(data.DataValidationError, match=r"Oversized image .*cat/huge.png") as error:
        data.prepare(_builder(tmp_path / "src", tmp_path / "tfds"))
    assert "\n" not in str(error.value)
    builder = data.prepare(_builder(tmp_path / "src", tmp_path / "skip", skip_invalid=True))
    assert "cat/huge.png" not in _records(builder, "train") and len(_records(builder, "train")) == 6


def test_split_without_valid_examples_names_split_and_folder(tmp_path):
    _write_folder(tmp_path / "src")
    for image in (tmp_path / "src" / "val").glob("*/*"):
        image.write_bytes(b"not an image")
    with pytest.raises(data.DataValidationError) as error:
        data.prepare(_builder(tmp_path / "src", tmp_path / "tfds", skip_invalid=True))
    message = str(error.value)
    assert f"split 'validation' has no valid example in {tmp_path / 'src' / 'val'}" in message
    assert "all 5 were skipped as invalid, e.g." in message
    assert "Corrupt or unreadable image" in message
    assert "\n" not in message
    for image in (tmp_path / "src" / "val").glob("*/*"):
        image.unlink()
    empty = "'validation' has no valid example in .*val: it lists no examples"
    with pytest.raises(data.DataValidationError, match=empty):
        data.prepare(_builder(tmp_path / "src", tmp_path / "tfds2"))


FOLDER_EDITS = {
    "image added": (
        lambda src: _write_image(src / "train" / "dog" / "dog9.png", 140),
        "train images {src}/train has 7 files instead of 6",
    ),
    "image rewritten": (
        lambda src: _write_image(src / "val" / "cat" / "cat0.png", 40, size=(13, 10)),
        "validation images {src}/val has files with another size or modification time",
    ),
    "empty class folder added": (
        lambda src: (src / "train" / "bird").mkdir(),
        "classes {src}/train has another content",
    ),
}


@pytest.mark.parametrize("edit", sorted(FOLDER_EDITS))
def test_edited_folder_stops_with_one_line_naming_the_change(tmp_path, edit):
    _write_folder(tmp_path / "src")
    data.prepare(_builder(tmp_path / "src", tmp_path / "tfds"))
    apply_edit, expected = FOLDER_EDITS[edit]
    apply_edit(tmp_path / "src")
    with pytest.raises(SourceChangedError) as error:
        data.prepare(_builder(tmp_path / "src", tmp_path / "tfds"))
    message = str(error.value)
    assert expected.format(src=tmp_path / "src") in message
    assert "rebuild_on_change: true" in message and "\n" not in message


def test_edited_folder_is_rebuilt_on_request(tmp_path):
    _write_folder(tmp_path / "src")
    data.prepare(_builder(tmp_path / "src", tmp_path / "tfds"))
    FOLDER_EDITS["image added"][0](tmp_path / "src")
    (tmp_path / "src" / "train" / "bird").mkdir()
    builder = data.prepare(_builder(tmp_path / "src", tmp_path / "tfds", rebuild_on_change=True))
    info = data.dataset_info_from_builder(builder)
    assert info.class_names == ("bird", "cat", "dog") and info.splits["train"] == 7
    assert _records(builder, "train")["dog/dog9.png"]["label"] == 2
    assert os.listdir(os.path.dirname(builder.data_dir)) == ["1.0.0"]


def test_imagenet_needs_its_manual_dir(tmp_path):
    builder = data.get_builder("imagenet2012", data_dir=str(tmp_path / "tfds"))
    assert data.dataset_info_from_builder(builder).num_classes == 1000
    with pytest.raises(FileNotFoundError, match="needs a manual_dir"):
        data.prepare(builder)
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"\['ILSVRC2012_img_train.tar'\] not found"):
        data.prepare(builder, manual_dir=str(tmp_path / "manual"))


@pytest.fixture(scope="module")
def pets_builder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    _write_folder(root / "src")
    return data.prepare(_builder(root / "src", root / "tfds"))


def _first_batches(dataset, count):
    return [{key: value.numpy() for key, value in batch.items()} for batch in dataset.take(count)]


def test_train_pipeline_shapes_and_determinism(pets_builder):
    def make(seed):
        return data.build_classification_train_dataset(
            data.read_split(pets_builder, "train"), image_size=8, batch_size=4, seed=seed
        )

    assert make(0).element_spec == {
        "image": tf.TensorSpec([4, 8, 8, 3], tf.float32),
        "label": tf.TensorSpec([4], tf.int32),
    }
    first, again, other = (
        _first_batches(make(0), 3),
        _first_batches(make(0), 3),
        _first_batches(make(1), 3),
    )
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert any(not np.array_equal(a["label"], b["label"]) for a, b in zip(first, other))
    for batch in first:
        # Constant images: any crop and flip keeps each pixel at its class value.
        np.testing.assert_allclose(
            batch["image"][..., 0].mean(axis=(1, 2)), 40 + 100 * batch["label"], atol=1e-3
        )


def test_eval_pipeline_center_crop(pets_builder):
    dataset = data.build_classification_eval_dataset(
        data.read_split(pets_builder, "validation"), image_size=6, batch_size=2
    )
    assert dataset.element_spec["image"] == tf.TensorSpec([None, 6, 6, 3], tf.float32)
    assert sum(int(batch["label"].shape[0]) for batch in dataset) == 5
    image = np.arange(8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    # crop_fraction 0.75 of an 8x8 image is its central 6x6: resizing to 6 is the identity.
    crop = data.classification_eval_image(image, image_size=6, crop_fraction=0.75).numpy()
    np.testing.assert_array_equal(crop, image[1:7, 1:7])
