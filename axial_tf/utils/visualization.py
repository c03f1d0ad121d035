"""Colours, overlays, prediction grids and lossless label encodings for panoptic maps (NumPy and PIL).

Colours are stable: a class always gets the same colour (its id picks it, or
the official Cityscapes colour when the class names are Cityscapes'), and an
instance gets a shade of its class colour chosen by its id, so the same
prediction is always drawn the same way.

Panoptic label PNGs use the COCO panoptic RGB encoding of an integer id,
`id = R + 256 * G + 256**2 * B`, applied to the panoptic label itself
(`semantic * label_divisor + instance`), so any label below 2**24 (e.g.
void 255 * 1000) is stored losslessly in an 8-bit RGB PNG.
"""

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import PIL.features

# Official Cityscapes train-id colours (cityscapesScripts' labels.py), train ids 0..18.
CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
VOID_COLOR = (0, 0, 0)
GRID_BACKGROUND = (255, 255, 255)
GRID_TEXT_COLOR = (0, 0, 0)
GRID_COLUMN_TITLES = ("image", "ground truth", "prediction")
_GRID_FONT_SIZE = 13
MAX_RGB_ENCODED_ID = 256**3 - 1
_GOLDEN_RATIO_FRACTION = 0.6180339887  # spreads consecutive instance ids over distinct shades


def label_colormap(count=256):
    """Distinct colours by spreading the bits of each id over R, G and B (PASCAL VOC style).

    Args:
        count: Number of colours.

    Returns:
        uint8 [count, 3]; entry 0 is black.
    """
    ids = np.arange(count)
    colormap = np.zeros((count, 3), np.int64)
    for shift in reversed(range(8)):
        for channel in range(3):
            colormap[:, channel] |= ((ids >> channel) & 1) << shift
        ids >>= 3
    return colormap.astype(np.uint8)


def class_palette(num_classes, class_names=None):
    """One colour per semantic class: Cityscapes' own, else `label_colormap` skipping black.

    Args:
        num_classes: Number of classes.
        class_names: Optional names; the Cityscapes colours are used when they
            are exactly the 19 Cityscapes train classes.

    Returns:
        uint8 [num_classes, 3].
    """
    if class_names is not None and tuple(class_names) == CITYSCAPES_CLASS_NAMES:
        return np.asarray(CITYSCAPES_COLORS, np.uint8)
    return label_colormap(num_classes + 1)[1:]  # black stays free for void


def _instance_shades(class_colors, instance_ids, strength=70.0):
    """Shifts each pixel's class colour by a brightness that depends only on its instance id."""
    offsets = (np.mod(instance_ids * _GOLDEN_RATIO_FRACTION, 1.0) - 0.5) * 2.0 * strength
    offsets = np.where(instance_ids > 0, offsets, 0.0)[..., np.newaxis]
    return np.clip(class_colors.astype(np.float64) + offsets, 0, 255).astype(np.uint8)


def colorize_panoptic(panoptic, label_divisor, palette, void_label=255):
    """Colours a panoptic map: class colour, shaded per instance; void is black.

    Args:
        panoptic: int [H, W] panoptic labels (`semantic * label_divisor + instance`).
        label_divisor: Panoptic label divisor.
        palette: uint8 [num_classes, 3] class colours (see `class_palette`).
        void_label: Semantic class of void pixels.

    Returns:
        uint8 [H, W, 3].
    """
    panoptic = np.asarray(panoptic, np.int64)
    semantic, instance = panoptic // label_divisor, panoptic % label_divisor
    palette = np.asarray(palette, np.uint8)
    known = (semantic >= 0) & (semantic < len(palette)) & (semantic != void_label)
    class_colors = palette[np.where(known, semantic, 0)]
    colors = _instance_shades(class_colors, instance)
    colors[~known] = VOID_COLOR
    return colors


def segment_boundaries(labels):
    """Pixels on the border of a segment: a 4-neighbour has another label.

    Args:
        labels: int [H, W] segment map (e.g. panoptic labels).

    Returns:
        bool [H, W].
    """
    labels = np.asarray(labels)
    boundary = np.zeros(labels.shape, bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    boundary[1:, :] |= vertical
    boundary[:-1, :] |= vertical
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    return boundary


def overlay_panoptic(
    image, panoptic, label_divisor, palette, void_label=255, alpha=0.5, outline_color=(255, 255, 255)
):
    """Blends the colourised panoptic map over the image and outlines every thing instance.

    Args:
        image: uint8 [H, W, 3] RGB image.
        panoptic: int [H, W] panoptic labels.
        label_divisor: Panoptic label divisor.
        palette: uint8 [num_classes, 3] class colours.
        void_label: Semantic class of void pixels (left uncoloured).
        alpha: Opacity of the colours.
        outline_color: RGB of the instance outlines.

    Returns:
        uint8 [H, W, 3].

    Raises:
        ValueError: If the image and the map differ in size or alpha is outside [0, 1].
    """
    image = np.asarray(image)
    panoptic = np.asarray(panoptic, np.int64)
    if image.shape[:2] != panoptic.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {image.shape} must be [H, W, 3] with the panoptic map's size {panoptic.shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    colors = colorize_panoptic(panoptic, label_divisor, palette, void_label).astype(np.float64)
    semantic, instance = panoptic // label_divisor, panoptic % label_divisor
    colored = (semantic != void_label)[..., np.newaxis]
    blended = np.where(colored, (1.0 - alpha) * image + alpha * colors, image)
    # An instance's outline is its border with any other segment.
    instance_map = np.where(instance > 0, panoptic, -1)
    outline = segment_boundaries(instance_map) & (instance > 0)
    blended[outline] = outline_color
    return np.round(blended).astype(np.uint8)


def prediction_panels(images, ground_truth, predictions, label_divisor, palette, void_label=255, alpha=0.5, scale=1):
    """Each example's image, ground-truth overlay and predicted overlay, upscaled by nearest neighbour.

    Both maps are drawn by `overlay_panoptic` with the same palette, so a class has the same colour in
    both. Upscaling comes before the overlay so that instance outlines stay one pixel wide.

    Args:
        images: uint8 [N, H, W, 3] RGB images.
        ground_truth: int [N, H, W] ground-truth panoptic labels.
        predictions: int [N, H, W] predicted panoptic labels.
        label_divisor: Panoptic label divisor.
        palette: uint8 [num_classes, 3] class colours (see `class_palette`).
        void_label: Semantic class of void pixels (left uncoloured).
        alpha: Opacity of the colours.
        scale: Positive integer factor of the upscaling.

    Returns:
        uint8 [N, 3, H * scale, W * scale, 3]: per example, the image, the ground truth and the prediction.

    Raises:
        ValueError: If the arrays' shapes or dtypes disagree with the above, or scale is not a positive integer.
    """
    images = np.asarray(images)
    ground_truth = np.asarray(ground_truth)
    predictions = np.asarray(predictions)
    _check_grid_inputs(images, ground_truth, predictions, scale)
    images, ground_truth, predictions = (_upscale(array, int(scale)) for array in (images, ground_truth, predictions))

    def overlay(image, panoptic):
        return overlay_panoptic(image, panoptic, label_divisor, palette, void_label=void_label, alpha=alpha)

    return np.asarray(
        [[image, overlay(image, truth), overlay(image, predicted)]
         for image, truth, predicted in zip(images, ground_truth, predictions)],
        np.uint8,
    )


def prediction_grid(
    images, ground_truth, predictions, label_divisor, palette, class_names=None, void_label=255, alpha=0.5, scale=1,
    gap=4,
):
    """One picture of what a model predicts: a row per example, "image | ground truth | prediction".

    The panels are those of `prediction_panels` (same colour per class in both maps, instances shaded by
    their id and outlined in white). Ground-truth and predicted instance ids are numbered independently,
    so one object may get two shades of its class colour. Column titles go on top and, with
    `class_names`, a legend of the class colours below; text uses Pillow's built-in font.

    Args:
        images: uint8 [N, H, W, 3] RGB images.
        ground_truth: int [N, H, W] ground-truth panoptic labels.
        predictions: int [N, H, W] predicted panoptic labels.
        label_divisor: Panoptic label divisor.
        palette: uint8 [num_classes, 3] class colours (see `class_palette`).
        class_names: Optional names of the classes, for the legend (None: no legend).
        void_label: Semantic class of void pixels (left uncoloured).
        alpha: Opacity of the colours.
        scale: Positive integer nearest-neighbour upscaling of every panel (small images stay visible).
        gap: Background pixels between and around the panels.

    Returns:
        uint8 [height, 3 * W * scale + 4 * gap, 3].

    Raises:
        ValueError: As `prediction_panels`.

    Example:
        >>> names = ("sky", "ground", "water", "disc", "box", "triangle", "ring")
        >>> grid = prediction_grid(images, labels, predicted, 1000, class_palette(7), names, scale=3)
        >>> grid.shape  # 4 examples of 64x64: (4 * (192 + 4) + 4 + titles + legend, 592, 3)
        >>> PIL.Image.fromarray(grid).save("predictions.png")
    """
    panels = prediction_panels(images, ground_truth, predictions, label_divisor, palette, void_label, alpha, scale)
    font = _grid_font()
    body = _tile(panels, gap)  # [rows, width, 3]
    strips = [_title_strip(body.shape[1], panels.shape[3], gap, font), body]
    if class_names is not None:
        strips.append(_legend_strip(body.shape[1], class_names, palette, gap, font))
    return np.concatenate(strips, axis=0)


def _check_grid_inputs(images, ground_truth, predictions, scale):
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise ValueError(f"images must be uint8 [N, H, W, 3] with N >= 1, got {images.dtype} {list(images.shape)}.")
    for name, maps in (("ground_truth", ground_truth), ("predictions", predictions)):
        if maps.shape != images.shape[:3] or not np.issubdtype(maps.dtype, np.integer):
            raise ValueError(
                f"{name} must be int panoptic maps [N, H, W] = {list(images.shape[:3])} like the images, "
                f"got {maps.dtype} {list(maps.shape)}."
            )
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}.")


def _upscale(batch, scale):
    """Nearest-neighbour upscaling of [N, H, W, ...] to [N, H * scale, W * scale, ...]."""
    return np.repeat(np.repeat(batch, scale, axis=1), scale, axis=2)


def _tile(panels, gap):
    """Lays [rows, columns, h, w, 3] panels out on the background, `gap` pixels apart and around."""
    rows, columns, height, width = panels.shape[:4]
    canvas = np.empty((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), np.uint8)
    canvas[:] = GRID_BACKGROUND
    for row in range(rows):
        for column in range(columns):
            top, left = gap + row * (height + gap), gap + column * (width + gap)
            canvas[top:top + height, left:left + width] = panels[row, column]
    return canvas


def _grid_font():
    # Pillow's own font needs nothing installed; its sizable version needs FreeType, which Pillow's wheels have.
    if PIL.features.check("freetype2"):
        return PIL.ImageFont.load_default(size=_GRID_FONT_SIZE)
    return PIL.ImageFont.load_default()


def _text_strip(width, height):
    """A background-coloured PIL image [height, width] and its drawing context."""
    strip = PIL.Image.new("RGB", (width, height), GRID_BACKGROUND)
    return strip, PIL.ImageDraw.Draw(strip)


def _title_strip(width, panel_width, gap, font):
    """The column titles, each centred over its column of panels (`_tile` layout)."""
    strip, draw = _text_strip(width, font.getbbox("Ag")[3] + gap)
    for column, title in enumerate(GRID_COLUMN_TITLES):
        centre = gap + column * (panel_width + gap) + panel_width / 2
        draw.text((centre - font.getlength(title) / 2, gap), title, fill=GRID_TEXT_COLOR, font=font)
    return np.asarray(strip)


def _legend_strip(width, class_names, palette, gap, font):
    """A swatch of each class colour followed by its name, wrapped onto as many lines as the width needs."""
    _, text_top, _, text_bottom = font.getbbox("Ag")
    swatch = text_bottom - text_top  # as tall as the text
    line_height = text_bottom + gap
    placed, left, line = [], gap, 0  # placed: (left, line, name, colour)
    for name, colour in zip(class_names, np.asarray(palette, np.uint8)):
        entry_width = swatch + gap + int(np.ceil(font.getlength(name)))
        if left > gap and left + entry_width > width - gap:
            left, line = gap, line + 1
        placed.append((left, line, name, tuple(int(c) for c in colour)))
        left += entry_width + 3 * gap
    strip, draw = _text_strip(width, (line + 1) * line_height + gap)
    for left, line, name, colour in placed:
        top = line * line_height + text_top
        draw.rectangle([left, top, left + swatch - 1, top + swatch - 1], fill=colour, outline=GRID_TEXT_COLOR)
        draw.text((left + swatch + gap, line * line_height), name, fill=GRID_TEXT_COLOR, font=font)
    return np.asarray(strip)


def encode_panoptic_rgb(panoptic):
    """Encodes panoptic labels losslessly as RGB, COCO style: id = R + 256 G + 256^2 B.

    Args:
        panoptic: int [H, W] labels in [0, 2**24).

    Returns:
        uint8 [H, W, 3].

    Raises:
        ValueError: For labels outside [0, 2**24).
    """
    panoptic = np.asarray(panoptic, np.int64)
    if panoptic.size and (panoptic.min() < 0 or panoptic.max() > MAX_RGB_ENCODED_ID):
        raise ValueError(
            f"Panoptic labels must be in [0, {MAX_RGB_ENCODED_ID}] for RGB encoding, got "
            f"[{panoptic.min()}, {panoptic.max()}]."
        )
    return np.stack([panoptic % 256, panoptic // 256 % 256, panoptic // 65536], axis=-1).astype(np.uint8)


def decode_panoptic_rgb(rgb):
    """Inverse of `encode_panoptic_rgb`: uint8 [H, W, 3] -> int32 [H, W]."""
    rgb = np.asarray(rgb, np.int64)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"Expected an RGB array [H, W, 3], got shape {rgb.shape}.")
    return (rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]).astype(np.int32)
