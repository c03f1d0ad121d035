"""Tests of the Panoptic-DeepLab target generator (axial_tf.targets).

Golden values are worked out by hand below; random cases are checked against
`_reference_targets`, a slow per-instance numpy implementation written from
DeepLab2's definitions (integer sigma only).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from axial_tf.targets import PanopticTargetGenerator

DIVISOR = 1000
THINGS = (3, 4)
TARGET_KEYS = (
    "semantic_label",
    "center_heatmap",
    "offset_map",
    "semantic_weights",
    "center_weights",
    "offset_weights",
    "thing_mask",
    "crowd_mask",
)


def _reference_targets(
    label,
    thing_ids=THINGS,
    divisor=DIVISOR,
    ignore_label=255,
    sigma=8,
    small_area=4096,
    small_weight=3.0,
    ignore_crowd=False,
):
    """Slow numpy targets of one label map [H, W]."""
    height, width = label.shape
    semantic = label // divisor
    instance = label % divisor
    thing = np.isin(semantic, thing_ids)
    crowd = thing & (instance == 0)
    void = semantic == ignore_label
    heatmap = np.zeros((height, width))
    offsets = np.zeros((height, width, 2))
    semantic_weights = np.ones((height, width))
    rows, cols = np.mgrid[0:height, 0:width]
    radius = 3 * sigma + 1
    for panoptic_id in np.unique(label[thing & (instance > 0)]):
        ys, xs = np.nonzero(label == panoptic_id)
        center_y, center_x = int(np.round(ys.mean())), int(np.round(xs.mean()))
        if len(ys) < small_area:
            semantic_weights[ys, xs] = small_weight
        offsets[ys, xs, 0] = center_y - ys
        offsets[ys, xs, 1] = center_x - xs
        gaussian = np.exp(-((rows - center_y) ** 2 + (cols - center_x) ** 2) / (2 * sigma**2))
        inside = (np.abs(rows - center_y) <= radius) & (np.abs(cols - center_x) <= radius)
        heatmap = np.maximum(heatmap, np.where(inside, gaussian, 0.0))
    semantic_weights[void] = 0.0
    if ignore_crowd:
        semantic_weights[crowd] = 0.0
    return {
        "semantic_label": semantic,
        "center_heatmap": heatmap,
        "offset_map": offsets,
        "semantic_weights": semantic_weights,
        "center_weights": (~(void | crowd)).astype(float),
        "offset_weights": (thing & ~crowd).astype(float),
        "thing_mask": thing,
        "crowd_mask": crowd,
    }


def _assert_targets_equal(actual, expected, heatmap_atol=1e-6):
    """Exact equality except for the float32 Gaussian values."""
    assert sorted(actual) == sorted(TARGET_KEYS)
    for key in TARGET_KEYS:
        value = np.asarray(actual[key])
        if key == "center_heatmap":
            np.testing.assert_allclose(value, expected[key], rtol=0, atol=heatmap_atol)
        else:
            np.testing.assert_array_equal(value, expected[key], err_msg=key)


def _random_labels(rng, batch, height, width):
    """Label maps with stuff, void, crowd and overlapping thing instances."""
    labels = np.full((batch, height, width), 1 * DIVISOR, np.int32)
    palette = [2000, 255000, 3000, 3001, 3002, 3003, 4001, 4002, 4007]
    for image in labels:
        for _ in range(rng.integers(4, 9)):
            top, left = rng.integers(0, height), rng.integers(0, width)
            size_y, size_x = rng.integers(1, height // 2 + 2), rng.integers(1, width // 2 + 2)
            image[top : top + size_y, left : left + size_x] = rng.choice(palette)
    return labels


def _hand_label():
    """7x9 map: instance A (3001, 6 px), small instance B (4002, 4 px), crowd, void."""
    label = np.full((7, 9), 1000, np.int32)
    label[1:3, 1:4] = 3001  # mean (1.5, 2.0) -> center (2, 2)
    label[4:6, 6:8] = 4002  # mean (4.5, 6.5) -> center (4, 6): ties round to even
    label[0:2, 8] = 3000  # crowd: thing class, instance id 0
    label[6, 0] = 255000  # void
    label[6, 1] = 255123  # void whatever the instance id
    return label


def test_hand_worked_two_instances_crowd_void_small_instance():
    generator = PanopticTargetGenerator(DIVISOR, THINGS, small_instance_area=5)
    targets = {k: v.numpy() for k, v in generator(_hand_label()).items()}

    expected_semantic = np.ones((7, 9), np.int32)
    expected_semantic[1:3, 1:4] = 3
    expected_semantic[4:6, 6:8] = 4
    expected_semantic[0:2, 8] = 3
    expected_semantic[6, 0:2] = 255
    np.testing.assert_array_equal(targets["semantic_label"], expected_semantic)

    expected_dy = np.zeros((7, 9))
    expected_dx = np.zeros((7, 9))
    expected_dy[1, 1:4] = 1  # row 1 of A, center row 2
    expected_dx[1:3, 1:4] = [1, 0, -1]  # A spans columns 1..3, center column 2
    expected_dy[5, 6:8] = -1  # row 5 of B, center row 4
    expected_dx[4:6, 7] = -1  # column 7 of B, center column 6
    np.testing.assert_array_equal(targets["offset_map"][..., 0], expected_dy)
    np.testing.assert_array_equal(targets["offset_map"][..., 1], expected_dx)

    heatmap = targets["center_heatmap"]
    assert heatmap[2, 2] == 1.0 and heatmap[4, 6] == 1.0
    assert heatmap.max() == 1.0
    # (0, 0) is (2, 2) away from A and (4, 6) from B: A wins.
    np.testing.assert_allclose(heatmap[0, 0], math.exp(-8 / 128), atol=1e-7)
    # (3, 4) is (1, 2) away from both centers.
    np.testing.assert_allclose(heatmap[3, 4], math.exp(-5 / 128), atol=1e-7)
    # A crowd pixel still carries the Gaussian value (only its weight is 0);
    # (0, 8) is (4, 2) away from B and (2, 6) from A.
    np.testing.assert_allclose(heatmap[0, 8], math.exp(-20 / 128), atol=1e-7)

    expected_semantic_weights = np.ones((7, 9))
    expected_semantic_weights[4:6, 6:8] = 3.0  # B has 4 < 5 pixels; A has 6
    expected_semantic_weights[6, 0:2] = 0.0
    np.testing.assert_array_equal(targets["semantic_weights"], expected_semantic_weights)

    expected_center_weights = np.ones((7, 9))
    expected_center_weights[0:2, 8] = 0.0
    expected_center_weights[6, 0:2] = 0.0
    np.testing.assert_array_equal(targets["center_weights"], expected_center_weights)

    expected_offset_weights = np.zeros((7, 9))
    expected_offset_weights[1:3, 1:4] = 1.0
    expected_offset_weights[4:6, 6:8] = 1.0
    np.testing.assert_array_equal(targets["offset_weights"], expected_offset_weights)

    expected_crowd = np.zeros((7, 9), bool)
    expected_crowd[0:2, 8] = True
    np.testing.assert_array_equal(targets["crowd_mask"], expected_crowd)
    np.testing.assert_array_equal(targets["thing_mask"], np.isin(expected_semantic, THINGS))


def test_hand_label_matches_numpy_reference():
    generator = PanopticTargetGenerator(DIVISOR, THINGS, small_instance_area=5)
    _assert_targets_equal(
        generator(_hand_label()), _reference_targets(_hand_label(), small_area=5)
    )


def test_small_instance_threshold_is_strict():
    label = np.full((4, 6), 1000, np.int32)
    label[0, 0:5] = 3001  # 5 pixels: not small when the threshold is 5
    label[2, 0:4] = 3002  # 4 pixels: small
    weights = PanopticTargetGenerator(DIVISOR, THINGS, small_instance_area=5)(label)
    np.testing.assert_array_equal(weights["semantic_weights"][0, 0:5], np.ones(5))
    np.testing.assert_array_equal(weights["semantic_weights"][2, 0:4], np.full(4, 3.0))


def test_default_options_weight_every_instance_under_4096_pixels():
    label = np.full((70, 70), 1000, np.int32)
    label[:, :60] = 3001  # 4200 pixels
    label[:, 60:] = 3002  # 700 pixels
    weights = PanopticTargetGenerator(DIVISOR, THINGS)(label)["semantic_weights"].numpy()
    assert np.all(weights[:, :60] == 1.0) and np.all(weights[:, 60:] == 3.0)


@pytest.mark.parametrize("vertical", [False, True])
def test_gaussian_is_truncated_at_3_sigma_plus_1(vertical):
    label = np.full((1, 31), 1000, np.int32)
    label[0, 2] = 3001  # one-pixel instance centered at column 2
    if vertical:
        label = label.T
    heatmap = PanopticTargetGenerator(DIVISOR, THINGS)(label)["center_heatmap"].numpy()
    heatmap = heatmap.reshape(-1)
    distance = np.abs(np.arange(31) - 2)
    expected = np.where(distance <= 25, np.exp(-(distance**2) / 128.0), 0.0)
    np.testing.assert_allclose(heatmap, expected, rtol=0, atol=1e-7)
    assert heatmap[27] > 0 and heatmap[28] == 0


def test_ignore_crowd_in_semantic_zeroes_crowd_weights():
    generator = PanopticTargetGenerator(
        DIVISOR, THINGS, small_instance_area=5, ignore_crowd_in_semantic=True
    )
    targets = generator(_hand_label())
    np.testing.assert_array_equal(targets["semantic_weights"][0:2, 8], [0.0, 0.0])
    _assert_targets_equal(
        targets, _reference_targets(_hand_label(), small_area=5, ignore_crowd=True)
    )


@pytest.mark.parametrize("seed,sigma", [(0, 8), (1, 2), (2, 3)])
def test_random_batches_match_numpy_reference(seed, sigma):
    labels = _random_labels(np.random.default_rng(seed), 3, 19, 23)
    generator = PanopticTargetGenerator(DIVISOR, THINGS, sigma=sigma, small_instance_area=30)
    targets = generator(labels)
    for image_index, label in enumerate(labels):
        expected = _reference_targets(label, sigma=sigma, small_area=30)
        _assert_targets_equal({k: v[image_index] for k, v in targets.items()}, expected)


def test_batch_equals_single_images_and_same_id_in_two_images_is_two_instances():
    first = np.full((6, 7), 1000, np.int32)
    first[0:2, 0:2] = 3001
    second = np.full((6, 7), 1000, np.int32)
    second[4:6, 5:7] = 3001
    generator = PanopticTargetGenerator(DIVISOR, THINGS)
    batched = generator(np.stack([first, second]))
    for image_index, label in enumerate([first, second]):
        single = generator(label)
        for key in TARGET_KEYS:
            np.testing.assert_array_equal(batched[key][image_index], single[key], err_msg=key)
    assert batched["center_heatmap"][0, 0, 0] == 1.0  # center of first at (0, 0)
    assert batched["center_heatmap"][1, 4, 6] == 1.0  # center of second at (4, 6)
    assert batched["center_heatmap"][0, 4, 6] < 1.0


def test_no_instances_gives_empty_heatmap_and_offsets():
    label = np.full((2, 5, 4), 2000, np.int32)
    label[0, 0, 0] = 255000
    label[1, 1:3, 1:3] = 4000  # crowd only
    targets = PanopticTargetGenerator(DIVISOR, THINGS)(label)
    assert np.all(targets["center_heatmap"].numpy() == 0)
    assert np.all(targets["offset_map"].numpy() == 0)
    assert np.all(targets["offset_weights"].numpy() == 0)


def test_tf_function_with_unknown_shapes_matches_eager():
    generator = PanopticTargetGenerator(DIVISOR, THINGS, small_instance_area=5)
    batched_fn = tf.function(
        generator, input_signature=[tf.TensorSpec([None, None, None], tf.int32)]
    )
    single_fn = tf.function(generator, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    labels = _random_labels(np.random.default_rng(3), 2, 11, 13)
    eager = generator(labels)
    _assert_targets_equal(batched_fn(labels), {k: v.numpy() for k, v in eager.items()})
    _assert_targets_equal(single_fn(labels[1]), {k: v[1].numpy() for k, v in eager.items()})
    assert batched_fn(_hand_label()[None])["center_heatmap"].shape == (1, 7, 9)


def test_tf_data_map_with_unknown_sizes_then_batch():
    labels = _random_labels(np.random.default_rng(4), 2, 9, 10)
    generator = PanopticTargetGenerator(DIVISOR, THINGS, sigma=3, small_instance_area=12)

    def images():
        yield from labels

    dataset = tf.data.Dataset.from_generator(
        images, output_signature=tf.TensorSpec([None, None], tf.int32)
    )
    batch = next(iter(dataset.map(generator).batch(2)))
    for image_index, label in enumerate(labels):
        expected = _reference_targets(label, sigma=3, small_area=12)
        _assert_targets_equal({k: v[image_index] for k, v in batch.items()}, expected)


def test_int64_labels_are_accepted():
    generator = PanopticTargetGenerator(DIVISOR, THINGS, small_instance_area=5)
    _assert_targets_equal(
        generator(_hand_label().astype(np.int64)), _reference_targets(_hand_label(), small_area=5)
    )


@pytest.mark.parametrize(
    "label,message",
    [
        (np.zeros((2, 3), np.float32), "integer"),
        (np.zeros((1, 2, 3, 1), np.int32), r"\[B, H, W\]"),
        (np.zeros((5,), np.int32), r"\[B, H, W\]"),
    ],
)
def test_bad_labels_raise_clear_errors(label, message):
    with pytest.raises(ValueError, match=message):
        PanopticTargetGenerator(DIVISOR, THINGS)(label)


def test_negative_label_is_an_error():
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-negative"):
        PanopticTargetGenerator(DIVISOR, THINGS)(np.array([[1000, -1]], np.int32))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"ignore_label": 1000}, "ignore_label"),
        ({"thing_class_ids": (3, 255)}, "thing_class_ids"),
        ({"sigma": 0}, "sigma"),
        ({"small_instance_area": -1}, "small_instance_area"),
        ({"label_divisor": 0}, "label_divisor"),
    ],
)
def test_bad_options_raise(kwargs, message):
    options = {"label_divisor": DIVISOR, "thing_class_ids": THINGS, **kwargs}
    with pytest.raises(ValueError, match=message):
        PanopticTargetGenerator(**options)


def test_config_round_trip():
    generator = PanopticTargetGenerator(
        256, (11, 12), ignore_label=0, sigma=4, small_instance_area=100,
        small_instance_weight=2.0, ignore_crowd_in_semantic=True,
    )
    clone = PanopticTargetGenerator.from_config(generator.get_config())
    assert clone.get_config() == generator.get_config()
    label = np.array([[11 * 256 + 1, 12 * 256, 5 * 256]], np.int32)
    _assert_targets_equal(
        clone(label),
        _reference_targets(label, (11, 12), 256, 0, 4, 100, 2.0, True),
    )
