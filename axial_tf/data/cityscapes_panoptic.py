"""`cityscapes_panoptic`: Cityscapes panoptic from a manual download directory.

Expected layout (what cityscapesscripts' `createPanopticImgs` writes next to
the extracted `gtFine_trainvaltest.zip` and `leftImg8bit_trainvaltest.zip`),
per split either with Cityscapes label ids (the default):

    MANUAL_DIR/gtFine/cityscapes_panoptic_{train,val}.json
    MANUAL_DIR/gtFine/cityscapes_panoptic_{train,val}/*_gtFine_panoptic.png

or with train ids (`--use-train-id`, the files DeepLab2's builder reads):

    MANUAL_DIR/gtFine/cityscapes_panoptic_{train,val}_trainId.json
    MANUAL_DIR/gtFine/cityscapes_panoptic_{train,val}_trainId/*_gtFine_panoptic.png

and the images in

    MANUAL_DIR/leftImg8bit/{train,val}/{city}/*_leftImg8bit.png

Where a split has both layouts the label-id one is read (both hold the same
labels).

The 19 evaluated classes become train ids 0..18 in Cityscapes' usual order
(sorting the JSON's category ids gives that order for label ids and train ids
alike). A JSON without `categories` (DeepLab2's sample) gets the standard 19
classes: its category ids are read as label ids or train ids by the file's
layout. A JSON without `images` gets `{image_id}_leftImg8bit.png` per
annotation (cityscapesscripts' image ids are the file prefixes). `*group`
regions (iscrowd) become crowd. A record's `file_name` is the image's file
name (without the city folder: the name starts with the city).
"""

import json
import pathlib

import tensorflow_datasets as tfds

from axial_tf.data import coco_panoptic
from axial_tf.data import records
from axial_tf.data import validation
from axial_tf.data.dataset_info import PanopticDatasetInfo

CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
THING_CLASS_IDS = tuple(range(11, 19))
# Cityscapes label id of each train id 0..18 (cityscapesscripts' labels.py):
# the category ids of a panoptic JSON written without --use-train-id.
LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

_INSTRUCTIONS = """\
Download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from
https://www.cityscapes-dataset.com/downloads/ and extract both into the manual
dir (giving gtFine/ and leftImg8bit/). Then create the panoptic labels with
cityscapesscripts (pip install cityscapesscripts):
  CITYSCAPES_DATASET=MANUAL_DIR csCreatePanopticImgs --use-train-id
which writes gtFine/cityscapes_panoptic_{train,val}_trainId.json and PNG
folders (without --use-train-id: cityscapes_panoptic_{train,val}.json and
folders; either is read).
"""

_SPLIT_FOLDERS = {"train": "train", "validation": "val"}
# File-name suffix of each layout, in the order they are looked for, and the
# category id of each train id in a JSON of that layout.
_LAYOUT_CATEGORY_IDS = {"": LABEL_IDS, "_trainId": tuple(range(len(CLASS_NAMES)))}
# cityscapesscripts names each image `{prefix}_gtFine_leftImg8bit.png` in the
# JSON; the file in leftImg8bit/ is `{prefix}_leftImg8bit.png`.
_SCRIPTS_IMAGE_SUFFIX = "_gtFine_leftImg8bit.png"
_IMAGE_SUFFIX = "_leftImg8bit.png"


def _layout_suffix(annotations_json):
    """The layout suffix ("" or "_trainId") of a split's panoptic JSON path."""
    stem = pathlib.Path(annotations_json).stem
    return "_trainId" if stem.endswith("_trainId") else ""


def read_cityscapes_panoptic_json(path):
    """Loads a Cityscapes panoptic JSON; `categories` and `images` may be absent.

    Raises:
        DataValidationError: If the file is not JSON, has no `annotations`, or
            one of its entry lists is not a list.
    """
    path = pathlib.Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise validation.DataValidationError(f"Unreadable JSON {path}: {error}") from error
    if not isinstance(content, dict) or "annotations" not in content:
        raise validation.DataValidationError(
            f"{path} is not a panoptic JSON: it has no 'annotations' list."
        )
    coco_panoptic.check_entry_lists(content, path)
    if "images" not in content:
        content["images"] = _images_named_by_image_ids(content["annotations"])
    return content


def _images_named_by_image_ids(annotations):
    """One `images` entry per distinct image id of the annotations.

    An annotation without a usable `image_id` gets none: it is then reported
    as an invalid example naming the missing key.
    """
    image_ids = {
        annotation["image_id"]: None
        for annotation in annotations
        if isinstance(annotation, dict) and isinstance(annotation.get("image_id"), (int, str))
    }
    return [{"id": image_id, "file_name": f"{image_id}{_IMAGE_SUFFIX}"} for image_id in image_ids]


class CityscapesPanoptic(coco_panoptic.CocoPanopticFolder):
    """Cityscapes panoptic (19 classes: 11 stuff, 8 things) from a manual dir.

    Example:
        >>> builder = CityscapesPanoptic(data_dir="/tmp/tfds")
        >>> builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        ...     manual_dir="/data/cityscapes"))
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [coco_panoptic.ManualDirPanopticConfig(name="default")]

    def dataset_info(self, manual_dir=None):
        """The fixed Cityscapes label space (the manual dir is not needed)."""
        del manual_dir
        return self._fixed_info(
            {split: info.num_examples for split, info in self.info.splits.items()}
        )

    def _fixed_info(self, splits):
        """The Cityscapes `PanopticDatasetInfo` with the given split sizes."""
        config = self.builder_config
        return PanopticDatasetInfo(
            name=f"{self.name}/{config.name}",
            class_names=CLASS_NAMES,
            thing_class_ids=THING_CLASS_IDS,
            category_ids=LABEL_IDS,  # the official result formats use labelIds, whichever layout was read
            label_divisor=config.label_divisor,
            ignore_label=config.ignore_label,
            splits=splits,
        )

    def uses_manual_dir(self):
        """The sources are always in the manual dir."""
        return True

    def _source_splits(self, manual_dir):
        if manual_dir is None:
            raise ValueError(f"{self.name}: the sources are read from a manual_dir; pass one.")
        root = pathlib.Path(manual_dir)
        labels_dir = root / "gtFine"
        base_names = {
            split: _find_base_name(labels_dir, folder) for split, folder in _SPLIT_FOLDERS.items()
        }
        missing = [folder for split, folder in _SPLIT_FOLDERS.items() if base_names[split] is None]
        if missing:
            looked_for = [
                f"{_base_name(folder, suffix)}.json"
                for folder in missing
                for suffix in _LAYOUT_CATEGORY_IDS
            ]
            raise FileNotFoundError(
                f"{self.name}: no panoptic JSON for split(s) {missing} in {labels_dir}; looked for "
                f"{', '.join(looked_for)}. Create them with `csCreatePanopticImgs --use-train-id`."
            )
        specs = {
            split: coco_panoptic.CocoPanopticSplit(
                annotations_json=str(labels_dir / f"{base_names[split]}.json"),
                panoptic_dir=str(labels_dir / base_names[split]),
                images_dir=str(root / "leftImg8bit" / folder),
            )
            for split, folder in _SPLIT_FOLDERS.items()
        }
        coco_panoptic.check_source_files(specs, self.name, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return specs

    def _split_generators(self, dl_manager):
        # The label space is fixed, so each split's JSON only needs a mapping of
        # its category ids to it (a JSON may lack `categories`, which the
        # generic COCO reader of the base class requires).
        specs = self._splits_to_prepare(dl_manager)
        contents = {
            split: read_cityscapes_panoptic_json(spec.annotations_json)
            for split, spec in specs.items()
        }
        category_maps = {
            split: self._category_to_train_id(specs[split], content)
            for split, content in contents.items()
        }
        info = self._fixed_info(
            {split: len(content["annotations"]) for split, content in contents.items()}
        )
        self.info.metadata[records.METADATA_KEY] = info.to_json()
        return {
            split: self._generate_examples(split, specs[split], content, info, category_maps[split])
            for split, content in contents.items()
        }

    def _category_to_train_id(self, spec, content):
        """Dict category id of the split's JSON -> train id.

        Raises:
            DataValidationError: If the JSON's categories are not the 19
                evaluated Cityscapes classes.
        """
        if "categories" not in content:
            category_ids = _LAYOUT_CATEGORY_IDS[_layout_suffix(spec.annotations_json)]
            return {category_id: train_id for train_id, category_id in enumerate(category_ids)}
        json_info, category_to_train_id = self._label_space(
            content["categories"], spec.annotations_json
        )
        if json_info.class_names != CLASS_NAMES or json_info.thing_class_ids != THING_CLASS_IDS:
            raise validation.DataValidationError(
                f"{spec.annotations_json}: its categories {list(json_info.class_names)} "
                f"(things {list(json_info.thing_class_ids)}) are not the 19 evaluated "
                "Cityscapes classes; create the labels with csCreatePanopticImgs."
            )
        return category_to_train_id

    def _image_path(self, spec, image_entry):
        """Cityscapes images live in one sub-folder per city (the name's prefix)."""
        file_name = image_entry["file_name"]
        if file_name.endswith(_SCRIPTS_IMAGE_SUFFIX):
            file_name = file_name[: -len(_SCRIPTS_IMAGE_SUFFIX)] + _IMAGE_SUFFIX
        city = file_name.split("_", 1)[0]
        return pathlib.Path(spec.images_dir) / city / file_name

    def _record_name(self, spec, image_path):
        """The image's file name: it starts with its city, so it is unique."""
        del spec
        return image_path.name


def _base_name(split_folder, layout_suffix):
    """The JSON stem and PNG folder name of a split in one layout."""
    return f"cityscapes_panoptic_{split_folder}{layout_suffix}"


def _find_base_name(labels_dir, split_folder):
    """The base name of the first layout whose JSON exists for a split, or None."""
    for suffix in _LAYOUT_CATEGORY_IDS:
        base_name = _base_name(split_folder, suffix)
        if (labels_dir / f"{base_name}.json").is_file():
            return base_name
    return None
