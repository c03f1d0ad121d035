"""Datasets (TFDS builders) and tf.data input pipelines.

Typical use:

    from axial_tf import data

    builder = data.prepare(data.get_builder("panoptic_shapes", data_dir=DIR, config="small"))
    info = data.dataset_info_from_builder(builder)          # PanopticDatasetInfo
    dataset_fn = data.panoptic_train_dataset_fn(
        builder, "train", info, global_batch_size=16, crop_size=(64, 64), seed=0)
    dataset = strategy.distribute_datasets_from_function(dataset_fn)

Importing this package registers the builders with TFDS (`panoptic_shapes`,
`coco_panoptic_folder`, `coco2017_panoptic`, `cityscapes_panoptic`,
`image_folder_classification`).
"""

from axial_tf.utils.optional_imports import tensorflow_installed, tensorflow_needed

if not tensorflow_installed():
    raise tensorflow_needed("axial_tf.data (the tf.data pipelines and TFDS builders)")

from axial_tf.data.augment import AugmentationOptions
from axial_tf.data.builders import (
    CLASSIFICATION_DATASETS,
    PANOPTIC_DATASETS,
    dataset_info_from_builder,
    get_builder,
    get_dataset_info,
    prepare,
    read_split,
)
from axial_tf.data.cityscapes_panoptic import CityscapesPanoptic
from axial_tf.data.classification import ImageFolderClassification, ImageFolderConfig
from axial_tf.data.coco_panoptic import (
    Coco2017Panoptic,
    CocoPanopticFolder,
    CocoPanopticFolderConfig,
    CocoPanopticSplit,
    ManualDirPanopticConfig,
)
from axial_tf.data.dataset_info import ClassificationDatasetInfo, PanopticDatasetInfo
from axial_tf.data.inference import InferencePreprocessor, classification_eval_image
from axial_tf.data.panoptic_shapes import PanopticShapes, PanopticShapesConfig
from axial_tf.data.pipeline import (
    build_classification_eval_dataset,
    build_classification_train_dataset,
    build_panoptic_eval_dataset,
    build_panoptic_train_dataset,
    classification_eval_dataset_fn,
    classification_train_dataset_fn,
    default_target_generator,
    panoptic_eval_dataset_fn,
    panoptic_eval_example,
    panoptic_train_dataset_fn,
    panoptic_train_example,
)
from axial_tf.data.validation import DataValidationError

__all__ = [
    "AugmentationOptions",
    "CLASSIFICATION_DATASETS",
    "ClassificationDatasetInfo",
    "CityscapesPanoptic",
    "Coco2017Panoptic",
    "CocoPanopticFolder",
    "CocoPanopticFolderConfig",
    "CocoPanopticSplit",
    "DataValidationError",
    "ImageFolderClassification",
    "ImageFolderConfig",
    "InferencePreprocessor",
    "ManualDirPanopticConfig",
    "PANOPTIC_DATASETS",
    "PanopticDatasetInfo",
    "PanopticShapes",
    "PanopticShapesConfig",
    "build_classification_eval_dataset",
    "build_classification_train_dataset",
    "build_panoptic_eval_dataset",
    "build_panoptic_train_dataset",
    "classification_eval_dataset_fn",
    "classification_eval_image",
    "classification_train_dataset_fn",
    "dataset_info_from_builder",
    "default_target_generator",
    "get_builder",
    "get_dataset_info",
    "panoptic_eval_dataset_fn",
    "panoptic_eval_example",
    "panoptic_train_dataset_fn",
    "panoptic_train_example",
    "prepare",
    "read_split",
]
