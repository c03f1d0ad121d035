"""The prediction grid of `axial_tf.utils.visualization` (what the demo draws in predictions.png)."""

import numpy as np
import pytest

from axial_tf.utils import visualization

NAMES = ("sky", "ground", "water", "disc", "box", "triangle", "ring")
PALETTE = visualization.class_palette(len(NAMES))
WHITE = (255, 255, 255)


def scene(count=2, height=8, width=10):
    """Grey images; ground truth: ground (1) with one disc instance (3001) at rows/columns 2:6."""
    images = np.full((count, height, width, 3), 100, np.uint8)  # [N, H, W, 3]
    truth = np.full((count, height, width), 1000)  # [N, H, W]
    truth[:, 2:6, 2:6] = 3001
    return images, truth


def contains(grid, panel):
    """Whether `panel` appears unchanged somewhere in `grid`."""
    windows = np.lib.stride_tricks.sliding_window_view(grid, panel.shape)
    return bool(np.any(np.all(windows == panel, axis=(-3, -2, -1))))


def test_grid_shape_and_layout():
    images, truth = scene()
    scale, gap = 2, 3
    grid = visualization.prediction_grid(images, truth, truth, 1000, PALETTE, scale=scale, gap=gap)
    with_legend = visualization.prediction_grid(images, truth, truth, 1000, PALETTE, NAMES, scale=scale, gap=gap)
    body_height = 2 * (8 * scale + gap) + gap
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] == 3 * 10 * scale + 4 * gap
    assert grid.shape[0] > body_height, "no room for the column titles"
    assert with_legend.shape[1] == grid.shape[1] and with_legend.shape[0] > grid.shape[0], "no legend"
    titles = grid[: grid.shape[0] - body_height]
    assert np.any(np.all(titles == visualization.GRID_TEXT_COLOR, axis=-1)), "the titles are not drawn"
    panels = visualization.prediction_panels(images, truth, truth, 1000, PALETTE, scale=scale)
    assert panels.shape == (2, 3, 8 * scale, 10 * scale, 3)
    np.testing.assert_array_equal(panels[:, 0], np.repeat(np.repeat(images, scale, 1), scale, 2))
    for panel in (panels[0, 0], panels[0, 1], panels[1, 2]):
        assert contains(grid, panel)


def test_ground_truth_and_prediction_colour_a_class_alike():
    images, truth = scene(count=1)
    predicted = truth.copy()
    predicted[:, :, 8:] = 2000  # water where the ground truth has ground
    _, truth_panel, predicted_panel = visualization.prediction_panels(images, truth, predicted, 1000, PALETTE)[0]
    np.testing.assert_array_equal(truth_panel[:, :8], predicted_panel[:, :8])  # ground and the disc
    ground, water = (np.round(0.5 * 100 + 0.5 * PALETTE[c].astype(float)) for c in (1, 2))
    np.testing.assert_array_equal(truth_panel[0, 0], ground)
    np.testing.assert_array_equal(predicted_panel[0, 9], water)


def test_instances_are_outlined_at_their_border_after_upscaling():
    images, truth = scene(count=1)
    panels = visualization.prediction_panels(images, truth, truth, 1000, PALETTE, scale=3)
    expected = np.zeros((24, 30), bool)
    expected[6:18, 6:18] = True  # the disc, rows/columns 2:6 times 3
    expected[7:17, 7:17] = False  # one pixel wide: the inside is filled, not outlined
    for panel in panels[0, 1:]:
        np.testing.assert_array_equal(np.all(panel == WHITE, axis=-1), expected)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda images, truth: (images.astype(np.float32), truth, truth, 1), "images must be uint8"),
        (lambda images, truth: (images[0], truth, truth, 1), "images must be uint8"),
        (lambda images, truth: (images[:0], truth[:0], truth[:0], 1), "N >= 1"),
        (lambda images, truth: (images, truth[:, :4], truth, 1), "ground_truth must be int panoptic maps"),
        (lambda images, truth: (images, truth, truth[:1], 1), "predictions must be int panoptic maps"),
        (lambda images, truth: (images, truth, truth.astype(float), 1), "predictions must be int"),
        (lambda images, truth: (images, truth, truth, 0), "scale must be a positive integer"),
    ],
)
def test_bad_inputs_are_clear_errors(change, message):
    images, truth, predicted, scale = change(*scene())
    with pytest.raises(ValueError, match=message):
        visualization.prediction_grid(images, truth, predicted, 1000, PALETTE, scale=scale)
