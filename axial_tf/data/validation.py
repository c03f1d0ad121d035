"""Reading and validating source files for the dataset builders.

Every builder turns a bad source file into a `DataValidationError` that names
the file. An `InvalidExampleLog` then either re-raises it (the default) or, when
the builder was configured with `skip_invalid=True`, counts and skips the
example and reports the count in the builder's metadata and the log. A split
left without any valid example is an error naming the split, its source and
the first reasons examples were skipped.

Images larger than PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`,
which this module leaves as the user set it) are invalid examples too.
"""

import contextlib
import io
import pathlib
import warnings

import numpy as np
import PIL.Image
from absl import logging

from axial_tf.data import records

# How many skipped-example messages are kept in the metadata (the count is exact).
_MAX_REPORTED_MESSAGES = 20
# How many of them the error for a split without valid examples quotes.
_MAX_QUOTED_REASONS = 3


class DataValidationError(ValueError):
    """A source file of a dataset is missing, corrupt or has invalid labels."""


def read_image_for_record(path):
    """Reads and checks an image, returning what a TFDS `Image` feature stores.

    The source bytes are kept when TF decodes them to the same pixels as PIL
    (RGB or grayscale PNG/JPEG); other images are converted to RGB and
    re-encoded as PNG.

    Args:
        path: Image file path.

    Returns:
        A tuple `(encoded_image, (height, width))`; `encoded_image` is bytes.

    Raises:
        DataValidationError: If the file is missing, cannot be decoded or is
            over PIL's decompression-bomb pixel limit.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataValidationError(f"Missing image file {path}.")
    data = path.read_bytes()
    with _decoding_errors_as_invalid(path, "image"):
        with PIL.Image.open(io.BytesIO(data)) as image:
            image.load()  # Decodes every pixel: a truncated file fails here.
            size = (image.height, image.width)
            if image.format in ("JPEG", "PNG") and image.mode in ("RGB", "L"):
                return data, size
            return encode_png(np.asarray(image.convert("RGB"))), size


@contextlib.contextmanager
def _decoding_errors_as_invalid(path, what):
    """Turns PIL's errors while decoding `path` into a `DataValidationError`.

    PIL only warns about images between its pixel limit and twice the limit
    (and raises above); both become invalid examples here, so one oversized
    file cannot stall or exhaust a whole preparation. The warning filter is
    changed only inside this block.

    Args:
        path: The file being decoded, named in the message.
        what: "image" or "panoptic label file", for the message.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
        try:
            yield
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as error:
            raise DataValidationError(
                f"Oversized {what} {path}: {error} Raise PIL.Image.MAX_IMAGE_PIXELS if the "
                "file is trusted."
            ) from error
        except (OSError, SyntaxError, ValueError) as error:
            raise DataValidationError(f"Corrupt or unreadable {what} {path}: {error}") from error


def encode_png(array):
    """Encodes a uint8 array [H, W] or [H, W, 3] as PNG bytes (deterministic)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def read_coco_panoptic_png(path):
    """Reads a COCO-format panoptic PNG into segment ids.

    COCO stores a segment id as `R + 256 * G + 256**2 * B`; id 0 is void.

    Args:
        path: PNG file path.

    Returns:
        int32 array [H, W] of segment ids.

    Raises:
        DataValidationError: If the file is missing, corrupt, oversized or not
            an RGB PNG.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataValidationError(f"Missing panoptic label file {path}.")
    with _decoding_errors_as_invalid(path, "panoptic label file"):
        with PIL.Image.open(path) as image:
            image.load()
            mode = image.mode
            rgb = np.asarray(image.convert("RGB"), dtype=np.int32)  # [H, W, 3]
    if mode not in ("RGB", "RGBA"):
        raise DataValidationError(
            f"Panoptic label file {path} has mode {mode!r}; COCO panoptic PNGs are "
            "RGB (id = R + 256 * G + 256**2 * B)."
        )
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def validate_panoptic_label(panoptic_label, info, source):
    """Checks that every label value belongs to the dataset's label space.

    Args:
        panoptic_label: int32 array [H, W].
        info: The dataset's `PanopticDatasetInfo`.
        source: Description of the label's origin (file name) for the message.

    Raises:
        DataValidationError: If a value has a semantic class outside
            [0, num_classes) that is not void, or is negative.
    """
    semantic = panoptic_label // info.label_divisor  # [H, W]
    invalid = (panoptic_label < 0) | (
        (semantic >= info.num_classes) & (semantic != info.ignore_label)
    )
    if invalid.any():
        values = np.unique(panoptic_label[invalid])[:5].tolist()
        raise DataValidationError(
            f"{source}: panoptic label values {values} are outside the classes of "
            f"{info.name} (semantic ids 0..{info.num_classes - 1}, void "
            f"{info.ignore_label}, label_divisor {info.label_divisor})."
        )


class InvalidExampleLog:
    """Fails on, or counts and skips, invalid examples of one split.

    Example:
        >>> log = InvalidExampleLog("my_dataset", "train", "/data/train", skip_invalid=True)
        >>> for path in paths:
        ...     try:
        ...         example = load(path)
        ...     except DataValidationError as error:
        ...         log.record(error)
        ...         continue
        ...     log.accept()
        ...     yield path, example
        >>> log.finish(builder.info.metadata)
    """

    def __init__(self, dataset_name, split, source, skip_invalid):
        """Initialises the log.

        Args:
            dataset_name: Name used in the report.
            split: Split being generated.
            source: The split's source files (a folder or annotation file),
                named when the split has no valid example.
            skip_invalid: If False, `record` re-raises the error.
        """
        self.dataset_name = dataset_name
        self.split = split
        self.source = source
        self.skip_invalid = skip_invalid
        self.count = 0
        self.num_valid = 0
        self.messages = []

    def record(self, error):
        """Re-raises `error`, or counts it when skipping invalid examples."""
        if not self.skip_invalid:
            raise error
        self.count += 1
        if len(self.messages) < _MAX_REPORTED_MESSAGES:
            self.messages.append(str(error))

    def accept(self):
        """Counts one valid example."""
        self.num_valid += 1

    def finish(self, metadata):
        """Reports the skipped examples; fails if the split has no valid example.

        The report is stored in the builder metadata under
        `records.INVALID_EXAMPLES_KEY`[split] and a skip count is logged as a
        warning. The check for valid examples comes before TFDS's own
        ("No examples were yielded"), which names neither split nor source.

        Args:
            metadata: The builder's `tfds.core.MetadataDict`.

        Raises:
            DataValidationError: If no example of the split was valid.
        """
        report = metadata.setdefault(records.INVALID_EXAMPLES_KEY, {})
        report[self.split] = {"count": self.count, "messages": list(self.messages)}
        if not self.num_valid:
            raise DataValidationError(self._no_valid_example_message())
        if self.count:
            logging.warning(
                "%s: skipped %d invalid example(s) of split %r, e.g. %s",
                self.dataset_name,
                self.count,
                self.split,
                self.messages[0],
            )

    def _no_valid_example_message(self):
        """One line naming the split, its source and the first skip reasons."""
        message = f"{self.dataset_name}: split {self.split!r} has no valid example in {self.source}"
        if not self.count:
            return f"{message}: it lists no examples."
        reasons = " | ".join(
            " ".join(reason.split()) for reason in self.messages[:_MAX_QUOTED_REASONS]
        )
        return f"{message}: all {self.count} were skipped as invalid, e.g. {reasons}"
