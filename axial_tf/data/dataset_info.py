"""Dataset descriptors: what the model, targets and metrics need to know.

Every panoptic builder stores its records in one layout (see `records.py`) and
describes its label space with a `PanopticDatasetInfo`; classification builders
use a `ClassificationDatasetInfo`. The descriptors are plain frozen dataclasses
that round-trip through JSON, so a builder can keep one in its TFDS metadata and
a trainer can rebuild it from the prepared dataset alone.
"""

import dataclasses
import json

# Panoptic label encoding shared by every panoptic builder of the project.
DEFAULT_LABEL_DIVISOR = 1000
DEFAULT_IGNORE_LABEL = 255


@dataclasses.dataclass(frozen=True)
class PanopticDatasetInfo:
    """Label space of a panoptic dataset.

    A panoptic label pixel is `semantic * label_divisor + instance`. Void pixels
    have semantic class `ignore_label` (value `ignore_label * label_divisor`);
    stuff pixels have instance 0; thing instances have ids >= 1 and a thing
    pixel with instance 0 is crowd (the convention of `axial_tf.targets`).

    Attributes:
        name: Dataset name (the TFDS builder name plus config, for messages).
        class_names: Name of each contiguous train id 0..num_classes-1.
        thing_class_ids: Train ids of the classes that have instances.
        label_divisor: Multiplier of the semantic class in a panoptic label.
        ignore_label: Semantic class of void pixels.
        splits: Number of examples per split when known (empty otherwise).
        category_ids: The dataset's own id of each train id (COCO category
            ids, Cityscapes label ids), which the official result formats
            name classes by; default the train ids themselves.

    Example:
        >>> info = PanopticDatasetInfo(
        ...     name="toy", class_names=("sky", "disc"), thing_class_ids=(1,),
        ...     category_ids=(7, 24))
        >>> info.num_classes, info.stuff_class_ids, info.void_label
        (2, (0,), 255000)
    """

    name: str
    class_names: tuple
    thing_class_ids: tuple
    label_divisor: int = DEFAULT_LABEL_DIVISOR
    ignore_label: int = DEFAULT_IGNORE_LABEL
    splits: dict = dataclasses.field(default_factory=dict)
    category_ids: tuple = None

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(
            self, "thing_class_ids", tuple(sorted(int(i) for i in self.thing_class_ids))
        )
        object.__setattr__(self, "splits", {str(k): int(v) for k, v in self.splits.items()})
        num_classes = len(self.class_names)
        if num_classes == 0:
            raise ValueError(f"Dataset {self.name!r} has no classes.")
        category_ids = range(num_classes) if self.category_ids is None else self.category_ids
        object.__setattr__(self, "category_ids", tuple(int(i) for i in category_ids))
        distinct = {i for i in self.category_ids if i >= 0}
        if len(self.category_ids) != num_classes or len(distinct) != num_classes:
            raise ValueError(
                f"Dataset {self.name!r}: category_ids {list(self.category_ids)} must be {num_classes} "
                "distinct non-negative ids, one per class."
            )
        for class_id in self.thing_class_ids:
            if not 0 <= class_id < num_classes:
                raise ValueError(
                    f"Dataset {self.name!r}: thing class id {class_id} is outside "
                    f"[0, {num_classes})."
                )
        if not num_classes <= self.ignore_label < self.label_divisor:
            raise ValueError(
                f"Dataset {self.name!r}: ignore_label={self.ignore_label} must be >= "
                f"num_classes={num_classes} and < label_divisor={self.label_divisor}."
            )

    @property
    def num_classes(self):
        """Number of semantic classes (void excluded)."""
        return len(self.class_names)

    @property
    def stuff_class_ids(self):
        """Train ids of the classes without instances."""
        things = set(self.thing_class_ids)
        return tuple(i for i in range(self.num_classes) if i not in things)

    @property
    def void_label(self):
        """The panoptic value of a void pixel."""
        return self.ignore_label * self.label_divisor

    def to_json(self):
        """Serialises the descriptor to a JSON string."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Rebuilds a descriptor from `to_json()` output."""
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True)
class ClassificationDatasetInfo:
    """Label space of an image classification dataset.

    Attributes:
        name: Dataset name.
        class_names: Name of each label id 0..num_classes-1.
        splits: Number of examples per split when known (empty otherwise).

    Example:
        >>> ClassificationDatasetInfo(name="pets", class_names=("cat", "dog")).num_classes
        2
    """

    name: str
    class_names: tuple
    splits: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(self, "splits", {str(k): int(v) for k, v in self.splits.items()})
        if not self.class_names:
            raise ValueError(f"Dataset {self.name!r} has no classes.")

    @property
    def num_classes(self):
        """Number of classes."""
        return len(self.class_names)

    def to_json(self):
        """Serialises the descriptor to a JSON string."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Rebuilds a descriptor from `to_json()` output."""
        return cls(**json.loads(text))
