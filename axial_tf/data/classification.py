"""Classification builders: a generic image folder, and ImageNet through TFDS.

Image-folder layout (one sub-folder per class inside each split folder):

    ROOT/train/<class name>/<image>.jpg
    ROOT/val/<class name>/<image>.png

The class names are the sorted class folders of the first split (or given in
the config); a class folder in another split that is not one of them is an
invalid example for each of its images. The prepared dataset keeps a
fingerprint of the class names and of each split's image files (paths, sizes,
modification times; `source_fingerprint.py`), so that `prepare` notices a
folder edited after preparing.
"""

import dataclasses
import pathlib

import tensorflow_datasets as tfds

from axial_tf.data import records
from axial_tf.data import source_fingerprint
from axial_tf.data import validation
from axial_tf.data.dataset_info import ClassificationDatasetInfo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Split folder names that map to another TFDS split name.
_SPLIT_NAME_OF_FOLDER = {"val": "validation", "valid": "validation"}

IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_INSTRUCTIONS = """\
imagenet2012 is prepared by TFDS from the original archives. Register at
https://image-net.org/download-images, download ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar and put them (unextracted) in the manual dir.
"""


@dataclasses.dataclass
class ImageFolderConfig(tfds.core.BuilderConfig):
    """An image-classification folder on disk.

    Attributes:
        root: Folder holding one sub-folder per split; empty means the manual
            dir passed to `prepare`.
        splits: Dict split name -> sub-folder of the root; empty means every
            sub-folder ("val"/"valid" become the split "validation").
        class_names: The classes in label order; empty means the sorted
            class folders of the first split ("train" when present).
        skip_invalid: Skip and count invalid examples instead of failing.

    Example:
        >>> config = ImageFolderConfig(name="flowers", root="/data/flowers")
        >>> builder = ImageFolderClassification(config=config, data_dir="/tmp/tfds")
    """

    root: str = ""
    splits: dict = dataclasses.field(default_factory=dict)
    class_names: tuple = ()
    skip_invalid: bool = False

    def split_folders(self, manual_dir=None):
        """Dict split name -> split folder (`pathlib.Path`), in a stable order.

        Args:
            manual_dir: The root when the config has none.

        Returns:
            The split folders, "train" first when present.
        """
        if not (self.root or manual_dir):
            raise ValueError(f"ImageFolderConfig {self.name!r} needs a root or a manual_dir.")
        root = pathlib.Path(self.root or manual_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"Image folder root {root} does not exist.")
        if self.splits:
            folders = {split: root / folder for split, folder in self.splits.items()}
        else:
            folders = {
                _SPLIT_NAME_OF_FOLDER.get(path.name, path.name): path
                for path in sorted(root.iterdir())
                if path.is_dir()
            }
        missing = [str(path) for path in folders.values() if not path.is_dir()]
        if missing or not folders:
            raise FileNotFoundError(f"Split folder(s) not found under {root}: {missing}.")
        if "train" in folders:  # The first split defines the classes.
            folders = {"train": folders.pop("train"), **folders}
        return folders

    def resolved_class_names(self, manual_dir=None):
        """The class names in label order (see `split_folders` for `manual_dir`)."""
        if self.class_names:
            return tuple(self.class_names)
        first_split_folder = next(iter(self.split_folders(manual_dir).values()))
        names = tuple(sorted(path.name for path in first_split_folder.iterdir() if path.is_dir()))
        if not names:
            raise FileNotFoundError(f"No class folders in {first_split_folder}.")
        return names


_FOLDER_INSTRUCTIONS = """\
Put one folder per split (train, val, ...) holding one sub-folder of images per
class, e.g. train/cat/1.jpg, val/dog/7.png.
"""


class ImageFolderClassification(
    source_fingerprint.SourceTrackingBuilder, tfds.core.GeneratorBasedBuilder
):
    """Image classification from a folder with one sub-folder per class.

    The predefined config "default" reads the manual dir; name your own config
    (or pass `root`) to keep several datasets in one data_dir.

    Example:
        >>> builder = ImageFolderClassification(
        ...     config=ImageFolderConfig(name="flowers", root="/data/flowers"),
        ...     data_dir="/tmp/tfds")
        >>> builder.download_and_prepare()
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _FOLDER_INSTRUCTIONS
    BUILDER_CONFIGS = [ImageFolderConfig(name="default", description="The manual dir.")]

    def _info(self):
        # The class names are set when the folders are read (`_split_generators`)
        # and restored from the data dir once prepared.
        return tfds.core.DatasetInfo(
            builder=self,
            description="Image classification read from class sub-folders.",
            features=records.classification_features(None),
            metadata=tfds.core.MetadataDict(),
        )

    def uses_manual_dir(self):
        """Whether `prepare` needs a manual_dir for this builder and config."""
        return not self.builder_config.root

    def dataset_info(self, manual_dir=None):
        """The dataset's `ClassificationDatasetInfo`.

        Args:
            manual_dir: The root, for an unprepared dataset whose config has none.

        Returns:
            A `ClassificationDatasetInfo`.
        """
        label_feature = self.info.features[records.CLASS_LABEL_KEY]
        if label_feature.num_classes is not None:
            class_names = label_feature.names
        else:
            class_names = self.builder_config.resolved_class_names(manual_dir)
        return ClassificationDatasetInfo(
            name=f"{self.name}/{self.builder_config.name}",
            class_names=class_names,
            splits={split: info.num_examples for split, info in self.info.splits.items()},
        )

    def fingerprint_sources(self, manual_dir=None):
        """A fingerprint of the folder as it is now (`source_fingerprint.py`).

        Args:
            manual_dir: The root when the config has none.

        Returns:
            The fingerprint, or None when the folder cannot be located.
        """
        manual_dir = manual_dir if self.uses_manual_dir() else None
        try:
            class_names = self.builder_config.resolved_class_names(manual_dir)
            split_folders = self.builder_config.split_folders(manual_dir)
        except (FileNotFoundError, ValueError):
            return None
        return _fingerprint_of_folders(class_names, split_folders)

    def _split_generators(self, dl_manager):
        manual_dir = dl_manager.manual_dir if self.uses_manual_dir() else None
        class_names = self.builder_config.resolved_class_names(manual_dir)
        split_folders = self.builder_config.split_folders(manual_dir)
        # Taken before any image is read: an edit made while preparing shows as a change later.
        self.info.metadata[records.SOURCE_FINGERPRINT_KEY] = _fingerprint_of_folders(
            class_names, split_folders
        )
        self.info.features[records.CLASS_LABEL_KEY].names = list(class_names)
        return {
            split: self._generate_examples(split, folder, class_names)
            for split, folder in split_folders.items()
        }

    def _generate_examples(self, split, folder, class_names):
        """Yields `(key, record)` for every image of a split folder."""
        label_of_class = {name: label for label, name in enumerate(class_names)}
        log = validation.InvalidExampleLog(
            f"{self.name}/{self.builder_config.name}",
            split,
            folder,
            self.builder_config.skip_invalid,
        )
        for path in _image_paths(folder):
            relative_name = f"{path.parent.name}/{path.name}"
            try:
                if path.parent.name not in label_of_class:
                    raise validation.DataValidationError(
                        f"{path}: class folder {path.parent.name!r} is not one of the "
                        f"{len(class_names)} classes of the dataset ({list(class_names)[:10]}...)."
                    )
                encoded_image, _ = validation.read_image_for_record(path)
            except validation.DataValidationError as error:
                log.record(error)
                continue
            log.accept()
            yield relative_name, {
                records.IMAGE_KEY: encoded_image,
                records.CLASS_LABEL_KEY: label_of_class[path.parent.name],
                records.FILE_NAME_KEY: relative_name,
            }
        log.finish(self.info.metadata)


def _image_paths(folder):
    """The image files a split folder contributes (`<class>/<image>`), sorted."""
    return sorted(
        path
        for path in folder.glob("*/*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def _fingerprint_of_folders(class_names, split_folders):
    """The source fingerprint of an image folder: class names and image listings.

    Args:
        class_names: The resolved class names (read from folder names unless
            configured, so an added empty class folder changes them).
        split_folders: Dict split name -> split folder.

    Returns:
        A fingerprint from `source_fingerprint.fingerprint`.
    """
    first_folder = next(iter(split_folders.values()))
    entries = {"classes": source_fingerprint.values_entry(first_folder, class_names)}
    for split, folder in split_folders.items():
        entries[f"{split} images"] = source_fingerprint.image_folder_entry(
            folder, [path.relative_to(folder) for path in _image_paths(folder)]
        )
    return source_fingerprint.fingerprint(entries)


def check_imagenet_manual_dir(manual_dir):
    """Checks that the ImageNet archives TFDS needs are in `manual_dir`.

    Args:
        manual_dir: The manual download directory (may be None).

    Raises:
        FileNotFoundError: Naming the directory and the missing archives.
    """
    if manual_dir is None:
        raise FileNotFoundError(
            "imagenet2012 needs a manual_dir with the ImageNet archives.\n" + IMAGENET_INSTRUCTIONS
        )
    missing = [
        name for name in IMAGENET_MANUAL_FILES if not (pathlib.Path(manual_dir) / name).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"imagenet2012: {missing} not found in the manual dir {manual_dir}.\n"
            + IMAGENET_INSTRUCTIONS
        )
