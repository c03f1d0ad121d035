"""What every serving module shares: signature names, input checks, image decoding, weight tracking."""

import tensorflow as tf

from axial_tf.data.inference import ENCODED_IMAGE_FORMATS, encoded_image_header

SERVING_DEFAULT = "serving_default"
SERVING_ENCODED = "serving_encoded"
IMAGES_INPUT = "images"
IMAGE_BYTES_INPUT = "image_bytes"
IMAGES_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES_INPUT)
IMAGE_BYTES_SPEC = tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)
# Pixels one request may hold (B x largest H x largest W), in millions. Memory grows with
# them: the panoptic outputs, `semantic_probs` included, come back at the input resolution.
DEFAULT_MAX_MEGAPIXELS = 16.0
_LARGEST_MAX_MEGAPIXELS = 1e6  # a terapixel; pixel counts stay far inside int64
_IMAGES_EXPECTED = "uint8 [B, H, W, 3] (RGB) with B, H, W >= 1"
_IMAGE_BYTES_EXPECTED = "string [B] (one encoded image each) with B >= 1"
_FORMATS_TEXT = ", ".join(ENCODED_IMAGE_FORMATS[:-1]) + f" or still {ENCODED_IMAGE_FORMATS[-1]}"


def max_pixels_from_megapixels(max_megapixels):
    """The pixel limit of `max_megapixels` (millions of pixels).

    Args:
        max_megapixels: A number in (0, 1e6].

    Raises:
        ValueError: If it is not a positive number up to 1e6.
    """
    if not 0 < max_megapixels <= _LARGEST_MAX_MEGAPIXELS:
        raise ValueError(
            f"max_megapixels must be positive and at most {_LARGEST_MAX_MEGAPIXELS:g}, got {max_megapixels}."
        )
    return int(round(max_megapixels * 1e6))


def checked_images(images, max_pixels):
    """`images` of `serving_default`, with run-time checks of their shape and pixel count.

    Args:
        images: The signature input, uint8 [B, H, W, 3] as declared; clients
            may send any shape.
        max_pixels: Most pixels B * H * W of one request.

    Returns:
        `images`, once the checks passed (else InvalidArgumentError naming
        the input and what it must be).
    """
    shape_check = _assert_runtime_shape(images, IMAGES_INPUT, r"\[[1-9]\d* [1-9]\d* [1-9]\d* 3\]", _IMAGES_EXPECTED)
    with tf.control_dependencies([shape_check]):
        shape = tf.cast(tf.shape(images), tf.int64)
        pixels = shape[0] * shape[1] * shape[2]
        described = tf.strings.join(
            [_text(shape[0]), " images of ", _text(shape[1]), "x", _text(shape[2]), " hold ", _megapixels(pixels)]
        )
        limit_check = _assert_within_limit(pixels, max_pixels, IMAGES_INPUT, described, "per request")
    with tf.control_dependencies([limit_check]):
        return tf.identity(images)


def checked_image_bytes(image_bytes, max_pixels):
    """`image_bytes` of `serving_encoded`, checked from the image headers before anything is decoded.

    Each image must be a JPEG, PNG, GIF, BMP or still WebP file whose decoded
    pixels (all frames of a GIF) are at most `max_pixels`, and the batch padded
    to its largest height and width, B * H * W, too.

    Args:
        image_bytes: The signature input, string [B] as declared; clients may
            send any shape.
        max_pixels: Most pixels of one request.

    Returns:
        `image_bytes`, once the checks passed (else InvalidArgumentError naming
        the input, the image's index and the limit).
    """
    shape_check = _assert_runtime_shape(image_bytes, IMAGE_BYTES_INPUT, r"\[[1-9]\d*\]", _IMAGE_BYTES_EXPECTED)
    with tf.control_dependencies([shape_check]):
        formats, sizes, decoded_pixels = tf.map_fn(
            encoded_image_header,
            image_bytes,
            fn_output_signature=(tf.int32, tf.TensorSpec([2], tf.int64), tf.int64),
        )  # [B], [B, 2], [B]
        unknown = tf.argmax(tf.cast(formats < 0, tf.int32))
        format_check = tf.debugging.Assert(
            tf.reduce_all(formats >= 0),
            [tf.strings.join([_indexed(unknown), f": not a {_FORMATS_TEXT} image"])],
        )
    with tf.control_dependencies([format_check]):
        largest = tf.argmax(decoded_pixels)
        described = tf.strings.join([
            _indexed(largest), ": a ", _text(sizes[largest, 0]), "x", _text(sizes[largest, 1]),
            " image decodes to ", _megapixels(decoded_pixels[largest]),
        ])
        image_check = _assert_within_limit(decoded_pixels[largest], max_pixels, None, described, "per image")
    with tf.control_dependencies([image_check]):
        batch = tf.shape(image_bytes, out_type=tf.int64)[0]
        padded = tf.reduce_max(sizes, axis=0)  # [2]
        pixels = batch * padded[0] * padded[1]
        described = tf.strings.join([
            _text(batch), " images padded to ", _text(padded[0]), "x", _text(padded[1]), " hold ", _megapixels(pixels)
        ])
        batch_check = _assert_within_limit(pixels, max_pixels, IMAGE_BYTES_INPUT, described, "per request")
    with tf.control_dependencies([batch_check]):
        return tf.identity(image_bytes)


def _assert_runtime_shape(tensor, name, pattern, expected):
    """Asserts that `tensor`'s run-time shape, printed as e.g. "[2 480 640 3]", matches `pattern`.

    TF optimises a served graph assuming the declared signature shape, so checks
    of the rank or of a declared dimension are folded away, while TF Serving and
    loaded signatures feed whatever shape a client sends. The printed shape is
    only known at run time.
    """
    shape = tf.strings.format("{}", tf.shape(tensor), summarize=-1)
    message = tf.strings.join([f"{name}: expected {expected}, got shape ", shape])
    return tf.debugging.Assert(tf.strings.regex_full_match(shape, pattern), [message])


def _assert_within_limit(pixels, max_pixels, name, described, scope):
    prefix = f"{name}: " if name else ""
    message = tf.strings.join([
        prefix, described,
        f" megapixels, over the limit of {max_pixels / 1e6:g} megapixels {scope} (max_megapixels, set at export)",
    ])
    return tf.debugging.Assert(pixels <= max_pixels, [message])


def _text(value):
    return tf.strings.as_string(value)


def _megapixels(pixels):
    """Millions of pixels as text, to three decimals without trailing zeros (e.g. "64", "0.013")."""
    return tf.strings.as_string(tf.round(tf.cast(pixels, tf.float64) / 1e3) / 1e3, shortest=True)


def _indexed(index):
    return tf.strings.join([f"{IMAGE_BYTES_INPUT}[", _text(index), "]"])


class UntrackedReference:
    """Holds an object without making it a SavedModel dependency of its `tf.Module`."""

    def __init__(self, value):
        self.value = value


def _backing_tf_variable(variable):
    """The `tf.Variable` behind a Keras variable.

    Tracking the Keras wrapper would make `tf.saved_model.save` write a second,
    restorable copy of each variable (Keras exports the wrapper as a new
    `tf.Variable`) while the functions read the original: TF2's loader copes,
    but TF Serving and `saved_model_cli run` (the TF1 loader) then read
    uninitialised variables.
    """
    value = getattr(variable, "value", variable)
    if not isinstance(value, tf.Variable):
        raise TypeError(f"Variable {getattr(variable, 'path', variable)} is not backed by a tf.Variable.")
    return value


class ServingModule(tf.Module):
    """Base of the serving modules: the model's weights plus two serving signatures.

    Subclasses implement `_serve_images(images)` (uint8 [B, H, W, 3]) and
    `_serve_encoded(image_bytes)` (string [B]), each returning a dict of
    tensors; the signatures first check their input (`checked_images`,
    `checked_image_bytes`), so a request of the wrong shape, of an unknown
    format or over `max_megapixels` fails with InvalidArgument before
    anything is decoded or predicted. Only the weights are tracked, not the
    Keras model: saving the model object would also trace and store Keras'
    own serving functions. The tf.functions are not attributes either, so
    `tf.saved_model.save` stores the already traced signatures instead of
    tracing them again.

    Args:
        model: The Keras model.
        name: Module name.
        max_megapixels: Most pixels (millions) of one request.
    """

    def __init__(self, model, name, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
        super().__init__(name=name)
        self._model = UntrackedReference(model)
        self.model_variables = [_backing_tf_variable(variable) for variable in model.variables]
        self._functions = UntrackedReference({})
        self._max_pixels = max_pixels_from_megapixels(max_megapixels)
        self._max_megapixels = float(max_megapixels)

    @property
    def model(self):
        """The wrapped Keras model."""
        return self._model.value

    @property
    def max_megapixels(self):
        """Most pixels (millions) one request may hold."""
        return self._max_megapixels

    def serve_images(self, images):
        """The `serving_default` signature: uint8 images [B, H, W, 3] -> dict of tensors."""
        return self.signature_function(SERVING_DEFAULT)(images)

    def serve_encoded(self, image_bytes):
        """The `serving_encoded` signature: [B] JPEG/PNG strings -> dict of tensors."""
        return self.signature_function(SERVING_ENCODED)(image_bytes)

    def signature_function(self, name):
        """The `tf.function` of signature `name` (traced once, then cached)."""
        functions = self._functions.value
        if name not in functions:
            implementations = {
                SERVING_DEFAULT: (self._serve_checked_images, IMAGES_SPEC),
                SERVING_ENCODED: (self._serve_checked_image_bytes, IMAGE_BYTES_SPEC),
            }
            if name not in implementations:
                raise ValueError(f"Unknown signature {name!r}; known: {sorted(implementations)}.")
            python_function, spec = implementations[name]
            functions[name] = tf.function(python_function, input_signature=[spec])
        return functions[name]

    def _serve_checked_images(self, images):
        return self._serve_images(checked_images(images, self._max_pixels))

    def _serve_checked_image_bytes(self, image_bytes):
        return self._serve_encoded(checked_image_bytes(image_bytes, self._max_pixels))

    def signatures(self):
        """The concrete functions to export, by signature name."""
        names = (SERVING_DEFAULT, SERVING_ENCODED)
        return {name: self.signature_function(name).get_concrete_function() for name in names}
