"""panoptic_shapes: offline build, determinism, record layout and content."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from axial_tf import data
from axial_tf.data import shapes_renderer

tfds.display_progress_bar(False)


def _build(data_dir, **overrides):
    builder = data.get_builder(
        "panoptic_shapes", data_dir=str(data_dir), config="tiny", **overrides
    )
    return data.prepare(builder)


def _record_files(builder):
    return sorted(path for path in builder.data_path.iterdir() if ".tfrecord" in path.name)


def _numpy_records(builder, split):
    return list(tfds.as_numpy(data.read_split(builder, split)))


@pytest.fixture(scope="module")
def tiny_builder(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("tfds"))


def test_tiny_builds_offline_with_both_splits(tiny_builder):
    assert tiny_builder.info.splits["train"].num_examples == 24
    assert tiny_builder.info.splits["validation"].num_examples == 8


def test_builder_made_before_another_process_prepared_the_records_reads_them(tmp_path):
    early = data.get_builder("panoptic_shapes", data_dir=str(tmp_path), config="tiny")
    _build(tmp_path)  # stands for another process (e.g. a second worker) preparing first
    assert len(_numpy_records(data.prepare(early), "validation")) == 8


def test_losing_a_concurrent_preparation_uses_the_winner_records(tmp_path):
    loser = data.get_builder("panoptic_shapes", data_dir=str(tmp_path), config="tiny")

    def prepared_meanwhile(**_):
        # While this builder generated, another process moved its finished folder into place.
        _build(tmp_path)
        raise FileExistsError(f"Cannot rename ...: destination {loser.data_dir} already exists.")

    loser.download_and_prepare = prepared_meanwhile
    assert len(_numpy_records(data.prepare(loser), "train")) == 24


def test_record_shapes_and_dtypes(tiny_builder):
    spec = data.read_split(tiny_builder, "train").element_spec
    assert spec["image"] == tf.TensorSpec([None, None, 3], tf.uint8)
    assert spec["panoptic_label"] == tf.TensorSpec([None, None], tf.int32)
    assert spec["file_name"] == tf.TensorSpec([], tf.string)
    for record in _numpy_records(tiny_builder, "validation"):
        assert record["image"].shape == (64, 64, 3)
        assert record["panoptic_label"].shape == (64, 64)


def test_same_seed_gives_identical_bytes(tiny_builder, tmp_path):
    rebuilt = _build(tmp_path)
    original_files = _record_files(tiny_builder)
    rebuilt_files = _record_files(rebuilt)
    assert [path.name for path in original_files] == [path.name for path in rebuilt_files]
    for original, again in zip(original_files, rebuilt_files):
        assert original.read_bytes() == again.read_bytes()


def test_different_seed_gives_different_data(tiny_builder, tmp_path):
    other = _build(tmp_path, seed=1)
    assert other.builder_config.name == "tiny_seed1"
    first = _numpy_records(tiny_builder, "train")
    second = _numpy_records(other, "train")
    by_name = {record["file_name"]: record for record in second}
    for record in first:
        assert not np.array_equal(record["image"], by_name[record["file_name"]]["image"])


def test_splits_do_not_share_scenes(tiny_builder):
    train_images = [record["image"].tobytes() for record in _numpy_records(tiny_builder, "train")]
    validation_images = [
        record["image"].tobytes() for record in _numpy_records(tiny_builder, "validation")
    ]
    assert not set(train_images) & set(validation_images)


def test_labels_use_the_dataset_label_space(tiny_builder):
    info = data.dataset_info_from_builder(tiny_builder)
    assert info == data.get_dataset_info("panoptic_shapes", config="tiny")
    assert info.class_names == ("sky", "ground", "water", "disc", "box", "triangle", "ring")
    assert info.thing_class_ids == (3, 4, 5, 6)
    records = _numpy_records(tiny_builder, "train")
    all_values = np.concatenate([record["panoptic_label"].ravel() for record in records])
    semantic = all_values // info.label_divisor
    instance = all_values % info.label_divisor
    assert set(np.unique(semantic)) <= set(range(info.num_classes)) | {info.ignore_label}
    is_stuff = np.isin(semantic, info.stuff_class_ids)
    assert np.all(instance[is_stuff] == 0)
    # The tiny config makes crowd and void frequent enough to appear in 24 scenes.
    is_thing = np.isin(semantic, info.thing_class_ids)
    assert np.any(is_thing & (instance == 0)), "no crowd region"
    assert np.any(semantic == info.ignore_label), "no void region"
    # Every thing class and every stuff class occurs.
    assert set(np.unique(semantic)) >= set(range(info.num_classes))


def test_get_dataset_info_knows_the_registry():
    info = data.get_dataset_info("panoptic_shapes")
    assert (info.num_classes, info.label_divisor, info.ignore_label) == (7, 1000, 255)
    cityscapes = data.get_dataset_info("cityscapes_panoptic")
    assert cityscapes.num_classes == 19 and cityscapes.thing_class_ids == tuple(range(11, 19))
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        data.get_dataset_info("nope")
    with pytest.raises(ValueError, match="Unknown config 'huge'"):
        data.get_builder("panoptic_shapes", config="huge")
    with pytest.raises(ValueError, match=r"Unknown config field\(s\) \['colour'\]"):
        data.get_builder("panoptic_shapes", config="tiny", colour=3)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.sweep
def test_rendered_instances_stay_recognisable(seed):
    options = shapes_renderer.SceneOptions(
        height=64, width=80, crowd_probability=0.5, void_probability=0.5
    )
    image, panoptic = shapes_renderer.render_scene(np.random.default_rng(seed), options)
    assert image.dtype == np.uint8 and image.shape == (64, 80, 3)
    assert panoptic.dtype == np.int32 and panoptic.shape == (64, 80)
    semantic, instance = panoptic // 1000, panoptic % 1000
    thing_instances = np.unique(
        panoptic[np.isin(semantic, shapes_renderer.THING_CLASS_IDS) & (instance > 0)]
    )
    assert len(thing_instances) >= 1
    for value in thing_instances:
        assert (panoptic == value).sum() >= options.min_instance_area


def test_renderer_is_a_function_of_the_seed():
    options = shapes_renderer.SceneOptions()
    first = shapes_renderer.render_scene(np.random.default_rng([4, 0, 2]), options)
    again = shapes_renderer.render_scene(np.random.default_rng([4, 0, 2]), options)
    other = shapes_renderer.render_scene(np.random.default_rng([4, 0, 3]), options)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_label_encoding_follows_the_config(tmp_path):
    builder = _build(tmp_path, label_divisor=256, ignore_label=200)
    info = data.dataset_info_from_builder(builder)
    assert (info.label_divisor, info.ignore_label) == (256, 200)
    labels = np.stack([record["panoptic_label"] for record in _numpy_records(builder, "train")])
    assert set(np.unique(labels // 256)) == set(range(info.num_classes)) | {200}
