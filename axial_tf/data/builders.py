"""One entry point for every dataset: builder lookup, preparation, descriptors.

Names accepted by `get_builder` / `get_dataset_info`:

    panoptic:        panoptic_shapes, coco_panoptic_folder, coco2017_panoptic,
                     cityscapes_panoptic
    classification:  image_folder_classification, imagenet2012 (TFDS's own)

A config is given as None (the builder's default), the name of a predefined
config, a dict of config fields (what a YAML file holds), or a config object.

Builders that read source folders (`coco_panoptic_folder`, `coco2017_panoptic`,
`cityscapes_panoptic`, `image_folder_classification`) store a fingerprint of
their sources in the prepared dataset (`source_fingerprint.py`). `prepare`
compares it with the sources whenever it can locate them: on a difference it
stops with a `SourceChangedError` naming what changed, or, for a builder made
with `get_builder(..., rebuild_on_change=True)` (`rebuild_on_change: true` in
`data.builder_options`), rebuilds the dataset (the old records are set aside
and only deleted once the new ones are complete).
"""

import dataclasses
import datetime
import os
import pathlib
import shutil

import tensorflow_datasets as tfds
from absl import logging

from axial_tf.data import classification
from axial_tf.data import records
from axial_tf.data import source_fingerprint
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


def get_builder(name, data_dir=None, config=None, rebuild_on_change=False, **config_overrides):
    """Returns the TFDS builder of a dataset (not prepared yet).

    Args:
        name: A dataset name (see the module docstring).
        data_dir: Where prepared datasets live (TFDS's default when None).
        config: None, a predefined config name, a dict of config fields, or a
            config object.
        rebuild_on_change: For a builder that reads source folders: rebuild
            the prepared dataset when its sources changed since it was
            prepared, instead of stopping with an error (see `prepare`).
        **config_overrides: Config fields to replace (e.g. `seed=3`,
            `skip_invalid=True`). Overriding a predefined config renames it
            (e.g. "small_seed3") so that its records get their own folder.

    Returns:
        A `tfds.core.DatasetBuilder`.

    Raises:
        ValueError: For an unknown dataset, config name or config field, or
            `rebuild_on_change` for a dataset without source folders.
    """
    if name == IMAGENET_NAME:
        if config is not None or config_overrides or rebuild_on_change:
            raise ValueError("imagenet2012 takes no config; use TFDS's own defaults.")
        return tfds.builder(IMAGENET_NAME, data_dir=data_dir)
    if name not in _PROJECT_BUILDERS:
        raise ValueError(
            f"Unknown dataset {name!r}; known: {sorted([*_PROJECT_BUILDERS, IMAGENET_NAME])}."
        )
    builder_class, config_class = _PROJECT_BUILDERS[name]
    resolved = _resolve_config(name, builder_class, config_class, config, config_overrides)
    builder = builder_class(config=resolved, data_dir=data_dir)
    if rebuild_on_change:
        if not isinstance(builder, source_fingerprint.SourceTrackingBuilder):
            raise ValueError(
                f"rebuild_on_change: dataset {name!r} is not read from source folders, so it "
                "has no sources to compare."
            )
        builder.rebuild_on_change = True
    return builder


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

    A prepared dataset whose sources changed since (see the module docstring)
    is an error, or is rebuilt when the builder was made with
    `rebuild_on_change=True`.

    Args:
        builder: A builder from `get_builder`.
        manual_dir: Folder with manually downloaded sources (Cityscapes, COCO
            2017, ImageNet).

    Returns:
        The builder, prepared: the one given, or a new one on the rebuilt
        records when the dataset was rebuilt.

    Raises:
        FileNotFoundError: If a manual-dir dataset's sources are missing.
        SourceChangedError: If the sources changed and the builder was not
            made with `rebuild_on_change=True`.
    """
    was_prepared = builder.is_prepared()
    if not was_prepared:
        _build(builder, manual_dir)
    if not builder.info.splits:
        # The builder was made before another process wrote the records: read their metadata.
        builder.info.read_from_directory(builder.data_dir)
    if was_prepared and _sources_changed(builder, manual_dir):
        return _rebuild(builder, manual_dir)
    return builder


def _build(builder, manual_dir):
    """Generates the records of an unprepared builder."""
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


def _sources_changed(builder, manual_dir):
    """Whether a prepared dataset must be rebuilt because its sources changed.

    Args:
        builder: A prepared builder.
        manual_dir: The manual dir, for builders whose sources live there.

    Returns:
        True when the sources changed and the builder's `rebuild_on_change` is
        set; False when they did not change or cannot be compared (sources not
        found, a builder without sources, or records prepared before
        fingerprints were stored, which is logged).

    Raises:
        SourceChangedError: If the sources changed and the builder's
            `rebuild_on_change` is not set.
    """
    if not isinstance(builder, source_fingerprint.SourceTrackingBuilder):
        return False  # generated (panoptic_shapes) or prepared by TFDS (imagenet2012)
    stored = builder.info.metadata.get(records.SOURCE_FINGERPRINT_KEY)
    if not stored:
        logging.warning(
            "%s/%s at %s has no source fingerprint (it was prepared by an older version), "
            "so edits of its sources go unnoticed; rebuild it by deleting that folder.",
            builder.name,
            builder.builder_config.name,
            builder.data_dir,
        )
        return False
    current = builder.fingerprint_sources(manual_dir)
    changes = source_fingerprint.describe_changes(stored, current) if current else []
    if not changes:
        return False
    dataset = f"{builder.name}/{builder.builder_config.name}"
    if builder.rebuild_on_change:
        logging.warning("%s: rebuilding, its sources changed: %s.", dataset, "; ".join(changes))
        return True
    raise source_fingerprint.SourceChangedError(
        f"{dataset}: the sources changed since the dataset was prepared "
        f"({stored['taken_at']}): {'; '.join(changes)}. Rebuild it with the builder option "
        f"rebuild_on_change: true (data.builder_options), or delete {builder.data_dir}."
    )


def _rebuild(builder, manual_dir):
    """Rebuilds a prepared dataset from its sources, keeping the old records until done.

    The old records are moved aside (in the config's folder, under a name TFDS
    does not read as a version) and deleted once the new records are complete;
    if building fails, they are moved back.

    Args:
        builder: The prepared builder whose sources changed.
        manual_dir: As for `prepare`.

    Returns:
        A new builder on the rebuilt records.
    """
    data_dir = pathlib.Path(builder.data_dir)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    set_aside = data_dir.parent / f".replaced-{data_dir.name}-{stamp}-{os.getpid()}"
    try:
        os.rename(data_dir, set_aside)
    except FileNotFoundError:
        set_aside = None  # Another process set the old records aside first and rebuilds too.
    fresh = type(builder)(config=builder.builder_config, data_dir=str(builder.data_dir_root))
    fresh.rebuild_on_change = builder.rebuild_on_change
    try:
        _build(fresh, manual_dir)
    except BaseException:
        if set_aside is not None and not fresh.is_prepared():
            os.rename(set_aside, data_dir)
        raise
    if set_aside is not None:
        shutil.rmtree(set_aside)
    return fresh


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


def read_split(builder, split, input_context=None, decoded=True):
    """Reads a prepared split, sharded for an input pipeline.

    With several input pipelines (workers), pipeline i reads the i-th of
    `num_input_pipelines` disjoint, near-equal slices of the split.

    Args:
        builder: A prepared builder.
        split: Split name (TFDS slicing such as "train[:50%]" works too).
        input_context: Optional `tf.distribute.InputContext`.
        decoded: False leaves every feature as stored (encoded images);
            `builder.info.features.decode_example` decodes such a record.

    Returns:
        A `tf.data.Dataset` of record dicts (`records.py`), in file order.
    """
    if input_context is not None and input_context.num_input_pipelines > 1:
        split = tfds.even_splits(split, n=input_context.num_input_pipelines)[
            input_context.input_pipeline_id
        ]
    read_config = tfds.ReadConfig(try_autocache=False)
    decoders = None if decoded else {name: tfds.decode.SkipDecoding() for name in builder.info.features}
    return builder.as_dataset(split=split, shuffle_files=False, read_config=read_config, decoders=decoders)
