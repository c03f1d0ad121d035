"""The NumPy post-processing (postprocessing/host.py) gives exactly what the TF one gives."""

import itertools
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import REPO_ROOT, case_id
from axial_tf.postprocessing import PostProcessOptions, panoptic_postprocess
from axial_tf.postprocessing.host import panoptic_postprocess_numpy
from axial_tf.postprocessing.options import (
    INSTANCE_NUMBERINGS,
    STUFF_AREA_RULES,
    THINGS_WITHOUT_CENTER,
)
from test_postprocessing import (
    DEEPLAB2_CASES,
    OUTPUT_KEYS,
    POSTPROCESS_CASES,
    _deeplab2_options,
    _postprocess_expected,
    _postprocess_inputs,
    _postprocess_options,
)

MERGE_VARIANTS = list(itertools.product(STUFF_AREA_RULES, INSTANCE_NUMBERINGS, THINGS_WITHOUT_CENTER))
# (nms_kernel, keep_k_centers, center_threshold): odd and even kernels, top-K on and off, and a
# negative threshold that leaves negative values for the zero-padded max filter.
CENTER_VARIANTS = [(1, 0, 0.1), (2, 2, 0.1), (4, 6, -0.25), (5, 2, 0.1), (3, -1, -0.25)]
# A Python interpreter without TensorFlow: `./run tests` makes .venv-backends before the suite.
NO_TENSORFLOW_PYTHON = os.environ.get(
    "AXIAL_TF_NO_TENSORFLOW_PYTHON", str(REPO_ROOT / ".venv-backends" / "bin" / "python")
)


def _assert_same_outputs(actual, expected):
    """Equal keys, dtypes, shapes and values; `expected` holds TF tensors."""
    assert sorted(actual) == sorted(OUTPUT_KEYS)
    for key in OUTPUT_KEYS:
        reference = expected[key].numpy()
        assert actual[key].dtype == reference.dtype, key
        np.testing.assert_array_equal(actual[key], reference, err_msg=key)


def _assert_matches_tf(semantic, heatmap, offsets, options):
    _assert_same_outputs(
        panoptic_postprocess_numpy(semantic, heatmap, offsets, options),
        panoptic_postprocess(semantic, heatmap, offsets, options),
    )


def _random_batch(seed, batch=4, height=19, width=23):
    """A class map, heatmap and offsets full of ties, and two degenerate images.

    Heatmap values come from a short list (plateaus, equal top-K scores, values
    of exactly float32(0.1)); offsets are multiples of 0.5 (equal distances).
    Image 1 has no center, image 2 is all void (class 255).
    """
    rng = np.random.default_rng(seed)
    semantic = rng.integers(0, 5, size=(batch, height, width)).astype(np.int32)  # things: 1, 3
    levels = np.float32([-0.3, -0.1, 0.0, 0.05, 0.1, 0.4, 0.7])
    weights = [0.1, 0.1, 0.3, 0.3, 0.1, 0.05, 0.05]
    heatmap = rng.choice(levels, p=weights, size=(batch, height, width))
    offsets = (rng.integers(-4, 5, size=(batch, height, width, 2)) * 0.5).astype(np.float32)
    heatmap[1] = np.minimum(heatmap[1], 0.05)
    semantic[2] = 255
    return semantic, heatmap, offsets


@pytest.mark.parametrize("case_dir", POSTPROCESS_CASES, ids=case_id)
@pytest.mark.parametrize("semantic_input", ["logits", "semantic_pred"])
@pytest.mark.sweep
def test_matches_postprocess_fixture_and_tf(case_dir, semantic_input):
    logits, heatmap, offsets = _postprocess_inputs(case_dir)
    semantic = logits if semantic_input == "logits" else _postprocess_expected(case_dir, "semantic_pred")
    outputs = panoptic_postprocess_numpy(semantic, heatmap, offsets, _postprocess_options(case_dir))
    for key in ("semantic_pred", "instance_pred", "panoptic_pred"):
        np.testing.assert_array_equal(outputs[key], _postprocess_expected(case_dir, key), err_msg=key)
    np.testing.assert_array_equal(
        outputs["instance_center_pred"], _postprocess_expected(case_dir, "center_nms_heatmap")
    )
    for style in ("merge_op", "tf_merge"):
        _assert_matches_tf(semantic, heatmap, offsets, _postprocess_options(case_dir, style))


@pytest.mark.parametrize("case_dir", DEEPLAB2_CASES, ids=case_id)
def test_matches_deeplab2_panoptic_outputs_and_tf(case_dir):
    arrays = np.load(case_dir / "io.npz")
    inputs = (arrays["semantic_probs"], arrays["center_heatmap"], arrays["offset_map"])
    outputs = panoptic_postprocess_numpy(*inputs, _deeplab2_options(case_dir))
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(outputs[key], arrays[key], err_msg=key)
    _assert_matches_tf(*inputs, _deeplab2_options(case_dir, style="merge_op"))


@pytest.mark.parametrize("stuff_area_rule,instance_numbering,things_without_center", MERGE_VARIANTS)
@pytest.mark.sweep
def test_matches_tf_on_every_option_combination(
    stuff_area_rule, instance_numbering, things_without_center
):
    semantic, heatmap, offsets = _random_batch(seed=7)
    # The exact area of a stuff class of image 0, so the two area rules disagree on it.
    stuff_area_limit = int(np.sum(semantic[0] == 2))
    for nms_kernel, keep_k_centers, center_threshold in CENTER_VARIANTS:
        options = PostProcessOptions(
            thing_class_ids=(3, 1),
            nms_kernel=nms_kernel,
            keep_k_centers=keep_k_centers,
            center_threshold=center_threshold,
            stuff_area_limit=stuff_area_limit,
            stuff_area_rule=stuff_area_rule,
            instance_numbering=instance_numbering,
            things_without_center=things_without_center,
        )
        _assert_matches_tf(semantic, heatmap, offsets, options)


@pytest.mark.parametrize("style", ["merge_op", "tf_merge"])
def test_matches_tf_on_tied_logits_and_other_input_forms(style):
    """Scores with argmax ties, a [B, H, W, 1] float64 heatmap, float64 offsets."""
    _, heatmap, offsets = _random_batch(seed=11)
    rng = np.random.default_rng(11)
    logits = rng.integers(0, 2, size=heatmap.shape + (5,)).astype(np.float32)  # [B, H, W, 5]
    options = PostProcessOptions.with_merge_style(style, thing_class_ids=(1, 3), nms_kernel=3)
    heatmap = heatmap[..., np.newaxis].astype(np.float64)  # [B, H, W, 1]
    _assert_matches_tf(logits, heatmap, offsets.astype(np.float64), options)


@pytest.mark.parametrize("style", ["merge_op", "tf_merge"])
def test_matches_tf_without_any_center(style):
    semantic, heatmap, offsets = _random_batch(seed=13)
    options = PostProcessOptions.with_merge_style(style, thing_class_ids=(1, 3), center_threshold=0.9)
    outputs = panoptic_postprocess_numpy(semantic, heatmap, offsets, options)
    np.testing.assert_array_equal(outputs["instance_pred"], 0)
    _assert_matches_tf(semantic, heatmap, offsets, options)


def test_distance_ties_after_the_square_root_go_to_the_first_center():
    """Pixel (0, 0) votes for a point whose squared distance to center 1, (0, 9), is
    one float32 step larger than to center 2, (9, 0); their float32 square roots are
    equal, so center 1 wins, as in TF (a squared-distance argmin would pick 2)."""
    vote = np.float32([2.0536737, 2.0536733])
    squared = [np.sum(np.square(np.float32(center) - vote)) for center in ([0, 9], [9, 0])]
    assert squared[0] > squared[1]
    heatmap = np.zeros((1, 10, 10), np.float32)
    heatmap[0, 0, 9] = heatmap[0, 9, 0] = 0.5
    semantic = np.ones((1, 10, 10), np.int32)
    offsets = np.zeros((1, 10, 10, 2), np.float32)
    offsets[0, 0, 0] = vote
    options = PostProcessOptions(thing_class_ids=(1,))
    outputs = panoptic_postprocess_numpy(semantic, heatmap, offsets, options)
    assert outputs["instance_pred"][0, 0, 0] == 1
    _assert_matches_tf(semantic, heatmap, offsets, options)


def test_top_k_ties_and_even_kernel_placement():
    """A kernel of 2 spans each pixel and the next row and column (TF "SAME"), so a peak
    suppresses the one just before it, not the one just after it; top-K breaks equal
    scores by raster order."""
    heatmap = np.zeros((1, 8, 8), np.float32)
    heatmap[0, 1, 6] = heatmap[0, 2, 2] = heatmap[0, 5, 6] = heatmap[0, 6, 1] = 0.5
    heatmap[0, 3, 3] = 0.4  # just after (2, 2): survives
    heatmap[0, 4, 5] = 0.4  # just before (5, 6): suppressed
    semantic = np.ones((1, 8, 8), np.int32)
    offsets = np.zeros((1, 8, 8, 2), np.float32)
    options = PostProcessOptions(thing_class_ids=(1,), nms_kernel=2, keep_k_centers=3)
    outputs = panoptic_postprocess_numpy(semantic, heatmap, offsets, options)
    centers = np.argwhere(outputs["instance_center_pred"][0]).tolist()  # raster order
    assert centers == [[1, 6], [2, 2], [3, 3], [5, 6], [6, 1]]
    # Four scores of 0.5 for three slots: (6, 1), the last in raster order, is dropped.
    assert [outputs["instance_pred"][0, y, x] for y, x in [(1, 6), (2, 2), (5, 6)]] == [1, 2, 3]
    assert set(np.unique(outputs["instance_pred"]).tolist()) == {1, 2, 3}
    _assert_matches_tf(semantic, heatmap, offsets, options)


def test_bad_inputs_are_clear_errors():
    options = PostProcessOptions(thing_class_ids=(1,))
    class_map, heatmap, offsets = np.zeros((1, 4, 4), np.int32), np.zeros((1, 4, 4)), np.zeros((1, 4, 4, 2))
    with pytest.raises(TypeError, match="PostProcessOptions"):
        panoptic_postprocess_numpy(class_map, heatmap, offsets, {})
    with pytest.raises(ValueError, match="offset_map"):
        panoptic_postprocess_numpy(class_map, heatmap, np.zeros((1, 4, 4, 3)), options)
    with pytest.raises(ValueError, match="integer class map"):
        panoptic_postprocess_numpy(np.zeros((1, 4, 4)), heatmap, offsets, options)
    with pytest.raises(ValueError, match="center_heatmap"):
        panoptic_postprocess_numpy(class_map, np.zeros((1, 4, 4, 2)), offsets, options)
    with pytest.raises(ValueError, match="disagree"):
        panoptic_postprocess_numpy(class_map, np.zeros((1, 4, 5)), offsets, options)


# Runs the NumPy post-processing in an interpreter without TensorFlow (the package imports without
# it) and checks that nothing loaded TensorFlow.
_RUN_WITHOUT_TENSORFLOW = """
import importlib.util, json, sys
import numpy as np

assert importlib.util.find_spec("tensorflow") is None, "this interpreter has TensorFlow"
from axial_tf.postprocessing import PostProcessOptions, panoptic_postprocess_numpy

inputs_path, options_json, outputs_path = sys.argv[1:]
inputs = np.load(inputs_path)
options = PostProcessOptions.from_dict(json.loads(options_json))
outputs = panoptic_postprocess_numpy(inputs["semantic"], inputs["center_heatmap"], inputs["offset_map"], options)
loaded = [name for name in sys.modules if name.split(".")[0] == "tensorflow"]
assert not loaded, loaded
np.savez(outputs_path, **outputs)
"""


@pytest.mark.full
def test_runs_without_tensorflow_and_matches_tf(tmp_path):
    if not os.path.isfile(NO_TENSORFLOW_PYTHON):
        pytest.skip(f"no interpreter at {NO_TENSORFLOW_PYTHON} (set AXIAL_TF_NO_TENSORFLOW_PYTHON)")
    semantic, heatmap, offsets = _random_batch(seed=17)
    np.savez(tmp_path / "inputs.npz", semantic=semantic, center_heatmap=heatmap, offset_map=offsets)
    options = PostProcessOptions.with_merge_style("tf_merge", thing_class_ids=(1, 3), nms_kernel=4)
    result = subprocess.run(
        [
            NO_TENSORFLOW_PYTHON, "-c", _RUN_WITHOUT_TENSORFLOW,
            str(tmp_path / "inputs.npz"),
            json.dumps(options.to_dict()),
            str(tmp_path / "outputs.npz"),
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "KERAS_BACKEND": "torch"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(tmp_path / "outputs.npz")
    _assert_same_outputs(dict(outputs), panoptic_postprocess(semantic, heatmap, offsets, options))
