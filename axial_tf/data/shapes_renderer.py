"""Procedural renderer of the `panoptic_shapes` scenes (numpy only, no TF).

A scene is a textured stuff background (sky, ground, water) with several
textured, possibly overlapping thing instances (disc, box, triangle, ring),
sometimes a crowd cluster of tiny objects and sometimes a corrupted patch
labelled void, followed by lighting, blur and noise. Everything is drawn from
one `numpy.random.Generator`, so a scene is a pure function of its seed.

Design for learnability: every instance keeps at least 60 % of its own area
and a minimum number of pixels visible, and its colour contrasts with the
background under it, so boundaries are always visible; the class is carried by
the shape (colours and textures are random), and the stuff classes by their
texture and layout.
"""

import colorsys
import dataclasses

import numpy as np

from axial_tf.data.dataset_info import DEFAULT_IGNORE_LABEL, DEFAULT_LABEL_DIVISOR

STUFF_CLASS_NAMES = ("sky", "ground", "water")
THING_CLASS_NAMES = ("disc", "box", "triangle", "ring")
CLASS_NAMES = STUFF_CLASS_NAMES + THING_CLASS_NAMES
SKY, GROUND, WATER, DISC, BOX, TRIANGLE, RING = range(len(CLASS_NAMES))
THING_CLASS_IDS = (DISC, BOX, TRIANGLE, RING)

# An instance may lose at most this fraction of its area to later instances.
_MAX_OCCLUDED_FRACTION = 0.4
# Minimum RGB distance between an instance colour and the background under it.
_MIN_CONTRAST = 70.0
_PLACEMENT_ATTEMPTS = 25


# Keyword-only, so that `PanopticShapesConfig` can add these fields to a tfds BuilderConfig.
@dataclasses.dataclass(kw_only=True)
class SceneOptions:
    """What a rendered scene may contain.

    Attributes:
        height: Image height in pixels.
        width: Image width in pixels.
        min_instances: Fewest thing instances per image (fewer only if they
            cannot be placed without heavy occlusion).
        max_instances: Most thing instances per image.
        crowd_probability: Chance that an image has a crowd cluster.
        void_probability: Chance that an image has a corrupted patch labelled void.
        label_divisor: Panoptic label divisor.
        ignore_label: Semantic class of void pixels.
    """

    height: int = 64
    width: int = 64
    min_instances: int = 2
    max_instances: int = 6
    crowd_probability: float = 0.1
    void_probability: float = 0.1
    label_divisor: int = DEFAULT_LABEL_DIVISOR
    ignore_label: int = DEFAULT_IGNORE_LABEL

    @property
    def min_instance_area(self):
        """Fewest visible pixels of an instance (scales with the image)."""
        return max(12, int(0.01 * self.height * self.width))


def render_scene(rng, options):
    """Renders one scene.

    Args:
        rng: A `numpy.random.Generator`; the scene depends only on its state.
        options: A `SceneOptions`.

    Returns:
        A tuple `(image, panoptic_label)`: uint8 [H, W, 3] and int32 [H, W]
        (`semantic * label_divisor + instance`, void = ignore * divisor).
    """
    height, width = options.height, options.width
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5  # [H, W] each
    semantic, image = _render_background(rng, rows, cols)  # [H, W], [H, W, 3]
    panoptic = semantic.astype(np.int32) * options.label_divisor  # [H, W]

    if rng.random() < options.crowd_probability:
        _paint_crowd(rng, rows, cols, image, panoptic, options)
    instance_masks = _paint_instances(rng, rows, cols, image, panoptic, options)
    if rng.random() < options.void_probability:
        _paint_void_patch(rng, image, panoptic, instance_masks, options)

    image = _apply_camera_effects(rng, rows, cols, image)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), panoptic


# ---------------------------------------------------------------- background


def _render_background(rng, rows, cols):
    """Lays out and textures the stuff classes.

    Returns:
        A tuple: semantic class per pixel int32 [H, W] and image float32 [H, W, 3].
    """
    height, width = rows.shape
    semantic = np.full((height, width), GROUND, np.int32)
    if rng.random() < 0.75:
        # Landscape: sky above a wavy horizon, ground and/or water below.
        horizon = height * rng.uniform(0.25, 0.6) + height * rng.uniform(0, 0.06) * np.sin(
            2 * np.pi * cols / (width * rng.uniform(0.5, 1.5)) + rng.uniform(0, 2 * np.pi)
        )  # [H, W]
        below_horizon = rows >= horizon
        layout = rng.choice(["ground", "water", "split", "shore"])
        if layout == "water":
            semantic[:] = WATER
        elif layout == "split":
            boundary = width * rng.uniform(0.3, 0.7) + width * 0.05 * np.sin(
                rows / height * rng.uniform(3, 8)
            )
            water_left = rng.random() < 0.5
            semantic[(cols < boundary) == water_left] = WATER
        elif layout == "shore":
            shore = horizon + (height - horizon) * rng.uniform(0.3, 0.7)
            semantic[rows < shore] = WATER
        semantic[~below_horizon] = SKY
    else:
        # Aerial view: lakes in ground (or islands in water) from thresholded noise.
        field = _smooth_noise(rng, height, width, cells=3)
        semantic[field > rng.uniform(-0.3, 0.5)] = WATER
    image = np.zeros((height, width, 3), np.float32)
    for class_id, texture in (
        (SKY, _sky_texture),
        (GROUND, _ground_texture),
        (WATER, _water_texture),
    ):
        region = semantic == class_id
        if region.any():
            image[region] = texture(rng, rows, cols)[region]
    return semantic, image


def _sky_texture(rng, rows, cols):
    """Vertical gradient (blue, or sometimes a sunset) with soft clouds."""
    height, width = rows.shape
    hue = rng.uniform(0.02, 0.1) if rng.random() < 0.15 else rng.uniform(0.55, 0.64)
    top = _hsv(hue, rng.uniform(0.45, 0.8), rng.uniform(0.65, 0.95))
    bottom = _hsv(hue, rng.uniform(0.1, 0.35), rng.uniform(0.85, 1.0))
    t = (rows / height)[..., None]  # [H, W, 1]
    image = top * (1 - t) + bottom * t
    clouds = np.clip(_smooth_noise(rng, height, width, cells=4) - 0.3, 0, 1)[..., None]
    return image * (1 - 0.6 * clouds) + 250.0 * 0.6 * clouds


def _ground_texture(rng, rows, cols):
    """Earthy colour with grain and patchy shading."""
    height, width = rows.shape
    base = _hsv(rng.uniform(0.05, 0.16), rng.uniform(0.3, 0.65), rng.uniform(0.35, 0.65))
    shading = 1 + 0.15 * _smooth_noise(rng, height, width, cells=6)  # [H, W]
    grain = rng.normal(0, 14, (height, width, 1))
    return base * shading[..., None] + grain


def _water_texture(rng, rows, cols):
    """Blue-green with horizontal ripples."""
    height, width = rows.shape
    base = _hsv(rng.uniform(0.45, 0.6), rng.uniform(0.45, 0.85), rng.uniform(0.35, 0.7))
    period = rng.uniform(2.5, 5.0)
    ripples = np.sin(2 * np.pi * rows / period + 1.5 * np.sin(cols / rng.uniform(4, 9)))
    shading = 1 + 0.1 * _smooth_noise(rng, height, width, cells=3) + 0.12 * ripples
    return base * shading[..., None]


# -------------------------------------------------------------------- things


def _paint_instances(rng, rows, cols, image, panoptic, options):
    """Paints thing instances back to front, keeping each mostly visible.

    Returns:
        The list of instance masks bool [H, W], updated to their visible part.
    """
    num_wanted = rng.integers(options.min_instances, options.max_instances + 1)
    masks, full_areas = [], []
    next_instance_id = {class_id: 1 for class_id in THING_CLASS_IDS}
    for _ in range(num_wanted):
        class_id = THING_CLASS_IDS[rng.integers(len(THING_CLASS_IDS))]
        mask = _place_shape(rng, rows, cols, class_id, masks, full_areas, options)
        if mask is None:
            continue
        _paint_textured(rng, rows, cols, image, mask)
        for index, visible in enumerate(masks):
            masks[index] = visible & ~mask
        masks.append(mask)
        full_areas.append(int(mask.sum()))
        panoptic[mask] = class_id * options.label_divisor + next_instance_id[class_id]
        next_instance_id[class_id] += 1
    return masks


def _place_shape(rng, rows, cols, class_id, masks, full_areas, options):
    """Draws a shape that leaves every earlier instance mostly visible.

    Returns:
        bool [H, W] mask of the shape, or None if no placement was found.
    """
    size = min(options.height, options.width)
    for _ in range(_PLACEMENT_ATTEMPTS):
        center = (rng.uniform(0.05, 0.95) * options.height, rng.uniform(0.05, 0.95) * options.width)
        radius = size * rng.uniform(0.08, 0.2)
        mask = _shape_mask(rng, rows, cols, class_id, center, radius)
        if mask.sum() < options.min_instance_area:
            continue
        keeps_others_visible = all(
            (visible & ~mask).sum()
            >= max((1 - _MAX_OCCLUDED_FRACTION) * area, options.min_instance_area)
            for visible, area in zip(masks, full_areas)
        )
        if keeps_others_visible:
            return mask
    return None


def _shape_mask(rng, rows, cols, class_id, center, radius):
    """Rasterises a randomly posed shape of class `class_id`. Returns bool [H, W]."""
    dy, dx = rows - center[0], cols - center[1]
    angle = rng.uniform(0, np.pi)
    # Coordinates in the shape's rotated frame.
    u = dy * np.cos(angle) + dx * np.sin(angle)
    v = -dy * np.sin(angle) + dx * np.cos(angle)
    if class_id == DISC:
        aspect = rng.uniform(0.85, 1.15)
        return (u / aspect) ** 2 + (v * aspect) ** 2 <= radius**2
    if class_id == BOX:
        half_height, half_width = radius * rng.uniform(0.55, 0.9), radius * rng.uniform(0.55, 0.9)
        return (np.abs(u) <= half_height) & (np.abs(v) <= half_width)
    if class_id == RING:
        distance = np.sqrt(dy**2 + dx**2)
        outer = radius * 1.1
        return (distance <= outer) & (distance >= outer * rng.uniform(0.45, 0.65))
    # Triangle: three vertices at jittered angles around the center.
    vertex_angles = angle + 2 * np.pi * np.arange(3) / 3 + rng.uniform(-0.25, 0.25, 3)
    vertex_radii = radius * 1.2 * rng.uniform(0.85, 1.15, 3)
    vertices = np.stack(
        [
            center[0] + vertex_radii * np.sin(vertex_angles),
            center[1] + vertex_radii * np.cos(vertex_angles),
        ],
        axis=1,
    )  # [3, 2] (y, x)
    return _triangle_mask(rows, cols, vertices)


def _triangle_mask(rows, cols, vertices):
    """Pixels inside the triangle with (y, x) vertices [3, 2]. Returns bool [H, W]."""
    signs = []
    for i in range(3):
        (y0, x0), (y1, x1) = vertices[i], vertices[(i + 1) % 3]
        signs.append((x1 - x0) * (rows - y0) - (y1 - y0) * (cols - x0))
    signs = np.stack(signs)  # [3, H, W]
    return np.all(signs >= 0, axis=0) | np.all(signs <= 0, axis=0)


def _paint_textured(rng, rows, cols, image, mask):
    """Fills `mask` with a random contrasting colour and texture."""
    background = image[mask].mean(axis=0)  # [3]
    colour = _contrasting_colour(rng, background)
    texture = rng.choice(
        ["solid", "stripes", "checker", "gradient", "speckle"], p=[0.4, 0.2, 0.15, 0.15, 0.1]
    )
    fill = np.broadcast_to(colour, image.shape).copy()  # [H, W, 3]
    angle = rng.uniform(0, np.pi)
    along = rows * np.cos(angle) + cols * np.sin(angle)  # [H, W]
    across = -rows * np.sin(angle) + cols * np.cos(angle)
    if texture == "stripes":
        stripe = np.sin(2 * np.pi * along / rng.uniform(3, 7)) > 0
        fill[stripe] *= rng.uniform(0.5, 0.75)
    elif texture == "checker":
        cell = rng.uniform(2.5, 5)
        checker = (np.floor(along / cell) + np.floor(across / cell)) % 2 == 1
        fill[checker] *= rng.uniform(0.55, 0.8)
    elif texture == "gradient":
        span = along[mask].max() - along[mask].min() + 1e-6
        t = (along - along[mask].min()) / span
        fill *= (0.7 + 0.5 * t)[..., None]
    elif texture == "speckle":
        fill += rng.normal(0, 20, fill.shape)
    image[mask] = fill[mask]


def _contrasting_colour(rng, background):
    """A random RGB colour at least `_MIN_CONTRAST` away from `background`."""
    colour = background
    for _ in range(20):
        colour = _hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.25, 1.0))
        if np.linalg.norm(colour - background) >= _MIN_CONTRAST:
            return colour
    # Fallback: push each channel to the far end of the range.
    return np.where(background > 127, 30.0, 225.0).astype(np.float32)


# ------------------------------------------------------------- crowd and void


def _paint_crowd(rng, rows, cols, image, panoptic, options):
    """A tight cluster of tiny same-class objects, labelled as one crowd region."""
    size = min(options.height, options.width)
    class_id = THING_CLASS_IDS[rng.integers(len(THING_CLASS_IDS))]
    center = np.array(
        [rng.uniform(0.2, 0.8) * options.height, rng.uniform(0.2, 0.8) * options.width]
    )
    crowd = np.zeros(rows.shape, bool)
    for _ in range(rng.integers(5, 10)):
        member_center = center + rng.normal(0, 0.07 * size, 2)
        member = _shape_mask(
            rng, rows, cols, class_id, member_center, size * rng.uniform(0.035, 0.055)
        )
        if member.any():
            _paint_textured(rng, rows, cols, image, member)
            crowd |= member
    # Crowd = thing class with instance id 0.
    panoptic[crowd] = class_id * options.label_divisor


def _paint_void_patch(rng, image, panoptic, instance_masks, options):
    """A corrupted rectangle (noise or a dead band) labelled void.

    Instances left with too few visible pixels become void as well, so every
    labelled instance stays recognisable.
    """
    height, width = options.height, options.width
    patch_height = int(height * rng.uniform(0.08, 0.2)) + 1
    patch_width = int(width * rng.uniform(0.08, 0.2)) + 1
    top = rng.integers(0, height - patch_height + 1)
    left = rng.integers(0, width - patch_width + 1)
    patch = (slice(top, top + patch_height), slice(left, left + patch_width))
    if rng.random() < 0.5:
        image[patch] = rng.uniform(0, 255, (patch_height, patch_width, 3))
    else:
        image[patch] = rng.uniform(0, 40)
    void_value = options.ignore_label * options.label_divisor
    panoptic[patch] = void_value
    for mask in instance_masks:
        mask[patch] = False
        if mask.sum() < options.min_instance_area:
            panoptic[mask] = void_value


# ------------------------------------------------------------ camera effects


def _apply_camera_effects(rng, rows, cols, image):
    """Uneven lighting, exposure, optional blur and sensor noise."""
    height, width = rows.shape
    direction = rng.uniform(0, 2 * np.pi)
    ramp = ((rows - height / 2) * np.sin(direction) + (cols - width / 2) * np.cos(direction)) / max(
        height, width
    )  # [H, W], in about [-0.7, 0.7]
    lighting = rng.uniform(0.75, 1.2) * (1 + rng.uniform(-0.4, 0.4) * ramp)
    image = image * lighting[..., None]
    if rng.random() < 0.3:
        image = _gaussian_blur(image, rng.uniform(0.5, 1.0))
    return image + rng.normal(0, rng.uniform(0, 8), image.shape)


# ------------------------------------------------------------------- helpers


def _hsv(hue, saturation, value):
    """An RGB colour in [0, 255] from HSV in [0, 1]. Returns float32 [3]."""
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), np.float32) * 255.0


def _smooth_noise(rng, height, width, cells):
    """Low-frequency noise: a random (cells+1)^2 grid, bilinearly upsampled.

    Returns:
        float32 [H, W] with values of roughly unit scale.
    """
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    ys = np.linspace(0, cells, height, dtype=np.float32)
    xs = np.linspace(0, cells, width, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _gaussian_blur(image, sigma):
    """Separable Gaussian blur of float [H, W, C] with edge padding."""
    radius = max(1, int(round(2.5 * sigma)))
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="edge")
        length = image.shape[axis]
        image = sum(
            weight * np.take(padded, np.arange(offset, offset + length), axis=axis)
            for offset, weight in enumerate(kernel)
        )
    return image
