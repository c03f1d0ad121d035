"""One entry point for every dataset: builder lookup, preparation, descriptors.

Names accepted by `get_builder` / `get_dataset_info`:

    panoptic:        panoptic_shapes, coco_panoptic_folder, coco2017_panoptic,
                     cityscapes_panoptic
    classification:  image_folder_classification, imagenet2012 (TFDS's own)

A config is given as None (the builder's default), the name of a predefined
config, a dict of config fields (what a YAML file holds), or a config object.
"""

import dataclasses

import tensorflow_datasets as tfds

from axial_tf.data import classification
from axial_tf.data import records
from axial_tf.data.cityscapes_panoptic import CityscapesPanoptic
from axial_tf.data.coco_panoptic import (
    Coco2017Panoptic,
    CocoPanopticFolder,
    CocoPanopticFolderConfig,
    ManualDirPanopticConfig,
)
from axial_tf.data.dataset_info import ClassificationDatasetInfo
from axial_tf.data.panoptic_shapes import PanopticShapes, PanopticShapesConfig

IMAGENET_NAME = "imagenet2012"

# name -> (builder class, config class).
_PROJECT_BUILDERS = {
    "panoptic_shapes": (PanopticShapes, PanopticShapesConfig),
    "coco_panoptic_folder": (CocoPanopticFolder, CocoPanopticFolderConfig),
    "coco2017_panoptic": (Coco2017Panoptic, ManualDirPanopticConfig),
    "cityscapes_panoptic": (CityscapesPanoptic, ManualDirPanopticConfig),
    "image_folder_classification": (
        classification.ImageFolderClassification,
        classification.ImageFolderConfig,
    ),
}
PANOPTIC_DATASETS = (
    "panoptic_shapes",
    "coco_panoptic_folder",
    "coco2017_panoptic",
    "cityscapes_panoptic",
)
CLASSIFICATION_DATASETS = ("image_folder_classification", IMAGENET_NAME)


def get_builder(name, data_dir=None, config=None, **config_overrides):
    """Returns the TFDS builder of a dataset (not prepared yet).

    Args:
        name: A dataset name (see the module docstring).
        data_dir: Where prepared datasets live (TFDS's default when None).
        config: None, a predefined config name, a dict of config fields, or a
            config object.
        **config_overrides: Config fields to replace (e.g. `seed=3`,
            `skip_invalid=True`). Overriding a predefined config renames it
            (e.g. "small_seed3") so that its records get their own folder.

    Returns:
        A `tfds.core.DatasetBuilder`.

    Raises:
        ValueError: For an unknown dataset, config name or config field.
    """
    if name == IMAGENET_NAME:
        if config is not None or config_overrides:
            raise ValueError("imagenet2012 takes no config; use TFDS's own defaults.")
        return tfds.builder(IMAGENET_NAME, data_dir=data_dir)
    if name not in _PROJECT_BUILDERS:
        raise ValueError(
            f"Unknown dataset {name!r}; known: {sorted([*_PROJECT_BUILDERS, IMAGENET_NAME])}."
        )
    builder_class, config_class = _PROJECT_BUILDERS[name]
    resolved = _resolve_config(name, builder_class, config_class, config, config_overrides)
    return builder_class(config=resolved, data_dir=data_dir)


def _resolve_config(name, builder_class, config_class, config, overrides):
    """Turns the `config` argument of `get_builder` into what TFDS accepts."""
    if isinstance(config, dict):
        config = {**config, **overrides}
        overrides = {}
        known = {field.name for field in dataclasses.fields(config_class)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"Unknown config field(s) {unknown} for dataset {name!r}; valid fields: "
                f"{sorted(known)}."
            )
        if "name" not in config:
            raise ValueError(f"A config dict for dataset {name!r} needs a 'name'.")
        return config_class(**config)
    if config is None and builder_class.BUILDER_CONFIGS:
        config = builder_class.DEFAULT_BUILDER_CONFIG_NAME or builder_class.BUILDER_CONFIGS[0].name
    if isinstance(config, str):
        by_name = {predefined.name: predefined for predefined in builder_class.BUILDER_CONFIGS}
        if config not in by_name:
            raise ValueError(
                f"Unknown config {config!r} for dataset {name!r}; known: {sorted(by_name)}."
            )
        config = by_name[config]
        if overrides:
            suffix = "_".join(f"{key}{value}" for key, value in sorted(overrides.items()))
            overrides = {"name": f"{config.name}_{suffix}", **overrides}
    if not overrides:
        return config
    known = {field.name for field in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"Unknown config field(s) {unknown} for dataset {name!r}; valid fields: "
            f"{sorted(known)}."
        )
    return dataclasses.replace(config, **overrides)


def prepare(builder, manual_dir=None):
    """Builds the dataset's records offline if they are not there yet.

    Args:
        builder: A builder from `get_builder`.
        manual_dir: Folder with manually downloaded sources (Cityscapes, COCO
            2017, ImageNet).

    Returns:
        The builder, prepared.

    Raises:
        FileNotFoundError: If a manual-dir dataset's sources are missing.
    """
    if not builder.is_prepared():
        if builder.name == IMAGENET_NAME:
            classification.check_imagenet_manual_dir(manual_dir)
        elif builder.uses_manual_dir() and manual_dir is None:
            raise FileNotFoundError(
                f"{builder.name} is built from a manual download directory; pass manual_dir.\n"
                f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        try:
            builder.download_and_prepare(download_config=download_config)
        except FileExistsError:
            # Another process (e.g. a second worker on this machine) finished the same records
            # first. TFDS moves a finished folder into place with one rename, so it is complete.
            if not builder.is_prepared():
                raise
    if not builder.info.splits:
        # The builder was made before another process wrote the records: read their metadata.
        builder.info.read_from_directory(builder.data_dir)
    return builder


def dataset_info_from_builder(builder, manual_dir=None):
    """The `PanopticDatasetInfo` / `ClassificationDatasetInfo` of a builder.

    Args:
        builder: A builder from `get_builder` (prepared or not).
        manual_dir: Manual download directory, for unprepared manual-dir builders
            whose label space is read from their sources.

    Returns:
        The dataset's descriptor.
    """
    if builder.name == IMAGENET_NAME:
        return ClassificationDatasetInfo(
            name=IMAGENET_NAME,
            class_names=builder.info.features[records.CLASS_LABEL_KEY].names,
            splits={split: info.num_examples for split, info in builder.info.splits.items()},
        )
    return builder.dataset_info(manual_dir)


def get_dataset_info(name, data_dir=None, config=None, manual_dir=None, **config_overrides):
    """The descriptor of a dataset by name, e.g. `get_dataset_info("panoptic_shapes")`.

    Args:
        name: Dataset name.
        data_dir: Where prepared datasets live.
        config: As for `get_builder`.
        manual_dir: As for `dataset_info_from_builder`.
        **config_overrides: As for `get_builder`.

    Returns:
        A `PanopticDatasetInfo` or `ClassificationDatasetInfo`.
    """
    builder = get_builder(name, data_dir=data_dir, config=config, **config_overrides)
    return dataset_info_from_builder(builder, manual_dir=manual_dir)


def read_split(builder, split, input_context=None):
    """Reads a prepared split (decoded records), sharded for an input pipeline.

    With several input pipelines (workers), pipeline i reads the i-th of
    `num_input_pipelines` disjoint, near-equal slices of the split.

    Args:
        builder: A prepared builder.
        split: Split name (TFDS slicing such as "train[:50%]" works too).
        input_context: Optional `tf.distribute.InputContext`.

    Returns:
        A `tf.data.Dataset` of record dicts (`records.py`), in file order.
    """
    if input_context is not None and input_context.num_input_pipelines > 1:
        split = tfds.even_splits(split, n=input_context.num_input_pipelines)[
            input_context.input_pipeline_id
        ]
    read_config = tfds.ReadConfig(try_autocache=False)
    return builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
