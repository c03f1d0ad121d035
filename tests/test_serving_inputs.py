"""What the serving signatures accept: image headers read before decoding, input shapes, the megapixel limit.

The checks are exercised through a saved and reloaded SavedModel, with both
loaders: TF2's `tf.saved_model.load` and the TF1 session loader that
TF Serving and `saved_model_cli run` use. Neither checks a request's shape
against the declared signature, so whatever a client sends reaches the graph.
"""

import io
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from axial_tf.data.inference import (
    ANIMATED_WEBP,
    ENCODED_IMAGE_FORMATS,
    UNKNOWN_FORMAT,
    decode_image,
    encoded_image_header,
)
from axial_tf.experiment.serving.base import (
    IMAGE_BYTES_SPEC,
    IMAGES_SPEC,
    SERVING_DEFAULT,
    SERVING_ENCODED,
    checked_image_bytes,
    checked_images,
    max_pixels_from_megapixels,
)

# ------------------------------------------------------------------ encoded files


def encode_with_pil(array, file_format, **options):
    """`array` (uint8 [H, W] or [H, W, 3]) encoded by PIL."""
    stream = io.BytesIO()
    PIL.Image.fromarray(array).save(stream, format=file_format, **options)
    return stream.getvalue()


def animation(file_format, frames, **options):
    """An animated GIF/WebP of the uint8 [H, W, 3] `frames`."""
    images = [PIL.Image.fromarray(frame) for frame in frames]
    stream = io.BytesIO()
    images[0].save(stream, format=file_format, save_all=True, append_images=images[1:], **options)
    return stream.getvalue()


def blank_png(height, width):
    """A valid black greyscale PNG of any size, compressed row by row (an 8000x8000 one is ~60 KB)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then one zero byte a pixel
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def gif_with_frame(screen, frame):
    """A GIF whose one frame (height, width) is larger than its logical screen (height, width).

    The decoder sizes its output by the frames, not by the screen the file
    header announces. The LZW data is a lone end-of-information code, so only
    the header is meaningful.
    """
    header = b"GIF89a" + struct.pack("<HHBBB", screen[1], screen[0], 0, 0, 0)
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, frame[1], frame[0], 0x80)  # with a 2-colour local table
    image_data = bytes(6) + b"\x02" + b"\x01\x05" + b"\x00"  # colour table, LZW code size, one sub-block, end
    return header + descriptor + image_data + b"\x3b"


def rng_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


read_header = tf.function(encoded_image_header, input_signature=[tf.TensorSpec([], tf.string)])


def header_of(contents):
    format_index, size, pixels = read_header(tf.constant(contents))
    return int(format_index), tuple(size.numpy().tolist()), int(pixels)


DECODABLE = {
    "JPEG": encode_with_pil(rng_image((21, 34, 3)), "JPEG"),
    "progressive JPEG": encode_with_pil(rng_image((21, 34, 3)), "JPEG", progressive=True),
    "PNG": encode_with_pil(rng_image((21, 34, 3)), "PNG"),
    "grey PNG": encode_with_pil(rng_image((13, 9)), "PNG"),
    "GIF": encode_with_pil(rng_image((21, 34, 3)), "GIF"),
    "BMP": encode_with_pil(rng_image((21, 34, 3)), "BMP"),
    "lossy WebP": encode_with_pil(rng_image((21, 34, 3)), "WEBP", quality=80),
    "lossless WebP": encode_with_pil(rng_image((21, 34, 3)), "WEBP", lossless=True),
    "extended WebP": encode_with_pil(rng_image((21, 34, 3)), "WEBP", quality=80, exif=b"Exif\x00\x00axial"),
}


@pytest.mark.parametrize("name", sorted(DECODABLE))
@pytest.mark.sweep
def test_header_size_is_the_decoded_size(name):
    format_index, size, pixels = header_of(DECODABLE[name])
    assert ENCODED_IMAGE_FORMATS[format_index] in name
    decoded = decode_image(DECODABLE[name]).numpy()
    assert size == decoded.shape[:2]
    assert pixels == decoded.shape[0] * decoded.shape[1]


def test_an_animated_gif_counts_every_frame():
    frames = [rng_image((20, 30, 3), seed) for seed in range(3)]
    format_index, size, pixels = header_of(animation("GIF", frames))
    assert ENCODED_IMAGE_FORMATS[format_index] == "GIF"
    assert size == (20, 30)
    assert pixels == 3 * 20 * 30  # the decoder keeps every frame in memory, not only the first


def test_a_gif_frame_larger_than_its_screen_sets_the_size():
    assert header_of(gif_with_frame(screen=(1, 1), frame=(5000, 4000))) == (
        ENCODED_IMAGE_FORMATS.index("GIF"), (5000, 4000), 20_000_000)


def test_an_8000_by_8000_png_is_sized_from_its_small_header():
    png = blank_png(8000, 8000)
    assert len(png) < 300_000
    assert header_of(png) == (ENCODED_IMAGE_FORMATS.index("PNG"), (8000, 8000), 64_000_000)


def test_undecodable_files_are_recognised_before_decoding():
    frames = [rng_image((8, 8, 3), seed) for seed in range(2)]
    assert header_of(animation("WEBP", frames))[0] == ANIMATED_WEBP  # TF cannot decode it to RGB
    for contents in (b"", b"hello", b"GIF", b"<svg></svg>"):
        assert header_of(contents) == (UNKNOWN_FORMAT, (0, 0), 0)


def test_megapixel_limits_must_be_positive():
    assert max_pixels_from_megapixels(16) == 16_000_000
    assert max_pixels_from_megapixels(0.5) == 500_000
    for bad in (0, -1.0, float("nan"), float("inf"), 2e6):
        with pytest.raises(ValueError, match="max_megapixels must be positive and at most 1e"):
            max_pixels_from_megapixels(bad)


# ------------------------------------------------------------------ served checks

LIMIT = 20_000  # pixels


class CheckedInputs(tf.Module):
    """Serves the two signatures' input checks alone (what a served model runs before decoding)."""

    def __init__(self):
        super().__init__()
        images = tf.function(
            lambda images: {"pixels": tf.size(checked_images(images, LIMIT))}, input_signature=[IMAGES_SPEC]
        )
        encoded = tf.function(
            lambda image_bytes: {"count": tf.size(checked_image_bytes(image_bytes, LIMIT))},
            input_signature=[IMAGE_BYTES_SPEC],
        )
        self.concrete = {
            SERVING_DEFAULT: images.get_concrete_function(), SERVING_ENCODED: encoded.get_concrete_function()
        }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The checks saved as a SavedModel, with a runner per loader: (signature, input, value) -> output."""
    path = str(tmp_path_factory.mktemp("checked") / "1")
    module = CheckedInputs()
    tf.saved_model.save(module, path, signatures=module.concrete)
    loaded = tf.saved_model.load(path)

    def run_tf2(signature, name, value):
        return next(iter(loaded.signatures[signature](**{name: tf.constant(value)}).values())).numpy()

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)

    def run_tf1(signature, name, value):
        # As TF Serving's C++ server does: the tensor is fed without Python's check against the declared shape.
        definition = meta_graph.signature_def[signature]
        feed = graph.get_tensor_by_name(definition.inputs[name].name)
        fetch = graph.get_tensor_by_name(next(iter(definition.outputs.values())).name)
        return session._call_tf_sessionrun(None, {feed._as_tf_output(): value}, [fetch._as_tf_output()], [], None)[0]

    yield {"tf2": run_tf2, "tf1": run_tf1}
    session.close()


def png(shape, seed=0):
    return encode_with_pil(rng_image(shape, seed), "PNG")


def strings(*values):
    return np.array(values, dtype=object)


REFUSED = {
    "one channel": (SERVING_DEFAULT, "images", np.zeros([1, 8, 8, 1], np.uint8),
                    "images: expected uint8 [B, H, W, 3] (RGB) with B, H, W >= 1, got shape [1 8 8 1]"),
    "empty batch": (SERVING_DEFAULT, "images", np.zeros([0, 8, 8, 3], np.uint8), "got shape [0 8 8 3]"),
    "rank 5": (SERVING_DEFAULT, "images", np.zeros([1, 8, 8, 3, 1], np.uint8), "got shape [1 8 8 3 1]"),
    "no width": (SERVING_DEFAULT, "images", np.zeros([1, 8, 0, 3], np.uint8), "got shape [1 8 0 3]"),
    "too many pixels": (SERVING_DEFAULT, "images", np.zeros([3, 100, 100, 3], np.uint8),
                        "images: 3 images of 100x100 hold 0.03 megapixels, over the limit of 0.02 megapixels"),
    "scalar": (SERVING_ENCODED, "image_bytes", np.array(png((8, 8, 3)), dtype=object),
               "image_bytes: expected string [B] (one encoded image each) with B >= 1, got shape []"),
    "empty list": (SERVING_ENCODED, "image_bytes", strings(), "got shape [0]"),
    "matrix": (SERVING_ENCODED, "image_bytes", strings([png((8, 8, 3))]), "got shape [1 1]"),
    "unknown format": (SERVING_ENCODED, "image_bytes", strings(png((8, 8, 3)), b"not an image"),
                       "image_bytes[1]: not a JPEG, PNG, GIF, BMP or still WebP image"),
    "large image": (SERVING_ENCODED, "image_bytes", strings(png((8, 8, 3)), png((200, 150, 3))),
                    "image_bytes[1]: a 200x150 image decodes to 0.03 megapixels, over the limit of 0.02"),
    "8000x8000 PNG": (SERVING_ENCODED, "image_bytes", strings(blank_png(8000, 8000)),
                      "image_bytes[0]: a 8000x8000 image decodes to 64 megapixels, over the limit of 0.02"),
    "large padded batch": (SERVING_ENCODED, "image_bytes", strings(png((10, 120, 3)), png((120, 10))),
                           "image_bytes: 2 images padded to 120x120 hold 0.029 megapixels, over the limit"),
}


@pytest.mark.parametrize("loader", ["tf2", "tf1"])
@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.full
def test_bad_requests_are_invalid_argument_naming_the_input(served, loader, case):
    signature, name, value, message = REFUSED[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        served[loader](signature, name, value)
    assert message in raised.value.message


@pytest.mark.parametrize("loader", ["tf2", "tf1"])
@pytest.mark.full
def test_requests_within_the_limit_pass(served, loader):
    assert served[loader](SERVING_DEFAULT, "images", np.zeros([2, 100, 100, 3], np.uint8)) == 2 * 100 * 100 * 3
    # Padded to 80x80: 3 x 6400 pixels.
    mixed = strings(png((80, 70, 3)), encode_with_pil(rng_image((60, 80)), "JPEG"), DECODABLE["lossy WebP"])
    assert served[loader](SERVING_ENCODED, "image_bytes", mixed) == 3
