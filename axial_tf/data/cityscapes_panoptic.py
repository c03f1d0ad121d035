"""`cityscapes_panoptic`: Cityscapes panoptic from a manual download directory.

Expected layout (what cityscapesscripts' `createPanopticImgs` writes next to
the extracted `gtFine_trainvaltest.zip` and `leftImg8bit_trainvaltest.zip`):

    MANUAL_DIR/gtFine/cityscapes_panoptic_{train,val}.json
    MANUAL_DIR/gtFine/cityscapes_panoptic_{train,val}/*_gtFine_panoptic.png
    MANUAL_DIR/leftImg8bit/{train,val}/{city}/*_leftImg8bit.png

The 19 evaluated classes become train ids 0..18 in Cityscapes' usual order
(sorting the JSON's category ids gives that order for label ids and train ids
alike); `*group` regions (iscrowd) become crowd.
"""

import pathlib

import tensorflow_datasets as tfds

from axial_tf.data import coco_panoptic
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

_INSTRUCTIONS = """\
Download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from
https://www.cityscapes-dataset.com/downloads/ and extract both into the manual
dir (giving gtFine/ and leftImg8bit/). Then create the panoptic labels with
cityscapesscripts (pip install cityscapesscripts):
  CITYSCAPES_DATASET=MANUAL_DIR csCreatePanopticImgs
which writes gtFine/cityscapes_panoptic_{train,val}.json and PNG folders.
"""

_SPLIT_FOLDERS = {"train": "train", "validation": "val"}


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
        config = self.builder_config
        return PanopticDatasetInfo(
            name=f"{self.name}/{config.name}",
            class_names=CLASS_NAMES,
            thing_class_ids=THING_CLASS_IDS,
            label_divisor=config.label_divisor,
            ignore_label=config.ignore_label,
            splits={split: info.num_examples for split, info in self.info.splits.items()},
        )

    def uses_manual_dir(self):
        """The sources are always in the manual dir."""
        return True

    def _source_splits(self, manual_dir):
        if manual_dir is None:
            raise ValueError(f"{self.name}: the sources are read from a manual_dir; pass one.")
        root = pathlib.Path(manual_dir)
        specs = {
            split: coco_panoptic.CocoPanopticSplit(
                annotations_json=str(root / "gtFine" / f"cityscapes_panoptic_{folder}.json"),
                panoptic_dir=str(root / "gtFine" / f"cityscapes_panoptic_{folder}"),
                images_dir=str(root / "leftImg8bit" / folder),
            )
            for split, folder in _SPLIT_FOLDERS.items()
        }
        coco_panoptic.check_source_files(specs, self.name, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return specs

    def _check_label_space(self, info):
        """The JSON must hold exactly the 19 evaluated Cityscapes classes."""
        if info.class_names != CLASS_NAMES or info.thing_class_ids != THING_CLASS_IDS:
            raise validation.DataValidationError(
                f"{self.name}: the panoptic JSON's categories {list(info.class_names)} "
                f"(things {list(info.thing_class_ids)}) are not the 19 evaluated "
                "Cityscapes classes; create the labels with csCreatePanopticImgs."
            )

    def _image_path(self, spec, image_entry):
        """Cityscapes images live in one sub-folder per city (the name's prefix)."""
        file_name = image_entry["file_name"]
        city = file_name.split("_", 1)[0]
        return pathlib.Path(spec.images_dir) / city / file_name
