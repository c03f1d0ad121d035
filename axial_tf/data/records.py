"""The record layout shared by all builders of the project.

Panoptic records (every panoptic builder):
    image:          uint8 [H, W, 3], stored as the source PNG/JPEG bytes.
    panoptic_label: int32 [H, W], `semantic * label_divisor + instance`,
                    zlib-compressed; void is `ignore_label * label_divisor`.
    file_name:      the example's name, unique in its split (for messages and
                    predictions): the image's path relative to the images
                    folder (Cityscapes: the file name; panoptic_shapes: a
                    generated name).

Classification records (image-folder builder, and TFDS `imagenet2012`):
    image:     uint8 [H, W, 3].
    label:     int64 class id.
    file_name: the source image's name (image folder: `class/file`).

A panoptic dataset's label space (class names, thing ids, label divisor,
ignore label) lives in the builder's metadata under `METADATA_KEY`, as the
JSON of a `PanopticDatasetInfo`; a classification dataset's class names are
those of its `label` feature. A builder that reads source files also stores a
fingerprint of them under `SOURCE_FINGERPRINT_KEY` (`source_fingerprint.py`).
"""

import numpy as np
import tensorflow_datasets as tfds

IMAGE_KEY = "image"
PANOPTIC_LABEL_KEY = "panoptic_label"
CLASS_LABEL_KEY = "label"
FILE_NAME_KEY = "file_name"

# Builder metadata keys.
METADATA_KEY = "axial_tf_dataset_info"
INVALID_EXAMPLES_KEY = "invalid_examples"
SOURCE_FINGERPRINT_KEY = "source_fingerprint"


def panoptic_features():
    """The TFDS features of a panoptic record."""
    return tfds.features.FeaturesDict(
        {
            IMAGE_KEY: tfds.features.Image(shape=(None, None, 3)),
            PANOPTIC_LABEL_KEY: tfds.features.Tensor(
                shape=(None, None), dtype=np.int32, encoding=tfds.features.Encoding.ZLIB
            ),
            FILE_NAME_KEY: tfds.features.Text(),
        }
    )


def classification_features(class_names):
    """The TFDS features of a classification record.

    Args:
        class_names: Sequence of class names (label i is class_names[i]), or
            None to set them later (`features["label"].names = ...`).

    Returns:
        A `tfds.features.FeaturesDict`.
    """
    return tfds.features.FeaturesDict(
        {
            IMAGE_KEY: tfds.features.Image(shape=(None, None, 3)),
            CLASS_LABEL_KEY: tfds.features.ClassLabel(
                names=None if class_names is None else list(class_names)
            ),
            FILE_NAME_KEY: tfds.features.Text(),
        }
    )
