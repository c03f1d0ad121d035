"""Stateless, label-aligned augmentations for the tf.data pipelines.

Every random op takes an explicit seed (int64 [2]) and uses TF's stateless
random ops, so an augmented example depends only on its seed, not on thread
scheduling or on how many examples were drawn before it. Images are float32
[H, W, 3] in [0, 255]; panoptic labels are int32 [H, W]. Geometric ops move
image and label together (bilinear for the image, nearest for the label, same
pixel-centre convention); colour ops touch only the image.
"""

import dataclasses

import tensorflow as tf

# Sub-seeds of one example: scale, crop, flip, photometric, autoaugment.
NUM_EXAMPLE_SEEDS = 5


@dataclasses.dataclass(frozen=True)
class AugmentationOptions:
    """Training augmentation of the panoptic pipeline.

    Attributes:
        min_scale: Smallest random resize factor.
        max_scale: Largest random resize factor.
        scale_step: Spacing of the allowed factors (DeepLab2 uses 0.1 or 0.25);
            0 draws the factor uniformly.
        flip_probability: Chance of a horizontal flip.
        brightness_delta: Max brightness change, as a fraction of 255.
        contrast_range: (lower, upper) contrast factor.
        saturation_range: (lower, upper) saturation factor.
        hue_delta: Max hue rotation (fraction of a turn, <= 0.5).
        autoaugment_probability: Chance of one extra colour op from a light
            AutoAugment-style policy (autocontrast, solarize, posterize,
            sharpness); 0 turns it off. Geometric AutoAugment ops are left
            out because they would have to move the label too.

    Example:
        >>> options = AugmentationOptions(min_scale=0.75, max_scale=1.5, scale_step=0.25)
    """

    min_scale: float = 0.5
    max_scale: float = 2.0
    scale_step: float = 0.25
    flip_probability: float = 0.5
    brightness_delta: float = 0.125
    contrast_range: tuple = (0.75, 1.25)
    saturation_range: tuple = (0.75, 1.25)
    hue_delta: float = 0.03
    autoaugment_probability: float = 0.0

    def __post_init__(self):
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"Need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}."
            )
        if self.scale_step < 0:
            raise ValueError(f"scale_step must be >= 0, got {self.scale_step}.")
        for name in ("flip_probability", "autoaugment_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}.")
        if not 0 <= self.hue_delta <= 0.5:
            raise ValueError(f"hue_delta must lie in [0, 0.5], got {self.hue_delta}.")
        for name in ("contrast_range", "saturation_range"):
            lower, upper = getattr(self, name)
            if not 0 <= lower <= upper:
                raise ValueError(f"{name} must be (lower, upper) with 0 <= lower <= upper.")
        object.__setattr__(self, "contrast_range", tuple(self.contrast_range))
        object.__setattr__(self, "saturation_range", tuple(self.saturation_range))


def example_seeds(seed, input_pipeline_id, example_index):
    """The sub-seeds of one example.

    Args:
        seed: Python int, the run's seed.
        input_pipeline_id: Python int or scalar tensor, the reading worker.
        example_index: int64 scalar, position of the example in the stream.

    Returns:
        int64 [NUM_EXAMPLE_SEEDS, 2].
    """
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(input_pipeline_id, tf.int64)])
    key = tf.random.experimental.stateless_fold_in(base, tf.cast(example_index, tf.int64))
    return tf.random.experimental.stateless_split(key, NUM_EXAMPLE_SEEDS)


def resize_image_and_label(image, label, size):
    """Resizes image (bilinear) and label (nearest) to `size` = [height, width]."""
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label[..., tf.newaxis], size, method="nearest")[..., 0]
    return image, label


def random_scale(image, label, seed, min_scale, max_scale, scale_step):
    """Resizes image and label by a random factor in [min_scale, max_scale].

    Args:
        image: float32 [H, W, 3].
        label: int32 [H, W].
        seed: int64 [2].
        min_scale: Smallest factor.
        max_scale: Largest factor.
        scale_step: Spacing of the factors; 0 for a continuous factor.

    Returns:
        The resized (image, label).
    """
    if scale_step > 0:
        num_steps = int((max_scale - min_scale) / scale_step + 1e-6) + 1
        step = tf.random.stateless_uniform([], seed, 0, num_steps, dtype=tf.int32)
        scale = min_scale + tf.cast(step, tf.float32) * scale_step
    else:
        scale = tf.random.stateless_uniform([], seed, min_scale, max_scale)
    size = tf.cast(tf.shape(label), tf.float32)
    new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
    return resize_image_and_label(image, label, new_size)


def pad_to_size(image, label, size, pad_value, void_label):
    """Pads image and label at the bottom/right up to at least `size`.

    Args:
        image: float32 [H, W, 3].
        label: int32 [H, W].
        size: (height, width) to reach.
        pad_value: Image fill value (the model's mean pixel).
        void_label: Label fill value (ignore_label * label_divisor).

    Returns:
        (image [max(H, h), max(W, w), 3], label [max(H, h), max(W, w)]).
    """
    shape = tf.shape(label)
    pad_height = tf.maximum(size[0] - shape[0], 0)
    pad_width = tf.maximum(size[1] - shape[1], 0)
    image = tf.pad(image, [[0, pad_height], [0, pad_width], [0, 0]], constant_values=pad_value)
    label = tf.pad(label, [[0, pad_height], [0, pad_width]], constant_values=void_label)
    return image, label


def random_crop(image, label, seed, crop_size):
    """Crops the same random window of `crop_size` from image and label.

    The inputs must be at least `crop_size` (see `pad_to_size`).
    """
    shape = tf.shape(label)
    offsets = []
    for axis, seed_index in ((0, 0), (1, 1)):
        room = shape[axis] - crop_size[axis] + 1
        axis_seed = tf.random.experimental.stateless_split(seed, 2)[seed_index]
        offsets.append(tf.random.stateless_uniform([], axis_seed, 0, room, dtype=tf.int32))
    image = tf.slice(image, [offsets[0], offsets[1], 0], [crop_size[0], crop_size[1], 3])
    label = tf.slice(label, offsets, crop_size)
    return image, label


def random_horizontal_flip(image, label, seed, probability):
    """Flips image and label left-right together with `probability`."""
    flip = tf.random.stateless_uniform([], seed) < probability
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


def photometric_augment(image, seed, options):
    """Random brightness, contrast, saturation and hue (in that order).

    Args:
        image: float32 [H, W, 3] in [0, 255].
        seed: int64 [2].
        options: `AugmentationOptions`.

    Returns:
        float32 [H, W, 3] in [0, 255].
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    image = image / 255.0
    if options.brightness_delta > 0:
        image = tf.image.stateless_random_brightness(image, options.brightness_delta, seeds[0])
    if options.contrast_range[0] < options.contrast_range[1]:
        image = tf.image.stateless_random_contrast(image, *options.contrast_range, seed=seeds[1])
    if options.saturation_range[0] < options.saturation_range[1]:
        image = tf.clip_by_value(image, 0.0, 1.0)  # Saturation needs valid RGB.
        image = tf.image.stateless_random_saturation(
            image, *options.saturation_range, seed=seeds[2]
        )
    if options.hue_delta > 0:
        image = tf.image.stateless_random_hue(
            tf.clip_by_value(image, 0.0, 1.0), options.hue_delta, seeds[3]
        )
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def light_autoaugment(image, seed, probability):
    """With `probability`, applies one random colour op of a light policy.

    The ops (autocontrast, solarize, posterize, sharpness) change pixel values
    only, so the label needs no change.

    Args:
        image: float32 [H, W, 3] in [0, 255].
        seed: int64 [2].
        probability: Chance of applying an op.

    Returns:
        float32 [H, W, 3] in [0, 255].
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    apply = tf.random.stateless_uniform([], seeds[0]) < probability
    op_index = tf.random.stateless_uniform([], seeds[1], 0, 4, dtype=tf.int32)
    magnitude = tf.random.stateless_uniform([], seeds[2])  # In [0, 1).
    branches = [
        lambda: _autocontrast(image),
        lambda: _solarize(image, threshold=128.0 + 127.0 * magnitude),
        lambda: _posterize(image, bits=4 + tf.cast(magnitude * 3, tf.int32)),
        lambda: _sharpness(image, factor=0.1 + 1.8 * magnitude),
    ]
    augmented = tf.cond(apply, lambda: tf.switch_case(op_index, branches), lambda: image)
    return tf.clip_by_value(augmented, 0.0, 255.0)


def _autocontrast(image):
    """Stretches each channel to [0, 255] (unchanged if the channel is flat)."""
    low = tf.reduce_min(image, axis=[0, 1], keepdims=True)  # [1, 1, 3]
    high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    stretched = (image - low) * 255.0 / tf.maximum(high - low, 1e-3)
    return tf.where(high > low, stretched, image)


def _solarize(image, threshold):
    """Inverts the pixels at or above `threshold`."""
    return tf.where(image >= threshold, 255.0 - image, image)


def _posterize(image, bits):
    """Keeps the `bits` most significant bits of each 8-bit channel value."""
    step = tf.cast(tf.bitwise.left_shift(1, 8 - bits), tf.float32)
    return tf.floor(tf.clip_by_value(image, 0.0, 255.0) / step) * step


def _sharpness(image, factor):
    """Blends with a smoothed copy: factor < 1 blurs, > 1 sharpens."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])  # [3, 3, 3, 1]
    # Mirror padding: zero padding would darken the border.
    padded = tf.pad(image[tf.newaxis], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    smooth = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")[0]
    return tf.clip_by_value(smooth + factor * (image - smooth), 0.0, 255.0)
