"""Builders for datasets in COCO panoptic format.

COCO panoptic format: a JSON file per split with `categories` (id, name,
isthing), `images` (id, file_name) and `annotations` (image_id, file_name of a
panoptic PNG, segments_info with id, category_id, iscrowd), plus a folder of
PNGs whose pixels encode a segment id as `R + 256 * G + 256**2 * B` (0 = void).

Conversion to the project's record layout (`records.py`):
- categories sorted by COCO id become contiguous train ids 0..N-1;
- a thing segment gets the next instance id of its class in the image (1, 2,
  ...), a crowd thing segment (`iscrowd = 1`) instance id 0, a stuff segment
  instance id 0 (the crowd convention of `axial_tf.targets`);
- PNG id 0 is void (`ignore_label * label_divisor`);
- a record's `file_name` is the image's path relative to the images folder,
  as the JSON gives it, so images of the same name in different sub-folders
  (`a/1.jpg`, `b/1.jpg`) are different records; two entries that resolve to
  the same image are an error naming both.

An entry without a key the conversion needs (an annotation's `file_name`, a
segment's `category_id`, ...) is an invalid example named by file, index and
key; a category without `id` or `name`, or an `images` entry without a unique
`id`, fails the preparation (even with `skip_invalid`).

`CocoPanopticFolder` reads any such folder (labelme/CVAT/cityscapesscripts
exports) from paths in its config; `Coco2017Panoptic` and `CityscapesPanoptic`
read the official layouts from a manual download directory. Each stores a
fingerprint of its sources (`source_fingerprint.py`) so that `prepare` notices
sources edited after preparing.
"""

import dataclasses
import json
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from axial_tf.data import records
from axial_tf.data import source_fingerprint
from axial_tf.data import validation
from axial_tf.data.dataset_info import (
    DEFAULT_IGNORE_LABEL,
    DEFAULT_LABEL_DIVISOR,
    PanopticDatasetInfo,
)


@dataclasses.dataclass(frozen=True)
class CocoPanopticSplit:
    """Where one split of a COCO-panoptic dataset lives.

    Attributes:
        annotations_json: The split's panoptic JSON file.
        panoptic_dir: Folder of the panoptic PNGs named in the JSON.
        images_dir: Folder of the images named in the JSON.
    """

    annotations_json: str
    panoptic_dir: str
    images_dir: str

    @classmethod
    def from_value(cls, value):
        """Accepts a `CocoPanopticSplit` or a dict of its fields (from YAML)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict) or set(value) != {
            "annotations_json",
            "panoptic_dir",
            "images_dir",
        }:
            raise ValueError(
                "A COCO panoptic split needs exactly the keys annotations_json, "
                f"panoptic_dir and images_dir; got {value!r}."
            )
        return cls(**{key: str(path) for key, path in value.items()})


def coco_layout_splits(root, split_folders):
    """Split specs for the COCO 2017 folder layout.

    Layout: `root/annotations/panoptic_{folder}.json`,
    `root/annotations/panoptic_{folder}/*.png` and `root/{folder}/*.jpg`.

    Args:
        root: Dataset root folder.
        split_folders: Dict split name -> folder name (e.g. {"train": "train2017"}).

    Returns:
        Dict split name -> `CocoPanopticSplit`.
    """
    root = pathlib.Path(root)
    return {
        split: CocoPanopticSplit(
            annotations_json=str(root / "annotations" / f"panoptic_{folder}.json"),
            panoptic_dir=str(root / "annotations" / f"panoptic_{folder}"),
            images_dir=str(root / folder),
        )
        for split, folder in split_folders.items()
    }


@dataclasses.dataclass
class CocoPanopticFolderConfig(tfds.core.BuilderConfig):
    """A COCO-panoptic dataset on disk.

    Give `splits` (explicit paths per split), or `root` (COCO 2017 layout,
    see `coco_layout_splits`, with `root_split_folders`), or neither: then the
    manual dir passed to `prepare` is the root.

    Attributes:
        splits: Dict split name -> `CocoPanopticSplit` (or a dict of its fields).
        root: Root folder in COCO layout, used when `splits` is empty.
        root_split_folders: Split name -> folder name under the root.
        label_divisor: Panoptic label divisor of the records.
        ignore_label: Semantic class of void pixels.
        skip_invalid: Skip and count invalid examples instead of failing.

    Example:
        >>> config = CocoPanopticFolderConfig(name="my_data", root="/data/my_data")
        >>> builder = CocoPanopticFolder(config=config, data_dir="/tmp/tfds")
    """

    splits: dict = dataclasses.field(default_factory=dict)
    root: str = ""
    root_split_folders: dict = dataclasses.field(
        default_factory=lambda: {"train": "train", "validation": "val"}
    )
    label_divisor: int = DEFAULT_LABEL_DIVISOR
    ignore_label: int = DEFAULT_IGNORE_LABEL
    skip_invalid: bool = False

    def uses_manual_dir(self):
        """Whether the sources are the manual dir (neither `splits` nor `root`)."""
        return not self.splits and not self.root

    def split_specs(self, manual_dir=None):
        """Dict split name -> `CocoPanopticSplit` (explicit, from `root` or the manual dir)."""
        if self.splits:
            return {
                split: CocoPanopticSplit.from_value(spec) for split, spec in self.splits.items()
            }
        root = self.root or manual_dir
        if root:
            return coco_layout_splits(root, self.root_split_folders)
        raise ValueError(
            f"CocoPanopticFolderConfig {self.name!r} needs `splits` (paths per split), "
            "`root` (a folder in COCO layout) or a manual_dir in COCO layout."
        )


def read_coco_panoptic_json(path):
    """Loads a COCO panoptic JSON file and checks its top-level keys.

    Raises:
        DataValidationError: If the file is missing, not JSON, or lacks keys.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise validation.DataValidationError(f"Missing annotations file {path}.")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise validation.DataValidationError(f"Unreadable JSON {path}: {error}") from error
    if not isinstance(content, dict):
        raise validation.DataValidationError(f"{path} is not a COCO panoptic file: not an object.")
    missing = {"categories", "annotations"} - set(content)
    if missing:
        raise validation.DataValidationError(
            f"{path} is not a COCO panoptic file: missing key(s) {sorted(missing)}."
        )
    check_entry_lists(content, path)
    return content


def check_entry_lists(content, path):
    """Checks that the JSON's `categories`, `annotations` and `images` are lists.

    Args:
        content: The loaded JSON object.
        path: Its file, for the message.

    Raises:
        DataValidationError: Naming the file and the key that is not a list.
    """
    for key in ("categories", "annotations", "images"):
        if key in content and not isinstance(content[key], list):
            raise validation.DataValidationError(
                f"{path}: {key!r} is a {type(content[key]).__name__}, not a list."
            )


def required_field(entry, key, where):
    """`entry[key]` of a JSON entry, or an error naming the entry and the key.

    Args:
        entry: A JSON entry (should be a dict).
        key: The key the builder needs.
        where: The entry's place for the message, e.g. "a.json: annotations[3]".

    Raises:
        DataValidationError: If the entry is not an object or lacks the key.
    """
    if not isinstance(entry, dict):
        raise validation.DataValidationError(
            f"{where} is a {type(entry).__name__}, not an object with {key!r}."
        )
    if key not in entry:
        raise validation.DataValidationError(f"{where} has no {key!r}.")
    return entry[key]


def integer_field(entry, key, where):
    """`entry[key]` as an int (see `required_field`); a non-integer is an error."""
    value = required_field(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise validation.DataValidationError(
            f"{where} has {key} {value!r}, not a non-negative integer."
        )
    return int(value)


def file_name_field(entry, where):
    """`entry["file_name"]`, a non-empty string (see `required_field`)."""
    value = required_field(entry, "file_name", where)
    if not isinstance(value, str) or not value:
        raise validation.DataValidationError(f"{where} has file_name {value!r}, not a path.")
    return value


def label_space_from_categories(categories, name, label_divisor, ignore_label, source=None):
    """Maps COCO categories to contiguous train ids.

    Args:
        categories: The JSON `categories` list (dicts with id, name, isthing).
        name: Dataset name for the descriptor and messages.
        label_divisor: Panoptic label divisor.
        ignore_label: Void class.
        source: The JSON file the categories come from, for messages (the
            dataset name when None).

    Returns:
        A tuple `(info, category_to_train_id)`: the `PanopticDatasetInfo` and a
        dict COCO category id -> train id.

    Raises:
        DataValidationError: If a category lacks `id` or `name`, or two share
            an id.
    """
    source = source or name
    ids_and_categories = []
    for index, category in enumerate(categories):
        where = f"{source}: categories[{index}]"
        required_field(category, "name", where)
        ids_and_categories.append((integer_field(category, "id", where), category))
    ids_and_categories.sort(key=lambda id_and_category: id_and_category[0])
    ids = [category_id for category_id, _ in ids_and_categories]
    ordered = [category for _, category in ids_and_categories]
    if len(set(ids)) != len(ids):
        raise validation.DataValidationError(f"{source}: duplicate category ids in {ids}.")
    category_to_train_id = {category_id: train_id for train_id, category_id in enumerate(ids)}
    info = PanopticDatasetInfo(
        name=name,
        class_names=[category["name"] for category in ordered],
        thing_class_ids=[
            train_id for train_id, category in enumerate(ordered) if category.get("isthing")
        ],
        label_divisor=label_divisor,
        ignore_label=ignore_label,
        category_ids=ids,
    )
    return info, category_to_train_id


def segments_to_panoptic_label(segment_ids, segments_info, category_to_train_id, info, source):
    """Converts a COCO segment-id map to a panoptic label map.

    Args:
        segment_ids: int32 [H, W] from the panoptic PNG (0 = void).
        segments_info: The annotation's segments (id, category_id, iscrowd).
        category_to_train_id: COCO category id -> train id.
        info: The dataset's `PanopticDatasetInfo`.
        source: File name for error messages.

    Returns:
        int32 [H, W], `train_id * label_divisor + instance` (void for id 0).

    Raises:
        DataValidationError: On an unknown category, a PNG id without a segment,
            or more instances of a class than the label divisor allows.
    """
    things = set(info.thing_class_ids)
    next_instance = {}
    value_of_segment = {0: info.void_label}
    for segment in segments_info:
        category_id = int(segment["category_id"])
        if category_id not in category_to_train_id:
            raise validation.DataValidationError(
                f"{source}: segment {segment['id']} has category_id {category_id}, "
                f"which is not one of the categories of {info.name}."
            )
        train_id = category_to_train_id[category_id]
        instance = 0
        if train_id in things and not segment.get("iscrowd", 0):
            instance = next_instance.get(train_id, 1)
            next_instance[train_id] = instance + 1
            if instance >= info.label_divisor:
                raise validation.DataValidationError(
                    f"{source}: more than {info.label_divisor - 1} instances of class "
                    f"{info.class_names[train_id]!r}; raise label_divisor."
                )
        value_of_segment[int(segment["id"])] = train_id * info.label_divisor + instance

    unique_ids, inverse = np.unique(segment_ids, return_inverse=True)
    unknown = [int(i) for i in unique_ids if int(i) not in value_of_segment]
    if unknown:
        raise validation.DataValidationError(
            f"{source}: segment ids {unknown[:5]} appear in the PNG but not in the "
            "JSON segments_info."
        )
    values = np.array([value_of_segment[int(i)] for i in unique_ids], np.int32)
    return values[inverse.reshape(segment_ids.shape)]


_FOLDER_INSTRUCTIONS = """\
Put the dataset in COCO panoptic layout (or give explicit paths in the config):
  annotations/panoptic_{train,val}.json, annotations/panoptic_{train,val}/*.png,
  {train,val}/<images named in the JSON>.
"""


class CocoPanopticFolder(
    source_fingerprint.SourceTrackingBuilder, tfds.core.GeneratorBasedBuilder
):
    """Any dataset in COCO panoptic format, configured by paths.

    The predefined config "default" reads the manual dir in COCO layout; name
    your own config (or pass `root`) to keep several datasets in one data_dir.

    Example:
        >>> config = CocoPanopticFolderConfig(
        ...     name="my_data",
        ...     splits={"train": {"annotations_json": "/d/train.json",
        ...                       "panoptic_dir": "/d/panoptic_train",
        ...                       "images_dir": "/d/images"}})
        >>> builder = CocoPanopticFolder(config=config, data_dir="/tmp/tfds")
        >>> builder.download_and_prepare()
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "The dataset info keeps the category ids (for the official result formats).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _FOLDER_INSTRUCTIONS
    BUILDER_CONFIGS = [
        CocoPanopticFolderConfig(name="default", description="The manual dir, in COCO layout.")
    ]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="A panoptic dataset read from COCO panoptic format.",
            features=records.panoptic_features(),
            metadata=tfds.core.MetadataDict(),
        )

    def dataset_info(self, manual_dir=None):
        """The dataset's `PanopticDatasetInfo`.

        Read from the prepared dataset's metadata when it exists, otherwise
        from the categories of the smallest source JSON.

        Args:
            manual_dir: The manual download directory, for builders that read
                their sources from one and have not been prepared yet.

        Returns:
            A `PanopticDatasetInfo`.
        """
        stored = self.info.metadata.get(records.METADATA_KEY)
        if stored:
            return PanopticDatasetInfo.from_json(stored)
        specs = self._source_splits(manual_dir)
        smallest = min(
            specs.values(),
            key=lambda spec: (
                os.path.getsize(spec.annotations_json)
                if os.path.isfile(spec.annotations_json)
                else 0
            ),
        )
        content = read_coco_panoptic_json(smallest.annotations_json)
        info, _ = self._label_space(content["categories"], smallest.annotations_json)
        return info

    def uses_manual_dir(self):
        """Whether `prepare` needs a manual_dir for this builder and config."""
        return self.builder_config.uses_manual_dir()

    def fingerprint_sources(self, manual_dir=None):
        """A fingerprint of the sources as they are now (`source_fingerprint.py`).

        Args:
            manual_dir: The manual download directory, for builders that read
                their sources from one.

        Returns:
            The fingerprint, or None when the sources cannot be located (no
            manual_dir, or a manual dir without the expected files).
        """
        try:
            specs = self._source_splits(manual_dir if self.uses_manual_dir() else None)
        except (FileNotFoundError, ValueError):
            return None
        return _fingerprint_of_splits(specs)

    def _source_splits(self, manual_dir):
        """Dict split name -> `CocoPanopticSplit` of the source files."""
        return self.builder_config.split_specs(manual_dir)

    def _splits_to_prepare(self, dl_manager):
        """The split specs to generate; stores their fingerprint in the metadata.

        The fingerprint is taken before any source is read, so an edit made
        while the dataset is being prepared shows as a change later.
        """
        specs = self._source_splits(dl_manager.manual_dir if self.uses_manual_dir() else None)
        self.info.metadata[records.SOURCE_FINGERPRINT_KEY] = _fingerprint_of_splits(specs)
        return specs

    def _label_space(self, categories, source):
        """(info, category id -> train id) for categories read from `source`."""
        config = self.builder_config
        return label_space_from_categories(
            categories,
            name=f"{self.name}/{config.name}",
            label_divisor=config.label_divisor,
            ignore_label=config.ignore_label,
            source=source,
        )

    def _image_path(self, spec, image_entry):
        """Path of an image listed in the JSON `images` section."""
        return pathlib.Path(spec.images_dir) / image_entry["file_name"]

    def _record_name(self, spec, image_path):
        """A record's `file_name`: the image's path relative to the images folder."""
        return pathlib.PurePath(os.path.relpath(image_path, spec.images_dir)).as_posix()

    def _split_generators(self, dl_manager):
        specs = self._splits_to_prepare(dl_manager)
        contents = {
            split: read_coco_panoptic_json(spec.annotations_json) for split, spec in specs.items()
        }
        # Every split must share one label space; the first split defines it.
        reference_split = next(iter(contents))
        info, category_to_train_id = self._label_space(
            contents[reference_split]["categories"], specs[reference_split].annotations_json
        )
        for split, content in contents.items():
            split_info, _ = self._label_space(content["categories"], specs[split].annotations_json)
            if split_info.class_names != info.class_names:
                raise validation.DataValidationError(
                    f"{specs[split].annotations_json}: its categories differ from those "
                    f"of split {reference_split!r} ({specs[reference_split].annotations_json})."
                )
        info = dataclasses.replace(
            info, splits={split: len(content["annotations"]) for split, content in contents.items()}
        )
        self.info.metadata[records.METADATA_KEY] = info.to_json()
        return {
            split: self._generate_examples(split, specs[split], content, info, category_to_train_id)
            for split, content in contents.items()
        }

    def _generate_examples(self, split, spec, content, info, category_to_train_id):
        """Yields `(key, record)` for every annotation of a split."""
        images_by_id = _images_by_id(content.get("images", []), spec.annotations_json)
        log = validation.InvalidExampleLog(
            info.name,
            split,
            f"{spec.annotations_json} (images in {spec.images_dir})",
            self.builder_config.skip_invalid,
        )
        entry_of_record = {}  # record name -> the annotation entry that gave it
        for index, annotation in enumerate(content["annotations"]):
            where = f"{spec.annotations_json}: annotations[{index}]"
            try:
                annotated = self._annotated_image(spec, annotation, where, images_by_id)
                name = self._record_name(spec, annotated.image_path)
                _claim_record_name(entry_of_record, name, annotated)
                record = _read_record(annotated, name, info, category_to_train_id)
            except validation.DataValidationError as error:
                log.record(error)
                continue
            log.accept()
            yield name, record
        log.finish(self.info.metadata)

    def _annotated_image(self, spec, annotation, where, images_by_id):
        """The checked paths and segments of one JSON annotation.

        Args:
            spec: The split's `CocoPanopticSplit`.
            annotation: The JSON annotation entry.
            where: The entry's place, e.g. "a.json: annotations[3]".
            images_by_id: From `_images_by_id`.

        Returns:
            An `_AnnotatedImage`.

        Raises:
            DataValidationError: Naming the entry and the missing or invalid key.
        """
        label_file = file_name_field(annotation, where)
        where = f"{where} ({label_file})"
        image_id = required_field(annotation, "image_id", where)
        if not isinstance(image_id, (int, str)) or image_id not in images_by_id:
            raise validation.DataValidationError(
                f"{where} refers to image_id {image_id!r}, which is not in `images`."
            )
        image_index, image_entry = images_by_id[image_id]
        file_name_field(image_entry, f"{spec.annotations_json}: images[{image_index}]")
        return _AnnotatedImage(
            where=where,
            label_path=pathlib.Path(spec.panoptic_dir) / label_file,
            image_path=self._image_path(spec, image_entry),
            segments=_checked_segments(annotation, where),
        )


@dataclasses.dataclass(frozen=True)
class _AnnotatedImage:
    """One JSON annotation, checked: where it is, its files and its segments."""

    where: str
    label_path: pathlib.Path
    image_path: pathlib.Path
    segments: list


def _checked_segments(annotation, where):
    """An annotation's `segments_info`, each with an integer id and category_id.

    Args:
        annotation: The JSON annotation entry (a dict).
        where: The entry's place for messages.

    Returns:
        A list of dicts with `id`, `category_id` and `iscrowd` (0 or 1).

    Raises:
        DataValidationError: Naming the segment and the missing or invalid key.
    """
    segments = annotation.get("segments_info", [])
    if not isinstance(segments, list):
        raise validation.DataValidationError(f"{where}: segments_info is not a list.")
    checked = []
    for index, segment in enumerate(segments):
        segment_where = f"{where} segments_info[{index}]"
        checked.append(
            {
                "id": integer_field(segment, "id", segment_where),
                "category_id": integer_field(segment, "category_id", segment_where),
                "iscrowd": int(bool(segment.get("iscrowd", 0))),
            }
        )
    return checked


def _images_by_id(images, annotations_json):
    """Dict image id -> (index in `images`, entry) of a JSON's `images` list.

    Raises:
        DataValidationError: If an entry has no usable `id`, or two share one.
    """
    images_by_id = {}
    for index, image in enumerate(images):
        where = f"{annotations_json}: images[{index}]"
        image_id = required_field(image, "id", where)
        if not isinstance(image_id, (int, str)):
            raise validation.DataValidationError(f"{where} has id {image_id!r}, not an id.")
        if image_id in images_by_id:
            raise validation.DataValidationError(
                f"{where} has id {image_id!r}, as images[{images_by_id[image_id][0]}] does."
            )
        images_by_id[image_id] = (index, image)
    return images_by_id


def _claim_record_name(entry_of_record, name, annotated):
    """Registers a record name of a split; a second entry with it is an error.

    Record names are image paths relative to the images folder, so two
    entries can only share one by naming the same image file.
    """
    if name in entry_of_record:
        raise validation.DataValidationError(
            f"{annotated.where} and {entry_of_record[name].where} both refer to image "
            f"{annotated.image_path}; each image may be annotated once."
        )
    entry_of_record[name] = annotated


def _read_record(annotated, name, info, category_to_train_id):
    """Reads, checks and converts one annotated image into a record."""
    encoded_image, image_size = validation.read_image_for_record(annotated.image_path)
    segment_ids = validation.read_coco_panoptic_png(annotated.label_path)
    if segment_ids.shape != image_size:
        raise validation.DataValidationError(
            f"{annotated.label_path}: label size {segment_ids.shape} differs from the size "
            f"{image_size} of image {annotated.image_path}."
        )
    panoptic_label = segments_to_panoptic_label(
        segment_ids, annotated.segments, category_to_train_id, info, annotated.label_path
    )
    return {
        records.IMAGE_KEY: encoded_image,
        records.PANOPTIC_LABEL_KEY: panoptic_label,
        records.FILE_NAME_KEY: name,
    }


def _fingerprint_of_splits(specs):
    """The source fingerprint of COCO-panoptic splits: JSON contents, folder listings."""
    entries = {}
    for split, spec in specs.items():
        entries[f"{split} annotations"] = source_fingerprint.annotation_file_entry(
            spec.annotations_json
        )
        entries[f"{split} panoptic PNGs"] = source_fingerprint.image_folder_entry(
            spec.panoptic_dir
        )
        entries[f"{split} images"] = source_fingerprint.image_folder_entry(spec.images_dir)
    return source_fingerprint.fingerprint(entries)


_COCO_2017_INSTRUCTIONS = """\
Download from https://cocodataset.org/#download and extract into the manual dir:
  train2017/ and val2017/ (images: train2017.zip, val2017.zip),
  annotations/panoptic_train2017.json, annotations/panoptic_val2017.json and the
  PNG folders annotations/panoptic_train2017/, annotations/panoptic_val2017/
  (panoptic_annotations_trainval2017.zip and the two zips inside it).
"""


def check_source_files(specs, builder_name, instructions):
    """Raises FileNotFoundError naming every missing source path."""
    missing = [
        path
        for spec in specs.values()
        for path in (spec.annotations_json, spec.panoptic_dir, spec.images_dir)
        if not os.path.exists(path)
    ]
    if missing:
        raise FileNotFoundError(
            f"{builder_name}: missing in the manual directory: {missing}.\n{instructions}"
        )


@dataclasses.dataclass
class ManualDirPanopticConfig(tfds.core.BuilderConfig):
    """Options of the manual-dir panoptic builders (paths come from the manual dir).

    Attributes:
        label_divisor: Panoptic label divisor of the records.
        ignore_label: Semantic class of void pixels.
        skip_invalid: Skip and count invalid examples instead of failing.
    """

    label_divisor: int = DEFAULT_LABEL_DIVISOR
    ignore_label: int = DEFAULT_IGNORE_LABEL
    skip_invalid: bool = False


class Coco2017Panoptic(CocoPanopticFolder):
    """COCO 2017 panoptic (133 classes: 80 things, 53 stuff) from a manual dir.

    TFDS's own `coco/2017_panoptic` downloads the data and keeps COCO's
    per-segment layout; this builder reads the official files offline and
    writes the project's record layout.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "The dataset info keeps the category ids (for the official result formats).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _COCO_2017_INSTRUCTIONS
    BUILDER_CONFIGS = [ManualDirPanopticConfig(name="default")]

    def uses_manual_dir(self):
        """The sources are always in the manual dir."""
        return True

    def _source_splits(self, manual_dir):
        if manual_dir is None:
            raise ValueError(
                f"{self.name}: the label space comes from the COCO JSON; prepare the "
                "dataset first or pass its manual_dir."
            )
        specs = coco_layout_splits(manual_dir, {"train": "train2017", "validation": "val2017"})
        check_source_files(specs, self.name, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return specs
