"""The one preprocessing of evaluation, prediction and export.

Evaluation (`pipeline.build_panoptic_eval_dataset`), `tools/predict.py` and the
exported SavedModel all call `InferencePreprocessor` (and, for
classification, `classification_eval_image`), so their inputs, and hence
their outputs, agree. Only stock TF ops are used, so the functions also run in
a SavedModel graph served by TF Serving. Normalisation happens inside the
model: images leave here as float32 in [0, 255].
"""

import dataclasses

import tensorflow as tf

RESIZE_POLICIES = ("pad", "shrink", "fit")
_RESTORE_KINDS = ("label", "logits", "offsets")


@dataclasses.dataclass(frozen=True)
class InferencePreprocessor:
    """Resizes and pads images to the model's fixed input size, and back.

    The image is resized (keeping its aspect ratio, bilinear) according to
    `resize_policy`, then padded at the bottom/right with `pad_value` to
    `height` x `width`:
      - "pad": never resize; an image larger than the input size is an error.
      - "shrink": downscale only images that do not fit.
      - "fit": scale every image so that it just fits.
    A size-preserving resize is the identity, so an image of exactly the
    input size passes through unchanged.

    Attributes:
        height: Model input height.
        width: Model input width.
        resize_policy: One of RESIZE_POLICIES.
        pad_value: Image fill value (DeepLab2 pads with the mean pixel 127.5).

    Example:
        >>> preprocessor = InferencePreprocessor(height=1025, width=2049)
        >>> image, meta = preprocessor.preprocess_image(raw_image)  # uint8 [H, W, 3]
        >>> outputs = model(image[tf.newaxis])
        >>> panoptic = preprocessor.restore(outputs_panoptic[0], meta, kind="label")
    """

    height: int
    width: int
    resize_policy: str = "shrink"
    pad_value: float = 127.5

    def __post_init__(self):
        if self.resize_policy not in RESIZE_POLICIES:
            raise ValueError(
                f"resize_policy must be one of {RESIZE_POLICIES}, got {self.resize_policy!r}."
            )
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"Input size must be positive, got {self.height}x{self.width}.")

    @property
    def size(self):
        """The model input size (height, width)."""
        return (self.height, self.width)

    def preprocess_image(self, image):
        """Resizes and pads one image, or a batch of same-sized images.

        Args:
            image: uint8 or float [H, W, 3] or [B, H, W, 3], values in [0, 255].

        Returns:
            A tuple `(image, meta)`: float32 [height, width, 3] (or
            [B, height, width, 3]) and a dict with `original_size` and
            `valid_size`, int32 [2] each (the size before, and the size of the
            image content after resizing; the rest is padding).
        """
        image = tf.cast(image, tf.float32)
        original_size = tf.shape(image)[-3:-1]
        valid_size = self._resized_size(original_size)
        image = tf.image.resize(image, valid_size, method="bilinear")
        image = self._pad(image, valid_size, self.pad_value)
        return image, {"original_size": original_size, "valid_size": valid_size}

    def preprocess_label(self, panoptic_label, meta, void_label):
        """Applies `preprocess_image`'s resize and pad to a label map.

        Args:
            panoptic_label: int32 [H, W] or [B, H, W].
            meta: The `meta` returned for the matching image.
            void_label: Fill value of the padding (ignore_label * label_divisor).

        Returns:
            int32 [height, width] (or [B, height, width]).
        """
        label = tf.image.resize(
            panoptic_label[..., tf.newaxis], meta["valid_size"], method="nearest"
        )
        return self._pad(label, meta["valid_size"], void_label)[..., 0]

    def restore(self, prediction, meta, kind="label"):
        """Maps one prediction at the input size back to the original image.

        Args:
            prediction: [height, width] or [height, width, C] for one image.
            meta: The `meta` of that image (int32 [2] entries).
            kind: "label" (nearest; panoptic/semantic maps), "logits" (bilinear)
                or "offsets" (bilinear, and the (dy, dx) vectors rescaled).

        Returns:
            The prediction at the original size, same rank and dtype.
        """
        return self.restore_batch(prediction[tf.newaxis], meta, kind=kind)[0]

    def restore_batch(self, predictions, meta, kind="label"):
        """`restore` of the predictions of a batch of images that share one `meta` (one size).

        Args:
            predictions: [B, height, width] or [B, height, width, C].
            meta: The images' `meta` (int32 [2] entries).
            kind: As for `restore`.

        Returns:
            The predictions at the original size, same rank and dtype.
        """
        if kind not in _RESTORE_KINDS:
            raise ValueError(f"kind must be one of {_RESTORE_KINDS}, got {kind!r}.")
        valid_size, original_size = meta["valid_size"], meta["original_size"]
        has_channels = predictions.shape.rank == 4
        restored = predictions if has_channels else predictions[..., tf.newaxis]  # [B, h, w, C]
        restored = restored[:, : valid_size[0], : valid_size[1]]
        method = "nearest" if kind == "label" else "bilinear"
        restored = tf.cast(tf.image.resize(restored, original_size, method=method), predictions.dtype)
        if kind == "offsets":
            ratio = tf.cast(original_size, tf.float32) / tf.cast(valid_size, tf.float32)  # (y, x)
            restored = restored * tf.cast(ratio, restored.dtype)
        return restored if has_channels else restored[..., 0]

    def _resized_size(self, original_size):
        """Content size after the resize policy, int32 [2]."""
        target = tf.constant(self.size, tf.int32)
        if self.resize_policy == "pad":
            with tf.control_dependencies(
                [
                    tf.debugging.assert_less_equal(
                        original_size,
                        target,
                        message=(
                            f"Image larger than the model input {self.height}x{self.width} "
                            "with resize_policy='pad'"
                        ),
                    )
                ]
            ):
                return tf.identity(original_size)
        ratio = tf.cast(target, tf.float32) / tf.cast(original_size, tf.float32)
        scale = tf.reduce_min(ratio)
        if self.resize_policy == "shrink":
            scale = tf.minimum(scale, 1.0)
        resized = tf.cast(tf.round(tf.cast(original_size, tf.float32) * scale), tf.int32)
        return tf.clip_by_value(resized, 1, target)

    def _pad(self, tensor, valid_size, value):
        """Pads [..., h, w, C] at the bottom/right to [..., height, width, C]."""
        paddings = [[0, self.height - valid_size[0]], [0, self.width - valid_size[1]], [0, 0]]
        if tensor.shape.rank == 4:
            paddings = [[0, 0]] + paddings
        padded = tf.pad(tensor, paddings, constant_values=tf.cast(value, tensor.dtype))
        return tf.ensure_shape(
            padded, [None] * (tensor.shape.rank - 3) + [self.height, self.width, None]
        )


def classification_eval_image(image, image_size, crop_fraction=0.875):
    """Center crop and resize: the classification eval/predict/export preprocessing.

    Args:
        image: uint8 or float [H, W, 3] in [0, 255], or a batch [B, H, W, 3] of
            same-sized images.
        image_size: Output side length.
        crop_fraction: Side of the central square crop relative to the
            shorter image side (0.875 is the usual 224/256).

    Returns:
        float32 [image_size, image_size, 3] (or [B, image_size, image_size, 3]) in [0, 255].
    """
    image = tf.cast(image, tf.float32)
    height, width = tf.shape(image)[-3], tf.shape(image)[-2]
    side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * crop_fraction, tf.int32)
    side = tf.maximum(side, 1)
    top = (height - side) // 2
    left = (width - side) // 2
    rows, cols = slice(top, top + side), slice(left, left + side)
    crop = image[:, rows, cols] if image.shape.rank == 4 else image[rows, cols]
    return tf.ensure_shape(
        tf.image.resize(crop, [image_size, image_size], method="bilinear"),
        [*image.shape[:-3], image_size, image_size, 3],
    )


# The encoded formats whose size `encoded_image_header` reads before `decode_image` decodes them.
ENCODED_IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP")
UNKNOWN_FORMAT = -1
ANIMATED_WEBP = -2  # TF's decoder cannot return its frames as RGB; refused before decoding
_HEADER_LENGTH = 32
_MAGIC = {
    "JPEG": b"\xff\xd8\xff",
    "PNG": b"\x89PNG\r\n\x1a\n",
    "GIF": b"GIF8",
    "BMP": b"BM",
}


def encoded_image_header(contents):
    """Format and size of an encoded image, read from its header without decoding it.

    What a decoder will allocate is known from a few header bytes: PNG's IHDR,
    JPEG's frame header (`tf.io.extract_jpeg_shape`), BMP's info header,
    WebP's VP8/VP8L/VP8X chunk. A GIF's frame descriptors are walked, since
    its canvas is the extent of all frames and the decoder keeps every frame.
    Only stock ops, so this also runs inside a served SavedModel.

    Args:
        contents: A string scalar tensor with the encoded file.

    Returns:
        A tuple `(format_index, size, decoded_pixels)`: int32 index into
        ENCODED_IMAGE_FORMATS (UNKNOWN_FORMAT or ANIMATED_WEBP when it is not
        decodable), int64 [2] (height, width) and int64 pixels the decoder
        holds (height * width; all frames of a GIF). Sizes are 0 when the
        format is not decodable.
    """
    header = _leading_bytes(contents, _HEADER_LENGTH)
    format_index = _format_index(header)
    branches = [
        lambda: _jpeg_size(contents),
        lambda: _single_frame(_uint(header, 20, 4, big_endian=True), _uint(header, 16, 4, big_endian=True)),
        lambda: _gif_size(contents, header),
        lambda: _single_frame(tf.abs(_int32_le(header, 22)), tf.abs(_int32_le(header, 18))),
        lambda: _webp_size(header),
    ]
    known = format_index >= 0
    size, decoded_pixels = tf.switch_case(
        tf.where(known, format_index, len(branches)), branches, default=lambda: _single_frame(0, 0)
    )
    return format_index, size, decoded_pixels


def decode_image(contents):
    """Decodes JPEG/PNG/GIF/BMP/WebP bytes to uint8 RGB [H, W, 3] (grey is expanded, alpha dropped).

    Args:
        contents: A string scalar tensor with the encoded file.

    Returns:
        uint8 [H, W, 3] (the first frame of an animation).
    """
    image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def _leading_bytes(contents, count):
    """The first `count` bytes of `contents`, uint8 [count], zero-padded when the file is shorter."""
    padded = tf.strings.join([tf.strings.substr(contents, 0, count), tf.constant(b"\0" * count)])
    return tf.ensure_shape(tf.io.decode_raw(tf.strings.substr(padded, 0, count), tf.uint8), [count])


def _starts_with(header, magic, offset=0):
    expected = tf.constant(list(magic), tf.uint8)
    return tf.reduce_all(tf.equal(header[offset : offset + len(magic)], expected))


def _format_index(header):
    """Index into ENCODED_IMAGE_FORMATS of the file's signature bytes, or UNKNOWN_FORMAT / ANIMATED_WEBP."""
    index = tf.constant(UNKNOWN_FORMAT, tf.int32)
    for position, name in enumerate(ENCODED_IMAGE_FORMATS[:-1]):
        index = tf.where(_starts_with(header, _MAGIC[name]), position, index)
    webp = tf.logical_and(_starts_with(header, b"RIFF"), _starts_with(header, b"WEBP", offset=8))
    animated = tf.logical_and(_starts_with(header, b"VP8X", offset=12), tf.bitwise.bitwise_and(header[20], 2) > 0)
    webp_index = tf.where(animated, ANIMATED_WEBP, len(ENCODED_IMAGE_FORMATS) - 1)
    return tf.where(webp, webp_index, index)


def _uint(header, start, length, big_endian):
    """The unsigned integer in `header[start : start + length]`, as int64."""
    values = tf.cast(header[start : start + length], tf.int64)
    weights = [256**k for k in range(length)]
    return tf.reduce_sum(values * tf.constant(weights[::-1] if big_endian else weights, tf.int64))


def _int32_le(header, start):
    """The signed little-endian int32 at `start` (BMP stores a top-down image with a negative height)."""
    value = _uint(header, start, 4, big_endian=False)
    return tf.where(value >= 2**31, value - 2**32, value)


def _single_frame(height, width):
    size = tf.cast(tf.stack([height, width]), tf.int64)
    return size, size[0] * size[1]


def _jpeg_size(contents):
    shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)  # [height, width, channels]
    return _single_frame(shape[0], shape[1])


def _webp_size(header):
    """The canvas of a WebP: from its VP8X, lossless VP8L or lossy VP8 chunk."""
    chunk = header[12:16]
    is_extended = tf.reduce_all(tf.equal(chunk, tf.constant(list(b"VP8X"), tf.uint8)))
    is_lossless = tf.reduce_all(tf.equal(chunk, tf.constant(list(b"VP8L"), tf.uint8)))
    extended = (_uint(header, 27, 3, big_endian=False) + 1, _uint(header, 24, 3, big_endian=False) + 1)
    bits = _uint(header, 21, 4, big_endian=False)  # 14 bits width - 1, then 14 bits height - 1
    lossless = (tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1,
                tf.bitwise.bitwise_and(bits, 0x3FFF) + 1)
    lossy = (tf.bitwise.bitwise_and(_uint(header, 28, 2, big_endian=False), 0x3FFF),
             tf.bitwise.bitwise_and(_uint(header, 26, 2, big_endian=False), 0x3FFF))
    height = tf.where(is_extended, extended[0], tf.where(is_lossless, lossless[0], lossy[0]))
    width = tf.where(is_extended, extended[1], tf.where(is_lossless, lossless[1], lossy[1]))
    return _single_frame(height, width)


def _color_table_bytes(flags):
    """Size of the colour table announced by a GIF flags byte (bit 7: present; bits 0-2: log2 entries - 1)."""
    entries = tf.bitwise.left_shift(tf.constant(2, tf.int64), tf.bitwise.bitwise_and(flags, 7))
    return tf.where(tf.bitwise.bitwise_and(flags, 0x80) > 0, 3 * entries, tf.constant(0, tf.int64))


def _gif_size(contents, header):
    """Canvas (extent of all frames) and total frame pixels of a GIF, walking its blocks.

    A GIF is a sequence of blocks: image descriptors (0x2C, followed by an
    optional colour table and LZW data sub-blocks), extensions (0x21, label,
    sub-blocks) and the trailer (0x3B). Each sub-block starts with its length;
    a zero length ends a chain. Every step moves forward by at least a byte.
    """
    length = tf.cast(tf.strings.length(contents), tf.int64)
    padded = tf.strings.join([contents, tf.constant(b"\0" * 10)])
    start = 13 + _color_table_bytes(tf.cast(header[10], tf.int64))

    def read(position):  # 10 bytes from `position`, as int64
        block = tf.strings.substr(padded, position, tf.constant(10, tf.int64))
        return tf.cast(tf.io.decode_raw(block, tf.uint8), tf.int64)

    def step(position, in_sub_blocks, height, width, pixels):
        block = tf.ensure_shape(read(position), [10])
        is_image = tf.logical_and(tf.logical_not(in_sub_blocks), tf.equal(block[0], 0x2C))
        is_extension = tf.logical_and(tf.logical_not(in_sub_blocks), tf.equal(block[0], 0x21))
        left, top = block[1] + 256 * block[2], block[3] + 256 * block[4]
        frame_width, frame_height = block[5] + 256 * block[6], block[7] + 256 * block[8]
        next_position = tf.where(
            in_sub_blocks,
            position + 1 + block[0],
            tf.where(is_image, position + 11 + _color_table_bytes(block[9]),
                     tf.where(is_extension, position + 2, length)),  # trailer or garbage: stop
        )
        next_in_sub_blocks = tf.where(in_sub_blocks, block[0] > 0, tf.logical_or(is_image, is_extension))
        zero = tf.constant(0, tf.int64)
        return (
            next_position,
            next_in_sub_blocks,
            tf.maximum(height, tf.where(is_image, top + frame_height, zero)),
            tf.maximum(width, tf.where(is_image, left + frame_width, zero)),
            pixels + tf.where(is_image, frame_width * frame_height, zero),
        )

    zero = tf.constant(0, tf.int64)
    _, _, height, width, pixels = tf.while_loop(
        lambda position, *_: position < length, step, (start, tf.constant(False), zero, zero, zero)
    )
    return tf.stack([height, width]), tf.maximum(pixels, height * width)
