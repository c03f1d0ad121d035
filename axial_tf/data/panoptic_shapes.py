"""`panoptic_shapes`: the offline, procedurally generated demo dataset.

Scenes come from `shapes_renderer.render_scene`; example `i` of a split is
drawn from `numpy.random.default_rng([seed, split_code, i])`, so the dataset is
a pure function of its config (same seed -> identical records) and any example
can be regenerated alone.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from axial_tf.data import records
from axial_tf.data import shapes_renderer
from axial_tf.data import validation
from axial_tf.data.dataset_info import PanopticDatasetInfo

# Mixed into every example seed so that the splits never share a scene.
_SPLIT_CODES = {"train": 0, "validation": 1}


@dataclasses.dataclass
class PanopticShapesConfig(tfds.core.BuilderConfig, shapes_renderer.SceneOptions):
    """Size, resolution and content of a `panoptic_shapes` build.

    It is the renderer's `SceneOptions` (height, width, instance counts, crowd and
    void probabilities, label divisor, ignore label) plus what the build adds.

    Attributes:
        num_train: Number of training examples.
        num_validation: Number of validation examples.
        seed: Seed of the whole dataset.

    Example:
        >>> config = PanopticShapesConfig(name="mine", height=96, width=96,
        ...                               num_train=500, num_validation=50, seed=3)
        >>> builder = PanopticShapes(config=config, data_dir="/tmp/tfds")
    """

    num_train: int = 3000
    num_validation: int = 300
    seed: int = 0


class PanopticShapes(tfds.core.GeneratorBasedBuilder):
    """Procedural panoptic scenes: textured stuff and overlapping shapes.

    Classes (train ids): 0 sky, 1 ground, 2 water (stuff); 3 disc, 4 box,
    5 triangle, 6 ring (things). Label divisor 1000 and void 255 unless the
    config says otherwise.

    Example:
        >>> builder = PanopticShapes(config="tiny", data_dir="/tmp/tfds")
        >>> builder.download_and_prepare()
        >>> dataset = builder.as_dataset(split="train")
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        PanopticShapesConfig(
            name="small",
            description="64x64, 3000 train / 300 validation: the demo training set.",
        ),
        PanopticShapesConfig(
            name="tiny",
            description="64x64, 24 train / 8 validation: for tests (builds in seconds).",
            num_train=24,
            num_validation=8,
            crowd_probability=0.3,
            void_probability=0.3,
        ),
        PanopticShapesConfig(
            name="medium",
            description="128x128, 6000 train / 500 validation, up to 10 instances.",
            height=128,
            width=128,
            num_train=6000,
            num_validation=500,
            min_instances=3,
            max_instances=10,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "small"

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Procedurally generated panoptic scenes (axial_tf demo dataset): sky, "
                "ground and water stuff; disc, box, triangle and ring things with "
                "varied size, colour and texture; crowd and void regions; lighting, "
                "blur and noise."
            ),
            features=records.panoptic_features(),
            metadata=tfds.core.MetadataDict({records.METADATA_KEY: self.dataset_info().to_json()}),
        )

    def uses_manual_dir(self):
        """The data are generated: no manual dir."""
        return False

    def dataset_info(self, manual_dir=None):
        """The label space of this dataset as a `PanopticDatasetInfo`."""
        del manual_dir  # Generated data have no sources.
        config = self.builder_config
        return PanopticDatasetInfo(
            name=f"panoptic_shapes/{config.name}",
            class_names=shapes_renderer.CLASS_NAMES,
            thing_class_ids=shapes_renderer.THING_CLASS_IDS,
            label_divisor=config.label_divisor,
            ignore_label=config.ignore_label,
            splits={"train": config.num_train, "validation": config.num_validation},
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "validation": self._generate_examples("validation", config.num_validation),
        }

    def _generate_examples(self, split, num_examples):
        """Yields `(key, record)` for every example of a split."""
        config = self.builder_config
        info = self.dataset_info()
        for index in range(num_examples):
            rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
            image, panoptic_label = shapes_renderer.render_scene(rng, config)
            file_name = f"{split}_{index:06d}.png"
            # The renderer cannot produce bad labels; this guards against a bug in it.
            validation.validate_panoptic_label(panoptic_label, info, file_name)
            yield file_name, {
                records.IMAGE_KEY: validation.encode_png(image),
                records.PANOPTIC_LABEL_KEY: panoptic_label,
                records.FILE_NAME_KEY: file_name,
            }
