"""Prediction on image files through the serving signature (SavedModel or live model).

Both sources run the same `serving_default` graph code, so `tools/predict.py`
gives the same maps from an export as from the checkpoint it was made from.
"""

import io
import math
import os
import warnings

import numpy as np
import PIL.Image
import tensorflow as tf

from axial_tf.data.inference import ENCODED_IMAGE_FORMATS, decode_image, encoded_image_header
from axial_tf.experiment.serving.base import (
    DEFAULT_MAX_MEGAPIXELS,
    SERVING_DEFAULT,
    max_pixels_from_megapixels,
)
from axial_tf.export.exporter import build_serving_module
from axial_tf.export.runtimes import load_exported, numpy_signature
from axial_tf.export.saved_model import read_export_info, resolve_saved_model
from axial_tf.utils.errors import error_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# `read_downscaled_image_file` decodes images of up to this many times the limit (PIL holds ~4 bytes a pixel).
DOWNSCALE_MAX_FACTOR = 8
# The header parser walks a GIF's blocks in a loop: traced once, it runs as one graph.
_read_header = tf.function(encoded_image_header, input_signature=[tf.TensorSpec([], tf.string)])


class ImageTooLargeError(ValueError):
    """An image file holds more pixels than may be decoded.

    Attributes:
        size: Its (height, width).
    """

    def __init__(self, message, size):
        super().__init__(message)
        self.size = tuple(size)


def read_image_file(path, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
    """Reads an image file with the decoder of the `serving_encoded` signature, checking its size first.

    The size is read from the header, so an image over `max_megapixels` is
    refused before it takes any memory (`read_downscaled_image_file` shrinks
    it instead).

    Args:
        path: A JPEG/PNG/GIF/BMP/WebP file.
        max_megapixels: Most pixels (millions) to decode; all frames of a GIF count.

    Returns:
        uint8 [H, W, 3] RGB.

    Raises:
        ImageTooLargeError: If the image is over `max_megapixels` (names the file).
        ValueError: If the file cannot be read or decoded (names the file).
    """
    contents, size, decoded_pixels = _read_with_header(path)
    if decoded_pixels > max_pixels_from_megapixels(max_megapixels):
        raise ImageTooLargeError(
            f"Image {path} is {_describe_size(size, decoded_pixels)}, over the limit of {max_megapixels:g} "
            "megapixels (--max_megapixels); pass --downscale to predict it at a reduced size.",
            size,
        )
    return _decoded(path, contents)


def read_downscaled_image_file(path, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
    """Reads an image file shrunk, keeping its aspect ratio, to at most `max_megapixels`.

    An image within the limit is read as `read_image_file` reads it. A larger
    one is decoded with PIL (a JPEG at a reduced DCT scale, not at full size)
    and resized; images over DOWNSCALE_MAX_FACTOR times the limit are refused.

    Args:
        path: A JPEG/PNG/GIF/BMP/WebP file.
        max_megapixels: Most pixels (millions) of the returned image.

    Returns:
        uint8 [h, w, 3] RGB.

    Raises:
        ValueError: If the file cannot be read or decoded, or is too large even to shrink.
    """
    max_pixels = max_pixels_from_megapixels(max_megapixels)
    contents, size, decoded_pixels = _read_with_header(path)
    if decoded_pixels <= max_pixels:
        return _decoded(path, contents)
    if decoded_pixels > DOWNSCALE_MAX_FACTOR * max_pixels:
        raise ImageTooLargeError(
            f"Image {path} is {_describe_size(size, decoded_pixels)}, over {DOWNSCALE_MAX_FACTOR} times the limit "
            f"of {max_megapixels:g} megapixels that --downscale decodes; shrink it first.",
            size,
        )
    return _decoded_and_shrunk(path, contents.numpy(), fitted_size(size, max_pixels))


def _decoded_and_shrunk(path, contents, size):
    """uint8 [height, width, 3] of encoded `contents` resized to `size` (height, width), decoded by PIL."""
    height, width = size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # the caller bounded the size
        try:
            with PIL.Image.open(io.BytesIO(contents)) as image:
                image.draft("RGB", (width, height))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, not full size
                if image.mode in ("1", "P"):  # palette images only resize with nearest neighbours
                    image = image.convert("RGB")
                resized = image.resize((width, height), PIL.Image.Resampling.BILINEAR, reducing_gap=2.0)
        except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
            raise ValueError(f"Cannot read image {path}: {error}") from None
    return np.asarray(resized.convert("RGB"))


def _read_with_header(path):
    """The file's bytes (string tensor), (height, width) and decoded pixel count, read from its header.

    Raises:
        ValueError: If the file cannot be read or is not in a decodable format (names the file).
    """
    try:
        contents = tf.io.read_file(os.fspath(path))
        format_index, size, decoded_pixels = _read_header(contents)
    except tf.errors.OpError as error:
        raise ValueError(f"Cannot read image {path}: {error_line(error)}") from None
    if int(format_index) < 0:
        formats = ", ".join(ENCODED_IMAGE_FORMATS[:-1])
        raise ValueError(f"Cannot read image {path}: not a {formats} or still {ENCODED_IMAGE_FORMATS[-1]} file.")
    return contents, size.numpy().tolist(), int(decoded_pixels)


def _decoded(path, contents):
    """uint8 [H, W, 3] of the file's bytes, decoded as `serving_encoded` decodes them."""
    try:
        image = decode_image(contents).numpy()
    except tf.errors.OpError as error:
        raise ValueError(f"Cannot read image {path}: {error_line(error)}") from None
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"Cannot read image {path}: it has no pixels ({image.shape[0]}x{image.shape[1]}).")
    return image


def _describe_size(size, decoded_pixels):
    height, width = size
    return f"{height}x{width} ({round(decoded_pixels / 1e6, 3):g} megapixels to decode)"


def fitted_size(size, max_pixels):
    """The largest (height, width) with `size`'s aspect ratio and at most `max_pixels` pixels.

    Args:
        size: (height, width).
        max_pixels: The pixel limit.

    Returns:
        (height, width), each at least 1.
    """
    scale = min(1.0, math.sqrt(max_pixels / (size[0] * size[1])))
    height, width = (max(1, math.floor(side * scale)) for side in size)
    # A side rounded up to one pixel leaves the other the whole budget, no more.
    if height == 1:
        width = min(width, max_pixels)
    if width == 1:
        height = min(height, max_pixels)
    return height, width


def list_images(path):
    """The image files named by `path`: the file itself, or a folder's image files (sorted, not recursive).

    Args:
        path: An image file or a folder.

    Returns:
        List of file paths.

    Raises:
        FileNotFoundError: If the path does not exist or the folder has no images.
    """
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        names = sorted(n for n in tf.io.gfile.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise FileNotFoundError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}.")
        return [os.path.join(path, name) for name in names]
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Input {path} does not exist.")
    return [path]


def output_stems(files):
    """Output name stem of each input file: its name without extension, or with it if two stems clash.

    Args:
        files: Input paths.

    Returns:
        List of stems, one per file, all distinct when the file names are.
    """
    stems = [os.path.splitext(os.path.basename(path))[0] for path in files]
    if len(set(stems)) == len(stems):
        return stems
    return [os.path.basename(path).replace(".", "_") for path in files]


class Predictor:
    """Runs `serving_default` on one image at a time.

    Args:
        function: Callable taking uint8 [1, H, W, 3] (keyword `images`) and
            returning a dict of tensors.
        info: The serving module's `label_space` dict (task, class names, label encoding).
        owner: Object that must outlive `function` (the loaded SavedModel
            whose variables the signature reads).

    Example:
        >>> predictor = Predictor.from_saved_model("exports/demo/1")
        >>> outputs = predictor(read_image_file("street.png"))
        >>> outputs["panoptic_pred"].shape  # (H, W)
    """

    def __init__(self, predict_batch, info, owner=None):
        self._predict_batch = predict_batch  # uint8 [B, H, W, 3] -> dict of NumPy arrays [B, ...]
        self._owner = owner
        self.info = info

    @property
    def task(self):
        """The name of the model's task ("panoptic", "semantic" or "classification")."""
        return self.info["task"]

    @property
    def max_megapixels(self):
        """Most pixels (millions) the model takes per call; None for exports that predate the limit."""
        return self.info.get("max_megapixels")

    @classmethod
    def from_saved_model(cls, saved_model_dir):
        """A predictor of an export written by `tools/export.py`.

        Args:
            saved_model_dir: The SavedModel directory, or a serving base
                folder (its highest version is used, as TF Serving does).

        Returns:
            A `Predictor`.
        """
        saved_model_dir = resolve_saved_model(saved_model_dir)
        info = read_export_info(saved_model_dir)
        loaded = tf.saved_model.load(saved_model_dir)
        return cls(numpy_signature(loaded.signatures[SERVING_DEFAULT]), info, owner=loaded)

    @classmethod
    def from_exported(cls, path, precision="float32"):
        """A predictor of any export of `tools/export.py`, its format detected from `path`.

        Args:
            path: A SavedModel (or serving base) folder, or a `.onnx`, OpenVINO `.xml` or
                `.tflite` file (or the folder holding it); see `load_exported`.
            precision: "float32", or "bfloat16" for OpenVINO and SavedModel exports (see `load_exported`).

        Returns:
            A `Predictor` whose outputs are those of the export's `serving_default`.
        """
        exported = load_exported(path, precision=precision)
        return cls(exported, exported.info, owner=exported)

    @classmethod
    def from_experiment(
        cls, config=None, model_dir=None, checkpoint=None, keras_model=None, top_k=5, image_size=None,
        max_megapixels=DEFAULT_MAX_MEGAPIXELS,
    ):
        """A predictor of a checkpoint or `.keras` model (arguments as `build_serving_module`).

        Returns:
            A `Predictor`.
        """
        module, dataset_info = build_serving_module(
            config, model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model, top_k=top_k,
            image_size=image_size, max_megapixels=max_megapixels,
        )
        return cls(numpy_signature(module.signature_function(SERVING_DEFAULT)), module.label_space(dataset_info))

    def __call__(self, image):
        """Predictions for one uint8 RGB image [H, W, 3], as NumPy arrays without the batch dim."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}.")
        return {name: value[0] for name, value in self._predict_batch(image[np.newaxis]).items()}

