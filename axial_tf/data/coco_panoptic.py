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
- PNG id 0 is void (`ignore_label * label_divisor`).

`CocoPanopticFolder` reads any such folder (labelme/CVAT/cityscapesscripts
exports) from paths in its config; `Coco2017Panoptic` and `CityscapesPanoptic`
read the official layouts from a manual download directory.
"""

import dataclasses
import json
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from axial_tf.data import records
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
    missing = {"categories", "annotations"} - set(content)
    if missing:
        raise validation.DataValidationError(
            f"{path} is not a COCO panoptic file: missing key(s) {sorted(missing)}."
        )
    return content


def label_space_from_categories(categories, name, label_divisor, ignore_label):
    """Maps COCO categories to contiguous train ids.

    Args:
        categories: The JSON `categories` list (dicts with id, name, isthing).
        name: Dataset name for the descriptor and messages.
        label_divisor: Panoptic label divisor.
        ignore_label: Void class.

    Returns:
        A tuple `(info, category_to_train_id)`: the `PanopticDatasetInfo` and a
        dict COCO category id -> train id.
    """
    ordered = sorted(categories, key=lambda category: int(category["id"]))
    ids = [int(category["id"]) for category in ordered]
    if len(set(ids)) != len(ids):
        raise validation.DataValidationError(f"{name}: duplicate category ids in {ids}.")
    category_to_train_id = {category_id: train_id for train_id, category_id in enumerate(ids)}
    info = PanopticDatasetInfo(
        name=name,
        class_names=[category["name"] for category in ordered],
        thing_class_ids=[
            train_id for train_id, category in enumerate(ordered) if category.get("isthing")
        ],
        label_divisor=label_divisor,
        ignore_label=ignore_label,
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


class CocoPanopticFolder(tfds.core.GeneratorBasedBuilder):
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

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
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
        info, _ = self._label_space(content["categories"])
        return info

    def uses_manual_dir(self):
        """Whether `prepare` needs a manual_dir for this builder and config."""
        return self.builder_config.uses_manual_dir()

    def _source_splits(self, manual_dir):
        """Dict split name -> `CocoPanopticSplit` of the source files."""
        return self.builder_config.split_specs(manual_dir)

    def _label_space(self, categories):
        """(info, category id -> train id) for this dataset's categories."""
        config = self.builder_config
        return label_space_from_categories(
            categories,
            name=f"{self.name}/{config.name}",
            label_divisor=config.label_divisor,
            ignore_label=config.ignore_label,
        )

    def _image_path(self, spec, image_entry):
        """Path of an image listed in the JSON `images` section."""
        return pathlib.Path(spec.images_dir) / image_entry["file_name"]

    def _split_generators(self, dl_manager):
        specs = self._source_splits(dl_manager.manual_dir if self.uses_manual_dir() else None)
        contents = {
            split: read_coco_panoptic_json(spec.annotations_json) for split, spec in specs.items()
        }
        # Every split must share one label space; the first split defines it.
        reference_split = next(iter(contents))
        info, category_to_train_id = self._label_space(contents[reference_split]["categories"])
        for split, content in contents.items():
            if self._label_space(content["categories"])[0].class_names != info.class_names:
                raise validation.DataValidationError(
                    f"{specs[split].annotations_json}: its categories differ from those "
                    f"of split {reference_split!r} ({specs[reference_split].annotations_json})."
                )
        info = dataclasses.replace(
            info, splits={split: len(content["annotations"]) for split, content in contents.items()}
        )
        self._check_label_space(info)
        self.info.metadata[records.METADATA_KEY] = info.to_json()
        return {
            split: self._generate_examples(split, specs[split], content, info, category_to_train_id)
            for split, content in contents.items()
        }

    def _check_label_space(self, info):
        """Hook for builders with a known label space; the folder accepts any."""
        del info

    def _generate_examples(self, split, spec, content, info, category_to_train_id):
        """Yields `(key, record)` for every annotation of a split."""
        images_by_id = {image["id"]: image for image in content.get("images", [])}
        log = validation.InvalidExampleLog(info.name, split, self.builder_config.skip_invalid)
        for annotation in content["annotations"]:
            try:
                record = self._load_record(
                    spec, annotation, images_by_id, info, category_to_train_id
                )
            except validation.DataValidationError as error:
                log.record(error)
                continue
            yield record[records.FILE_NAME_KEY], record
        log.write_report(self.info.metadata)

    def _load_record(self, spec, annotation, images_by_id, info, category_to_train_id):
        """Reads, checks and converts one annotated image."""
        label_path = pathlib.Path(spec.panoptic_dir) / annotation["file_name"]
        image_entry = images_by_id.get(annotation["image_id"])
        if image_entry is None:
            raise validation.DataValidationError(
                f"{spec.annotations_json}: annotation {annotation['file_name']} refers to "
                f"image_id {annotation['image_id']!r}, which is not in `images`."
            )
        image_path = self._image_path(spec, image_entry)
        encoded_image, image_size = validation.read_image_for_record(image_path)
        segment_ids = validation.read_coco_panoptic_png(label_path)
        if segment_ids.shape != image_size:
            raise validation.DataValidationError(
                f"{label_path}: label size {segment_ids.shape} differs from the size "
                f"{image_size} of image {image_path}."
            )
        panoptic_label = segments_to_panoptic_label(
            segment_ids, annotation.get("segments_info", []), category_to_train_id, info, label_path
        )
        return {
            records.IMAGE_KEY: encoded_image,
            records.PANOPTIC_LABEL_KEY: panoptic_label,
            records.FILE_NAME_KEY: image_path.name,
        }


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

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
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
