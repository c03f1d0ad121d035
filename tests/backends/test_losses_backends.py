"""The Panoptic-DeepLab losses on the JAX and PyTorch backends, without TensorFlow.

`PanopticLoss` and its Keras `fit` form (`keras_losses`, `fit_targets`) are checked against the
float64 numpy reference that the TensorFlow suite uses too (tests/loss_reference.py), on random
targets with void pixels, weights 0, 1 and 3, exact hits (losses of 0, which do not count) and
top-k fractions below 1.
"""

import sys

import keras
import numpy as np
import pytest

from loss_reference import LOSS_NAMES, reference_losses, tiny_panoptic_model

from axial_tf.losses import NonFiniteLossError, PanopticLoss, check_finite

OUTPUT_LOSSES = {
    "semantic_logits": "semantic_loss",
    "center_heatmap": "center_loss",
    "offset_map": "offset_loss",
}


def _random_case(seed, batch=3, height=5, width=6, num_classes=4):
    """Random targets (numpy, as PanopticTargetGenerator lays them out) and predictions."""
    rng = np.random.default_rng(seed)
    shape = (batch, height, width)
    targets = {
        "semantic_label": rng.choice([*range(num_classes), 255], shape).astype(np.int32),
        "semantic_weights": rng.choice([0.0, 1.0, 3.0], shape).astype(np.float32),
        "center_heatmap": rng.uniform(0, 1, shape).astype(np.float32),
        "center_weights": rng.choice([0.0, 1.0], shape).astype(np.float32),
        "offset_map": rng.normal(0, 3, shape + (2,)).astype(np.float32),
        "offset_weights": rng.choice([0.0, 1.0], shape).astype(np.float32),
    }
    predictions = {
        "semantic_logits": rng.normal(0, 2, shape + (num_classes,)).astype(np.float32),
        "center_heatmap": rng.uniform(0, 1, shape).astype(np.float32),
        "offset_map": rng.normal(0, 3, shape + (2,)).astype(np.float32),
    }
    exact = rng.uniform(size=shape) < 0.3  # perfect predictions: a loss of 0 is not counted
    predictions["center_heatmap"][exact] = targets["center_heatmap"][exact]
    predictions["offset_map"][exact] = targets["offset_map"][exact]
    return targets, predictions


def _numpy(tensors):
    return {name: keras.ops.convert_to_numpy(value) for name, value in tensors.items()}


CASES = [  # seed, (semantic, center, offset) top-k fractions, prediction dtype
    (0, (0.2, 1.0, 1.0), "float32"),
    (1, (0.5, 0.3, 0.6), "float32"),
    (2, (1.0, 1.0, 1.0), "float32"),
    (3, (0.2, 0.5, 0.5), "bfloat16"),
]


@pytest.mark.parametrize("seed,top_k,dtype", CASES)
def test_panoptic_loss_and_fit_losses_match_the_numpy_reference(seed, top_k, dtype):
    targets, predictions = _random_case(seed)
    predictions = {k: keras.ops.cast(v, dtype) for k, v in predictions.items()}
    # The reference sees the same (rounded) prediction values, in float64.
    expected = reference_losses(
        targets, _numpy(predictions), weights=(2.0, 200.0, 0.01), top_k=top_k
    )
    loss_fn = PanopticLoss(
        semantic_weight=2.0,
        top_k_percent=top_k[0],
        center_top_k_percent=top_k[1],
        offset_top_k_percent=top_k[2],
    )
    per_image = _numpy(loss_fn.per_image(targets, predictions))
    batch_mean = _numpy(loss_fn(targets, predictions))
    for name in LOSS_NAMES:
        assert per_image[name].dtype == np.float32 and batch_mean[name].shape == ()
        np.testing.assert_allclose(per_image[name], expected[name], rtol=2e-5, err_msg=name)
        np.testing.assert_allclose(batch_mean[name], expected[name].mean(), rtol=2e-5)
    packed = loss_fn.fit_targets(targets)
    for output, loss in loss_fn.keras_losses().items():
        name = OUTPUT_LOSSES[output]
        value = keras.ops.convert_to_numpy(loss(packed[output], predictions[output]))
        np.testing.assert_allclose(value, expected[name].mean(), rtol=2e-5, err_msg=name)


def test_fit_targets_pack_each_target_with_its_weights():
    targets, _ = _random_case(4)
    packed = _numpy(PanopticLoss().fit_targets(targets))
    assert {k: (v.shape, v.dtype) for k, v in packed.items()} == {
        "semantic_logits": ((3, 5, 6, 2), np.float32),
        "center_heatmap": ((3, 5, 6, 2), np.float32),
        "offset_map": ((3, 5, 6, 3), np.float32),
    }
    np.testing.assert_array_equal(packed["semantic_logits"][..., 0], targets["semantic_label"])
    np.testing.assert_array_equal(packed["semantic_logits"][..., 1], targets["semantic_weights"])
    np.testing.assert_array_equal(packed["center_heatmap"][..., 0], targets["center_heatmap"])
    np.testing.assert_array_equal(packed["center_heatmap"][..., 1], targets["center_weights"])
    np.testing.assert_array_equal(packed["offset_map"][..., :2], targets["offset_map"])
    np.testing.assert_array_equal(packed["offset_map"][..., 2], targets["offset_weights"])


def test_compile_evaluate_and_fit_report_the_panoptic_loss():
    targets, _ = _random_case(5, batch=2)
    images = np.random.default_rng(5).normal(size=(2, 5, 6, 3)).astype(np.float32)
    loss_fn = PanopticLoss(top_k_percent=0.4)
    model = tiny_panoptic_model(num_classes=4)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=loss_fn.keras_losses())
    packed = loss_fn.fit_targets(targets)
    reported = model.evaluate(images, packed, batch_size=2, return_dict=True, verbose=0)
    expected = _numpy(loss_fn(targets, model.predict(images, verbose=0)))
    for output, name in OUTPUT_LOSSES.items():
        np.testing.assert_allclose(reported[f"{output}_loss"], expected[name], rtol=1e-5)
    np.testing.assert_allclose(reported["loss"], expected["total_loss"], rtol=1e-5)
    kernels = {name: keras.ops.convert_to_numpy(model.get_layer(name).kernel)
               for name in ("semantic_head", "center_head", "offset_head")}
    history = model.fit(images, packed, batch_size=2, epochs=1, shuffle=False, verbose=0)
    # The step reports the loss of the weights it started from, then moves every head.
    np.testing.assert_allclose(history.history["loss"][0], expected["total_loss"], rtol=1e-5)
    for name, kernel in kernels.items():
        assert np.any(keras.ops.convert_to_numpy(model.get_layer(name).kernel) != kernel), name


@pytest.mark.parametrize(
    "key,loss_name",
    [("semantic_logits", "semantic_loss"), ("center_heatmap", "center_loss"),
     ("offset_map", "offset_loss")],
)
def test_a_nan_prediction_is_a_non_finite_loss_error_naming_the_loss(key, loss_name):
    targets, predictions = _random_case(6)
    targets["semantic_weights"][1, 2, 3] = 0.0  # a NaN where the weight is 0 still counts
    targets["center_weights"][1, 2, 3] = 0.0
    targets["offset_weights"][1, 2, 3] = 0.0
    predictions[key][1, 2, 3] = np.nan
    losses = PanopticLoss()(targets, predictions)
    with pytest.raises(NonFiniteLossError, match=rf"step 3: {loss_name}=\[nan\], total_loss"):
        check_finite(losses, step=3)


@pytest.mark.parametrize("label", [4, -1])
def test_an_out_of_range_label_makes_its_image_loss_nan(label):
    targets, predictions = _random_case(7)
    targets["semantic_label"][2, 0, 1] = label  # 4 classes; not the ignore label
    targets["semantic_weights"][2, 0, 1] = 0.0  # even with weight 0
    losses = PanopticLoss().per_image(targets, predictions)
    semantic = keras.ops.convert_to_numpy(losses["semantic_loss"])
    assert np.all(np.isfinite(semantic[:2])) and np.isnan(semantic[2])
    with pytest.raises(NonFiniteLossError, match="semantic_loss"):
        check_finite(losses)


def test_check_finite_passes_finite_losses_through():
    targets, predictions = _random_case(8)
    losses = PanopticLoss()(targets, predictions)
    assert check_finite(losses) is losses


def test_fit_losses_serialize_with_their_config():
    targets, predictions = _random_case(9)
    loss_fn = PanopticLoss(center_weight=100.0, offset_top_k_percent=0.5, ignore_label=3)
    packed = loss_fn.fit_targets(targets)
    for output, loss in loss_fn.keras_losses().items():
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(clone(packed[output], predictions[output])),
            keras.ops.convert_to_numpy(loss(packed[output], predictions[output])),
        )


def test_tensorflow_was_never_imported():
    # Last in the file: everything above ran without TensorFlow.
    assert "tensorflow" not in sys.modules
