"""Tests of the Panoptic-DeepLab post-processing against both fixture sets."""

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import case_id, fixture_cases
from axial_tf.postprocessing import (
    PanopticPostProcessor,
    PostProcessOptions,
    merge_semantic_and_instance,
    panoptic_postprocess,
)

POSTPROCESS_CASES = [path.parent for path in fixture_cases("panoptic_postprocess", "*/options.json")]
DEEPLAB2_CASES = [path.parent for path in fixture_cases("deeplab2/panoptic", "*/io.npz")]
OUTPUT_KEYS = ("panoptic_pred", "semantic_pred", "instance_pred", "instance_center_pred", "instance_scores")


def _postprocess_options(case_dir, style="merge_op"):
    """Options of a fixtures/panoptic_postprocess case (its options.json)."""
    raw = json.loads((case_dir / "options.json").read_text())
    return PostProcessOptions.with_merge_style(
        style,
        thing_class_ids=tuple(raw["thing_class_ids"]),
        label_divisor=raw["label_divisor"],
        void_label=raw["ignore_label"],
        center_threshold=raw["threshold"],
        nms_kernel=raw["nms_kernel"],
        keep_k_centers=raw["keep_k"],
        stuff_area_limit=raw["stuff_area_limit"],
    )


def _postprocess_inputs(case_dir):
    return [
        np.load(case_dir / "inputs" / f"{name}.npy")
        for name in ("semantic_logits", "center_heatmap", "offset_map")
    ]


def _postprocess_expected(case_dir, name):
    return np.load(case_dir / "expected" / f"{name}.npy")


def _deeplab2_options(case_dir, style=None):
    """Options of a fixtures/deeplab2/panoptic case, from its io.json."""
    info = json.loads((case_dir / "io.json").read_text())
    post = info["post_processing"]
    if style is None:
        style = "merge_op" if post["merge_semantic_and_instance_with_tf_op"] else "tf_merge"
    return PostProcessOptions.with_merge_style(
        style,
        thing_class_ids=tuple(post["thing_class_ids"]),
        label_divisor=post["label_divisor"],
        void_label=post["void_label"],
        center_threshold=post["center_score_threshold"],
        nms_kernel=post["nms_kernel"],
        keep_k_centers=post["keep_k_centers"],
        stuff_area_limit=post["stuff_area_limit"],
    )


def _assert_equal_up_to_renumbering(expected, actual, label_divisor):
    """Same class everywhere and a one-to-one map between the segment ids."""
    np.testing.assert_array_equal(expected // label_divisor, actual // label_divisor)
    pairs = set(zip(expected.ravel().tolist(), actual.ravel().tolist()))
    assert len({pair[0] for pair in pairs}) == len(pairs)
    assert len({pair[1] for pair in pairs}) == len(pairs)


def _numpy_outputs(outputs):
    return {key: value.numpy() for key, value in outputs.items()}


def _synthetic_batch(seed, batch=2, height=24, width=28, num_classes=4):
    """Random logits, a heatmap with a few peaks and random offsets."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, height, width, num_classes)).astype(np.float32)
    heatmap = rng.uniform(0.0, 0.05, size=(batch, height, width)).astype(np.float32)
    for image in range(batch):
        for _ in range(2 + 3 * image):  # a different number of centers per image
            y, x = rng.integers(0, height), rng.integers(0, width)
            heatmap[image, y, x] = rng.uniform(0.3, 1.0)
    offsets = rng.normal(0.0, 4.0, size=(batch, height, width, 2)).astype(np.float32)
    return logits, heatmap, offsets


# Fixture: panoptic_postprocess (DeepLab2 merge-op semantics, exact top-K).


@pytest.mark.parametrize("case_dir", POSTPROCESS_CASES, ids=case_id)
@pytest.mark.parametrize("semantic_input", ["logits", "semantic_pred"])
@pytest.mark.sweep
def test_matches_postprocess_fixture_exactly(case_dir, semantic_input):
    logits, heatmap, offsets = _postprocess_inputs(case_dir)
    semantic = logits if semantic_input == "logits" else _postprocess_expected(case_dir, "semantic_pred")
    outputs = _numpy_outputs(
        panoptic_postprocess(semantic, heatmap, offsets, _postprocess_options(case_dir))
    )
    for key in ("semantic_pred", "instance_pred", "panoptic_pred"):
        np.testing.assert_array_equal(outputs[key], _postprocess_expected(case_dir, key), err_msg=key)
        assert outputs[key].dtype == np.int32
    np.testing.assert_array_equal(
        outputs["instance_center_pred"], _postprocess_expected(case_dir, "center_nms_heatmap")
    )


@pytest.mark.parametrize("case_dir", POSTPROCESS_CASES, ids=case_id)
def test_tf_merge_style_reproduces_deeplab2_fallback_record(case_dir):
    """details.json block D: DeepLab2's pure-TF merge, per image, vs the goldens."""
    outputs = panoptic_postprocess(
        *_postprocess_inputs(case_dir), _postprocess_options(case_dir, style="tf_merge")
    )
    actual = outputs["panoptic_pred"].numpy()
    expected = _postprocess_expected(case_dir, "panoptic_pred")
    details = json.loads((case_dir / "expected" / "details.json").read_text())
    record = details["cross_check_deeplab2"]["D_tf_fallback_merge_on_goldens"]
    assert len(record) == expected.shape[0]
    for image, image_record in enumerate(record):
        differing = int(np.sum(actual[image] != expected[image]))
        assert differing == image_record["differing_pixels"], image
        if image_record["equal_up_to_renumbering"]:
            _assert_equal_up_to_renumbering(expected[image], actual[image], 1000)


# Fixture: deeplab2/panoptic (DeepLab2 pure-TF merge path on the model outputs).


@pytest.mark.parametrize("case_dir", DEEPLAB2_CASES, ids=case_id)
@pytest.mark.parametrize("semantic_key", ["semantic_probs", "semantic_logits"])
def test_matches_deeplab2_panoptic_outputs_exactly(case_dir, semantic_key):
    arrays = np.load(case_dir / "io.npz")
    outputs = _numpy_outputs(
        panoptic_postprocess(
            arrays[semantic_key],
            arrays["center_heatmap"],
            arrays["offset_map"],
            _deeplab2_options(case_dir),
        )
    )
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(outputs[key], arrays[key], err_msg=key)


@pytest.mark.parametrize("case_dir", DEEPLAB2_CASES, ids=case_id)
def test_merge_op_style_matches_deeplab2_merge_op_up_to_renumbering(case_dir):
    arrays = np.load(case_dir / "io.npz")
    options = _deeplab2_options(case_dir, style="merge_op")
    outputs = panoptic_postprocess(
        arrays["semantic_probs"], arrays["center_heatmap"], arrays["offset_map"], options
    )
    _assert_equal_up_to_renumbering(
        arrays["panoptic_pred_merge_op"], outputs["panoptic_pred"].numpy(), options.label_divisor
    )


# Behaviour beyond the fixtures.


@pytest.mark.parametrize("style", ["merge_op", "tf_merge"])
def test_batch_gives_the_same_results_as_single_images(style):
    logits, heatmap, offsets = _synthetic_batch(seed=3)
    options = PostProcessOptions.with_merge_style(
        style, thing_class_ids=(2, 3), nms_kernel=3, stuff_area_limit=100
    )
    batched = _numpy_outputs(panoptic_postprocess(logits, heatmap, offsets, options))
    num_instances = [len(np.unique(batched["instance_pred"][i])) for i in range(2)]
    assert num_instances[0] != num_instances[1]  # the two images really differ
    for image in range(2):
        single = _numpy_outputs(
            panoptic_postprocess(
                logits[image : image + 1], heatmap[image : image + 1], offsets[image : image + 1], options
            )
        )
        for key in OUTPUT_KEYS:
            np.testing.assert_array_equal(batched[key][image], single[key][0], err_msg=key)


def test_keep_k_keeps_the_highest_centers():
    heatmap = np.zeros((1, 9, 20), np.float32)
    peaks = {(2, 2): 0.5, (4, 8): 0.9, (6, 14): 0.7, (2, 18): 0.3}
    for (y, x), score in peaks.items():
        heatmap[0, y, x] = score
    semantic = np.ones((1, 9, 20), np.int32)  # every pixel is thing class 1
    offsets = np.zeros((1, 9, 20, 2), np.float32)
    def run(keep_k):
        options = PostProcessOptions(thing_class_ids=(1,), nms_kernel=3, keep_k_centers=keep_k)
        return _numpy_outputs(panoptic_postprocess(semantic, heatmap, offsets, options))

    top_two = run(2)
    # Kept: (4, 8) and (6, 14), numbered in raster order.
    assert set(np.unique(top_two["instance_pred"])) == {1, 2}
    assert top_two["instance_pred"][0, 4, 8] == 1 and top_two["instance_pred"][0, 6, 14] == 2
    assert top_two["instance_scores"][0, 4, 8] == np.float32(0.9)
    # NMS output is taken before top-K: all four peaks are still there.
    assert np.count_nonzero(top_two["instance_center_pred"]) == 4
    keep_all = run(0)
    assert set(np.unique(keep_all["instance_pred"])) == {1, 2, 3, 4}
    np.testing.assert_array_equal(keep_all["panoptic_pred"], run(4)["panoptic_pred"])


def test_no_centers_follows_the_chosen_merge_style():
    semantic = np.zeros((2, 6, 8), np.int32)
    semantic[:, :, :3] = 2  # thing class 2
    semantic[:, :2, :3] = 3  # thing class 3, minority
    heatmap = np.full((2, 6, 8), 0.05, np.float32)  # below the threshold
    heatmap[1, 3, 4] = 0.8  # image 1 has one center
    offsets = np.zeros((2, 6, 8, 2), np.float32)
    outputs = {}
    for style in ("merge_op", "tf_merge"):
        options = PostProcessOptions.with_merge_style(style, thing_class_ids=(2, 3))
        outputs[style] = _numpy_outputs(panoptic_postprocess(semantic, heatmap, offsets, options))
    for style_outputs in outputs.values():
        np.testing.assert_array_equal(style_outputs["instance_pred"][0], 0)
        np.testing.assert_array_equal(style_outputs["instance_scores"][0], 0.0)
        np.testing.assert_array_equal(style_outputs["instance_center_pred"][0], 0.0)
        np.testing.assert_array_equal(style_outputs["panoptic_pred"][0][:, 3:], 0)
        # Image 1: its single center takes every thing pixel, majority class 2.
        np.testing.assert_array_equal(style_outputs["panoptic_pred"][1][:, :3], 2001)
    # merge op: one segment of the majority class; pure-TF merge: void.
    np.testing.assert_array_equal(outputs["merge_op"]["panoptic_pred"][0][:, :3], 2001)
    np.testing.assert_array_equal(outputs["tf_merge"]["panoptic_pred"][0][:, :3], 255000)


def test_instance_numbering_orders():
    """Agnostic ids 1, 2 of class 5: id 2 appears first in a raster scan."""
    semantic = np.full((1, 4, 6), 5, np.int32)
    instance = np.array([[[2, 2, 2, 1, 1, 1]] * 4], np.int32)
    by_center = PostProcessOptions(thing_class_ids=(5,), instance_numbering="by_center_order")
    by_first = PostProcessOptions(thing_class_ids=(5,), instance_numbering="by_first_appearance")
    np.testing.assert_array_equal(
        merge_semantic_and_instance(semantic, instance, by_center).numpy(), 5000 + instance
    )
    np.testing.assert_array_equal(
        merge_semantic_and_instance(semantic, instance, by_first).numpy(), 5000 + 3 - instance
    )


@pytest.mark.parametrize("rule,kept", [("keep_above_limit", False), ("keep_at_least_limit", True)])
def test_stuff_area_rule_at_the_limit(rule, kept):
    semantic = np.zeros((1, 4, 5), np.int32)
    semantic[0, 0, :4] = 1  # stuff class 1: exactly 4 pixels
    instance = np.zeros_like(semantic)
    options = PostProcessOptions(thing_class_ids=(7,), stuff_area_limit=4, stuff_area_rule=rule)
    panoptic = merge_semantic_and_instance(semantic, instance, options).numpy()
    assert panoptic[0, 0, 0] == (1000 if kept else 255000)
    assert panoptic[0, 3, 3] == 0


@pytest.mark.full
def test_tf_function_with_unknown_shapes_and_saved_model(tmp_path):
    case_dir = POSTPROCESS_CASES[0]
    logits, heatmap, offsets = _postprocess_inputs(case_dir)
    options = _postprocess_options(case_dir)

    module = tf.Module()
    module.serve = tf.function(
        lambda semantic, center, offset: panoptic_postprocess(semantic, center, offset, options),
        input_signature=[
            tf.TensorSpec([None, None, None, None], tf.float32),
            tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None, None, None, 2], tf.float32),
        ],
    )
    graph = module.serve.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    assert not op_types & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    tf.saved_model.save(module, str(tmp_path / "postprocess"))
    restored = tf.saved_model.load(str(tmp_path / "postprocess"))
    outputs = restored.serve(logits, heatmap, offsets)
    np.testing.assert_array_equal(
        outputs["panoptic_pred"].numpy(), _postprocess_expected(case_dir, "panoptic_pred")
    )
    # Another size through the same traced function.
    small = restored.serve(logits[:1, :20, :17], heatmap[:1, :20, :17], offsets[:1, :20, :17])
    eager = panoptic_postprocess(logits[:1, :20, :17], heatmap[:1, :20, :17], offsets[:1, :20, :17], options)
    np.testing.assert_array_equal(small["panoptic_pred"].numpy(), eager["panoptic_pred"].numpy())


def test_layer_config_round_trip():
    layer = PanopticPostProcessor({"thing_class_ids": [3, 1], "stuff_area_limit": 9})
    restored = PanopticPostProcessor.from_config(layer.get_config())
    assert restored.options == layer.options
    assert restored.options.thing_class_ids == (1, 3)
    logits, heatmap, offsets = _synthetic_batch(seed=5, batch=1)
    np.testing.assert_array_equal(
        restored(logits, heatmap, offsets)["panoptic_pred"].numpy(),
        panoptic_postprocess(logits, heatmap, offsets, layer.options)["panoptic_pred"].numpy(),
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"thing_class_ids": ()}, "at least one"),
        ({"thing_class_ids": (1, 1)}, "duplicates"),
        ({"thing_class_ids": (1, -2)}, "non-negative"),
        ({"thing_class_ids": (1,), "nms_kernel": 0}, "nms_kernel"),
        ({"thing_class_ids": (1,), "label_divisor": 2.5}, "label_divisor"),
        ({"thing_class_ids": (1,), "stuff_area_limit": -1}, "stuff_area_limit"),
        ({"thing_class_ids": (255,)}, "void_label"),
        ({"thing_class_ids": (1,), "center_threshold": float("nan")}, "center_threshold"),
        ({"thing_class_ids": (1,), "stuff_area_rule": "bigger"}, "stuff_area_rule"),
        ({"thing_class_ids": (1,), "instance_numbering": "random"}, "instance_numbering"),
    ],
)
@pytest.mark.sweep
def test_options_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PostProcessOptions(**kwargs)


def test_bad_inputs_are_clear_errors():
    options = PostProcessOptions(thing_class_ids=(1,))
    with pytest.raises(ValueError, match="unknown_option"):
        PostProcessOptions.from_dict({"thing_class_ids": [1], "unknown_option": 3})
    with pytest.raises(ValueError, match="offset_map"):
        panoptic_postprocess(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4)), np.zeros((1, 4, 4, 3)), options)
    with pytest.raises(ValueError, match="integer class map"):
        panoptic_postprocess(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), np.zeros((1, 4, 4, 2)), options)
