"""Tests of the Panoptic-DeepLab losses (axial_tf.losses).

Golden values are worked out by hand in the tests; random cases are checked
against `loss_reference.reference_losses`, a slow float64 numpy implementation of
DeepLab2's averaging (per image: weighted pixel losses, top-k, sum / number of
non-zero), which the backend suite (tests/backends/) shares. The Keras `fit`
form (`PanopticLoss.keras_losses`, `fit_targets`) is checked against
`PanopticLoss` itself through `compile`, `evaluate`, `fit` and a tf.data map.
"""

import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from loss_reference import reference_losses, tiny_panoptic_model

from axial_tf.losses import (
    LOSS_NAMES,
    NonFiniteLossError,
    PanopticLoss,
    average_top_k_loss,
    check_finite,
)
from axial_tf.targets import PanopticTargetGenerator


def _random_inputs(seed, batch=2, height=6, width=7, num_classes=4):
    """Targets from random panoptic labels and random predictions."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(
        [0, 1000, 2001, 2002, 3001, 3000, 255000], size=(batch, height, width)
    ).astype(np.int32)
    generator = PanopticTargetGenerator(1000, (2, 3), sigma=2, small_instance_area=5)
    targets = {k: v.numpy() for k, v in generator(labels).items()}
    predictions = {
        "semantic_logits": rng.normal(0, 2, (batch, height, width, num_classes)).astype(np.float32),
        "center_heatmap": rng.uniform(0, 1, (batch, height, width)).astype(np.float32),
        "offset_map": rng.normal(0, 3, (batch, height, width, 2)).astype(np.float32),
    }
    return targets, predictions


def _numpy(losses):
    return {name: np.asarray(value) for name, value in losses.items()}


def _semantic_case():
    """One 2x3 image, 2 classes, with hand-computable cross-entropies.

    Pixel: logits, label, weight -> weighted CE
      0: (0, 0),     0, 1 -> ln 2
      1: (ln 3, 0),  0, 1 -> ln(4/3)
      2: (ln 3, 0),  1, 1 -> ln 4
      3: (0, ln 9),  255 (void), 1 -> 0 (its CE ln 10 would be the largest)
      4: (0, 0),     1, 3 -> 3 ln 2 (small instance)
      5: (ln 7, 0),  0, 1 -> ln(8/7)
    """
    logits = np.array(
        [[[0, 0], [math.log(3), 0], [math.log(3), 0]],
         [[0, math.log(9)], [0, 0], [math.log(7), 0]]], np.float32)[None]
    labels = np.array([[[0, 0, 1], [255, 1, 0]]], np.int32)
    weights = np.array([[[1, 1, 1], [1, 3, 1]]], np.float32)
    zeros = np.zeros((1, 2, 3), np.float32)
    targets = {
        "semantic_label": labels,
        "semantic_weights": weights,
        "center_heatmap": zeros,
        "center_weights": zeros,
        "offset_map": np.zeros((1, 2, 3, 2), np.float32),
        "offset_weights": zeros,
    }
    predictions = {
        "semantic_logits": logits,
        "center_heatmap": zeros,
        "offset_map": np.zeros((1, 2, 3, 2), np.float32),
    }
    return targets, predictions


def test_average_top_k_loss_hand_values():
    values = tf.constant([[0.5, 0.0, 3.0, 1.0, 2.0], [0.0, 0.0, 4.0, 0.0, 0.0]])
    # k = round(0.4 * 5) = 2: (3 + 2) / 2 and 4 / 1 (the kept 0 does not count).
    np.testing.assert_allclose(average_top_k_loss(values, 0.4), [2.5, 4.0])
    # k = round(0.6 * 5) = 3: (3 + 2 + 1) / 3 and 4 / 1.
    np.testing.assert_allclose(average_top_k_loss(values, 0.6), [2.0, 4.0])
    # All pixels: the mean over the non-zero values.
    np.testing.assert_allclose(average_top_k_loss(values, 1.0), [6.5 / 4, 4.0])
    np.testing.assert_array_equal(average_top_k_loss(tf.zeros([2, 3, 3]), 0.2), [0.0, 0.0])


def test_average_top_k_loss_flags_a_nan_that_top_k_skips():
    values = tf.constant([[5.0, np.nan, 1.0, 0.0, 0.0], [5.0, 2.0, 1.0, 0.0, 0.0]])
    result = average_top_k_loss(values, 0.2).numpy()  # k = 1
    assert np.isnan(result[0]) and result[1] == 5.0


def test_semantic_top_k_hand_worked_value_and_selected_pixels():
    targets, predictions = _semantic_case()
    loss_fn = PanopticLoss(top_k_percent=0.5)  # k = round(0.5 * 6) = 3
    logits = tf.constant(predictions["semantic_logits"])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        losses = loss_fn(targets, {**predictions, "semantic_logits": logits})
    # Hardest three: 3 ln 2 (pixel 4), ln 4 (pixel 2), ln 2 (pixel 0).
    expected = (3 * math.log(2) + math.log(4) + math.log(2)) / 3
    np.testing.assert_allclose(losses["semantic_loss"], expected, rtol=1e-6)
    np.testing.assert_allclose(losses["total_loss"], expected, rtol=1e-6)
    assert losses["center_loss"] == 0.0 and losses["offset_loss"] == 0.0
    # Only the mined pixels receive a gradient; the void pixel 3 does not.
    has_gradient = np.any(tape.gradient(losses["semantic_loss"], logits).numpy() != 0, -1)
    np.testing.assert_array_equal(has_gradient, [[[True, False, True], [False, True, False]]])


def test_semantic_without_top_k_averages_over_non_void_pixels():
    targets, predictions = _semantic_case()
    losses = PanopticLoss(top_k_percent=1.0)(targets, predictions)
    expected = (
        math.log(2) + math.log(4 / 3) + math.log(4) + 3 * math.log(2) + math.log(8 / 7)
    ) / 5
    np.testing.assert_allclose(losses["semantic_loss"], expected, rtol=1e-6)


def test_center_mse_hand_worked_value():
    targets = {
        "semantic_label": np.full((1, 2, 2), 255, np.int32),
        "semantic_weights": np.ones((1, 2, 2), np.float32),
        "center_heatmap": np.array([[[1.0, 0.5], [0.0, 0.0]]], np.float32),
        "center_weights": np.array([[[1, 1], [1, 0]]], np.float32),
        "offset_map": np.zeros((1, 2, 2, 2), np.float32),
        "offset_weights": np.zeros((1, 2, 2), np.float32),
    }
    predictions = {
        "semantic_logits": np.zeros((1, 2, 2, 3), np.float32),
        "center_heatmap": np.array([[[0.5, 0.5], [0.2, 0.3]]], np.float32),
        "offset_map": np.zeros((1, 2, 2, 2), np.float32),
    }
    losses = PanopticLoss()(targets, predictions)
    # Squared errors 0.25, 0 (exact hit: not counted, as in DeepLab2), 0.04,
    # weight 0 -> (0.25 + 0.04) / 2 * 200 = 29.
    np.testing.assert_allclose(losses["center_loss"], 29.0, rtol=1e-5)
    assert losses["semantic_loss"] == 0.0  # every pixel is void
    # A [B, H, W, 1] heatmap (unsqueezed head output) gives the same value.
    unsqueezed = {**predictions, "center_heatmap": predictions["center_heatmap"][..., None]}
    np.testing.assert_allclose(PanopticLoss()(targets, unsqueezed)["center_loss"], 29.0, rtol=1e-5)


def test_offset_l1_hand_worked_value():
    targets = {
        "semantic_label": np.full((1, 1, 2), 255, np.int32),
        "semantic_weights": np.ones((1, 1, 2), np.float32),
        "center_heatmap": np.zeros((1, 1, 2), np.float32),
        "center_weights": np.zeros((1, 1, 2), np.float32),
        "offset_map": np.array([[[[2.0, -1.0], [0.0, 0.0]]]], np.float32),
        "offset_weights": np.array([[[1.0, 0.0]]], np.float32),
    }
    predictions = {
        "semantic_logits": np.zeros((1, 1, 2, 3), np.float32),
        "center_heatmap": np.zeros((1, 1, 2), np.float32),
        "offset_map": np.array([[[[1.0, 1.0], [0.5, 9.0]]]], np.float32),
    }
    losses = PanopticLoss()(targets, predictions)
    # Pixel 0: (|2 - 1| + |-1 - 1|) / 2 = 1.5; pixel 1 has weight 0 -> 0.01 * 1.5.
    np.testing.assert_allclose(losses["offset_loss"], 0.015, rtol=1e-6)
    np.testing.assert_allclose(losses["total_loss"], 0.015, rtol=1e-6)


@pytest.mark.parametrize(
    "seed,top_k", [(0, (0.2, 1.0, 1.0)), (1, (0.5, 0.3, 0.6)), (2, (1.0, 1.0, 1.0))]
)
def test_random_inputs_match_numpy_reference(seed, top_k):
    targets, predictions = _random_inputs(seed)
    loss_fn = PanopticLoss(
        top_k_percent=top_k[0], center_top_k_percent=top_k[1], offset_top_k_percent=top_k[2]
    )
    expected = reference_losses(targets, predictions, top_k=top_k)
    per_image = _numpy(loss_fn.per_image(targets, predictions))
    batch_mean = _numpy(loss_fn(targets, predictions))
    for name in LOSS_NAMES:
        np.testing.assert_allclose(per_image[name], expected[name], rtol=2e-5, err_msg=name)
        np.testing.assert_allclose(batch_mean[name], expected[name].mean(), rtol=2e-5)
        assert batch_mean[name].shape == () and batch_mean[name].dtype == np.float32


def test_batch_loss_is_mean_of_single_image_losses():
    targets, predictions = _random_inputs(3, batch=3)
    loss_fn = PanopticLoss()
    batch = _numpy(loss_fn(targets, predictions))
    singles = [
        _numpy(loss_fn({k: v[i : i + 1] for k, v in targets.items()},
                       {k: v[i : i + 1] for k, v in predictions.items()}))
        for i in range(3)
    ]
    for name in LOSS_NAMES:
        np.testing.assert_allclose(batch[name], np.mean([s[name] for s in singles]), rtol=1e-6)


def test_perfect_predictions_give_zero_center_and_offset_loss():
    labels = np.full((1, 8, 8), 1000, np.int32)
    labels[0, 2:5, 2:6] = 2001
    targets = PanopticTargetGenerator(1000, (2,))(labels)
    predictions = {
        "semantic_logits": 30.0 * tf.one_hot(targets["semantic_label"], 3),
        "center_heatmap": targets["center_heatmap"],
        "offset_map": targets["offset_map"],
    }
    losses = _numpy(PanopticLoss()(targets, predictions))
    assert losses["center_loss"] == 0.0 and losses["offset_loss"] == 0.0
    assert 0.0 <= losses["semantic_loss"] < 1e-10


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_predictions_are_computed_in_float32(dtype):
    targets, predictions = _random_inputs(4)
    low = {k: tf.cast(v, dtype) for k, v in predictions.items()}
    as_float32 = {k: tf.cast(v, tf.float32) for k, v in low.items()}
    loss_fn = PanopticLoss()
    losses = loss_fn(targets, low)
    expected = loss_fn(targets, as_float32)
    for name in LOSS_NAMES:
        assert losses[name].dtype == tf.float32
        np.testing.assert_allclose(losses[name], expected[name], rtol=1e-6)


def test_gradients_reach_every_prediction():
    targets, predictions = _random_inputs(5)
    predictions = {k: tf.constant(v) for k, v in predictions.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(predictions.values()))
        total = PanopticLoss()(targets, predictions)["total_loss"]
    for name, gradient in zip(predictions, tape.gradient(total, list(predictions.values()))):
        assert gradient is not None and np.all(np.isfinite(gradient)), name
        assert np.any(gradient.numpy() != 0), name


def test_tf_function_with_unknown_shapes_matches_eager():
    targets, predictions = _random_inputs(6)
    loss_fn = PanopticLoss()
    target_specs = {
        k: tf.TensorSpec([None] * v.ndim, tf.as_dtype(v.dtype)) for k, v in targets.items()
    }
    prediction_specs = {
        k: tf.TensorSpec([None] * v.ndim, tf.float32) for k, v in predictions.items()
    }
    compiled = tf.function(loss_fn.__call__, input_signature=[target_specs, prediction_specs])
    eager = _numpy(loss_fn(targets, predictions))
    for name, value in _numpy(compiled(targets, predictions)).items():
        np.testing.assert_allclose(value, eager[name], rtol=1e-6)


@pytest.mark.parametrize(
    "key,pixel",
    [("semantic_logits", (0, 0, 0)), ("center_heatmap", (1, 2, 3)), ("offset_map", (0, 5, 6))],
)
def test_nan_prediction_is_an_error_not_zero(key, pixel):
    targets, predictions = _random_inputs(7)
    targets["semantic_label"][pixel] = 255  # NaN on a void pixel still counts
    targets["center_weights"][pixel] = 0.0
    targets["offset_weights"][pixel] = 0.0
    predictions[key][pixel] = np.nan
    losses = PanopticLoss()(targets, predictions)
    assert np.isnan(losses["total_loss"])
    with pytest.raises(NonFiniteLossError, match=key.split("_")[0]):
        check_finite(losses, step=12)


def test_check_finite_reports_names_and_step_and_passes_finite_values():
    finite = {"semantic_loss": tf.constant(1.0), "center_loss": 0.5}
    assert check_finite(finite) is finite
    with pytest.raises(NonFiniteLossError, match=r"step 7: offset_loss=\[inf\]"):
        check_finite({"semantic_loss": 1.0, "offset_loss": np.float32(np.inf)}, step=7)


def test_check_finite_inside_tf_function_raises_when_run():
    @tf.function
    def checked(value):
        return check_finite({"center_loss": value})["center_loss"]

    assert checked(tf.constant(2.0)).numpy() == 2.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="Loss 'center_loss' is NaN or Inf"):
        checked(tf.constant(np.nan, tf.float32))


def test_label_outside_the_classes_is_an_error():
    targets, predictions = _random_inputs(8)
    targets["semantic_label"][0, 0, 0] = 7  # logits have 4 classes
    with pytest.raises(tf.errors.InvalidArgumentError, match="semantic_label"):
        PanopticLoss()(targets, predictions)


def test_missing_key_and_wrong_rank_raise_value_errors():
    targets, predictions = _random_inputs(9)
    with pytest.raises(ValueError, match="missing key 'offset_map'"):
        PanopticLoss()(targets, {k: v for k, v in predictions.items() if k != "offset_map"})
    with pytest.raises(ValueError, match="'semantic_logits' must have rank 4"):
        PanopticLoss()(
            targets, {**predictions, "semantic_logits": predictions["semantic_logits"][0]}
        )
    with pytest.raises(ValueError, match="top_k_percent"):
        PanopticLoss(top_k_percent=1.5)


def test_config_round_trip():
    loss_fn = PanopticLoss(semantic_weight=2.0, center_weight=100.0, top_k_percent=0.3)
    clone = PanopticLoss.from_config(loss_fn.get_config())
    assert clone.get_config() == loss_fn.get_config()
    targets, predictions = _random_inputs(10)
    expected = reference_losses(
        targets, predictions, weights=(2.0, 100.0, 0.01), top_k=(0.3, 1, 1)
    )
    np.testing.assert_allclose(clone(targets, predictions)["total_loss"],
                               expected["total_loss"].mean(), rtol=2e-5)


def test_out_of_range_label_under_xla_is_a_nan_loss_for_its_image():
    # XLA drops the label asserts; the image's loss turns NaN instead of a plausible value.
    targets, predictions = _random_inputs(11)
    targets["semantic_label"][1, 2, 3] = 7  # logits have 4 classes
    per_image = tf.function(PanopticLoss().per_image, jit_compile=True)
    semantic = per_image(targets, predictions)["semantic_loss"].numpy()
    assert np.isfinite(semantic[0]) and np.isnan(semantic[1])


_FIT_LOSS = PanopticLoss(semantic_weight=3.0, top_k_percent=0.3, center_top_k_percent=0.5)
_FIT_TOP_K = (0.3, 0.5, 1.0)


def _fit_case(seed):
    """A compiled tiny model, its images and targets (batch 2, 6x7, 4 classes)."""
    targets, _ = _random_inputs(seed)
    images = np.random.default_rng(seed).normal(size=(2, 6, 7, 3)).astype(np.float32)
    model = tiny_panoptic_model(num_classes=4)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=_FIT_LOSS.keras_losses())
    return model, images, targets


@pytest.mark.parametrize("feed", ["arrays", "tf.data map"])
def test_compiled_keras_losses_report_the_panoptic_loss(feed):
    model, images, targets = _fit_case(12)
    if feed == "arrays":
        reported = model.evaluate(images, _FIT_LOSS.fit_targets(targets), batch_size=2,
                                  return_dict=True, verbose=0)
    else:  # fit_targets packs one example at a time, on tf tensors
        dataset = tf.data.Dataset.from_tensor_slices((images, targets))
        dataset = dataset.map(lambda image, target: (image, _FIT_LOSS.fit_targets(target)))
        reported = model.evaluate(dataset.batch(2), return_dict=True, verbose=0)
    predictions = {k: v.numpy() for k, v in model(images).items()}
    expected = _numpy(_FIT_LOSS(targets, predictions))
    reference = reference_losses(targets, predictions, weights=(3.0, 200.0, 0.01), top_k=_FIT_TOP_K)
    for output, name in [("semantic_logits", "semantic_loss"), ("center_heatmap", "center_loss"),
                         ("offset_map", "offset_loss"), (None, "total_loss")]:
        value = reported["loss" if output is None else f"{output}_loss"]
        np.testing.assert_allclose(value, expected[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(value, reference[name].mean(), rtol=2e-5, err_msg=name)
    compute_loss = model.compute_loss(
        x=images, y=_FIT_LOSS.fit_targets(targets), y_pred=model(images), training=False
    )
    np.testing.assert_allclose(compute_loss, expected["total_loss"], rtol=1e-6)


def test_fit_trains_every_head_on_the_panoptic_loss():
    model, images, targets = _fit_case(13)
    packed = _FIT_LOSS.fit_targets(targets)
    before = model.evaluate(images, packed, batch_size=2, verbose=0)[0]
    kernels = {name: model.get_layer(name).kernel.numpy()
               for name in ("semantic_head", "center_head", "offset_head")}
    history = model.fit(images, packed, batch_size=2, epochs=1, shuffle=False, verbose=0)
    # The step reports the loss of the weights it started from, then moves every head.
    np.testing.assert_allclose(history.history["loss"][0], before, rtol=1e-6)
    for name, kernel in kernels.items():
        assert np.any(model.get_layer(name).kernel.numpy() != kernel), name


@pytest.mark.full  # test_fit_losses_serialize_with_their_config covers the configs cheaply
def test_compiled_model_saves_and_loads_its_panoptic_losses(tmp_path):
    model, images, targets = _fit_case(14)
    packed = _FIT_LOSS.fit_targets(targets)
    model.fit(images, packed, batch_size=2, verbose=0)  # builds the optimizer state it saves
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.evaluate(images, packed, batch_size=2, verbose=0),
        model.evaluate(images, packed, batch_size=2, verbose=0),
        rtol=1e-6,
    )


def test_fit_losses_serialize_with_their_config():
    targets, predictions = _random_inputs(15)
    packed = _FIT_LOSS.fit_targets(targets)
    for output, loss in _FIT_LOSS.keras_losses().items():
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
        np.testing.assert_array_equal(clone(packed[output], predictions[output]),
                                      loss(packed[output], predictions[output]))
    assert _FIT_LOSS.keras_losses()["semantic_logits"].get_config() == {
        "name": "semantic_loss", "reduction": "sum_over_batch_size", "weight": 3.0,
        "top_k_percent": 0.3, "ignore_label": 255,
    }


def test_fit_loss_refuses_an_unpacked_target_and_fit_targets_a_missing_key():
    targets, predictions = _random_inputs(16)
    semantic = PanopticLoss().keras_losses()["semantic_logits"]
    with pytest.raises(ValueError, match=r"'semantic_logits' target must be \[B, H, W, 2\]"):
        semantic(targets["semantic_label"], predictions["semantic_logits"])
    with pytest.raises(ValueError, match="missing key 'center_weights'"):
        PanopticLoss().fit_targets({k: v for k, v in targets.items() if k != "center_weights"})


_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from axial_tf.losses import PanopticLoss
    from axial_tf.targets import PanopticTargetGenerator

    rng = np.random.default_rng(0)
    labels = rng.choice([1000, 2001, 2002, 255000], size=(4, 6, 6)).astype(np.int32)
    logits = rng.normal(size=(4, 6, 6, 3)).astype(np.float32)
    heatmap = rng.uniform(size=(4, 6, 6)).astype(np.float32)
    offsets = rng.normal(size=(4, 6, 6, 2)).astype(np.float32)
    generator = PanopticTargetGenerator(1000, (2,), sigma=2)
    loss_fn = PanopticLoss()
    dataset = tf.data.Dataset.from_tensor_slices((labels, logits, heatmap, offsets)).batch(4)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2

    @tf.function
    def step(batch):
        def replica_fn(labels, logits, heatmap, offsets):
            predictions = {"semantic_logits": logits, "center_heatmap": heatmap,
                           "offset_map": offsets}
            return loss_fn(generator(labels), predictions)["total_loss"]
        per_replica = strategy.run(replica_fn, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    distributed = step(next(iter(strategy.experimental_distribute_dataset(dataset))))
    single = loss_fn(generator(labels), {"semantic_logits": logits,
                                         "center_heatmap": heatmap, "offset_map": offsets})
    print("RESULT", float(distributed), float(single["total_loss"]))
    """
)


@pytest.mark.full
def test_under_mirrored_strategy_the_replica_mean_equals_the_global_batch_loss():
    result = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED_SCRIPT],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, result.stderr[-3000:]
    distributed, single = (float(x) for x in lines[0].split()[1:])
    np.testing.assert_allclose(distributed, single, rtol=1e-6)
