"""Bilinear resizing with aligned corners, in keras.ops (DeepLab2's resize convention)."""

from keras import ops


def _resize_axis(x, axis, size):
    """Resizes one spatial axis so that the first and last samples stay in place."""
    length = ops.shape(x)[axis]
    scale = ops.cast(length - 1, "float32") / ops.cast(ops.maximum(size - 1, 1), "float32")
    position = ops.cast(ops.arange(size), "float32") * scale  # source coordinate of each output
    lower = ops.cast(ops.floor(position), "int32")
    upper = ops.minimum(lower + 1, length - 1)
    weight = position - ops.cast(lower, "float32")
    shape = [1] * len(x.shape)
    shape[axis] = -1
    weight = ops.cast(ops.reshape(weight, shape), x.dtype)
    low, high = ops.take(x, lower, axis=axis), ops.take(x, upper, axis=axis)
    return low + (high - low) * weight


def resize_bilinear_align_corners(images, size):
    """Resizes `[B, H, W, C]` images to `size = (height, width)` with aligned corners.

    Equivalent to TF1's `resize_bilinear(align_corners=True)`, which DeepLab2 uses
    everywhere; corner pixels map onto corner pixels, so a stride-s feature map
    and the image it came from stay registered.
    """
    height, width = size
    return _resize_axis(_resize_axis(images, 1, height), 2, width)
