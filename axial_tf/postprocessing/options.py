"""Options of the Panoptic-DeepLab post-processor."""

import dataclasses
import math
from typing import Tuple

# DeepLab2 has two merge implementations that differ in three observable ways.
# `merge_op` is its compiled MergeSemanticAndInstanceMaps op (the path DeepLab2
# recommends, with the CUDA kernel's instance order); `tf_merge` is its pure-TF
# fallback (`merge_semantic_and_instance_with_tf_op: false`).
MERGE_STYLES = {
    "merge_op": {
        "stuff_area_rule": "keep_above_limit",
        "instance_numbering": "by_center_order",
        "things_without_center": "one_segment",
    },
    "tf_merge": {
        "stuff_area_rule": "keep_at_least_limit",
        "instance_numbering": "by_first_appearance",
        "things_without_center": "void",
    },
}

STUFF_AREA_RULES = ("keep_above_limit", "keep_at_least_limit")
INSTANCE_NUMBERINGS = ("by_center_order", "by_first_appearance")
THINGS_WITHOUT_CENTER = ("one_segment", "void")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class PostProcessOptions:
    """Options of `panoptic_postprocess` (validated on construction).

    Attributes:
        thing_class_ids: Semantic classes that have instances (stored sorted).
        label_divisor: Panoptic label = semantic * label_divisor + instance.
        void_label: Semantic label of void pixels (panoptic value
            `void_label * label_divisor`).
        center_threshold: Heatmap values not strictly greater than this are
            not centers (compared in float32).
        nms_kernel: Side of the square max-pooling window of the center NMS
            (zero padding, TF "SAME" placement for even sizes).
        keep_k_centers: Keep at most this many centers per image, the highest
            scores (ties broken in raster order); <= 0 keeps all.
        stuff_area_limit: Stuff classes whose area (all regions of the class in
            the image together) fails `stuff_area_rule` become void.
        stuff_area_rule: "keep_above_limit": a stuff class is kept iff its area
            > limit, so a limit of 0 disables the rule (DeepLab2 merge op,
            fixtures/panoptic_postprocess). "keep_at_least_limit": kept iff
            area >= limit (DeepLab2 pure-TF merge).
        instance_numbering: How per-class instance ids 1, 2, ... are handed
            out. "by_center_order": in increasing class-agnostic id, i.e. the
            raster order of the centers (DeepLab2 CUDA merge kernel).
            "by_first_appearance": in order of each instance's first pixel in a
            raster scan (DeepLab2 pure-TF merge).
        things_without_center: Thing pixels when an image has no center at
            all. "one_segment": they form one instance of their majority class
            (DeepLab2 merge op); "void": they stay void (pure-TF merge).

    Example:
        >>> options = PostProcessOptions(thing_class_ids=(11, 12, 13))
        >>> tf_style = PostProcessOptions.with_merge_style(
        ...     "tf_merge", thing_class_ids=(3, 4), stuff_area_limit=300)
    """

    thing_class_ids: Tuple[int, ...]
    label_divisor: int = 1000
    void_label: int = 255
    center_threshold: float = 0.1
    nms_kernel: int = 7
    keep_k_centers: int = 200
    stuff_area_limit: int = 0
    stuff_area_rule: str = "keep_above_limit"
    instance_numbering: str = "by_center_order"
    things_without_center: str = "one_segment"

    def __post_init__(self):
        thing_ids = self.thing_class_ids
        if isinstance(thing_ids, (str, bytes)) or not hasattr(thing_ids, "__iter__"):
            raise ValueError(
                f"thing_class_ids must be a sequence of ints, got {thing_ids!r}."
            )
        thing_ids = tuple(thing_ids)
        if not thing_ids:
            raise ValueError("thing_class_ids must name at least one thing class.")
        for class_id in thing_ids:
            if not _is_int(class_id) or class_id < 0:
                raise ValueError(
                    f"thing_class_ids must hold non-negative ints, got {class_id!r}."
                )
        if len(set(thing_ids)) != len(thing_ids):
            raise ValueError(f"thing_class_ids has duplicates: {thing_ids!r}.")
        # Sorted ids make "ties go to the smaller class" an argmax tie-break.
        object.__setattr__(self, "thing_class_ids", tuple(sorted(thing_ids)))

        self._check_int("label_divisor", minimum=1)
        self._check_int("void_label", minimum=0)
        self._check_int("nms_kernel", minimum=1)
        self._check_int("keep_k_centers", minimum=None)
        self._check_int("stuff_area_limit", minimum=0)
        if self.void_label in self.thing_class_ids:
            raise ValueError(
                f"void_label {self.void_label} is also listed in thing_class_ids."
            )
        threshold = self.center_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ValueError(f"center_threshold must be a float, got {threshold!r}.")
        if not math.isfinite(threshold):
            raise ValueError(f"center_threshold must be finite, got {threshold!r}.")
        self._check_choice("stuff_area_rule", STUFF_AREA_RULES)
        self._check_choice("instance_numbering", INSTANCE_NUMBERINGS)
        self._check_choice("things_without_center", THINGS_WITHOUT_CENTER)

    def _check_int(self, field_name, minimum):
        value = getattr(self, field_name)
        if not _is_int(value):
            raise ValueError(f"{field_name} must be an int, got {value!r}.")
        if minimum is not None and value < minimum:
            raise ValueError(f"{field_name} must be >= {minimum}, got {value}.")

    def _check_choice(self, field_name, choices):
        value = getattr(self, field_name)
        if value not in choices:
            raise ValueError(f"{field_name} must be one of {choices}, got {value!r}.")

    @classmethod
    def with_merge_style(cls, style, **kwargs):
        """Builds options whose merge behaviour follows one DeepLab2 path.

        Args:
            style: "merge_op" (DeepLab2's compiled merge op) or "tf_merge"
                (its pure-TF fallback); see `MERGE_STYLES`.
            **kwargs: The other fields of `PostProcessOptions`.

        Returns:
            A `PostProcessOptions`.
        """
        if style not in MERGE_STYLES:
            raise ValueError(
                f"merge style must be one of {tuple(MERGE_STYLES)}, got {style!r}."
            )
        clashing = sorted(set(kwargs) & set(MERGE_STYLES[style]))
        if clashing:
            raise ValueError(f"with_merge_style sets {clashing} itself; do not pass them.")
        return cls(**MERGE_STYLES[style], **kwargs)

    def to_dict(self):
        """Returns the options as a JSON-friendly dict (inverse of `from_dict`)."""
        config = dataclasses.asdict(self)
        config["thing_class_ids"] = list(self.thing_class_ids)
        return config

    @classmethod
    def from_dict(cls, config):
        """Builds options from a dict; unknown keys are an error.

        Args:
            config: Mapping of field name to value.

        Returns:
            A `PostProcessOptions`.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"Unknown post-processing option(s) {unknown}; known: {sorted(known)}."
            )
        return cls(**config)
